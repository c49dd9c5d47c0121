"""More of PyTorch's ``Tensor`` methods and their functions: inverse hyperbolic
functions, aliases (``greater``, ``multiply``, ...), the in-place forms of comparisons,
logical, bitwise and unary ops, ``addmv``/``addr``/``addbmm``, ``matrix_power``,
``cov``/``corrcoef``, ``histc``, ``renorm``, ``index_reduce``, the random in-place
fills (``exponential_``, ``cauchy_``, ...) and tensor queries (``nbytes``,
``get_device``, ``data_ptr``, ...).

Most are built from other ops, so their gradients (of any order) are the composite's;
``named`` gives the last node PyTorch's name where PyTorch records one of its own.
"""
from __future__ import annotations

import math
import warnings

from .. import dtype as _dt
from ..random import rng
from . import creation, linalg, pointwise, reduction, shape, shape_extra
from ._util import Tensor, array_module, wrap_dim
from .inplace import _inplace_of, apply_inplace
from .math_extra import _unary, named

# ------------------------------------------------------- inverse hyperbolics
asinh = _unary("asinh", "AsinhBackward0", lambda xp, x: xp.arcsinh(x), lambda g, x: g * (x * x + 1).rsqrt())
acosh = _unary("acosh", "AcoshBackward0", lambda xp, x: xp.arccosh(x), lambda g, x: g * (x * x - 1).rsqrt())
atanh = _unary("atanh", "AtanhBackward0", lambda xp, x: xp.arctanh(x), lambda g, x: g / (1 - x * x))
arcsinh, arccosh, arctanh = asinh, acosh, atanh

# -------------------------------------------------------------------- aliases
greater, greater_equal, less, less_equal = pointwise.gt, pointwise.ge, pointwise.lt, pointwise.le
multiply, divide = pointwise.mul, pointwise.div


def argwhere(input):
    """The indices of the nonzero elements, one row each (as ``nonzero()``)."""
    return pointwise.nonzero(input)


# ------------------------------------------------------- in-place variants
_CMP_NODES = {"eq": "EqBackward0", "ne": "NeBackward0", "lt": "LtBackward0", "le": "LeBackward0",
              "gt": "GtBackward0", "ge": "GeBackward0"}


def _same_dtype_inplace(name, fn):
    """In-place form of an op whose result (bool) is cast back to ``self``'s dtype. In a
    graph the result stays in it with a zero gradient, as PyTorch's."""
    node = _CMP_NODES.get(fn.__name__)

    def out_of_place(x, *a, **k):
        r = fn(x, *a, **k).to(x.dtype)
        if not x.requires_grad:
            return r
        off = creation.zeros((), dtype=_dt.bool, device=x.device)
        r = pointwise.where(off, x, r)
        return named(r, node) if node else r

    def op(self, *args, **kwargs):
        return apply_inplace(self, name, out_of_place, args, kwargs)
    op.__name__ = name
    op.__doc__ = f"In-place {name[:-1]}."
    return op


def _inplace_table():
    out = {}
    for n in ["eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "logical_not"]:
        out[n + "_"] = _same_dtype_inplace(n + "_", getattr(pointwise, n))
    for n, f in (("greater", pointwise.gt), ("greater_equal", pointwise.ge), ("less", pointwise.lt),
                 ("less_equal", pointwise.le)):
        out[n + "_"] = _same_dtype_inplace(n + "_", f)
    for n in ["bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "cos", "sin", "expm1", "log1p", "rsqrt", "reciprocal", "erf"]:
        out[n + "_"] = _inplace_of(n + "_", getattr(pointwise, n))
    out["multiply_"] = _inplace_of("multiply_", pointwise.mul)
    out["divide_"] = _inplace_of("divide_", pointwise.div)
    out["remainder_"] = _inplace_of("remainder_", pointwise.remainder)
    out["floor_divide_"] = _inplace_of("floor_divide_", pointwise.floor_divide)
    out["cumsum_"] = _inplace_of("cumsum_", reduction.cumsum)
    out["addmm_"] = _inplace_of("addmm_", linalg.addmm)
    out["baddbmm_"] = _inplace_of("baddbmm_", linalg.baddbmm)
    for n in ["asinh", "acosh", "atanh", "arcsinh", "arccosh", "arctanh"]:
        out[n + "_"] = _inplace_of(n + "_", globals()[n])
    for n in ["addmv", "addr", "addbmm", "index_reduce"]:
        out[n + "_"] = _inplace_of(n + "_", globals()[n])
    return out


# ---------------------------------------------------------- add* products
def _scaled_add(input, product, beta, alpha, name):
    right = product if alpha == 1 else product * alpha
    if beta == 0:  # input's values are ignored (NaN included); its gradient is zero
        if isinstance(input, Tensor) and input.requires_grad:
            off = creation.zeros((), dtype=_dt.bool, device=input.device)
            right = right + pointwise.where(off, input, 0.0)
        return named(right, name)
    left = input if beta == 1 else input * beta
    return named(left + right, name)


def addmv(input, mat, vec, *, beta=1, alpha=1):
    """``beta * input + alpha * (mat @ vec)``."""
    return _scaled_add(input, linalg.mv(mat, vec), beta, alpha, "AddmvBackward0")


def addr(input, vec1, vec2, *, beta=1, alpha=1):
    """``beta * input + alpha * outer(vec1, vec2)``."""
    return _scaled_add(input, linalg.outer(vec1, vec2), beta, alpha, "AddrBackward0")


def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """``beta * input + alpha * sum_i(batch1[i] @ batch2[i])``."""
    return _scaled_add(input, reduction.sum(linalg.bmm(batch1, batch2), 0), beta, alpha,
                       "AddbmmBackward0")


# ---------------------------------------------------------------- linalg
def matrix_power(input, n):
    """``input`` (a square matrix or a batch of them) to the integer power ``n``;
    negative powers invert first."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"matrix_power(): argument 'n' must be int, not {type(n).__name__}")
    if input.dim() < 2 or input.shape[-1] != input.shape[-2]:
        raise RuntimeError(
            "linalg.matrix_power: A must be batches of square matrices, but they are "
            f"{input.shape[-2] if input.dim() >= 2 else 1} by {input.shape[-1] if input.dim() else 1} matrices")
    if n == 0:
        eye = creation.eye(input.shape[-1], dtype=input.dtype, device=input.device)
        eye = shape.expand(eye, tuple(input.shape)).clone()
        if not input.requires_grad:
            return eye
        off = creation.zeros((), dtype=_dt.bool, device=input.device)
        return named(pointwise.where(off, input, eye), "CopyBackwards")  # zero gradient, as PyTorch
    if n < 0:
        from .linalg_extra import inverse
        input, n = inverse(input), -n
    if n == 1:
        return input.clone()
    result, base = None, input
    while n:
        if n & 1:
            result = base if result is None else linalg.matmul(result, base)
        n >>= 1
        if n:
            base = linalg.matmul(base, base)
    return result


def dist(input, other, p=2):
    """The ``p``-norm of ``input - other``."""
    from .linalg_extra import vector_norm

    return named(vector_norm(pointwise.sub(input, other), p), "DistBackward0")


def renorm(input, p, dim, maxnorm):
    """Each slice along ``dim`` rescaled to ``p``-norm at most ``maxnorm``."""
    from .linalg_extra import vector_norm

    if input.dim() <= 1:
        raise RuntimeError(f"renorm: input needs at least 2 dimensions, got {input.dim()} dimensions")
    if maxnorm < 0:
        raise RuntimeError(f"renorm: expected maxnorm to be >= 0 but got {maxnorm}")
    dim = wrap_dim(dim, input.dim(), "renorm")
    others = tuple(d for d in range(input.dim()) if d != dim)
    norm = vector_norm(input, p, dim=others, keepdim=True)
    factor = pointwise.where(norm > maxnorm, maxnorm / (norm + 1e-7), 1.0)
    return named(input * factor.to(input.dtype), "RenormBackward0")


def histc(input, bins=100, min=0, max=0):
    """Histogram of ``input`` with ``bins`` equal bins over ``[min, max]`` (the data's
    range when both are 0); values outside are ignored."""
    if not input.is_floating_point():
        raise RuntimeError(f'"histogram_cpu" not implemented for \'{_torch_name(input.dtype)}\'')
    if bins <= 0:
        raise RuntimeError("torch.histc(): bins must be > 0, but got " + str(bins))
    xp = array_module(input._data)
    a = input._data.reshape(-1).astype("float64")
    lo, hi = float(min), float(max)
    if lo == hi and a.size:
        lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    if lo > hi:
        raise RuntimeError("torch.histc(): max must be larger than min")
    keep = a[(a >= lo) & (a <= hi)]
    pos = ((keep - lo) * bins / (hi - lo)).astype("int64")
    pos = xp.minimum(pos, bins - 1)
    counts = xp.bincount(pos, minlength=bins)[:bins]
    return creation.tensor(counts.astype(input._data.dtype), device=input.device)


def _torch_name(d):
    return {"float32": "Float", "float64": "Double", "int64": "Long", "int32": "Int",
            "bool": "Bool"}.get(d.name if hasattr(d, "name") else str(d), str(d))


def cov(input, *, correction=1, fweights=None, aweights=None):
    """Covariance of the variables in the rows of ``input`` (observations in columns)."""
    if input.dim() > 2:
        raise RuntimeError(f"cov(): expected input to have two or fewer dimensions but got an input with {input.dim()} dimensions")
    x = input.reshape(1, -1) if input.dim() < 2 else input
    if not x.is_floating_point():
        x = x.to(_dt.get_default_dtype())
    n_obs = x.shape[1]
    w = fweights
    if aweights is not None:
        w = aweights if w is None else w * aweights
    if w is None:
        avg = reduction.mean(x, 1)
        w_sum = float(n_obs)
    else:
        w = w.to(x.dtype)
        w_sum = reduction.sum(w)
        avg = reduction.sum(x * w, 1) / w_sum
    if w is not None and aweights is not None and correction != 0:
        norm_factor = w_sum - correction * reduction.sum(w * aweights.to(x.dtype)) / w_sum
    else:
        norm_factor = w_sum - correction
    nf = float(norm_factor.item()) if isinstance(norm_factor, Tensor) else norm_factor
    if nf <= 0:
        warnings.warn("cov(): degrees of freedom is <= 0. Correction should be strictly less than "
                      "the number of observations.", UserWarning, stacklevel=2)
        norm_factor = norm_factor * 0 if isinstance(norm_factor, Tensor) else 0.0
    xm = x - shape.unsqueeze(avg, 1)
    c = linalg.mm(xm, shape.t(xm * w if w is not None else xm))
    return shape.squeeze(c / norm_factor)


def corrcoef(input):
    """Pearson correlation coefficients of the rows of ``input``."""
    c = cov(input)
    if c.dim() == 0:
        return c / c
    d = shape_extra.diagonal(c)
    sd = pointwise.sqrt(d)
    c = c / shape.unsqueeze(sd, 1)
    c = c / shape.unsqueeze(sd, 0)
    return pointwise.clamp(c, -1, 1)


# ------------------------------------------------------------ shape & views
def split_with_sizes(input, split_sizes, dim=0):
    dim = wrap_dim(dim, input.dim(), "split_with_sizes")
    sizes = [int(s) for s in split_sizes]
    if sum(sizes) != input.shape[dim]:
        raise RuntimeError(
            f"split_with_sizes expects split_sizes to sum exactly to {input.shape[dim]} (input "
            f"tensor's size at dimension {dim}), but got split_sizes={sizes}")
    return shape.split(input, sizes, dim)


def unsafe_split(input, split_size, dim=0):
    return shape.split(input, split_size, dim)


def unsafe_chunk(input, chunks, dim=0):
    return shape.chunk(input, chunks, dim)


def narrow_copy(input, dim, start, length):
    """``narrow`` as a new tensor (no view)."""
    return shape.narrow(input, dim, start, length).clone()


def adjoint(input):
    """The conjugate transpose of the last two dims (the transpose, for real tensors)."""
    return shape._mT(input)


def _H(self):
    if self.dim() == 0:
        return self
    if self.dim() != 2:
        raise RuntimeError(
            f"tensor.H is only supported on matrices (2-D tensors). Got {self.dim()}-D tensor.")
    return shape.transpose(self, 0, 1)


def conj(input):
    """The conjugate: ``input`` itself for real tensors."""
    return input


resolve_conj = resolve_neg = conj


def is_conj(input) -> bool:
    return False


is_neg = is_conj


def index_reduce(input, dim, index, source, reduce, *, include_self=True):
    """Reduce (``prod``, ``mean``, ``amax``, ``amin``) the slices of ``source`` into the
    slices of ``input`` that ``index`` names along ``dim``."""
    if reduce not in ("prod", "mean", "amax", "amin"):
        raise RuntimeError(f"index_reduce(): Expected reduce to be one of prod, mean, amax or amin but got {reduce}.")
    dim = wrap_dim(dim, input.dim(), "index_reduce")
    if index.dim() > 1:
        raise RuntimeError("index_reduce_(): Index is supposed to be a vector")
    view = [1] * source.dim()
    if source.dim():
        view[dim] = -1
    idx = shape.expand(index.reshape(view), tuple(source.shape))
    return named(shape_extra.scatter_reduce(input, dim, idx, source, reduce, include_self=include_self),
                 "IndexReduceBackward0")


# ------------------------------------------------------------- random fills
def _float_fill(self, name, draw):
    if not self.is_floating_point():
        raise RuntimeError(f"{name} expects a floating point tensor, got {self.dtype}")
    return creation._fill_random(self, name, draw(self._data.shape))


def exponential_(self, lambd=1.0, *, generator=None):
    if lambd <= 0:
        raise RuntimeError(f"exponential_ expects lambda > 0.0, but found lambda={lambd}")
    return _float_fill(self, "exponential_", lambda s: rng(generator).exponential(1.0 / lambd, s))


def log_normal_(self, mean=1.0, std=2.0, *, generator=None):
    if std <= 0:
        raise RuntimeError(f"log_normal_ expects std > 0.0, but found std={std}")
    return _float_fill(self, "log_normal_", lambda s: rng(generator).lognormal(mean, std, s))


def cauchy_(self, median=0.0, sigma=1.0, *, generator=None):
    return _float_fill(self, "cauchy_",
                       lambda s: median + sigma * rng(generator).standard_cauchy(s))


def geometric_(self, p, *, generator=None):
    if not 0 < p < 1:
        raise RuntimeError(f"geometric_ expects p to be in (0, 1), but got p={p}")
    return creation._fill_random(self, "geometric_", rng(generator).geometric(p, self._data.shape))


# --------------------------------------------------------------- queries
def _nbytes(self) -> int:
    return int(self._data.nbytes)


def _itemsize(self) -> int:
    return int(self._data.itemsize)


def _is_cpu(self) -> bool:
    return self.device.type == "cpu"


def is_signed(self) -> bool:
    return self._data.dtype.kind in "if" or self.dtype == _dt.bfloat16


def is_same_size(self, other) -> bool:
    return tuple(self.shape) == tuple(other.shape)


def get_device(self) -> int:
    """-1 for a CPU tensor, else the GPU's index."""
    d = self.device
    return -1 if d.type == "cpu" else (d.index or 0)


def _address(arr) -> int:
    if hasattr(arr, "__array_interface__"):
        return int(arr.__array_interface__["data"][0])
    return int(arr.data.ptr)


def data_ptr(self) -> int:
    """The address of the tensor's first element."""
    return _address(self._data) if self._data.size else 0


def storage_offset(self) -> int:
    """Elements between the start of the storage (the base's first element) and this
    tensor's first one."""
    base = self._base
    if base is None or not self._data.size or not base._data.size:
        return 0
    return (_address(self._data) - _address(base._data)) // self._data.itemsize + storage_offset(base)


def _output_nr(self) -> int:
    return self._output_nr


def new(self, *args, device=None):
    """Legacy constructor of ``self``'s dtype: ``new()`` (empty), ``new(sizes)``
    (uninitialized: zeros here), ``new(data)`` or ``new(tensor)`` (an alias)."""
    from ..tensor import _legacy_new

    return _legacy_new(self.dtype, args, device or self.device)


def resize_(self, *sizes, memory_format=None):
    """Give ``self`` the shape ``sizes``. With the same number of elements the values
    keep their (row-major) order; when it grows, the old values come first and the new
    elements (uninitialized in PyTorch) are zeros."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    sizes = tuple(int(s) for s in sizes)
    if any(s < 0 for s in sizes):
        raise RuntimeError(f"Trying to create tensor with negative dimension {min(sizes)}: {list(sizes)}")
    if self.requires_grad:
        raise RuntimeError("cannot resize variables that require grad")
    if self._base is not None:
        raise RuntimeError("resize_: cannot resize a view of another tensor; resize a clone instead")
    xp = array_module(self._data)
    n = math.prod(sizes)
    old = self._data.reshape(-1)
    new_arr = xp.zeros(n, self._data.dtype)
    k = min(n, old.size)
    new_arr[:k] = old[:k]
    self._data = new_arr.reshape(sizes)
    self._vc[0] += 1
    return self


def resize_as_(self, other, memory_format=None):
    return resize_(self, tuple(other.shape))


def _broadcast_to(self, *size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return shape.broadcast_to(self, size)


def _prelu(self, weight):
    from ..nn.functional import prelu
    return prelu(self, weight)


def _hardshrink(self, lambd=0.5):
    from ..nn.functional import hardshrink
    return hardshrink(self, lambd)


def _multinomial(self, num_samples, replacement=False, *, generator=None):
    return creation.multinomial(self, num_samples, replacement, generator=generator)


def _bernoulli(self, p=None, *, generator=None):
    from .._sampling import bernoulli
    if p is None:
        return bernoulli(self, generator=generator)
    return bernoulli(self, p, generator=generator)


# Shared by distgrad.<name> and Tensor.<name>.
SHARED = """asinh acosh atanh arcsinh arccosh arctanh greater greater_equal less less_equal multiply
    divide argwhere addmv addr addbmm matrix_power dist renorm histc cov corrcoef split_with_sizes
    unsafe_split unsafe_chunk narrow_copy adjoint conj resolve_conj resolve_neg is_conj is_neg
    index_reduce"""
# Functions only.
FUNCTIONS_ONLY = {"prelu": _prelu, "hardshrink": _hardshrink}
# Methods only.
METHODS = {
    "exponential_": exponential_, "log_normal_": log_normal_, "cauchy_": cauchy_,
    "geometric_": geometric_, "is_signed": is_signed, "is_same_size": is_same_size,
    "get_device": get_device, "data_ptr": data_ptr, "storage_offset": storage_offset, "new": new,
    "resize_": resize_, "resize_as_": resize_as_, "prelu": _prelu, "hardshrink": _hardshrink,
    "multinomial": _multinomial, "bernoulli": _bernoulli, "broadcast_to": _broadcast_to,
}
PROPERTIES = {"nbytes": _nbytes, "itemsize": _itemsize, "is_cpu": _is_cpu, "H": _H,
              "mH": shape._mT, "output_nr": _output_nr}
