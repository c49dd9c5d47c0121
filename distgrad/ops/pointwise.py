"""Elementwise ops: arithmetic, math functions, activations, comparisons.

Each op's forward and its backward node sit together. Backward formulas are
written with tensor ops, so they can be differentiated again; broadcasting is
undone by the engine, not here.
"""
from __future__ import annotations

import math
from numbers import Number

from .. import dtype as _dt
from ..autograd.function import OUTPUT, Node, record
from ._util import (Tensor, _wrap, array_module, as_tensor_arg, broadcast_error, check_scalar,
                    result_float, scalar_operand)


def _binary(op, cls, a, b, ufunc, save):
    """Run ``ufunc`` on two tensors and record ``cls``; ``save`` picks what backward keeps."""
    try:
        data = ufunc(a._data, b._data)
    except ValueError:
        raise broadcast_error(op, a, b) from None
    return record(cls, data, (a, b), (a, b) if save else ())


def _int_to_float_scalar(data, x, s):
    # An integer tensor with a float scalar gives the default float dtype, as in PyTorch.
    if type(s) is float and x._data.dtype.kind in "iub":
        return data.astype(_dt.get_default_dtype().np)
    return data


_check_scalar = check_scalar


# ----------------------------------------------------------------- add / sub
class AddBackward0(Node):
    def backward(self, g):
        alpha = self.args
        if len(self.next_functions) == 1:
            return g
        return g, (g if alpha == 1 else g * alpha)


def add(input, other, *, alpha=1):
    if not isinstance(input, Tensor):
        return add(other, input) if alpha == 1 else add(as_tensor_arg(input, other, "add"), other, alpha=alpha)
    if isinstance(other, Tensor):
        try:
            data = input._data + (other._data if alpha == 1 else other._data * alpha)
        except ValueError:
            raise broadcast_error("add", input, other) from None
        return record(AddBackward0, data, (input, other), args=alpha)
    _check_scalar("add", other)
    x = input._data
    data = _int_to_float_scalar(x + scalar_operand(other if alpha == 1 else other * alpha, x), input, other)
    return record(AddBackward0, data, (input,), args=alpha)


class SubBackward0(Node):
    def backward(self, g):
        alpha = self.args
        if len(self.next_functions) == 1:
            return g
        return g, (-g if alpha == 1 else g * -alpha)


def sub(input, other, *, alpha=1):
    if not isinstance(input, Tensor):
        return rsub(other, input, alpha=alpha)
    if input._data.dtype.kind == "b" or (isinstance(other, Tensor) and other._data.dtype.kind == "b"):
        raise RuntimeError(
            "Subtraction, the `-` operator, with a bool tensor is not supported. If you are "
            "trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    if isinstance(other, Tensor):
        try:
            data = input._data - (other._data if alpha == 1 else other._data * alpha)
        except ValueError:
            raise broadcast_error("sub", input, other) from None
        return record(SubBackward0, data, (input, other), args=alpha)
    _check_scalar("sub", other)
    x = input._data
    data = _int_to_float_scalar(x - scalar_operand(other if alpha == 1 else other * alpha, x), input, other)
    return record(SubBackward0, data, (input,), args=alpha)


class RsubBackward1(Node):
    def backward(self, g):
        return -g if self.args == 1 else g * -self.args


def rsub(input, other, *, alpha=1):
    """``other - alpha * input``."""
    if isinstance(other, Tensor):
        return sub(other, input, alpha=alpha)
    _check_scalar("rsub", other)
    x = input._data
    data = _int_to_float_scalar(scalar_operand(other, x) - (x if alpha == 1 else x * alpha), input, other)
    return record(RsubBackward1, data, (input,), args=alpha)


# ----------------------------------------------------------------- mul / div
class MulBackward0(Node):
    def backward(self, g):
        if self.args is not None:
            return g * self.args
        a, b = self.saved_tensors
        return (g * b if self.needs(0) else None, g * a if self.needs(1) else None)


def mul(input, other):
    if isinstance(other, Tensor):
        if not isinstance(input, Tensor):
            return mul(other, input)
        try:
            data = input._data * other._data
        except ValueError:
            raise broadcast_error("mul", input, other) from None
        return record(MulBackward0, data, (input, other), (input, other))
    _check_scalar("mul", other)
    x = input._data
    data = _int_to_float_scalar(x * scalar_operand(other, x), input, other)
    return record(MulBackward0, data, (input,), args=other)


class DivBackward0(Node):
    def backward(self, g):
        if self.args is not None:
            return g / self.args
        a, b = self.saved_tensors
        ga = g / b if self.needs(0) else None
        gb = -g * a / (b * b) if self.needs(1) else None
        return ga, gb


def _true_div(a, b):
    if a.dtype.kind in "iub" and getattr(b, "dtype", None) is not None and b.dtype.kind in "iub":
        f = _dt.get_default_dtype().np
        return a.astype(f) / b.astype(f)
    return a / b


def div(input, other, *, rounding_mode=None):
    if rounding_mode is not None:
        return _rounded_div(input, other, rounding_mode)
    if not isinstance(input, Tensor):
        return rdiv(other, input)
    if isinstance(other, Tensor):
        return _binary("div", DivBackward0, input, other, _true_div, True)
    _check_scalar("div", other)
    data = input._data / scalar_operand(other, input._data)
    if input._data.dtype.kind in "iub":
        data = data.astype(_dt.get_default_dtype().np)
    return record(DivBackward0, data, (input,), args=other)


class RdivBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g * (-self.args) / (x * x)


def rdiv(input, other):
    """``other / input`` for a scalar ``other``."""
    if isinstance(other, Tensor):
        return div(other, input)
    _check_scalar("div", other)
    x = result_float(input._data)
    data = scalar_operand(other, x) / x
    return record(RdivBackward0, data, (input,), (input,), args=other)


def _rounded_div(input, other, mode):
    if mode not in ("trunc", "floor"):
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found '{mode}'")
    a = input if isinstance(input, Tensor) else None
    x = input._data if a is not None else input
    y = other._data if isinstance(other, Tensor) else other
    xp = array_module(x if a is not None else y)
    if mode == "floor":
        data = xp.floor_divide(x, y)
    else:
        q = xp.true_divide(x, y)
        data = xp.trunc(q)
        if xp.asarray(x).dtype.kind in "iu" and xp.asarray(y).dtype.kind in "iu":
            data = data.astype(xp.result_type(x, y))
    # Rounded division is piecewise constant: no gradient flows.
    return _wrap(xp.asarray(data))


def floor_divide(input, other):
    return div(input, other, rounding_mode="floor")


def remainder(input, other):
    x = input._data
    y = other._data if isinstance(other, Tensor) else other
    return _wrap(array_module(x).asarray(array_module(x).remainder(x, y)))


# ------------------------------------------------------------------------ pow
class PowBackward0(Node):
    """tensor ** scalar"""

    def backward(self, g):
        (x,) = self.saved_tensors
        e = self.args
        if e == 0:
            return g * 0
        return g * (e * x ** (e - 1))


class PowBackward1(Node):
    """tensor ** tensor"""

    def backward(self, g):
        a, b, out = self.saved_tensors
        ga = g * (b * a ** (b - 1)) if self.needs(0) else None
        gb = None
        if self.needs(1):
            # 0 ** b has derivative 0 in b where b >= 0 (PyTorch masks the log(0) there).
            gb = where((a == 0) & (b >= 0), 0.0, g * (out * log(a)))
        return ga, gb


class PowBackward2(Node):
    """scalar ** tensor"""

    def backward(self, g):
        (out,) = self.saved_tensors
        base = self.args
        if base == 0:
            return g * 0
        return g * (out * math.log(base))


def pow(input, exponent):
    if not isinstance(input, Tensor):
        return _rpow(exponent, input)
    if isinstance(exponent, Tensor):
        try:
            data = input._data ** exponent._data
        except ValueError:
            raise broadcast_error("pow", input, exponent) from None
        return record(PowBackward1, data, (input, exponent), (input, exponent, OUTPUT))
    _check_scalar("pow", exponent)
    if input._data.dtype.kind in "iu" and isinstance(exponent, int) and exponent < 0:
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    data = _int_to_float_scalar(input._data ** exponent, input, exponent)
    return record(PowBackward0, data, (input,), (input,), args=exponent)


def _rpow(input, base):
    """``base ** input`` for a scalar ``base``."""
    _check_scalar("pow", base)
    x = input._data
    if type(base) is float:
        x = result_float(x)
    return record(PowBackward2, base ** x, (input,), (OUTPUT,), args=base)


# ----------------------------------------------------------- unary math ops
class NegBackward0(Node):
    def backward(self, g):
        return -g


def neg(input):
    if input._data.dtype.kind == "b":
        raise RuntimeError(
            "Negation, the `-` operator, on a bool tensor is not supported. If you are trying "
            "to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    return record(NegBackward0, -input._data, (input,))


class AbsBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g * sign(x)


def abs(input):
    return record(AbsBackward0, array_module(input._data).abs(input._data), (input,), (input,))


def sign(input):
    """Sign (-1, 0, 1); its derivative is zero, so no gradient flows back."""
    return _wrap(array_module(input._data).sign(input._data))


class ExpBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return g * out


def exp(input):
    x = result_float(input._data)
    return record(ExpBackward0, array_module(x).exp(x), (input,), (OUTPUT,))


class Expm1Backward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return g * (out + 1)


def expm1(input):
    x = result_float(input._data)
    return record(Expm1Backward0, array_module(x).expm1(x), (input,), (OUTPUT,))


class LogBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g / x


def log(input):
    x = result_float(input._data)
    xp = array_module(x)
    with xp.errstate(divide="ignore", invalid="ignore"):
        data = xp.log(x)
    return record(LogBackward0, data, (input,), (input,))


class Log1pBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g / (x + 1)


def log1p(input):
    x = result_float(input._data)
    xp = array_module(x)
    with xp.errstate(divide="ignore", invalid="ignore"):
        data = xp.log1p(x)
    return record(Log1pBackward0, data, (input,), (input,))


class SqrtBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return g / (out * 2)


def sqrt(input):
    x = result_float(input._data)
    xp = array_module(x)
    with xp.errstate(invalid="ignore"):
        data = xp.sqrt(x)
    return record(SqrtBackward0, data, (input,), (OUTPUT,))


class RsqrtBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return g * (out ** 3 * -0.5)


def rsqrt(input):
    x = result_float(input._data)
    xp = array_module(x)
    with xp.errstate(divide="ignore", invalid="ignore"):
        data = 1 / xp.sqrt(x)
    return record(RsqrtBackward0, data.astype(x.dtype, copy=False), (input,), (OUTPUT,))


class ReciprocalBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return g * -(out * out)


def reciprocal(input):
    x = result_float(input._data)
    xp = array_module(x)
    with xp.errstate(divide="ignore"):
        data = xp.reciprocal(x)
    return record(ReciprocalBackward0, data, (input,), (OUTPUT,))


def square(input):
    return pow(input, 2)


class SinBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g * cos(x)


def sin(input):
    x = result_float(input._data)
    return record(SinBackward0, array_module(x).sin(x), (input,), (input,))


class CosBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g * -sin(x)


def cos(input):
    x = result_float(input._data)
    return record(CosBackward0, array_module(x).cos(x), (input,), (input,))


class TanhBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return tanh_backward(g, out)


class TanhBackwardBackward0(Node):
    def backward(self, gg):
        g, y = self.saved_tensors
        return (gg * (1 - y * y) if self.needs(0) else None,
                gg * g * y * -2 if self.needs(1) else None)


def tanh_backward(grad_output, output):
    """``grad_output * (1 - output**2)`` as one op: the gradient of tanh."""
    g, y = grad_output._data, output._data
    return record(TanhBackwardBackward0, g * (1 - y * y), (grad_output, output), (grad_output, output))


def tanh(input):
    x = result_float(input._data)
    return record(TanhBackward0, array_module(x).tanh(x), (input,), (OUTPUT,))


class SigmoidBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return sigmoid_backward(g, out)


class SigmoidBackwardBackward0(Node):
    def backward(self, gg):
        g, y = self.saved_tensors
        return (gg * (y * (1 - y)) if self.needs(0) else None,
                gg * g * (1 - y * 2) if self.needs(1) else None)


def sigmoid_backward(grad_output, output):
    """``grad_output * output * (1 - output)`` as one op: the gradient of sigmoid."""
    g, y = grad_output._data, output._data
    return record(SigmoidBackwardBackward0, g * (y * (1 - y)), (grad_output, output), (grad_output, output))


def _sigmoid(x):
    xp = array_module(x)
    # exp of a non-positive number only: no overflow for large |x|.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid(input):
    x = result_float(input._data)
    return record(SigmoidBackward0, _sigmoid(x), (input,), (OUTPUT,))


class ErfBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g * (exp(-(x * x)) * (2 / math.sqrt(math.pi)))


def _erf(x):
    """erf with relative error below 1.2e-7 everywhere (Chebyshev fit of erfc, as in
    Numerical Recipes); numpy has no erf of its own."""
    xp = array_module(x)
    z = xp.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * xp.exp(poly)
    return xp.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(x.dtype, copy=False)


def erf(input):
    x = result_float(input._data)
    return record(ErfBackward0, _erf(x), (input,), (input,))


# --------------------------------------------------------------- activations
class ReluBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return threshold_backward(g, out, 0)


class ThresholdBackwardBackward0(Node):
    def backward(self, gg):
        return gg.masked_fill(self.args, 0.0)


def threshold_backward(grad_output, input, threshold):
    """The gradient of relu/threshold: ``grad_output`` where ``input > threshold``, else 0.
    Piecewise, so only ``grad_output`` gets a gradient."""
    g = grad_output._data
    mask = input._data <= threshold
    return record(ThresholdBackwardBackward0, array_module(g).where(mask, 0, g).astype(g.dtype, copy=False),
                  (grad_output,), args=_wrap(mask))


def relu(input):
    x = input._data
    return record(ReluBackward0, array_module(x).maximum(x, 0), (input,), (OUTPUT,))


class GeluBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        if self.args == "tanh":
            k = math.sqrt(2 / math.pi)
            inner = (x + 0.044715 * x ** 3) * k
            t = tanh(inner)
            d_inner = (1 + 0.134145 * x * x) * k
            return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner)
        cdf = (erf(x * (1 / math.sqrt(2))) + 1) * 0.5
        pdf = exp(x * x * -0.5) * (1 / math.sqrt(2 * math.pi))
        return g * (cdf + x * pdf)


def gelu(input, approximate="none"):
    x = result_float(input._data)
    xp = array_module(x)
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        data = 0.5 * x * (1 + xp.tanh(k * (x + 0.044715 * x ** 3)))
    elif approximate == "none":
        data = 0.5 * x * (1 + _erf(x * (1 / math.sqrt(2))))
    else:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return record(GeluBackward0, data.astype(x.dtype, copy=False), (input,), (input,), args=approximate)


class SiluBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        s = sigmoid(x)
        return g * (s * (1 + x * (1 - s)))


def silu(input):
    x = result_float(input._data)
    return record(SiluBackward0, x * _sigmoid(x), (input,), (input,))


class SoftplusBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        beta, threshold = self.args
        z = x * beta
        return g * where(z > threshold, 1.0, sigmoid(z))


def softplus(input, beta=1.0, threshold=20.0):
    x = result_float(input._data)
    xp = array_module(x)
    z = x * beta
    soft = xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(z, 0)
    data = xp.where(z > threshold, x, soft / beta).astype(x.dtype, copy=False)
    return record(SoftplusBackward0, data, (input,), (input,), args=(beta, threshold))


class ClampBackward1(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        lo, hi = self.args
        mask = None
        if lo is not None:
            mask = x >= lo
        if hi is not None:
            mask = (x <= hi) if mask is None else mask & (x <= hi)
        return g * mask


def clamp(input, min=None, max=None):
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = input
        if min is not None:
            out = maximum(out, as_tensor_arg(min, input, "clamp"))
        if max is not None:
            out = minimum(out, as_tensor_arg(max, input, "clamp"))
        return out
    xp = array_module(input._data)
    data = xp.clip(input._data, min, max)
    if type(min) is float or type(max) is float:
        data = result_float(data)
    return record(ClampBackward1, data, (input,), (input,), args=(min, max))


clip = clamp


class MaximumBackward0(Node):
    def backward(self, g):
        a, b = self.saved_tensors
        # Ties split the gradient evenly, as in PyTorch.
        wa = where(a == b, 0.5, (a > b).to(g.dtype))
        return (g * wa if self.needs(0) else None, g * (1 - wa) if self.needs(1) else None)


def maximum(input, other):
    return _binary("maximum", MaximumBackward0, input, other, array_module(input._data).maximum, True)


class MinimumBackward0(Node):
    def backward(self, g):
        a, b = self.saved_tensors
        wa = where(a == b, 0.5, (a < b).to(g.dtype))
        return (g * wa if self.needs(0) else None, g * (1 - wa) if self.needs(1) else None)


def minimum(input, other):
    return _binary("minimum", MinimumBackward0, input, other, array_module(input._data).minimum, True)


class WhereBackward0(Node):
    def backward(self, g):
        cond = self.args
        ga = where(cond, g, 0.0) if self.needs(0) else None
        gb = where(cond, 0.0, g) if self.needs(1) else None
        return ga, gb


def where(condition, input=None, other=None):
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    cond = condition._data
    if cond.dtype.kind != "b":
        raise RuntimeError(f"where expected condition to be a boolean tensor, but got a tensor with dtype {condition.dtype}")
    like = input if isinstance(input, Tensor) else other
    a = as_tensor_arg(input, like, "where")
    b = as_tensor_arg(other, like, "where")
    xp = array_module(cond)
    try:
        data = xp.where(cond, a._data, b._data)
    except ValueError:
        raise RuntimeError(
            f"where: condition {list(cond.shape)}, input {list(a.shape)} and other "
            f"{list(b.shape)} cannot be broadcast together"
        ) from None
    return record(WhereBackward0, data, (a, b), args=_wrap(cond))


def nonzero(input, *, as_tuple=False):
    xp = array_module(input._data)
    idx = xp.nonzero(input._data)
    if as_tuple:
        return tuple(_wrap(i.astype(xp.int64)) for i in idx)
    return _wrap(xp.stack(idx, axis=1).astype(xp.int64) if idx else xp.zeros((0, 0), xp.int64))


# ------------------------------------------------ piecewise-constant functions
def _constant_unary(name, fn):
    def op(input):
        return _wrap(array_module(input._data).asarray(fn(array_module(input._data), input._data)))
    op.__name__ = name
    op.__doc__ = f"{name} (piecewise constant: no gradient flows back)."
    return op


floor = _constant_unary("floor", lambda xp, x: xp.floor(x))
ceil = _constant_unary("ceil", lambda xp, x: xp.ceil(x))
round = _constant_unary("round", lambda xp, x: xp.round(x))
trunc = _constant_unary("trunc", lambda xp, x: xp.trunc(x))
isnan = _constant_unary("isnan", lambda xp, x: xp.isnan(x))
isinf = _constant_unary("isinf", lambda xp, x: xp.isinf(x))
isfinite = _constant_unary("isfinite", lambda xp, x: xp.isfinite(x))
logical_not = _constant_unary("logical_not", lambda xp, x: xp.logical_not(x))


# -------------------------------------------------------------- comparisons
def _compare(name, ufunc_name):
    def op(input, other):
        x = input._data
        y = other._data if isinstance(other, Tensor) else other
        try:
            data = getattr(array_module(x), ufunc_name)(x, y)
        except ValueError:
            raise broadcast_error(name, input, other) from None
        return _wrap(array_module(x).asarray(data))
    op.__name__ = name
    op.__doc__ = f"Elementwise {name} (a bool tensor; no gradient)."
    return op


eq = _compare("eq", "equal")
ne = _compare("ne", "not_equal")
lt = _compare("lt", "less")
le = _compare("le", "less_equal")
gt = _compare("gt", "greater")
ge = _compare("ge", "greater_equal")
logical_and = _compare("logical_and", "logical_and")
logical_or = _compare("logical_or", "logical_or")
logical_xor = _compare("logical_xor", "logical_xor")
bitwise_and = _compare("bitwise_and", "bitwise_and")
bitwise_or = _compare("bitwise_or", "bitwise_or")
bitwise_xor = _compare("bitwise_xor", "bitwise_xor")


def bitwise_not(input):
    return _wrap(array_module(input._data).asarray(~input._data))


def equal(input, other) -> bool:
    """True when both tensors have the same shape and elements."""
    return input._data.shape == other._data.shape and bool((input._data == other._data).all())


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    return bool(array_module(input._data).allclose(input._data, other._data, rtol, atol, equal_nan))


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    y = other._data if isinstance(other, Tensor) else other
    return _wrap(array_module(input._data).isclose(input._data, y, rtol, atol, equal_nan))
