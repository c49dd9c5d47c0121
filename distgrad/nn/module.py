"""``Module``: the base class of layers and models, with PyTorch's registration,
traversal, mode, state-dict and repr behaviour."""
from __future__ import annotations

from collections import OrderedDict, namedtuple

from ..profiler import _Range as _profiler_range
from ..profiler import _state as _profiler_state
from .. import dtype as _dt
from ..autograd.grad_mode import no_grad
from ..autograd.hooks import RemovableHandle
from ..tensor import Tensor
from .parameter import Buffer, Parameter

_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _addindent(s: str, n: int) -> str:
    lines = s.split("\n")
    return lines[0] + "".join("\n" + " " * n + line for line in lines[1:])


class Module:
    """Base class for all neural-network modules; subclasses define ``forward``."""

    training: bool
    _version = 1

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments")
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = {}
        d["_buffers"] = {}
        d["_non_persistent_buffers_set"] = set()
        d["_modules"] = {}
        d["_forward_pre_hooks"] = {}
        d["_forward_hooks"] = {}
        d["_backward_hooks"] = {}
        d["_backward_pre_hooks"] = {}
        d["_state_dict_pre_hooks"] = {}
        d["_state_dict_hooks"] = {}
        d["_load_state_dict_pre_hooks"] = {}
        d["_load_state_dict_post_hooks"] = {}

    # ------------------------------------------------------------ registration
    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f'parameter name must be a non-empty string without ".", got {name!r}')
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                "(distgrad.nn.Parameter or None required)"
            )
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f'buffer name must be a non-empty string without ".", got {name!r}')
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (Tensor or None required)"
            )
        if isinstance(tensor, Buffer):
            persistent = tensor.persistent
            tensor = tensor.detach()
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if not isinstance(name, str) or "." in name or name == "":
            raise KeyError(f'module name must be a non-empty string without ".", got {name!r}')
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            for store in (d, d["_buffers"], d["_modules"]):
                store.pop(name, None)
            d["_non_persistent_buffers_set"].discard(name)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(distgrad.nn.Parameter or None expected)"
                )
            params[name] = None
        elif isinstance(value, Module):
            if params is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            for store in (d, params, d["_buffers"]):
                store.pop(name, None)
            d["_modules"][name] = value
        elif params is not None and name in d["_modules"]:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' (Module or None expected)")
            d["_modules"][name] = None
        elif isinstance(value, Buffer) or (params is not None and name in d["_buffers"]):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' (Tensor or None expected)")
            d.pop(name, None)
            persistent = value.persistent if isinstance(value, Buffer) else name not in d["_non_persistent_buffers_set"]
            self.register_buffer(name, value, persistent)
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            s = d.get(store)
            if s is not None and name in s:
                return s[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    # ----------------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        prof = _profiler_state.profiler
        if prof is None:
            return self._call_impl(*args, **kwargs)
        with _profiler_range(prof, f"nn.Module: {type(self).__name__}", "python_function"):
            return self._call_impl(*args, **kwargs)

    def _call_impl(self, *args, **kwargs):
        d = self.__dict__
        bw_hooks, bw_pre_hooks = d.get("_backward_hooks"), d.get("_backward_pre_hooks")
        if not (self._forward_pre_hooks or self._forward_hooks or bw_hooks or bw_pre_hooks):
            return self.forward(*args, **kwargs)
        for hook, with_kwargs, _ in tuple(self._forward_pre_hooks.values()):
            if with_kwargs:
                r = hook(self, args, kwargs)
                if r is not None:
                    args, kwargs = r
            else:
                r = hook(self, args)
                if r is not None:
                    args = r if isinstance(r, tuple) else (r,)
        bw = None
        if bw_hooks or bw_pre_hooks:
            bw = _BackwardHook(self, tuple(bw_hooks.values()), tuple(bw_pre_hooks.values()))
            args = bw.setup_input_hook(args)
        called = set()
        try:
            out = self.forward(*args, **kwargs)
            for key, (hook, with_kwargs, _) in tuple(self._forward_hooks.items()):
                called.add(key)
                r = hook(self, args, kwargs, out) if with_kwargs else hook(self, args, out)
                if r is not None:
                    out = r
            if bw is not None:
                out = bw.setup_output_hook(out)
        except BaseException:
            for key, (hook, with_kwargs, always) in tuple(self._forward_hooks.items()):
                if always and key not in called:
                    try:
                        hook(self, args, kwargs, None) if with_kwargs else hook(self, args, None)
                    except Exception:  # the original error is the one to report
                        pass
            raise
        return out

    @staticmethod
    def _add_hook(store, entry, prepend) -> RemovableHandle:
        handle = RemovableHandle(store, entry)
        if prepend:
            items = [(handle.id, store.pop(handle.id))] + list(store.items())
            store.clear()
            store.update(items)
        return handle

    def register_forward_pre_hook(self, hook, *, prepend: bool = False,
                                  with_kwargs: bool = False) -> RemovableHandle:
        """``hook(module, args)`` (or ``(module, args, kwargs)``) before forward; it may
        return new args (or an (args, kwargs) pair)."""
        return self._add_hook(self._forward_pre_hooks, (hook, with_kwargs, False), prepend)

    def register_forward_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False) -> RemovableHandle:
        """``hook(module, args, output)`` (or with kwargs) after forward; it may return a
        new output."""
        return self._add_hook(self._forward_hooks, (hook, with_kwargs, always_call), prepend)

    def register_full_backward_hook(self, hook, prepend: bool = False) -> RemovableHandle:
        """``hook(module, grad_input, grad_output)`` once per backward through this
        module, with tuples of the gradients w.r.t. its tensor inputs (None for an input
        that is not a tensor or needs no gradient) and outputs; it may return a new
        grad_input tuple."""
        return self._add_hook(self.__dict__.setdefault("_backward_hooks", {}), hook, prepend)

    def register_full_backward_pre_hook(self, hook, prepend: bool = False) -> RemovableHandle:
        """``hook(module, grad_output)`` when the gradients w.r.t. this module's outputs
        are known; it may return a new grad_output tuple."""
        return self._add_hook(self.__dict__.setdefault("_backward_pre_hooks", {}), hook, prepend)

    # --------------------------------------------------------------- traversal
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            yield from m.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and m not in seen:
                seen.add(m)
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, store, prefix, recurse, remove_duplicate):
        seen = set()
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for mprefix, m in mods:
            for name, v in getattr(m, store).items():
                if v is None or (remove_duplicate and id(v) in seen):
                    continue
                seen.add(id(v))
                yield mprefix + ("." if mprefix else "") + name, v

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> "Module":
        if target == "":
            return self
        mod = self
        for item in target.split("."):
            if item not in mod._modules:
                raise AttributeError(f"{type(mod).__name__} has no attribute `{item}`")
            mod = mod._modules[item]
        return mod

    def get_parameter(self, target: str) -> Parameter:
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if name not in mod._parameters:
            raise AttributeError(f"{type(mod).__name__} has no parameter `{name}`")
        return mod._parameters[name]

    def get_buffer(self, target: str) -> Tensor:
        mod_path, _, name = target.rpartition(".")
        mod = self.get_submodule(mod_path)
        if not hasattr(mod, name):
            raise AttributeError(mod._get_name() + " has no attribute `" + name + "`")
        if name not in mod._buffers:
            raise AttributeError("`" + name + "` is not a buffer")
        return mod._buffers[name]

    def set_submodule(self, target: str, module: "Module", strict: bool = False) -> None:
        """Put ``module`` at the dotted path ``target`` (its parent must exist; with
        ``strict`` the attribute must exist too)."""
        if target == "":
            raise ValueError("Cannot set the submodule without a target name!")
        if not isinstance(module, Module):
            raise ValueError(f"`module` is not an nn.Module, found {type(module)}")  # noqa: TRY004 (as PyTorch)
        parent_path, _, name = target.rpartition(".")
        parent = self.get_submodule(parent_path)
        if strict and not hasattr(parent, name):
            raise AttributeError(parent._get_name() + " has no attribute `" + name + "`")
        if hasattr(parent, name) and not isinstance(getattr(parent, name), Module):
            raise AttributeError("`" + name + "` is not an nn.Module")
        setattr(parent, name, module)

    # ------------------------------------------------------------ mode, grads
    def train(self, mode: bool = True) -> "Module":
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            m.__dict__["training"] = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p._grad is None:
                continue
            if set_to_none:
                p._grad = None
            else:
                g = p._grad
                if g._grad_fn is not None:
                    g.detach_()
                else:
                    g._requires_grad = False
                g.zero_()

    def apply(self, fn) -> "Module":
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ conversions
    def _apply(self, fn, floating_only=False):
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for k, t in store.items():
                    if t is None or (floating_only and not t.is_floating_point()):
                        continue
                    with no_grad():
                        new = fn(t)
                    if new is t:
                        continue
                    t._data = new._data
                    if t._grad is not None:
                        t._grad = fn(t._grad)
        return self

    def to(self, *args, **kwargs) -> "Module":
        """``to(dtype)``, ``to(device)`` or ``to(device, dtype)``: floating-point
        parameters and buffers take the dtype; all move to the device."""
        dtype = kwargs.get("dtype")
        device = kwargs.get("device")
        for a in args:
            if isinstance(a, _dt.dtype):
                dtype = a
            elif isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            else:
                device = a
        if dtype is not None and not _dt.to_dtype(dtype).is_floating_point:
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={dtype}")
        if device is not None:
            self._apply(lambda t: t.to(device=device))
        if dtype is not None:
            self._apply(lambda t: t.to(dtype), floating_only=True)
        return self

    def float(self) -> "Module":
        return self.to(_dt.float32)

    def double(self) -> "Module":
        return self.to(_dt.float64)

    def half(self) -> "Module":
        return self.to(_dt.float16)

    def bfloat16(self) -> "Module":
        return self.to(_dt.bfloat16)

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self, device=None) -> "Module":
        """Move every parameter and buffer to the GPU (``Tensor.cuda``'s errors where
        there is none)."""
        return self._apply(lambda t: t.cuda(device))

    def to_empty(self, *, device, recurse: bool = True) -> "Module":
        """Give every parameter and buffer fresh, uninitialized storage on ``device``."""
        from ..ops.creation import empty_like

        if not recurse:
            return self._apply_local(lambda t: empty_like(t, device=device))
        return self._apply(lambda t: empty_like(t, device=device))

    def _apply_local(self, fn):
        for store in (self._parameters, self._buffers):
            for t in store.values():
                if t is not None:
                    with no_grad():
                        t._data = fn(t)._data
        return self

    def share_memory(self) -> "Module":
        """A no-op here (distgrad's processes do not share tensor storage); returns self."""
        return self

    def compile(self, *args, **kwargs) -> None:
        """As ``distgrad.compile``: nothing is compiled, the module runs as it is."""
        from ..compiler import compile as _compile

        _compile(self, *args, **kwargs)

    def type(self, dst_type) -> "Module":
        return self._apply(lambda t: t.to(dst_type))

    # -------------------------------------------------------------- state dict
    def get_extra_state(self):
        """Override (with ``set_extra_state``) to put extra, picklable state in the
        state dict under the ``_extra_state`` key."""
        raise RuntimeError(
            "Reached a code path in Module.get_extra_state() that should never be called. "
            "Please file an issue at https://github.com/pytorch/pytorch/issues/new?template=bug-report.yml "
            "to report this bug.")

    def set_extra_state(self, state) -> None:
        raise RuntimeError(
            "Reached a code path in Module.set_extra_state() that should never be called. "
            "Please file an issue at https://github.com/pytorch/pytorch/issues/new?template=bug-report.yml "
            "to report this bug.")

    def _has_extra_state(self) -> bool:
        return type(self).get_extra_state is not Module.get_extra_state

    def _sets_extra_state(self) -> bool:
        return type(self).set_extra_state is not Module.set_extra_state

    def register_state_dict_pre_hook(self, hook) -> RemovableHandle:
        """``hook(module, prefix, keep_vars)`` before this module's state_dict entries."""
        return self._add_hook(self.__dict__.setdefault("_state_dict_pre_hooks", {}), hook, False)

    def register_state_dict_post_hook(self, hook) -> RemovableHandle:
        """``hook(module, state_dict, prefix, local_metadata)`` after this module's
        (and its children's) entries; it may edit ``state_dict`` in place."""
        return self._add_hook(self.__dict__.setdefault("_state_dict_hooks", {}), hook, False)

    def register_load_state_dict_pre_hook(self, hook) -> RemovableHandle:
        """``hook(module, state_dict, prefix, local_metadata, strict, missing_keys,
        unexpected_keys, error_msgs)`` before loading; it may edit ``state_dict`` (a copy
        of the one passed to ``load_state_dict``)."""
        return self._add_hook(self.__dict__.setdefault("_load_state_dict_pre_hooks", {}), hook, False)

    def register_load_state_dict_post_hook(self, hook) -> RemovableHandle:
        """``hook(module, incompatible_keys)`` after loading; it may remove entries from
        ``incompatible_keys.missing_keys``/``unexpected_keys`` before ``strict`` checks them."""
        return self._add_hook(self.__dict__.setdefault("_load_state_dict_post_hooks", {}), hook, False)

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        if args:
            destination = args[0]
        if destination is None:
            destination = OrderedDict()
        for hook in tuple(self.__dict__.get("_state_dict_pre_hooks", {}).values()):
            hook(self, prefix, keep_vars)
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = b if keep_vars else b.detach()
        if self._has_extra_state():
            destination[prefix + "_extra_state"] = self.get_extra_state()
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination=destination, prefix=prefix + name + ".", keep_vars=keep_vars)
        for hook in tuple(self.__dict__.get("_state_dict_hooks", {}).values()):
            if hook(self, destination, prefix, {"version": self._version}) is not None:
                raise RuntimeError("state_dict post-hook must return None")
        return destination

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Copy parameters and buffers from ``state_dict``. With ``strict``, missing and
        unexpected keys are errors; shape mismatches always are. Every problem is
        reported by name, and nothing is copied unless all are fixed."""
        pre_hooked = [(p, m) for p, m in self.named_modules(remove_duplicate=False)
                      if m.__dict__.get("_load_state_dict_pre_hooks")]
        if pre_hooked:
            state_dict = OrderedDict(state_dict)
            for mprefix, m in pre_hooked:
                for hook in tuple(m._load_state_dict_pre_hooks.values()):
                    hook(m, state_dict, mprefix + "." if mprefix else "", {"version": m._version},
                         strict, [], [], [])
        post_hooked = [m for _, m in self.named_modules(remove_duplicate=False)
                       if m.__dict__.get("_load_state_dict_post_hooks")]
        expected = OrderedDict()
        for mprefix, m in self.named_modules(remove_duplicate=False):
            base = mprefix + "." if mprefix else ""
            if m._sets_extra_state():
                expected[base + "_extra_state"] = (m, None, None, None)
            for name, p in m._parameters.items():
                if p is not None:
                    expected[base + name] = (m, "_parameters", name, p)
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent_buffers_set:
                    expected[base + name] = (m, "_buffers", name, b)
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        errors = []
        if strict and not post_hooked:
            if unexpected:
                errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        for k, (_, _, _, t) in expected.items():
            if k in state_dict and t is not None:
                v = state_dict[k]
                if not isinstance(v, Tensor):
                    errors.append(f'While copying the parameter named "{k}", expected a Tensor, got {type(v).__name__}.')
                elif tuple(v.shape) != tuple(t.shape):
                    errors.append(
                        f"size mismatch for {k}: copying a param with shape {v.shape} from checkpoint, "
                        f"the shape in current model is {t.shape}."
                    )
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors)
            )
        with no_grad():
            for k, (m, store, name, t) in expected.items():
                if k not in state_dict:
                    continue
                v = state_dict[k]
                if store is None:
                    m.set_extra_state(v)
                elif assign:
                    new = Parameter(v, t.requires_grad) if store == "_parameters" else v
                    getattr(m, store)[name] = new
                else:
                    t.copy_(v)
        if post_hooked:
            keys = _IncompatibleKeys(missing, unexpected)
            for m in post_hooked:
                for hook in tuple(m._load_state_dict_post_hooks.values()):
                    if hook(m, keys) is not None:
                        raise RuntimeError("load_state_dict post-hook must return None")
            if strict and (unexpected or missing):
                errors = []
                if unexpected:
                    errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
                if missing:
                    errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
                raise RuntimeError(
                    f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        return _IncompatibleKeys(missing, unexpected)

    # -------------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        children = [f"({k}): " + _addindent(repr(m), 2) for k, m in self._modules.items()]
        lines += children
        main = self._get_name() + "("
        if lines:
            if len(lines) == 1 and not children:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"


def _backward_hook_function():
    from ..autograd.function import Function

    class BackwardHookFunction(Function):
        """Identity over a module's tensor inputs (or outputs): its node is where the
        module's full backward hooks see the gradients."""

        @staticmethod
        def forward(ctx, *args):
            outs = tuple(a.detach() for a in args)
            ctx.mark_non_differentiable(*[o for o, a in zip(outs, args) if not a.requires_grad])
            return outs

        @staticmethod
        def backward(ctx, *grads):
            return grads

    return BackwardHookFunction


_BHF = []


class _BackwardHook:
    """Runs a module's full backward (pre-)hooks, as PyTorch's ``BackwardHook``: the
    module's tensor inputs and outputs pass through an identity node each; the output
    node's gradients are ``grad_output``, the input node's are ``grad_input``."""

    def __init__(self, module, user_hooks, user_pre_hooks):
        self.module = module
        self.user_hooks = user_hooks
        self.user_pre_hooks = user_pre_hooks
        self.grad_outputs = None
        self.n_outputs = -1
        self.output_tensors_index = None
        self.n_inputs = -1
        self.input_tensors_index = None

    @staticmethod
    def _pack_with_none(indices, values, size):
        res = [None] * size
        for idx, val in zip(indices, values):
            res[idx] = val
        return tuple(res)

    def _apply_on_tensors(self, fn, args):
        from ..autograd.grad_mode import is_grad_enabled

        idx = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        tensors = [args[i] for i in idx]
        if not (any(t.requires_grad for t in tensors) and is_grad_enabled()):
            return args, None
        if not _BHF:
            _BHF.append(_backward_hook_function())
        new = _BHF[0].apply(*tensors)
        grad_fns = [t.grad_fn for t in new if t.grad_fn is not None]
        fn(grad_fns[0])
        out = list(args)
        for i, v in zip(idx, new):
            out[i] = v
        return tuple(out), idx

    def setup_input_hook(self, args):
        def fn(grad_fn):
            def hook(grad_input, _):
                if self.grad_outputs is None:
                    return None
                res = self._pack_with_none(self.input_tensors_index, grad_input, self.n_inputs)
                for h in self.user_hooks:
                    out = h(self.module, res, self.grad_outputs)
                    if out is None:
                        continue
                    if len(out) != len(res):
                        raise RuntimeError("Backward hook returned an invalid number of grad_input, "
                                           f"got {len(out)}, but expected {len(res)}")
                    res = out
                self.grad_outputs = None
                return tuple(res[i] for i in self.input_tensors_index)

            grad_fn.register_hook(hook)

        res, idx = self._apply_on_tensors(fn, args)
        self.n_inputs = len(args)
        self.input_tensors_index = idx
        return res

    def setup_output_hook(self, outputs):
        def fn(grad_fn):
            def hook(_, grad_output):
                self.grad_outputs = self._pack_with_none(self.output_tensors_index, grad_output,
                                                         self.n_outputs)
                for h in self.user_pre_hooks:
                    r = h(self.module, self.grad_outputs)
                    if r is None:
                        continue
                    if len(r) != len(self.grad_outputs):
                        raise RuntimeError("Backward pre hook returned an invalid number of grad_output, "
                                           f"got {len(r)}, but expected {len(self.grad_outputs)}")
                    self.grad_outputs = tuple(r)
                local = self.grad_outputs
                if self.input_tensors_index is None:
                    import warnings

                    warnings.warn("Full backward hook is firing when gradients are computed with "
                                  "respect to module outputs since no inputs require gradients.",
                                  stacklevel=5)
                    grad_inputs = (None,) * self.n_inputs
                    for h in self.user_hooks:
                        r = h(self.module, grad_inputs, self.grad_outputs)
                        if r is not None and not (isinstance(r, tuple) and all(x is None for x in r)):
                            raise RuntimeError("Backward hook for Modules where no input requires "
                                               "gradient should always return None or None for all gradients.")
                    self.grad_outputs = None
                return tuple(local[i] for i in self.output_tensors_index)

            grad_fn.register_hook(hook)

        is_tuple = isinstance(outputs, tuple)
        args = outputs if is_tuple else (outputs,)
        res, idx = self._apply_on_tensors(fn, args)
        self.n_outputs = len(args)
        self.output_tensors_index = idx
        return res if is_tuple else res[0]
