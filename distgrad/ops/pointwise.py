"""Elementwise ops: arithmetic, math functions, activations, comparisons.

Each op's forward and its backward node sit together. Backward formulas are
written with tensor ops, so they can be differentiated again; broadcasting is
undone by the engine, not here.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtype as _dt
from ..autograd.function import OUTPUT, Node, record
from ..autograd.grad_mode import state as _grad_state
from ..backend import errstate
from . import cpu_kernels, cuda_kernels
from ._util import (Tensor, _wrap, array_module, as_tensor_arg, broadcast_error, check_scalar,
                    result_float, scalar_operand)


def _binary(op, cls, a, b, ufunc, save):
    """Run ``ufunc`` on two tensors and record ``cls``; ``save`` picks what backward keeps."""
    try:
        data = ufunc(*_operands(a, b))
    except (ValueError, TypeError):
        raise broadcast_error(op, a, b) from None
    return record(cls, data, (a, b), (a, b) if save else ())


def _operands(a, b):
    """The arrays of tensors ``a`` and ``b``, cast to PyTorch's result dtype."""
    return _promoted(a._data, b._data)


def _promoted(x, y):
    """Arrays ``x`` and ``y`` cast to PyTorch's result dtype when their dtypes differ.
    numpy's rules differ from PyTorch's in two ways: numpy lets a 0-d array's dtype win
    over an array with dims (float32 * 0-d float64 is float64 in numpy, float32 in
    PyTorch), and it widens an int/float mix (int64 + float32 is float64 in numpy,
    float32 in PyTorch)."""
    if x.dtype == y.dtype:
        return x, y
    xp = array_module(x)
    if (x.ndim == 0) == (y.ndim == 0):
        d = _promote_types(xp, x.dtype, y.dtype)
    else:
        dims, zero = (x.dtype, y.dtype) if y.ndim == 0 else (y.dtype, x.dtype)
        # A 0-d tensor takes part only when its category (bool < int < float) is higher.
        if _dt.kind_of(dims) == "f" or (dims.kind != "b" and _dt.kind_of(zero) != "f"):
            d = dims
        else:
            d = _promote_types(xp, dims, zero)
    return x.astype(d, copy=False), y.astype(d, copy=False)


def _promote_types(xp, d1, d2):
    """PyTorch's promotion of two dtypes: a float type beats any int or bool type as is;
    otherwise numpy's rule agrees (uint8 + int8 -> int16, float32 + float64 -> float64)."""
    if (_dt.kind_of(d1) == "f") != (_dt.kind_of(d2) == "f"):
        return d1 if _dt.kind_of(d1) == "f" else d2
    return xp.promote_types(d1, d2)


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
        x, y = input._data, other._data
        if x.dtype != y.dtype:
            x, y = _promoted(x, y)
        try:
            data = x + (y if alpha == 1 else y * alpha)
        except (ValueError, TypeError):
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
        x, y = input._data, other._data
        if x.dtype != y.dtype:
            x, y = _promoted(x, y)
        try:
            data = x - (y if alpha == 1 else y * alpha)
        except (ValueError, TypeError):
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
        x, y = input._data, other._data
        if x.dtype != y.dtype:
            x, y = _promoted(x, y)
        try:
            data = x * y
        except (ValueError, TypeError):
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


def rdiv(input, other):
    """``other / input`` for a scalar ``other``: as PyTorch computes it, the reciprocal
    times ``other`` (so the rounding and the graph, MulBackward0 over
    ReciprocalBackward0, are the same)."""
    if isinstance(other, Tensor):
        return div(other, input)
    _check_scalar("div", other)
    return mul(reciprocal(input), other)


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
            # 0 ** b has derivative 0 in b where b >= 0 (PyTorch masks the log(0) there);
            # log(1) in those places keeps numpy from warning about 0 * -inf.
            zero = (a == 0) & (b >= 0)
            gb = where(zero, 0.0, g * (out * log(where(zero, 1.0, a))))
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
        x, y = _operands(input, exponent)
        xp = array_module(x)
        try:
            # 0 ** -1 = inf and (-8) ** (1/3) = nan, as in PyTorch, without numpy's warnings.
            with errstate(xp, divide="ignore", invalid="ignore"):
                data = x ** y
        except (ValueError, TypeError):
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
    with errstate(xp, divide="ignore", invalid="ignore"):
        data = xp.log(x)
    return record(LogBackward0, data, (input,), (input,))


class Log1pBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g / (x + 1)


def log1p(input):
    x = result_float(input._data)
    xp = array_module(x)
    with errstate(xp, divide="ignore", invalid="ignore"):
        data = xp.log1p(x)
    return record(Log1pBackward0, data, (input,), (input,))


class SqrtBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return g / (out * 2)


def sqrt(input):
    x = result_float(input._data)
    xp = array_module(x)
    with errstate(xp, invalid="ignore"):
        data = xp.sqrt(x)
    return record(SqrtBackward0, data, (input,), (OUTPUT,))


class RsqrtBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return g * (out ** 3 * -0.5)


def rsqrt(input):
    x = result_float(input._data)
    xp = array_module(x)
    with errstate(xp, divide="ignore", invalid="ignore"):
        data = 1 / xp.sqrt(x)
    return record(RsqrtBackward0, data.astype(x.dtype, copy=False), (input,), (OUTPUT,))


class ReciprocalBackward0(Node):
    def backward(self, g):
        (out,) = self.saved_tensors
        return g * -(out * out)


def reciprocal(input):
    x = result_float(input._data)
    xp = array_module(x)
    with errstate(xp, divide="ignore"):
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
    """erf to the precision of ``x``'s dtype (numpy has no erf of its own); float16 and
    bfloat16 through float32."""
    if x.dtype.itemsize >= 8:
        return _erf_double(x)
    return cpu_kernels.erf(x.astype(np.float32, copy=False)).astype(x.dtype, copy=False)


# erf(z) = 2/sqrt(pi) exp(-z^2) sum_n 2^n z^(2n+1) / (2n+1)!!: every term is positive, so
# nothing cancels; 28 terms reach double precision for |z| < 2.
_ERF_SERIES = [1.0]
for _n in range(1, 28):
    _ERF_SERIES.append(_ERF_SERIES[-1] * 2 / (2 * _n + 1))
_ERF_SERIES.reverse()
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def _erf_double(x):
    """erf to about 1e-15 relative error, for float64 (where a float32-grade fit would be
    visibly wrong, e.g. in gradcheck or against PyTorch)."""
    xp = array_module(x)
    a = xp.abs(x)
    out = xp.full_like(x, xp.nan)  # NaN stays NaN: it fails every range test below
    out[a >= 6.0] = 1.0            # erfc(6) = 2e-17 rounds away next to 1
    small = a < 2.0
    z = a[small]
    w = z * z
    p = xp.full_like(z, _ERF_SERIES[0])
    for c in _ERF_SERIES[1:]:
        p *= w
        p += c
    out[small] = p * z * xp.exp(-w) * _TWO_OVER_SQRT_PI
    # For 2 <= |z| < 6, the continued fraction erfc(z) = exp(-z^2) / sqrt(pi) /
    # (z + (1/2) / (z + 1 / (z + (3/2) / (z + ...)))), 35 levels deep.
    mid = (a >= 2.0) & (a < 6.0)
    z = a[mid]
    k = z
    for n in range(35, 0, -1):
        k = z + (n / 2) / k
    out[mid] = 1.0 - xp.exp(-z * z) / (k * math.sqrt(math.pi))
    return xp.copysign(out, x, out=out)


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
    xp = array_module(g)
    if xp is np and _dt.kind_of(g.dtype) == "f" and g.shape == mask.shape and np.isfinite(g).all():
        # On the CPU a product with the mask is many times faster than where() (no
        # branch per element); inf or NaN times 0 would not give 0, hence the check,
        # and adding 0 turns the -0.0 of negative gradients into PyTorch's 0.
        out = g * ~mask
        out += 0.0
    else:
        out = xp.where(mask, 0, g).astype(g.dtype, copy=False)
    return record(ThresholdBackwardBackward0, out, (grad_output,), args=_wrap(mask))


def relu(input):
    x = input._data
    return record(ReluBackward0, array_module(x).maximum(x, 0), (input,), (OUTPUT,))


_GELU_K = math.sqrt(2 / math.pi)
_GELU_C = 0.044715
_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _gelu_sigmoid(x, x2):
    """sigmoid(2u) for the tanh form, u = k (x + c x^3): since 0.5 (1 + tanh(u)) =
    sigmoid(2u), gelu = x sigmoid(2u) (one exp instead of a slower tanh)."""
    xp = array_module(x)
    f = x.dtype.type
    e = x2 * f(_GELU_C)
    e += f(1)
    e *= x
    e *= f(-2 * _GELU_K)
    with errstate(xp, over="ignore"):  # exp overflows to inf for very negative x: s = 0, as it should
        xp.exp(e, out=e)
    e += f(1)
    return xp.reciprocal(e, out=e)


def _gelu_value(x, approximate):
    """gelu of an array, with in-place temporaries (few passes over memory)."""
    if cuda_kernels.use(x):
        return cuda_kernels.gelu(x, approximate)
    if approximate == "none" and x.dtype == np.float32:
        return cpu_kernels.gelu(x)
    if x.ndim == 0:  # arithmetic on 0-d arrays gives scalars, which in-place ops refuse
        return _gelu_value(x.reshape(1), approximate).reshape(())
    f = x.dtype.type
    if approximate == "tanh":
        if (y := cpu_kernels.gelu_tanh(x)) is not None:
            return y
        s = _gelu_sigmoid(x, x * x)
        s *= x
        return s
    cdf = _erf(x * f(_INV_SQRT2))
    cdf += f(1)
    cdf *= f(0.5)
    cdf *= x
    return cdf


def _gelu_derivative(x, approximate):
    """gelu'(x) of an array."""
    if x.ndim == 0:  # arithmetic on 0-d arrays gives scalars, which out= refuses
        return _gelu_derivative(x.reshape(1), approximate).reshape(())
    xp = array_module(x)
    f = x.dtype.type
    if approximate == "tanh":
        # With s = sigmoid(2u): gelu' = s (1 + 2 x (1 - s) u'), u' = k (1 + 3 c x^2).
        x2 = x * x
        s = _gelu_sigmoid(x, x2)
        d = xp.subtract(f(1), s)
        d *= x
        x2 *= f(3 * _GELU_C * 2 * _GELU_K)
        x2 += f(2 * _GELU_K)
        d *= x2
        d += f(1)
        d *= s
        return d
    # Phi(x) + x phi(x)
    cdf = _erf(x * f(_INV_SQRT2))
    cdf += f(1)
    cdf *= f(0.5)
    pdf = x * x
    pdf *= f(-0.5)
    xp.exp(pdf, out=pdf)
    pdf *= f(_INV_SQRT_2PI)
    pdf *= x
    pdf += cdf
    return pdf


class GeluBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        if type(self.args) is tuple:  # the CPU float32 erf path kept Phi(x)
            approximate, cdf = self.args
            return gelu_backward(g, x, approximate, cdf)
        return gelu_backward(g, x, self.args)


class GeluBackwardBackward0(Node):
    def backward(self, gg):
        g, x = self.saved_tensors
        approximate = self.args
        gg_g = gelu_backward(gg, x, approximate) if self.needs(0) else None
        gg_x = None
        if self.needs(1):
            if approximate == "tanh":
                u1 = (x * x * (3 * _GELU_C) + 1) * _GELU_K
                t = tanh((x * x * _GELU_C + 1) * x * _GELU_K)
                sech2 = 1 - t * t
                second = sech2 * (u1 + x * 0.5 * (x * (6 * _GELU_K * _GELU_C) - t * u1 * u1 * 2))
            else:
                second = exp(x * x * -0.5) * _INV_SQRT_2PI * (2 - x * x)
            gg_x = gg * g * second
        return gg_g, gg_x


def gelu_backward(grad_output, input, approximate="none", _cdf=None):
    """``grad_output * gelu'(input)`` as one op: the gradient of gelu. ``_cdf``: Phi(input),
    where gelu's CPU float32 forward kept it."""
    if cuda_kernels.use(input._data) and grad_output._data.dtype == input._data.dtype:
        d = cuda_kernels.gelu_grad(input._data, grad_output._data, approximate)
    elif (approximate == "none" and input._data.dtype == grad_output._data.dtype == np.float32
          and input._data.shape == grad_output._data.shape):
        cdf = _cdf if _cdf is not None and _cdf.shape == input._data.shape else None
        d = cpu_kernels.gelu_grad(input._data, grad_output._data, cdf)
    elif approximate != "tanh" or (d := cpu_kernels.gelu_tanh_grad(input._data, grad_output._data)) is None:
        d = _gelu_derivative(input._data, approximate)
        d *= grad_output._data
    return record(GeluBackwardBackward0, d, (grad_output, input), (grad_output, input), args=approximate)


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    x = result_float(input._data)
    if (approximate == "none" and type(x) is np.ndarray and x.dtype == np.float32 and x.size
            and input._requires_grad and _grad_state.enabled and not _grad_state.inference
            and not cpu_kernels.compiled()):
        # numpy bodies only: Phi(x) is kept for backward (one more activation-sized array
        # until then), which then takes 7 passes over memory instead of the erf's 30; the
        # compiled kernels recompute it as fast as they would read it back
        y, cdf = cpu_kernels.gelu(x, keep_cdf=True)
        return record(GeluBackward0, y, (input,), (input,), args=(approximate, cdf))
    return record(GeluBackward0, _gelu_value(x, approximate), (input,), (input,), args=approximate)


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


class ClampBackward0(Node):
    """clamp with tensor bounds. At a tie the input keeps the gradient (PyTorch's choice, unlike
    maximum/minimum, which split it); where min > max the output is max, so max gets it."""

    def backward(self, g):
        has_lo, has_hi = self.args
        saved = self.saved_tensors
        x, lo, hi = saved[0], saved[1] if has_lo else None, saved[-1] if has_hi else None
        if lo is not None and hi is not None:
            gx = where((x >= lo) & (x <= hi), g, 0.0) if self.needs(0) else None
            glo = where((x < lo) & (lo < hi), g, 0.0) if self.needs(1) else None
            ghi = where((x > hi) | (hi < lo), g, 0.0) if self.needs(2) else None
            return gx, glo, ghi
        if lo is not None:
            return (where(x >= lo, g, 0.0) if self.needs(0) else None,
                    where(x < lo, g, 0.0) if self.needs(1) else None)
        return (where(x <= hi, g, 0.0) if self.needs(0) else None,
                where(x > hi, g, 0.0) if self.needs(1) else None)


def _clamp_tensor(input, min, max):
    lo = None if min is None else as_tensor_arg(min, input, "clamp")
    hi = None if max is None else as_tensor_arg(max, input, "clamp")
    data = input._data
    xp = array_module(data)
    for bound, fn in ((lo, xp.maximum), (hi, xp.minimum)):
        if bound is not None:
            try:
                data = fn(*_promoted(data, bound._data))
            except (ValueError, TypeError):
                raise broadcast_error("clamp", input, bound) from None
    inputs = (input,) + tuple(b for b in (lo, hi) if b is not None)
    return record(ClampBackward0, data, inputs, inputs, args=(lo is not None, hi is not None))


def clamp(input, min=None, max=None):
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        return _clamp_tensor(input, min, max)
    x = input._data
    if type(min) is float or type(max) is float:
        x = result_float(x)  # before clipping: numpy would make int64 with 2.5 float64
    data = array_module(x).clip(x, min, max)
    if _dt.is_bf16_np(x.dtype):
        data = data.astype(x.dtype)  # numpy clips bfloat16 with Python bounds in float32
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
        data = xp.where(cond, *_operands(a, b))
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
    op.__doc__ = f"{name} (a boolean result: no gradient)."
    return op


class _ZeroGradient(Node):
    """The backward of a piecewise-constant function: zeros, as PyTorch's (not g * 0,
    which would carry a NaN or inf of g)."""

    def backward(self, g):
        return _wrap(array_module(g._data).zeros_like(g._data))


def _step_function(name, fn):
    """floor, ceil, round, trunc, sign: recorded in the graph as PyTorch records them
    (a ``FloorBackward0`` and so on), with a zero gradient."""
    node = type(f"{name.capitalize()}Backward0", (_ZeroGradient,), {})

    def op(input, **kwargs):
        x = input._data
        return record(node, array_module(x).asarray(fn(array_module(x), x, **kwargs)), (input,))
    op.__name__ = name
    op.__doc__ = f"{name}; its gradient is zero."
    return op


floor = _step_function("floor", lambda xp, x: xp.floor(x))
ceil = _step_function("ceil", lambda xp, x: xp.ceil(x))
round = _step_function("round", lambda xp, x, *, decimals=0: xp.round(x, decimals))
trunc = _step_function("trunc", lambda xp, x: xp.trunc(x))
sign = _step_function("sign", lambda xp, x: x.copy() if x.dtype == bool else xp.sign(x))  # -1, 0, 1
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
        except (ValueError, TypeError):
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


# ------------------------------------------------ leaky_relu / elu / hardtanh
class LeakyReluBackward0(Node):
    """leaky_relu's gradient from the saved input: 1 where ``x > 0``, else the slope."""

    def backward(self, g):
        (x,) = self.saved_tensors
        return where(x > 0, g, g * self.args)


class LeakyReluBackward1(LeakyReluBackward0):
    """The in-place form: the output is saved (it has the input's sign for a slope >= 0)."""

    def backward(self, g):
        if self.args < 0:
            raise RuntimeError(
                "In-place leakyReLu backward calculation is triggered with a negative slope which "
                "is not supported. This is caused by calling in-place forward function with a "
                "negative slope, please call out-of-place version instead.")
        return super().backward(g)


def _leaky_relu(input, negative_slope, cls):
    x = result_float(input._data)
    xp = array_module(x)
    data = xp.where(x > 0, x, x * negative_slope).astype(x.dtype, copy=False)
    saved = (OUTPUT,) if cls is LeakyReluBackward1 else (input,)
    return record(cls, data, (input,), saved, args=negative_slope)


def leaky_relu(input, negative_slope=0.01):
    return _leaky_relu(input, negative_slope, LeakyReluBackward0)


def _leaky_relu_inplace_form(input, negative_slope=0.01):
    return _leaky_relu(input, negative_slope, LeakyReluBackward1)


class EluBackward0(Node):
    """elu's gradient from the saved input: 1 where ``x > 0``, else ``alpha * exp(x)``."""

    def backward(self, g):
        (x,) = self.saved_tensors
        return where(x > 0, g, g * (exp(x) * self.args))


class EluBackward1(Node):
    """The in-place form: from the output, ``alpha * exp(x) = out + alpha`` where ``x <= 0``."""

    def backward(self, g):
        if self.args < 0:
            raise RuntimeError(
                "In-place elu backward calculation is triggered with a negative slope which is not "
                "supported. This is caused by calling in-place forward function with a negative "
                "slope, please call out-of-place version instead.")
        (out,) = self.saved_tensors
        return where(out > 0, g, g * (out + self.args))


def _elu(input, alpha, cls):
    x = result_float(input._data)
    xp = array_module(x)
    neg = xp.expm1(xp.minimum(x, 0)) * alpha  # min(x, 0): no overflow in the unused branch
    data = xp.where(x > 0, x, neg).astype(x.dtype, copy=False)
    saved = (OUTPUT,) if cls is EluBackward1 else (input,)
    return record(cls, data, (input,), saved, args=alpha)


def elu(input, alpha=1.0):
    return _elu(input, alpha, EluBackward0)


def _elu_inplace_form(input, alpha=1.0):
    return _elu(input, alpha, EluBackward1)


class HardtanhBackward0(Node):
    """hardtanh's gradient: ``g`` strictly inside ``(min_val, max_val)``, else 0."""

    def backward(self, g):
        (x,) = self.saved_tensors
        lo, hi = self.args
        return where((x > lo) & (x < hi), g, 0.0)


def hardtanh(input, min_val=-1.0, max_val=1.0):
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    x = input._data
    data = array_module(x).clip(x, min_val, max_val).astype(x.dtype, copy=False)  # keeps int dtypes
    return record(HardtanhBackward0, data, (input,), (input,), args=(min_val, max_val))


def relu6(input):
    return hardtanh(input, 0.0, 6.0)
