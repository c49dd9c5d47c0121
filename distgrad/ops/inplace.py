"""In-place ops (``add_``, ``mul_``, ``copy_``, ``x[i] = v``, ...) and how they stay
correct under autograd.

Outside a graph an in-place op writes straight into the array. Inside one, it
runs the out-of-place op on a copy of the old value and writes the result back:
the tensor's history now ends in that op's node. When the tensor is a view, its
base's history gets a ``CopySlices`` node, which routes the gradient of the
modified region through the op and leaves the rest untouched, as PyTorch does.
Every in-place op bumps the version counter the tensor shares with its views, so
backward refuses to use a saved value that changed.
"""
from __future__ import annotations

from .. import backend
from ..autograd.function import Node, _next_seq, edge
from ..autograd.grad_mode import state as _state
from ..tensor import _new, _refresh_view
from . import indexing, pointwise
from ._util import Tensor, array_module, as_tensor_arg

_LEAF_MSG = (
    "a leaf Variable that requires grad is being used in an in-place operation "
    "({op}). Wrap the update in `with distgrad.no_grad():` (as optimizers do), or "
    "work on a copy: x = x.clone()"
)
_VIEW_LEAF_MSG = (
    "a view of a leaf Variable that requires grad is being used in an in-place operation "
    "({op}). Modify a clone instead, or do it under `with distgrad.no_grad():`"
)
_NOGRAD_VIEW_MSG = (
    "A view was created in no_grad mode and is being modified inplace with grad mode enabled "
    "({op}). Given that this use case is ambiguous and error-prone, it is forbidden. You can "
    "clarify your code by moving both the view and the inplace either both inside the no_grad "
    "block (if you don't want the inplace to be tracked) or both outside (if you want the "
    "inplace to be tracked)."
)
_OVERLAP_MSG = (
    "unsupported operation ({op}): more than one element of the written-to tensor refers to a "
    "single memory location (it is an expanded view). Please clone() the tensor before "
    "performing the operation."
)


class CopySlices(Node):
    """History of a base tensor after an in-place op on one of its views."""

    _saved = (None,)  # non-empty, so that the engine releases the wrapped op's tensors too

    def backward(self, g):
        view_fn, fn = self.args
        res = g.clone()
        region = view_fn(res)
        grads = fn.backward(region.clone())
        if type(grads) is not tuple:
            grads = (grads,)
        if grads[0] is None:
            region.zero_()
        else:
            region.copy_(grads[0])
        return (res,) + grads[1:]

    def _release(self):
        self._saved = None
        self.args[1]._release()


def _check(self, op):
    arr = self._data
    if any(st == 0 and n > 1 for st, n in zip(arr.strides, arr.shape)):
        raise RuntimeError(_OVERLAP_MSG.format(op=op))
    if _state.enabled:
        if self._grad_fn is None and self._requires_grad:
            raise RuntimeError(_LEAF_MSG.format(op=op))
        base = self._base
        if base is not None:
            if base._grad_fn is None and base._requires_grad:
                raise RuntimeError(_VIEW_LEAF_MSG.format(op=op))
            if self._view_nograd:
                raise RuntimeError(_NOGRAD_VIEW_MSG.format(op=op))
    if self._is_inference and not _state.inference:
        raise RuntimeError(
            f"Inplace update to inference tensor outside InferenceMode is not allowed ({op}). "
            "You can make a clone to get a normal tensor before doing inplace update."
        )


def _write(self, op, fn):
    """Run ``fn()`` (which writes into ``self._data``), translating numpy's errors."""
    try:
        fn()
    except ValueError as e:
        if "read-only" in str(e):
            raise RuntimeError(_OVERLAP_MSG.format(op=op)) from None
        raise RuntimeError(f"{op}: {e}") from None
    except TypeError as e:
        raise RuntimeError(
            f"{op}: result type can't be cast to the desired output type {self.dtype} ({e})"
        ) from None
    self._vc[0] += 1


def _needs_graph(self, others) -> bool:
    if not _state.enabled or _state.inference:
        return False
    if self.requires_grad:
        return True
    return any(isinstance(o, Tensor) and o.requires_grad for o in others)


def apply_inplace(self, op, out_of_place, args=(), kwargs=None, kernel=None):
    """Perform ``self = out_of_place(self, *args, **kwargs)`` in place.

    ``kernel(array)`` writes the result straight into ``self``'s array when no graph
    is needed; without a kernel the out-of-place result is copied in.
    """
    kwargs = kwargs or {}
    _check(self, op)
    if not _needs_graph(self, args):
        if kernel is not None:
            _write(self, op, lambda: kernel(self._data))
        else:
            r = out_of_place(self.detach(), *args, **kwargs)
            _write(self, op, lambda: array_module(self._data).copyto(self._data, r._data, casting="same_kind"))
        return self
    # Graph path: the op sees a copy of the old value, standing where self stood.
    if self._base is not None:
        self.grad_fn  # brings a stale view's history up to date
    src = _new(Tensor)
    src._data = self._data.copy()
    src._vc = [0]
    src._grad_fn = self._grad_fn
    src._output_nr = self._output_nr
    src._requires_grad = self._requires_grad
    r = out_of_place(src, *args, **kwargs)
    if r._data.shape != self._data.shape:
        raise RuntimeError(
            f"{op}: output with shape {list(self._data.shape)} doesn't match the broadcast shape "
            f"{list(r._data.shape)}"
        )
    _write(self, op, lambda: array_module(self._data).copyto(self._data, r._data, casting="same_kind"))
    node = r._grad_fn
    base = self._base
    if base is None:
        self._grad_fn = node
        self._output_nr = r._output_nr
        self._requires_grad = True
        return self
    c = _new(CopySlices)
    c.next_functions = (edge(base),) + node.next_functions[1:]
    c._seq = _next_seq()
    if node._meta is not None:
        c._meta = ((base._data.shape, base._data.dtype),) + node._meta[1:]
    c.args = (self._view_fn, node)
    base._grad_fn = c
    base._output_nr = 0
    base._requires_grad = True
    _refresh_view(self)
    return self


# ----------------------------------------------------------- in-place ops
def _xp(t):
    return array_module(t._data)


def _arr(x):
    return x._data if isinstance(x, Tensor) else x


def add_(self, other, *, alpha=1):
    o = _arr(other)
    return apply_inplace(self, "add_", pointwise.add, (other,), {"alpha": alpha},
                         lambda a: _xp(self).add(a, o if alpha == 1 else o * alpha, out=a))


def sub_(self, other, *, alpha=1):
    o = _arr(other)
    return apply_inplace(self, "sub_", pointwise.sub, (other,), {"alpha": alpha},
                         lambda a: _xp(self).subtract(a, o if alpha == 1 else o * alpha, out=a))


def mul_(self, other):
    o = _arr(other)
    return apply_inplace(self, "mul_", pointwise.mul, (other,),
                         kernel=lambda a: _xp(self).multiply(a, o, out=a))


def div_(self, other, *, rounding_mode=None):
    if rounding_mode is not None:
        return apply_inplace(self, "div_", pointwise.div, (other,), {"rounding_mode": rounding_mode})
    o = _arr(other)
    return apply_inplace(self, "div_", pointwise.div, (other,),
                         kernel=lambda a: _xp(self).true_divide(a, o, out=a))


def pow_(self, exponent):
    return apply_inplace(self, "pow_", pointwise.pow, (exponent,))


class CopyBackwards(Node):
    def backward(self, g):
        return None, g


def _copy_from(self, src):
    """Out-of-place copy_: ``src`` broadcast to ``self``'s shape and cast to its dtype."""
    from ..autograd.function import record

    src = as_tensor_arg(src, self, "copy_")
    xp = array_module(self._data)
    try:
        data = xp.broadcast_to(src._data, self._data.shape).astype(self._data.dtype)
    except ValueError:
        raise RuntimeError(
            f"copy_: the source of shape {list(src._data.shape)} cannot be broadcast to the "
            f"destination's shape {list(self._data.shape)}"
        ) from None
    return record(CopyBackwards, data, (self, src))


def copy_(self, src, non_blocking=False):
    if isinstance(src, Tensor) and not backend.same_device(src._data, self._data):
        src = src.to(device=backend.device_of(self._data))  # copying across devices, as in PyTorch
    s = _arr(src)

    def kernel(a):
        try:
            _xp(self).copyto(a, s, casting="unsafe")
        except ValueError as e:
            if "read-only" in str(e):
                raise
            raise ValueError(
                f"the source of shape {list(getattr(s, 'shape', ()))} cannot be broadcast to the "
                f"destination's shape {list(a.shape)}"
            ) from None

    return apply_inplace(self, "copy_", _copy_from, (src,), kernel=kernel)


def fill_(self, value):
    if isinstance(value, Tensor) and value._data.ndim:
        raise RuntimeError(
            f"fill_ only supports 0-dimension value tensor but got tensor with {value._data.ndim} dimensions."
        )
    v = _arr(value)
    return apply_inplace(self, "fill_", _copy_from, (value,), kernel=lambda a: a.__setitem__(Ellipsis, v))


def zero_(self):
    return fill_(self, 0)


def relu_(self):
    return apply_inplace(self, "relu_", pointwise.relu, kernel=lambda a: _xp(self).maximum(a, 0, out=a))


def clamp_(self, min=None, max=None):
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        return apply_inplace(self, "clamp_", pointwise.clamp, (min, max))
    return apply_inplace(self, "clamp_", pointwise.clamp, (min, max),
                         kernel=lambda a: _xp(self).clip(a, min, max, out=a))


clip_ = clamp_


def masked_fill_(self, mask, value):
    return apply_inplace(self, "masked_fill_", indexing.masked_fill, (mask, value))


def index_put_(self, indices, values, accumulate=False):
    return apply_inplace(self, "index_put_", indexing.index_put, (indices, values, accumulate))


def scatter_add_(self, dim, index, src):
    return apply_inplace(self, "scatter_add_", indexing.scatter_add, (dim, index, src))


def scatter_(self, dim, index, src=None, *, value=None):
    return apply_inplace(self, "scatter_", indexing.scatter, (dim, index, src), {"value": value})


def index_add_(self, dim, index, source, *, alpha=1):
    return apply_inplace(self, "index_add_", indexing.index_add, (dim, index, source), {"alpha": alpha})


def _unary_inplace(name, fn):
    def op(self):
        return apply_inplace(self, name, fn)
    op.__name__ = name
    op.__doc__ = f"In-place {name[:-1]}."
    return op


neg_ = _unary_inplace("neg_", pointwise.neg)
exp_ = _unary_inplace("exp_", pointwise.exp)
log_ = _unary_inplace("log_", pointwise.log)
sqrt_ = _unary_inplace("sqrt_", pointwise.sqrt)
sigmoid_ = _unary_inplace("sigmoid_", pointwise.sigmoid)
tanh_ = _unary_inplace("tanh_", pointwise.tanh)
abs_ = _unary_inplace("abs_", pointwise.abs)


def tril_(self, diagonal=0):
    return apply_inplace(self, "tril_", indexing.tril, (diagonal,))


def triu_(self, diagonal=0):
    return apply_inplace(self, "triu_", indexing.triu, (diagonal,))


def setitem(self, key, value):
    """``self[key] = value``: a copy into the view for basic keys, index_put otherwise."""
    k, basic = indexing._convert_key(key)
    if basic:
        copy_(indexing.getitem(self, key), value)
    else:
        index_put_(self, k, value)




# ------------------------------------------- in-place forms of the math_extra ops
def _inplace_of(name, fn):
    def op(self, *args, **kwargs):
        return apply_inplace(self, name, fn, args, kwargs)
    op.__name__ = name
    op.__doc__ = f"In-place {name[:-1]}."
    return op


def _make_inplace():
    from . import math_extra as me
    from . import shape_extra as se

    table = {
        pointwise: "floor ceil round trunc sign square",
        me: """acos asin atan atan2 arctan2 arccos arcsin arctan cosh sinh tan log10 log2 exp2 erfc
            erfinv frac fmod lgamma digamma logit xlogy hypot lerp addcmul addcdiv clamp_min
            clamp_max sgn nan_to_num negative subtract true_divide not_equal absolute heaviside
            sinc deg2rad rad2deg copysign cumprod""",
        se: "index_fill index_copy masked_scatter scatter_reduce",
    }
    out = {}
    for mod, names in table.items():
        for n in names.split():
            out[n + "_"] = _inplace_of(n + "_", getattr(mod, n))
    return out


def polygamma_(self, n):
    from .math_extra import polygamma
    return apply_inplace(self, "polygamma_", lambda x: polygamma(n, x))


def float_power_(self, exponent):
    if self.dtype.name != "float64":
        raise RuntimeError(
            f"the base given to float_power_ has dtype {str(self.dtype).split('.')[-1].capitalize()} "
            "but the operation's result requires dtype Double")
    from .math_extra import float_power
    return apply_inplace(self, "float_power_", float_power, (exponent,))


def fill_diagonal_(self, fill_value, wrap=False):
    """Fill the main diagonal (all indices equal) of a tensor with >= 2 dims, as PyTorch."""
    shape = self._data.shape
    if len(shape) < 2:
        raise RuntimeError("dimensions must larger than 1")
    if len(shape) > 2 and len(set(shape)) != 1:
        raise RuntimeError("all dimensions of input must be of equal length")
    xp = array_module(self._data)
    m = xp.zeros(shape, bool)
    n = min(shape)
    idx = xp.arange(n)
    m[(idx,) * len(shape)] = True
    if wrap and len(shape) == 2 and shape[0] > shape[1] + 1:
        flat = m.reshape(-1)
        step = shape[1] + 1
        flat[::step] = True
    return masked_fill_(self, _wrap_array(m), fill_value)


def _wrap_array(a):
    from ..tensor import _wrap
    return _wrap(a)


def _shape_inplace(name, fn):
    """squeeze_/unsqueeze_/t_/transpose_: ``self`` takes the shape (and, in a graph, the
    history) of the view ``fn(self)``."""
    def op(self, *args):
        _check(self, name)
        r = fn(self, *args)
        self._data = r._data
        if r._grad_fn is not None and (self._requires_grad or self._grad_fn is not None):
            self._grad_fn = r._grad_fn
            self._output_nr = r._output_nr
        self._vc[0] += 1
        return self
    op.__name__ = name
    return op


def _shape_inplace_ops():
    from . import shape
    return {
        "squeeze_": _shape_inplace("squeeze_", shape.squeeze),
        "unsqueeze_": _shape_inplace("unsqueeze_", shape.unsqueeze),
        "t_": _shape_inplace("t_", shape.t),
        "transpose_": _shape_inplace("transpose_", shape.transpose),
        "swapdims_": _shape_inplace("swapdims_", shape.transpose),
        "swapaxes_": _shape_inplace("swapaxes_", shape.transpose),
    }
