"""Tensor: an array, its autograd metadata, and thin methods.

The ops (``distgrad/ops``) attach their functions to this class as methods, so a
method call such as ``x.exp()`` is the op itself, with no extra layer.
"""
from __future__ import annotations

import warnings
import weakref

from . import backend
from . import dtype as _dt
from .autograd.grad_mode import state as _grad_state

_new = object.__new__


class Size(tuple):
    """The shape of a tensor; a tuple that prints as ``distgrad.Size([2, 3])``."""

    def __repr__(self):
        return f"distgrad.Size({list(self)})"

    def numel(self) -> int:
        n = 1
        for s in self:
            n *= s
        return n


def _wrap(data) -> "Tensor":
    """A tensor around ``data`` (an array), outside any graph."""
    if type(data) is not backend.ndarray:
        data = backend.normalize(data)
    t = _new(Tensor)
    t._data = data
    t._vc = [0]
    return t


class Tensor:
    # Class-level defaults: a new tensor sets only ``_data`` and ``_vc``.
    _grad = None
    _grad_fn = None          # the Node that made this tensor, or None for leaves
    _requires_grad = False
    _output_nr = 0           # which output of ``_grad_fn`` this tensor is
    _base = None             # the tensor whose memory this view shares (never a view)
    _view_fn = None          # replays this view on a tensor shaped like ``_base``
    _view_version = 0        # version of ``_vc`` when ``_grad_fn`` was last set for a view
    _hooks = None            # gradient hooks of a leaf: {handle id: fn}
    _post_acc_hooks = None   # post-accumulate-grad hooks of a leaf
    _accumulator = None      # weak reference to the leaf's AccumulateGrad node
    _retains_grad = False
    _is_inference = False
    _view_nograd = False     # a view made in no-grad mode never joins its base's graph

    __array_ufunc__ = None   # numpy defers ``array * tensor`` to Tensor.__rmul__
    __hash__ = object.__hash__

    def __new__(cls, *args, device=None):
        """The legacy constructor, as ``torch.Tensor(...)``: ``Tensor(2, 3)`` (zeros,
        the default dtype), ``Tensor([1, 2])`` or ``Tensor(ndarray)`` (a float copy),
        ``Tensor(size)``, ``Tensor()`` (empty). Ops make tensors without it."""
        return _legacy_new(_dt.get_default_dtype(), args, device, alias_any=True)

    # ----------------------------------------------------------------- metadata
    @property
    def shape(self) -> Size:
        return Size(self._data.shape)

    def size(self, dim: int | None = None):
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[_wrap_dim(dim, self._data.ndim, "size")]

    @property
    def dtype(self) -> _dt.dtype:
        return _dt.from_numpy_dtype(self._data.dtype)

    @property
    def device(self) -> backend.device:
        return backend.device_of(self._data)

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    ndimension = dim

    def numel(self) -> int:
        return self._data.size

    nelement = numel

    def element_size(self) -> int:
        return self._data.itemsize

    def stride(self, dim: int | None = None):
        st = tuple(s // self._data.itemsize for s in self._data.strides)
        return st if dim is None else st[_wrap_dim(dim, self._data.ndim, "stride")]

    def is_contiguous(self) -> bool:
        return self._data.flags.c_contiguous

    def is_floating_point(self) -> bool:
        return _dt.kind_of(self._data.dtype) == "f"

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def is_xpu(self) -> bool:
        return False  # distgrad runs on CPUs and CUDA GPUs only

    @property
    def is_mps(self) -> bool:
        return False

    @property
    def _version(self) -> int:
        return self._vc[0]

    def is_inference(self) -> bool:
        return self._is_inference

    # ---------------------------------------------------------- autograd state
    @property
    def grad_fn(self):
        if self._base is not None and self._view_version != self._vc[0]:
            _refresh_view(self)
        return self._grad_fn

    @property
    def requires_grad(self) -> bool:
        if self._base is not None and self._view_version != self._vc[0]:
            _refresh_view(self)
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool):
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if self.grad_fn is not None:
            if requires_grad:
                return self
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use "
                "a computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach()."
            )
        if requires_grad and self._is_inference and not _grad_state.inference:
            raise RuntimeError(
                "Setting requires_grad=True on inference tensor outside InferenceMode is not "
                "allowed; make a normal tensor first with .clone() outside inference mode"
            )
        if requires_grad and _dt.kind_of(self._data.dtype) not in "fc":
            raise RuntimeError(
                f"only Tensors of floating point dtype can require gradients (got {self.dtype}); "
                "convert first, e.g. x.float()"
            )
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    @property
    def grad(self):
        if self._grad is None and self._grad_fn is not None and not self._retains_grad:
            warnings.warn(
                "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. "
                "Its .grad attribute won't be populated during autograd.backward(). If you "
                "indeed want the gradient for a non-leaf Tensor, use .retain_grad() on the "
                "non-leaf Tensor.",
                UserWarning,
                stacklevel=2,
            )
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got {type(value).__name__}")
            if value._data.shape != self._data.shape:
                raise RuntimeError(
                    f"assigned grad has data of a different size: got shape {tuple(value.shape)}, "
                    f"expected {tuple(self.shape)}"
                )
            if value._data.dtype != self._data.dtype:
                raise RuntimeError(
                    f"assigned grad has data of a different type: got {value.dtype}, expected {self.dtype}"
                )
        self._grad = value

    @grad.deleter
    def grad(self):
        self._grad = None

    @property
    def data(self) -> "Tensor":
        """The same memory, outside autograd and with its own version counter."""
        t = _wrap(self._data)
        return t

    @data.setter
    def data(self, value: "Tensor"):
        self._data = value._data

    def detach(self) -> "Tensor":
        """A tensor sharing memory (and version counter) with this one, with no history."""
        t = _new(Tensor)
        t._data = self._data
        t._vc = self._vc
        if self._is_inference:
            t._is_inference = True
        return t

    def detach_(self) -> "Tensor":
        if self._base is not None:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self._grad_fn = None
        self._requires_grad = False
        self._output_nr = 0
        return self

    def retain_grad(self) -> None:
        fn = self.grad_fn
        if fn is None:
            if not self._requires_grad:
                raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
            return  # leaves keep their gradient anyway
        if self._retains_grad:
            return
        fn._retain_grad(self._output_nr, weakref.ref(self))
        self._retains_grad = True

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is computed; it may return a
        replacement gradient. Returns a handle whose ``remove()`` unregisters it."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        from .autograd.hooks import RemovableHandle

        fn = self.grad_fn
        if fn is not None:
            return fn._register_tensor_prehook(self._output_nr, hook)
        if self._hooks is None:
            self._hooks = {}
        return RemovableHandle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` on a leaf once per backward, after ``.grad`` is final."""
        if self.grad_fn is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self._requires_grad:
            raise RuntimeError(
                "cannot register a hook on a tensor that doesn't require gradient"
            )
        from .autograd.hooks import RemovableHandle

        if self._post_acc_hooks is None:
            self._post_acc_hooks = {}
        return RemovableHandle(self._post_acc_hooks, hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        from .autograd.engine import backward

        backward(self, gradient, retain_graph, create_graph, inputs=inputs)

    # ------------------------------------------------------------ conversions
    def type(self, dtype=None, non_blocking=False, **kwargs):
        """With no argument, the legacy type name (``'torch.FloatTensor'``,
        ``'torch.cuda.LongTensor'``: PyTorch's strings, which ported code compares
        with); otherwise this tensor converted to ``dtype`` (a dtype, a legacy type
        such as ``distgrad.DoubleTensor``, or its name), or itself if it has it."""
        if dtype is None:
            prefix = "torch.cuda." if backend.is_device_array(self._data) else "torch."
            return prefix + _TYPE_NAMES[self.dtype.name]
        cuda = None
        if isinstance(dtype, str):
            cuda, d = _parse_type_name(dtype)
        elif isinstance(dtype, _LegacyType):
            d = dtype.dtype
        else:
            d = _dt.to_dtype(dtype)
        device = None
        if cuda and not backend.is_device_array(self._data):
            device = "cuda"
        elif cuda is False and backend.is_device_array(self._data):
            device = "cpu"
        if d.np == self._data.dtype and device is None:
            return self
        from .ops.shape import to

        return to(self, dtype=d, device=device, non_blocking=non_blocking)

    def item(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self._data.size} elements cannot be converted to Scalar; "
                "index one element first, or use .tolist()"
            )
        return backend.item(self._data)

    def tolist(self):
        return backend.to_numpy(self._data).tolist()

    def pin_memory(self, device=None) -> "Tensor":
        """A copy in page-locked host memory (for asynchronous copies to the GPU);
        without a GPU it raises, as PyTorch does."""
        from .cuda import _pin_memory

        return _pin_memory(self)

    def is_pinned(self, device=None) -> bool:
        from .cuda import _is_pinned

        return _is_pinned(self)

    def numpy(self, *, force: bool = False):
        if self.requires_grad and not force:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead."
            )
        if backend.is_device_array(self._data) and not force:
            raise TypeError(
                f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() to copy "
                "the tensor to host memory first."
            )
        return backend.to_numpy(self._data)

    def __array__(self, dtype=None, copy=None):
        arr = backend.to_numpy(self._data)
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(backend.item(self._data))

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"Boolean value of Tensor with {self._data.size} values is ambiguous; "
                "use .any() or .all()"
            )
        return bool(backend.item(self._data))

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __repr__(self):
        from ._tensor_str import format_tensor

        suffixes = []
        if self.device.type != "cpu":
            suffixes.append(f"device='{self.device}'")
        fn = self.grad_fn
        if fn is not None:
            suffixes.append(f"grad_fn=<{fn.name()}>")
        elif self._requires_grad:
            suffixes.append("requires_grad=True")
        d = self.dtype
        shown = d not in (_dt.get_default_dtype(), _dt.int64, _dt.bool)
        return format_tensor(backend.to_numpy(self._data), suffixes, repr(d) if shown else None)

    def __format__(self, spec):
        if self._data.ndim == 0:
            return format(self.item(), spec)
        return repr(self)

    def __reduce_ex__(self, protocol):
        return (_rebuild, (backend.to_numpy(self._data).copy(), self._requires_grad))


def _rebuild(arr, requires_grad):
    t = _wrap(arr)
    t._requires_grad = requires_grad
    return t


def _wrap_dim(dim: int, ndim: int, op: str) -> int:
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(
            f"{op}: Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})"
        )
    return dim % n if ndim else 0


def _refresh_view(t: Tensor) -> None:
    """Rebuild a view's history from its base after either was modified in place."""
    from .autograd.grad_mode import enable_grad

    base = t._base
    t._view_version = t._vc[0]
    if t._view_nograd or (not base._requires_grad and base._grad_fn is None):
        return
    with enable_grad():
        fresh = t._view_fn(base)
    t._grad_fn = fresh._grad_fn
    t._output_nr = fresh._output_nr
    t._requires_grad = fresh._requires_grad


# ------------------------------------------------------------- legacy constructors
_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor", "bfloat16": "BFloat16Tensor",
               "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor",
               "int8": "CharTensor", "uint8": "ByteTensor", "bool": "BoolTensor"}
_BY_TYPE_NAME = {v: k for k, v in _TYPE_NAMES.items()}


def _parse_type_name(name: str):
    """(on cuda?, dtype) for 'torch.FloatTensor', 'torch.cuda.LongTensor' (or
    'distgrad.' forms); PyTorch's ValueError for anything else."""
    for prefix, cuda in (("torch.cuda.", True), ("distgrad.cuda.", True), ("torch.", False),
                         ("distgrad.", False)):
        if name.startswith(prefix) and name[len(prefix):] in _BY_TYPE_NAME:
            return cuda, _dt.to_dtype(_BY_TYPE_NAME[name[len(prefix):]])
    raise ValueError(f"invalid type: '{name}'")


def _legacy_new(dtype, args, device, alias_any=False):
    import numbers

    from .ops.creation import tensor as _tensor
    from .ops.creation import zeros

    if not args:
        return zeros((0,), dtype=dtype, device=device)
    if len(args) == 1 and isinstance(args[0], Tensor):
        t = args[0]
        if t._data.dtype != dtype.np and not alias_any:
            raise TypeError(f"expected {dtype} (got {t.dtype})")
        return t.detach()
    if len(args) == 1 and isinstance(args[0], Size):
        args = tuple(args[0])
    elif len(args) == 1 and not isinstance(args[0], numbers.Integral):
        data = args[0]
        if isinstance(data, numbers.Number):
            raise TypeError(f"new(): data must be a sequence (got {type(data).__name__})")
        return _tensor(data, dtype=dtype, device=device)
    for a in args:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(
                f"new(): argument 'size' must be a tuple of ints, but found element of type "
                f"{type(a).__name__}")
    return zeros(tuple(int(a) for a in args), dtype=dtype, device=device)


class _LegacyType(type):
    """The metaclass of ``FloatTensor`` and its kind: ``isinstance(x, FloatTensor)``
    asks for a CPU tensor of that dtype, as in PyTorch."""

    def __instancecheck__(cls, obj):
        return (isinstance(obj, Tensor) and obj._data.dtype == cls.dtype.np
                and not backend.is_device_array(obj._data))

    def __call__(cls, *args, device=None):
        return _legacy_new(cls.dtype, args, device)

    def __repr__(cls):
        return f"<class 'distgrad.{cls.__name__}'>"


def _legacy_type(name: str):
    d = _dt.to_dtype(_BY_TYPE_NAME[name])
    return _LegacyType(name, (), {"dtype": d, "__doc__": f"Legacy constructor of {d} tensors."})


FloatTensor = _legacy_type("FloatTensor")
DoubleTensor = _legacy_type("DoubleTensor")
HalfTensor = _legacy_type("HalfTensor")
LongTensor = _legacy_type("LongTensor")
IntTensor = _legacy_type("IntTensor")
ShortTensor = _legacy_type("ShortTensor")
CharTensor = _legacy_type("CharTensor")
ByteTensor = _legacy_type("ByteTensor")
BoolTensor = _legacy_type("BoolTensor")
LEGACY_TYPES = {t.__name__: t for t in (FloatTensor, DoubleTensor, HalfTensor, LongTensor, IntTensor,
                                        ShortTensor, CharTensor, ByteTensor, BoolTensor)}
