"""Every op, registered once: this module binds the op functions to ``Tensor`` as
methods and operators, and lists the public functions ``distgrad`` re-exports."""
from __future__ import annotations

import functools as _functools
import warnings as _warnings

from .. import dtype as _dt
from .. import tensor as _tensor_mod
from ..autograd.grad_mode import no_grad as _no_grad
from ..autograd.grad_mode import state as _grad_state
from ..tensor import Tensor
from . import (
    creation,
    indexing,
    inplace,
    linalg,
    linalg_extra,
    math_extra,
    pointwise,
    reduction,
    shape,
    shape_extra,
    sorting,
)

# Ops that are both ``distgrad.<name>`` functions and ``Tensor.<name>`` methods.
_SHARED = {
    pointwise: """add sub rsub mul div pow neg abs sign exp expm1 log log1p sqrt rsqrt reciprocal
        square sin cos tanh sigmoid erf relu clamp clip maximum minimum nonzero floor ceil
        round trunc isnan isinf isfinite logical_not logical_and logical_or logical_xor
        bitwise_not bitwise_and bitwise_or bitwise_xor eq ne lt le gt ge equal allclose isclose
        floor_divide remainder""",
    reduction: """sum nansum mean prod max min amax amin argmax argmin all any var std norm
        logsumexp softmax log_softmax cumsum""",
    linalg: "matmul mm bmm dot mv outer addmm baddbmm",
    sorting: "sort argsort msort topk kthvalue",
    shape: """view reshape flatten unflatten transpose swapaxes t permute movedim squeeze unsqueeze
        expand narrow split chunk unbind select clone contiguous flip repeat""",
    indexing: "gather scatter scatter_add index_select index_add index_put masked_fill masked_select tril triu",
    math_extra: """acos asin atan atan2 arctan2 arccos arcsin arctan cosh sinh tan log10 log2 exp2 erfc
        erfinv frac fmod lgamma digamma polygamma logit xlogy hypot lerp addcmul addcdiv clamp_min
        clamp_max sgn signbit isneginf isposinf isreal nan_to_num negative subtract true_divide
        not_equal absolute heaviside logaddexp logaddexp2 sinc deg2rad rad2deg float_power fmax fmin
        copysign positive cumprod cummax cummin logcumsumexp nanmean median nanmedian mode quantile
        nanquantile count_nonzero aminmax is_complex is_nonzero""",
    shape_extra: """roll rot90 tile repeat_interleave diag diagonal diag_embed diagflat trace diff
        fliplr flipud ravel moveaxis swapdims take take_along_dim index_fill index_copy
        masked_scatter scatter_reduce unique unique_consecutive bincount kron inner vdot cross
        tensor_split hsplit vsplit dsplit""",
    linalg_extra: "det logdet slogdet inverse pinverse svd matrix_exp",
}

# Ops that are functions only.
_FUNCTIONS = {
    pointwise: "where",
    reduction: "var_mean std_mean",
    linalg: "einsum",
    shape: "cat concat concatenate stack hstack vstack broadcast_tensors broadcast_to",
    creation: """tensor as_tensor from_numpy zeros ones empty full arange linspace eye randn rand
        randint randperm normal multinomial zeros_like ones_like empty_like full_like randn_like
        rand_like randint_like""",
    indexing: "",
    math_extra: "finfo iinfo is_floating_point result_type promote_types can_cast broadcast_shapes",
    shape_extra: """tril_indices triu_indices meshgrid atleast_1d atleast_2d atleast_3d column_stack
        dstack searchsorted bucketize isin unravel_index tensordot cdist block_diag cartesian_prod
        combinations vander""",
}

# Methods only.
_METHODS = {
    reduction: "sum_to_size",
    shape: "view_as reshape_as expand_as type_as to cuda cpu",
    creation: """new_tensor new_zeros new_ones new_empty new_full uniform_ normal_ bernoulli_
        random_""",
    inplace: """add_ sub_ mul_ div_ pow_ copy_ fill_ zero_ relu_ clamp_ clip_ masked_fill_
        index_put_ scatter_ scatter_add_ index_add_ neg_ exp_ log_ sqrt_ sigmoid_ tanh_ abs_
        tril_ triu_ polygamma_ float_power_ fill_diagonal_""",
    shape_extra: "unfold",
}

FUNCTIONS = {}
for _mod, _names in list(_SHARED.items()) + list(_FUNCTIONS.items()):
    for _n in _names.split():
        FUNCTIONS[_n] = getattr(_mod, _n)
FUNCTIONS.update(_tensor_mod.LEGACY_TYPES)  # FloatTensor, LongTensor, ...


# ------------------------------------------------------------------ out=
# The functions that take ``out=`` in PyTorch. The registry wraps them once: the
# op runs as usual and its result is written into ``out`` (resized when its shape
# differs, as PyTorch does), which is returned.
_OUT = ["add", "sub", "mul", "div", "pow", "neg", "abs", "sign", "exp", "expm1", "log", "log1p", "sqrt", "rsqrt", "reciprocal", "square", "sin", "cos", "tanh", "sigmoid", "erf", "clamp", "clip", "maximum", "minimum", "nonzero", "floor", "ceil", "round", "trunc", "logical_not", "logical_and", "logical_or", "logical_xor", "bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor", "eq", "ne", "lt", "le", "gt", "ge", "floor_divide", "remainder", "sum", "nansum", "mean", "prod", "max", "min", "amax", "amin", "argmax", "argmin", "all", "any", "var", "std", "norm", "logsumexp", "softmax", "log_softmax", "cumsum", "matmul", "mm", "bmm", "dot", "mv", "outer", "addmm", "baddbmm", "einsum", "gather", "scatter", "scatter_add", "index_select", "index_add", "masked_select", "tril", "triu", "where", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "sort", "argsort", "topk", "kthvalue", "var_mean", "std_mean", "zeros", "ones", "empty", "full", "arange", "linspace", "eye", "randn", "rand", "randint", "randperm", "normal", "multinomial", "acos", "asin", "atan", "atan2", "arctan2", "arccos", "arcsin", "arctan", "cosh", "sinh", "tan", "log10", "log2", "exp2", "erfc", "erfinv", "frac", "fmod", "lgamma", "digamma", "polygamma", "logit", "xlogy", "hypot", "lerp", "addcmul", "addcdiv", "clamp_min", "clamp_max", "sgn", "signbit", "isneginf", "isposinf", "nan_to_num", "negative", "subtract", "true_divide", "not_equal", "absolute", "heaviside", "logaddexp", "logaddexp2", "sinc", "deg2rad", "rad2deg", "float_power", "fmax", "fmin", "copysign", "cumprod", "cummax", "cummin", "logcumsumexp", "nanmean", "median", "nanmedian", "mode", "quantile", "nanquantile", "aminmax", "diag", "diff", "take", "take_along_dim", "kron", "inner", "vdot", "cross", "index_copy", "tensordot", "inverse", "svd", "column_stack", "dstack", "searchsorted", "bucketize"]

# PyTorch's scalar-type names in its messages ("Float", "Long"), from the legacy type names.
_TORCH_TYPE = {k: v.removesuffix("Tensor") for k, v in _tensor_mod._TYPE_NAMES.items()}


def _can_cast(src, dst) -> bool:
    """PyTorch's canCast: no float to integral, no non-bool to bool."""
    if _dt.kind_of(src) == "f" and dst.kind in "biu":
        return False
    return not (src.kind != "b" and dst.kind == "b")


def _any_requires_grad(obj) -> bool:
    if isinstance(obj, Tensor):
        return obj.requires_grad
    if isinstance(obj, (list, tuple)):
        return any(_any_requires_grad(x) for x in obj)
    if isinstance(obj, dict):
        return any(_any_requires_grad(x) for x in obj.values())
    return False


def _write_out(name, out, result):
    """Copy ``result`` into ``out``: resized (with PyTorch's warning when ``out`` had
    elements) if the shapes differ, cast to ``out``'s dtype where PyTorch allows it."""
    from ..backend import array_module, device_of

    if not isinstance(out, Tensor):
        raise TypeError(f"{name}(): argument 'out' must be Tensor, not {type(out).__name__}")
    r = result._data
    o = out._data
    if not _can_cast(r.dtype, o.dtype):
        raise RuntimeError(
            f"result type {_TORCH_TYPE.get(result.dtype.name, result.dtype.name)} can't be cast to the "
            f"desired output type {_TORCH_TYPE.get(out.dtype.name, out.dtype.name)}")
    if device_of(r) != device_of(o):
        raise RuntimeError(
            f"Expected out tensor to have device {device_of(r)}, but got {device_of(o)} instead")
    if o.shape != r.shape:
        if out._base is not None:
            raise RuntimeError(
                f"{name}(): cannot resize the out tensor, a view of another tensor, from shape "
                f"{list(o.shape)} to {list(r.shape)}; pass an out tensor of the result's shape")
        if o.size:
            _warnings.warn(
                f"An output with one or more elements was resized since it had shape {list(o.shape)}, "
                f"which does not match the required output shape {list(r.shape)}. This behavior is "
                "deprecated, and in a future PyTorch release outputs will not be resized unless "
                "they have zero elements. You can explicitly reuse an out tensor t by resizing it, "
                "inplace, to zero elements with t.resize_(0).", UserWarning, stacklevel=4)
        out._data = array_module(o).empty(r.shape, o.dtype)
    out._data[...] = r
    out._vc[0] += 1
    return out


def _with_out(name, fn):
    @_functools.wraps(fn)
    def wrapper(*args, out=None, **kwargs):
        if out is None:
            return fn(*args, **kwargs)
        if (_grad_state.enabled and not _grad_state.inference
                and (_any_requires_grad((args, kwargs)) or _any_requires_grad(out))):
            raise RuntimeError(
                f"{name}(): functions with out=... arguments don't support automatic "
                "differentiation, but one of the arguments requires grad.")
        with _no_grad():
            result = fn(*args, **kwargs)
        if isinstance(result, tuple):
            if not isinstance(out, (tuple, list)) or len(out) != len(result):
                raise TypeError(
                    f"{name}(): argument 'out' must be a tuple of {len(result)} Tensors")
            for o, r in zip(out, result):
                _write_out(name, o, r)
            return type(result)(*out) if hasattr(result, "_fields") else tuple(out)
        return _write_out(name, out, result)

    wrapper.__wrapped__ = fn
    return wrapper


for _n in _OUT:
    FUNCTIONS[_n] = _with_out(_n, FUNCTIONS[_n])

for _mod, _names in list(_SHARED.items()) + list(_METHODS.items()):
    for _n in _names.split():
        setattr(Tensor, _n, getattr(_mod, _n))

for _name, _d in (("float", _dt.float32), ("double", _dt.float64), ("half", _dt.float16),
                  ("bfloat16", _dt.bfloat16), ("long", _dt.int64), ("int", _dt.int32), ("short", _dt.int16), ("bool", _dt.bool),
                  ("byte", _dt.uint8)):
    setattr(Tensor, _name, shape._cast(_d))

for _n, _f in {**inplace._make_inplace(), **inplace._shape_inplace_ops()}.items():
    setattr(Tensor, _n, _f)

Tensor.where = lambda self, condition, other: pointwise.where(condition, self, other)
Tensor.T = property(shape._T)
Tensor.mT = property(shape._mT)
Tensor.__getitem__ = indexing.getitem
Tensor.__setitem__ = inplace.setitem

Tensor.__add__ = Tensor.__radd__ = pointwise.add
Tensor.__sub__ = pointwise.sub
Tensor.__rsub__ = pointwise.rsub
Tensor.__mul__ = Tensor.__rmul__ = pointwise.mul
Tensor.__truediv__ = pointwise.div
Tensor.__rtruediv__ = pointwise.rdiv
Tensor.__floordiv__ = pointwise.floor_divide
Tensor.__mod__ = pointwise.remainder
Tensor.__pow__ = pointwise.pow
Tensor.__rpow__ = pointwise._rpow
Tensor.__matmul__ = linalg.matmul
Tensor.__rmatmul__ = linalg.rmatmul
Tensor.__neg__ = pointwise.neg
Tensor.__abs__ = pointwise.abs
Tensor.__pos__ = lambda self: self
Tensor.__invert__ = pointwise.bitwise_not
Tensor.__and__ = Tensor.__rand__ = pointwise.bitwise_and
Tensor.__or__ = Tensor.__ror__ = pointwise.bitwise_or
Tensor.__xor__ = Tensor.__rxor__ = pointwise.bitwise_xor
Tensor.__eq__ = pointwise.eq
Tensor.__ne__ = pointwise.ne
Tensor.__lt__ = pointwise.lt
Tensor.__le__ = pointwise.le
Tensor.__gt__ = pointwise.gt
Tensor.__ge__ = pointwise.ge
Tensor.__iadd__ = inplace.add_
Tensor.__isub__ = inplace.sub_
Tensor.__imul__ = inplace.mul_
Tensor.__itruediv__ = inplace.div_

# More of PyTorch's Tensor methods (methods_extra.py): shared ops, functions, methods,
# properties and in-place forms.
from . import methods_extra

for _n in methods_extra.SHARED.split():
    FUNCTIONS[_n] = getattr(methods_extra, _n)
    setattr(Tensor, _n, getattr(methods_extra, _n))
FUNCTIONS.update(methods_extra.FUNCTIONS_ONLY)
for _n, _f in methods_extra.METHODS.items():
    setattr(Tensor, _n, _f)
for _n, _f in methods_extra.PROPERTIES.items():
    setattr(Tensor, _n, property(_f))
for _n, _f in methods_extra._inplace_table().items():
    setattr(Tensor, _n, _f)
for _n in "asinh_ acosh_ atanh_ arcsinh_ arccosh_ arctanh_".split():
    FUNCTIONS[_n] = getattr(Tensor, _n)
