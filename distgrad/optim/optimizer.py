"""``Optimizer``: parameter groups, per-parameter state, ``zero_grad``, and state
dicts in PyTorch's format."""
from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np

from ..backend import array_module
from ..ops import _jit_kernels
from ..tensor import Tensor


class _Required:
    def __repr__(self):
        return "<required parameter>"


required = _Required()


def _lerp_(a, b, w: float, f) -> None:
    """``a.lerp_(b, w)`` with PyTorch's formula (two forms, split at ``w = 0.5``)."""
    if abs(w) < 0.5:
        a += f(w) * (b - a)
    else:
        a[...] = b - (b - a) * f(1 - w)


def compiled_step_applies(*arrays) -> bool:
    """Whether a compiled CPU step (``ops/_jit_bodies``: ``adam_f32``, ``sgd_f32``) takes
    these arrays: C-contiguous float32 numpy arrays, with numba loaded. It gives the
    numpy body's bits in one pass over memory instead of a dozen."""
    return (all(type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)
            and _jit_kernels.get() is not None)


def _scalar_state(value: float):
    """A 0-d float32 state entry on the host (``step`` and friends), as PyTorch's."""
    import numpy as np

    from ..tensor import _wrap

    return _wrap(np.asarray(value, dtype=np.float32).reshape(()))


class Optimizer:
    def __init_subclass__(cls, **kwargs):
        """Each optimizer's ``step`` shows in a profile as ``Optimizer.step#<Class>.step``,
        as in PyTorch."""
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_profiled", False):
            from ..profiler import timed_method

            wrapped = timed_method(lambda self: f"Optimizer.step#{type(self).__name__}.step")(step)
            wrapped._profiled = True
            cls.step = wrapped

    """Base class: subclasses implement ``step`` over ``self.param_groups``, reading
    ``p.grad`` and updating ``p`` in place (outside autograd)."""

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, "
                f"but got {type(params).__name__}"
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict) -> None:
        group = dict(param_group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if p.grad_fn is not None:
                raise ValueError("can't optimize a non-leaf Tensor")
        for k, v in self.defaults.items():
            if v is required and k not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {k}")
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p._grad is None:
                    continue
                if set_to_none:
                    p._grad = None
                else:
                    if p._grad._grad_fn is not None:
                        p._grad.detach_()
                    p._grad.zero_()

    def step(self, closure=None):
        raise NotImplementedError

    @staticmethod
    def _check_args(*checks) -> None:
        """PyTorch's argument checks: (what, value, low, high or None), each raising
        ``ValueError("Invalid {what}: {value}")`` outside [low, high]."""
        for what, value, low, high in checks:
            if not (low <= value and (high is None or value <= high)):
                raise ValueError(f"Invalid {what}: {value}")

    @staticmethod
    def _check_betas(betas) -> None:
        for i in (0, 1):
            if not 0.0 <= betas[i] < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")

    @staticmethod
    def _check_impl_flags(foreach=None, fused=None, differentiable: bool = False) -> None:
        """PyTorch's ``foreach``/``fused`` flags pick among implementations with the same
        results; distgrad has a single implementation, so both are accepted (True or
        False) and change nothing. ``differentiable=True`` (autograd through the update)
        is not supported."""
        if fused and differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        if differentiable:
            raise NotImplementedError(
                "differentiable=True is not supported: distgrad's optimizers update the "
                "parameters outside autograd"
            )

    @staticmethod
    def _with_grads(group):
        """(parameter, its array, its gradient's array (negated under ``maximize``), the
        array module, the scalar type) for each parameter of ``group`` with a gradient."""
        for p in group["params"]:
            if p._grad is None:
                continue
            x, g = p._data, p._grad._data
            if group.get("maximize"):
                g = -g
            yield p, x, g, array_module(x), x.dtype.type

    def _closure_loss(self, closure):
        if closure is None:
            return None
        from ..autograd.grad_mode import enable_grad

        with enable_grad():
            return closure()

    # ------------------------------------------------------------ state dict
    def state_dict(self) -> dict:
        index = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {index[id(p)]: s for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = copy.deepcopy(state_dict)
        groups, saved = self.param_groups, state_dict["param_groups"]
        if len(groups) != len(saved):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for i, (g, s) in enumerate(zip(groups, saved)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group {i} with {len(s['params'])} "
                    f"parameters, but this optimizer's group has {len(g['params'])}"
                )
        id_map = {old: p for g, s in zip(groups, saved) for old, p in zip(s["params"], g["params"])}
        self.state = defaultdict(dict)
        for k, v in state_dict["state"].items():
            p = id_map[int(k)]
            entry = {}
            for name, val in v.items():
                if isinstance(val, Tensor) and name != "step":
                    # 0-d entries (NAdam's mu_product, ASGD's eta and mu) are cast to
                    # the parameter's dtype as PyTorch casts them
                    if val.ndim != 0 and tuple(val.shape) != tuple(p.shape):
                        raise ValueError(
                            f"loaded state for parameter {k} has '{name}' of shape {list(val.shape)}, "
                            f"expected {list(p.shape)}"
                        )
                    val = val.to(p.dtype)
                entry[name] = val
            self.state[p] = entry
        for g, s in zip(groups, saved):
            for key, val in s.items():
                if key != "params":
                    g[key] = val

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)
