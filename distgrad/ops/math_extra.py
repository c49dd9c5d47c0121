"""More of PyTorch's math: elementwise functions (trigonometric, special functions,
lerp/addcmul/addcdiv, nan_to_num, ...), scans and order statistics (cumprod, cummax,
median, quantile, mode, ...), and dtype queries (finfo, iinfo, result_type, ...).

As in pointwise.py, each op's backward is written with tensor ops so that it can be
differentiated again. Ops that PyTorch builds from other ops are built the same way
here; where PyTorch records a node of its own, ``named`` gives the composite's last
node PyTorch's name (the gradient is the composite's, which is the same function).
"""
from __future__ import annotations

import builtins
import math
from collections import namedtuple

import numpy as np

from .. import dtype as _dt
from ..autograd.function import OUTPUT, Node, record
from ..backend import errstate
from . import pointwise as _pw
from . import reduction as _red
from ._util import down as _down, up as _up
from ._util import (
    Tensor,
    _wrap,
    array_module,
    as_tensor_arg,
    broadcast_error,
    result_float,
    wrap_dim,
)

_NAMED: dict = {}


def named(t, name):
    """``t`` with its grad_fn's class renamed ``name`` (a subclass, same behaviour): for
    ops built from others where PyTorch records a node of its own name."""
    fn = t._grad_fn
    if fn is not None and t._base is None and type(fn).__name__ != name:
        key = (type(fn), name)
        cls = _NAMED.get(key)
        if cls is None:
            cls = _NAMED[key] = type(name, (type(fn),), {"__module__": __name__})
        fn.__class__ = cls
    return t


def _quiet(xp):
    return errstate(xp, divide="ignore", invalid="ignore", over="ignore", under="ignore")


# ----------------------------------------------------------- unary functions
def _node(name, backward):
    return type(name, (Node,), {"backward": backward, "__module__": __name__})


def _unary(name, node_name, fwd, grad, save="input", doc=None):
    """An op ``name(input)`` computing ``fwd(xp, x)`` on the float-promoted input, with
    backward ``grad(g, saved)`` where ``saved`` is the input or (``save="output"``) the output."""

    def backward(self, g):
        (s,) = self.saved_tensors
        return grad(g, s)

    cls = _node(node_name, backward)

    def op(input):
        x = result_float(input._data)
        xp = array_module(x)
        with _quiet(xp):
            data = fwd(xp, x)
        data = xp.asarray(data).astype(x.dtype, copy=False)
        return record(cls, data, (input,), (input,) if save == "input" else (OUTPUT,))

    op.__name__ = name
    op.__doc__ = doc or f"Elementwise {name}, as torch.{name}."
    return op


_LN2 = math.log(2.0)
_LN10 = math.log(10.0)

acos = _unary("acos", "AcosBackward0", lambda xp, x: xp.arccos(x), lambda g, x: -g * (1 - x * x).rsqrt())
asin = _unary("asin", "AsinBackward0", lambda xp, x: xp.arcsin(x), lambda g, x: g * (1 - x * x).rsqrt())
atan = _unary("atan", "AtanBackward0", lambda xp, x: xp.arctan(x), lambda g, x: g / (x * x + 1))
cosh = _unary("cosh", "CoshBackward0", lambda xp, x: xp.cosh(x), lambda g, x: g * sinh(x))
sinh = _unary("sinh", "SinhBackward0", lambda xp, x: xp.sinh(x), lambda g, x: g * cosh(x))
tan = _unary("tan", "TanBackward0", lambda xp, x: xp.tan(x), lambda g, y: g * (y * y + 1), save="output")
log10 = _unary("log10", "Log10Backward0", lambda xp, x: xp.log10(x), lambda g, x: g / (x * _LN10))
log2 = _unary("log2", "Log2Backward0", lambda xp, x: xp.log2(x), lambda g, x: g / (x * _LN2))
exp2 = _unary("exp2", "Exp2Backward0", lambda xp, x: xp.exp2(x), lambda g, y: g * (y * _LN2), save="output")
frac = _unary("frac", "FracBackward0", lambda xp, x: x - xp.trunc(x), lambda g, x: g * 1)
deg2rad = _unary("deg2rad", "Deg2RadBackward0", lambda xp, x: x * (math.pi / 180),
                 lambda g, x: g * (math.pi / 180))
rad2deg = _unary("rad2deg", "Rad2DegBackward0", lambda xp, x: x * (180 / math.pi),
                 lambda g, x: g * (180 / math.pi))
arccos, arcsin, arctan = acos, asin, atan


def _sinc_fwd(xp, x):
    px = x * math.pi
    return xp.where(x == 0, 1.0, xp.sin(px) / xp.where(x == 0, 1.0, px))


def _sinc_grad(g, x):
    px = x * math.pi
    safe = _pw.where(x == 0, 1.0, x)
    d = (_pw.cos(px) * px - _pw.sin(px)) / (safe * safe * math.pi)
    return g * _pw.where(x == 0, 0.0, d)


sinc = _unary("sinc", "SincBackward0", _sinc_fwd, _sinc_grad)


# ---- special functions (numpy has none of these; the same code runs on CuPy)
def _as64(x):
    return x.astype(np.float64) if x.dtype != np.float64 else x


_SQRT_PI = math.sqrt(math.pi)


def _erfc_arr(x):
    xp = array_module(x)
    z = _as64(x)
    a = xp.abs(z)
    small = 1.0 - _pw._erf_double(a)
    # For |x| >= 2 the continued fraction erfc(z) = exp(-z^2) / sqrt(pi) / (z + (1/2) /
    # (z + 1 / (z + ...))) keeps full relative precision where 1 - erf(z) would cancel.
    c = xp.maximum(a, 2.0)
    k = c
    for n in range(60, 0, -1):
        k = c + (n / 2) / k
    with _quiet(xp):
        big = xp.exp(-c * c) / (k * _SQRT_PI)
    r = xp.where(a < 2.0, small, big)
    r = xp.where(z < 0, 2.0 - r, r)
    return xp.where(xp.isnan(z), z, r).astype(x.dtype, copy=False)


def _erfinv_arr(x):
    xp = array_module(x)
    z = _as64(x)
    with _quiet(xp):
        w = -xp.log((1.0 - z) * (1.0 + z))
        w1 = w - 2.5
        p1 = 2.81022636e-08
        for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
                  -0.00417768164, 0.246640727, 1.50140941):
            p1 = c + p1 * w1
        w2 = xp.sqrt(w) - 3.0
        p2 = -0.000200214257
        for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
                  0.00943887047, 1.00167406, 2.83297682):
            p2 = c + p2 * w2
        y = xp.abs(xp.where(w < 5.0, p1, p2) * z)
        a = xp.abs(z)
        tail = a > 0.5
        rest = 1.0 - a          # exact for a >= 0.5
        ok = xp.isfinite(y)
        # Newton steps to double precision, on positive y: erf(y) = a in the middle and
        # erfc(y) = 1 - a in the tails, where erf(y) - a would cancel.
        # In the tails the steps are taken on log erfc, which is nearly linear in y there.
        for _ in range(4):
            slope = 2.0 / _SQRT_PI * xp.exp(-y * y)
            ec = _erfc_arr(y)
            step = xp.where(tail, (xp.log(rest) - xp.log(ec)) * ec / slope, (_pw._erf_double(y) - a) / slope)
            y = xp.where(ok & xp.isfinite(step), y - step, y)
        y = xp.copysign(y, z)
        y = xp.where(xp.abs(z) == 1.0, xp.copysign(xp.inf, z), y)
        y = xp.where(xp.abs(z) > 1.0, xp.nan, y)
    return y.astype(x.dtype, copy=False)


def _lgamma_arr(x):
    xp = array_module(x)
    z0 = _as64(x)
    with _quiet(xp):
        neg = z0 < 0.5
        z = xp.where(neg, 1.0 - z0, z0)  # >= 0.5
        acc = xp.zeros_like(z)
        for _ in range(12):  # lgamma(z) = lgamma(z + 1) - log(z), up to z >= 12
            s = z < 12.0
            acc = acc + xp.where(s, xp.log(z), 0.0)
            z = xp.where(s, z + 1.0, z)
        zi = 1.0 / z
        zi2 = zi * zi
        series = zi * (1 / 12 + zi2 * (-1 / 360 + zi2 * (1 / 1260 + zi2 * (-1 / 1680 + zi2 * (1 / 1188)))))
        r = (z - 0.5) * xp.log(z) - z + 0.5 * math.log(2 * math.pi) + series - acc
        refl = xp.log(math.pi / xp.abs(xp.sin(math.pi * z0))) - r
        out = xp.where(neg, refl, r)
        out = xp.where(xp.isinf(z0) | ((z0 <= 0) & (z0 == xp.floor(z0))), xp.inf, out)
        out = xp.where((z0 == 1) | (z0 == 2), 0.0, out)
    return out.astype(x.dtype, copy=False)


def _digamma_arr(x):
    xp = array_module(x)
    z0 = _as64(x)
    with _quiet(xp):
        neg = z0 < 0.5
        z = xp.where(neg, 1.0 - z0, z0)
        acc = xp.zeros_like(z)
        for _ in range(12):
            s = z < 12.0
            acc = acc + xp.where(s, 1.0 / z, 0.0)
            z = xp.where(s, z + 1.0, z)
        zi2 = 1.0 / (z * z)
        r = xp.log(z) - 0.5 / z - zi2 * (1 / 12 - zi2 * (1 / 120 - zi2 * (1 / 252 - zi2 * (
            1 / 240 - zi2 * (1 / 132))))) - acc
        refl = r - math.pi / xp.tan(math.pi * z0)
        out = xp.where(neg, refl, r)
        out = xp.where(z0 == 0, -xp.inf, out)  # PyTorch: digamma(0) = -inf
        out = xp.where((z0 < 0) & (z0 == xp.floor(z0)), xp.nan, out)
    return out.astype(x.dtype, copy=False)


_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510)


def _polygamma_arr(n, x):
    if n == 0:
        return _digamma_arr(x)
    xp = array_module(x)
    z = _as64(x)
    nf = math.factorial(n)
    with _quiet(xp):
        acc = xp.zeros_like(z)
        lim = 20.0 + 2 * n
        for _ in range(int(lim) + 64):  # psi_n(z) = psi_n(z + 1) + (-1)^(n+1) n! / z^(n+1)
            s = z < lim
            if not bool(s.any()):
                break
            acc = acc + xp.where(s, nf / z ** (n + 1), 0.0)
            z = xp.where(s, z + 1.0, z)
        series = math.factorial(n - 1) / z ** n + nf / (2 * z ** (n + 1))
        for k, b in enumerate(_BERNOULLI, 1):
            series = series + b * math.factorial(2 * k + n - 1) / math.factorial(2 * k) / z ** (2 * k + n)
        out = (series + acc) * (-1) ** (n + 1)
        out = xp.where((x <= 0) & (x == xp.floor(x)), xp.inf if n % 2 else xp.nan, out)
    return out.astype(x.dtype, copy=False)


erfc = _unary("erfc", "ErfcBackward0", lambda xp, x: _erfc_arr(x),
              lambda g, x: g * (_pw.exp(-(x * x)) * (-2 / _SQRT_PI)))
erfinv = _unary("erfinv", "ErfinvBackward0", lambda xp, x: _erfinv_arr(x),
                lambda g, y: g * (_pw.exp(y * y) * (_SQRT_PI / 2)), save="output")
lgamma = _unary("lgamma", "LgammaBackward0", lambda xp, x: _lgamma_arr(x), lambda g, x: g * digamma(x))
digamma = _unary("digamma", "DigammaBackward0", lambda xp, x: _digamma_arr(x),
                 lambda g, x: g * polygamma(1, x))


class PolygammaBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g * polygamma(self.args + 1, x)


def polygamma(n, input):
    if not isinstance(n, int) or n < 0:
        raise RuntimeError("polygamma(n, x) does not support negative n.")
    if n == 0:
        return digamma(input)
    x = result_float(input._data)
    return record(PolygammaBackward0, _polygamma_arr(n, x), (input,), (input,), args=n)


def special_gammaln(input):
    return lgamma(input)


class LogitBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        eps = self.args
        d = g / (x * (1 - x))
        if eps is None:
            return d
        return _pw.where((x < eps) | (x > 1 - eps), 0.0, d)


def logit(input, eps=None):
    x = result_float(input._data)
    xp = array_module(x)
    z = x if eps is None else xp.clip(x, eps, 1 - eps)
    with _quiet(xp):
        data = xp.log(z / (1 - z)).astype(x.dtype, copy=False)
    return record(LogitBackward0, data, (input,), (input,), args=eps)


class SgnBackward0(Node):
    def backward(self, g):
        return g * 0


def sgn(input):
    """The sign, as torch.sgn (for real tensors, torch.sign); its gradient is zero."""
    return record(SgnBackward0, array_module(input._data).sign(input._data), (input,))


def signbit(input):
    return _wrap(array_module(input._data).signbit(input._data))


def isposinf(input):
    x = input._data
    return _wrap(array_module(x).isposinf(x) if _dt.kind_of(x.dtype) == "f" else array_module(x).zeros(x.shape, bool))


def isneginf(input):
    x = input._data
    return _wrap(array_module(x).isneginf(x) if _dt.kind_of(x.dtype) == "f" else array_module(x).zeros(x.shape, bool))


def isreal(input):
    return _wrap(array_module(input._data).ones(input._data.shape, bool))


class NanToNumBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g * _pw.isfinite(x)


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    x = input._data
    xp = array_module(x)
    if _dt.kind_of(x.dtype) != "f":
        return record(NanToNumBackward0, x.copy(), (input,), (input,))
    fi = np.finfo(x.dtype)
    data = xp.where(xp.isnan(x), nan, x)
    data = xp.where(xp.isposinf(x), fi.max if posinf is None else posinf, data)
    data = xp.where(xp.isneginf(x), fi.min if neginf is None else neginf, data)
    return record(NanToNumBackward0, data.astype(x.dtype, copy=False), (input,), (input,))


def negative(input):
    return _pw.neg(input)


def positive(input):
    if input._data.dtype.kind == "b":
        raise TypeError("The `+` operator, on a bool tensor is not supported.")
    return input


def absolute(input):
    return _pw.abs(input)


def subtract(input, other, *, alpha=1):
    return _pw.sub(input, other, alpha=alpha)


def true_divide(input, other):
    return _pw.div(input, other)


def not_equal(input, other):
    return _pw.ne(input, other)


# ----------------------------------------------------------- binary functions
def _pair(op, a, b):
    """Both operands as tensors, and their arrays cast to PyTorch's result dtype."""
    if not isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(a).__name__}")
        a = as_tensor_arg(a, b, op)
    b = as_tensor_arg(b, a, op)
    x, y = _pw._promoted(a._data, b._data)
    return a, b, x, y


def _binary_float(op, cls, a, b, fn, save=True, floating=True):
    a, b, x, y = _pair(op, a, b)
    if floating:
        x, y = result_float(x), result_float(y)
    xp = array_module(x)
    try:
        with _quiet(xp):
            data = xp.asarray(fn(xp, x, y))
    except (ValueError, TypeError):
        raise broadcast_error(op, a, b) from None
    data = data.astype(xp.result_type(x, y), copy=False)
    return record(cls, data, (a, b), (a, b, OUTPUT) if save else ())


class Atan2Backward0(Node):
    def backward(self, g):
        a, b, _ = self.saved_tensors
        r = a * a + b * b
        return (g * b / r if self.needs(0) else None, g * -a / r if self.needs(1) else None)


def atan2(input, other):
    return _binary_float("atan2", Atan2Backward0, input, other, lambda xp, x, y: xp.arctan2(x, y))


arctan2 = atan2


class HypotBackward0(Node):
    def backward(self, g):
        a, b, out = self.saved_tensors
        return (g * a / out if self.needs(0) else None, g * b / out if self.needs(1) else None)


def hypot(input, other):
    return _binary_float("hypot", HypotBackward0, input, other, lambda xp, x, y: xp.hypot(x, y))


class LogaddexpBackward0(Node):
    def backward(self, g):
        a, b, _ = self.saved_tensors
        return (g / (_pw.exp(b - a) + 1) if self.needs(0) else None,
                g / (_pw.exp(a - b) + 1) if self.needs(1) else None)


class Logaddexp2Backward0(Node):
    def backward(self, g):
        a, b, _ = self.saved_tensors
        return (g / (2 ** (b - a) + 1) if self.needs(0) else None,
                g / (2 ** (a - b) + 1) if self.needs(1) else None)


def logaddexp(input, other):
    return _binary_float("logaddexp", LogaddexpBackward0, input, other, lambda xp, x, y: xp.logaddexp(x, y))


def logaddexp2(input, other):
    return _binary_float("logaddexp2", Logaddexp2Backward0, input, other, lambda xp, x, y: xp.logaddexp2(x, y))


class XlogyBackward0(Node):
    def backward(self, g):
        a, b, _ = self.saved_tensors
        ga = g * xlogy((a != 0).to(g.dtype), b) if self.needs(0) else None
        gb = g * a / b if self.needs(1) else None
        return ga, gb


class XlogyBackward2(XlogyBackward0):
    """xlogy(tensor, scalar)."""


class XlogyBackward1(XlogyBackward0):
    """xlogy(scalar, tensor)."""


def _xlogy(xp, x, y):
    return xp.where((x == 0) & ~xp.isnan(y), 0.0, x * xp.log(y))


def xlogy(input, other):
    cls = (XlogyBackward1 if not isinstance(input, Tensor)
           else XlogyBackward2 if not isinstance(other, Tensor) else XlogyBackward0)
    return _binary_float("xlogy", cls, input, other, _xlogy)


class FmodBackward0(Node):
    def backward(self, g):
        return g


class FmodBackward1(Node):
    def backward(self, g):
        a, b, _ = self.saved_tensors
        return (g if self.needs(0) else None,
                g * -_pw.trunc(a / b) if self.needs(1) else None)


def fmod(input, other):
    if not isinstance(other, Tensor):
        _pw._check_scalar("fmod", other)
        x = input._data
        xp = array_module(x)
        if type(other) is float:
            x = result_float(x)
        with _quiet(xp):
            data = xp.fmod(x, other).astype(x.dtype, copy=False)
        return record(FmodBackward0, data, (input,))
    a, b, x, y = _pair("fmod", input, other)
    xp = array_module(x)
    if x.dtype.kind in "iu" and bool((y == 0).any()):
        raise RuntimeError("ZeroDivisionError")
    try:
        with _quiet(xp):
            data = xp.asarray(xp.fmod(x, y))
    except ValueError:
        raise broadcast_error("fmod", a, b) from None
    return record(FmodBackward1, data, (a, b), (a, b, OUTPUT))


class CopysignBackward0(Node):
    def backward(self, g):
        a, b, out = self.saved_tensors
        ratio = _pw.where(a == 0, 0.0, out / _pw.where(a == 0, 1.0, a))
        return (g * ratio if self.needs(0) else None, g * 0 if self.needs(1) else None)


class CopysignBackward1(Node):
    def backward(self, g):
        (a, out) = self.saved_tensors
        return g * _pw.where(a == 0, 0.0, out / _pw.where(a == 0, 1.0, a))


def copysign(input, other):
    if not isinstance(other, Tensor):
        _pw._check_scalar("copysign", other)
        x = result_float(input._data)
        data = array_module(x).copysign(x, other).astype(x.dtype, copy=False)
        return record(CopysignBackward1, data, (input,), (input, OUTPUT))
    return _binary_float("copysign", CopysignBackward0, input, other, lambda xp, x, y: xp.copysign(x, y))


class FmaxBackward0(Node):
    def backward(self, g):
        a, b, _ = self.saved_tensors
        take_a = (a >= b) | _pw.isnan(b)
        return (_pw.where(take_a, g, 0.0) if self.needs(0) else None,
                _pw.where(take_a, 0.0, g) if self.needs(1) else None)


class FminBackward0(Node):
    def backward(self, g):
        a, b, _ = self.saved_tensors
        take_a = (a <= b) | _pw.isnan(b)
        return (_pw.where(take_a, g, 0.0) if self.needs(0) else None,
                _pw.where(take_a, 0.0, g) if self.needs(1) else None)


def fmax(input, other):
    return _binary_float("fmax", FmaxBackward0, input, other, lambda xp, x, y: xp.fmax(x, y), floating=False)


def fmin(input, other):
    return _binary_float("fmin", FminBackward0, input, other, lambda xp, x, y: xp.fmin(x, y), floating=False)


def heaviside(input, values):
    if not isinstance(values, Tensor):
        raise TypeError(f"heaviside(): argument 'values' must be Tensor, not {type(values).__name__}")
    if input.dtype != values.dtype:
        raise RuntimeError("heaviside is not yet implemented for tensors with different dtypes")
    x, v = input._data, values._data
    xp = array_module(x)
    try:
        data = xp.where(x == 0, v, (x > 0).astype(x.dtype))
    except ValueError:
        raise broadcast_error("heaviside", input, values) from None
    return _wrap(xp.asarray(data).astype(x.dtype, copy=False))


def float_power(input, exponent):
    """``input ** exponent`` computed in float64, as torch.float_power."""
    if not isinstance(input, Tensor):
        return _pw.pow(float(input), exponent.double())
    e = exponent.double() if isinstance(exponent, Tensor) else exponent
    if isinstance(e, int) and not isinstance(e, bool):
        e = float(e)
    return _pw.pow(input.double(), e)


class ClampMinBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return _pw.where(x >= self.args, g, 0.0)


class ClampMaxBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return _pw.where(x <= self.args, g, 0.0)


class ClampMinBackward1(Node):
    def backward(self, g):
        x, lo = self.saved_tensors
        keep = x >= lo
        return (_pw.where(keep, g, 0.0) if self.needs(0) else None,
                _pw.where(keep, 0.0, g) if self.needs(1) else None)


class ClampMaxBackward1(Node):
    def backward(self, g):
        x, hi = self.saved_tensors
        keep = x <= hi
        return (_pw.where(keep, g, 0.0) if self.needs(0) else None,
                _pw.where(keep, 0.0, g) if self.needs(1) else None)


def _clamp_one(op, input, bound, is_min):
    xp = array_module(input._data)
    fn = xp.maximum if is_min else xp.minimum
    if isinstance(bound, Tensor):
        x, y = _pw._promoted(input._data, bound._data)
        try:
            data = fn(x, y)
        except ValueError:
            raise broadcast_error(op, input, bound) from None
        cls = ClampMinBackward1 if is_min else ClampMaxBackward1
        return record(cls, data, (input, bound), (input, bound))
    _pw._check_scalar(op, bound)
    x = input._data
    if type(bound) is float:
        x = result_float(x)
    data = fn(x, bound).astype(x.dtype, copy=False)
    cls = ClampMinBackward0 if is_min else ClampMaxBackward0
    return record(cls, data, (input,), (input,), args=bound)


def clamp_min(input, min):
    return _clamp_one("clamp_min", input, min, True)


def clamp_max(input, max):
    return _clamp_one("clamp_max", input, max, False)


# ------------------------------------------------------- lerp / addcmul / addcdiv
class LerpBackward0(Node):
    def backward(self, g):
        w = self.args
        return (g * (1 - w) if self.needs(0) else None, g * w if self.needs(1) else None)


class LerpBackward1(Node):
    def backward(self, g):
        a, b, w = self.saved_tensors
        return (g * (1 - w) if self.needs(0) else None, g * w if self.needs(1) else None,
                g * (b - a) if self.needs(2) else None)


def lerp(input, end, weight):
    if not isinstance(end, Tensor):
        raise TypeError(f"lerp(): argument 'end' must be Tensor, not {type(end).__name__}")
    if input.dtype != end.dtype:
        raise RuntimeError(f"expected dtype {input.dtype} for `end` but got dtype {end.dtype}")
    x, y = input._data, end._data
    xp = array_module(x)
    if isinstance(weight, Tensor):
        if weight.dtype != input.dtype:
            raise RuntimeError(f"expected dtype {input.dtype} for `weight` but got dtype {weight.dtype}")
        w = weight._data
        try:
            data = xp.where(xp.abs(w) < 0.5, x + w * (y - x), y - (y - x) * (1 - w))
        except ValueError:
            raise RuntimeError(
                f"lerp: shapes {list(x.shape)}, {list(y.shape)} and {list(w.shape)} cannot be "
                "broadcast together") from None
        return record(LerpBackward1, data.astype(x.dtype, copy=False), (input, end, weight),
                      (input, end, weight))
    try:
        data = x + weight * (y - x) if builtins.abs(weight) < 0.5 else y - (y - x) * (1 - weight)
    except ValueError:
        raise broadcast_error("lerp", input, end) from None
    return record(LerpBackward0, xp.asarray(data).astype(x.dtype, copy=False), (input, end), args=weight)


class AddcmulBackward0(Node):
    def backward(self, g):
        t1, t2 = self.saved_tensors
        v = self.args
        return (g if self.needs(0) else None,
                g * t2 * v if self.needs(1) else None,
                g * t1 * v if self.needs(2) else None)


class AddcdivBackward0(Node):
    def backward(self, g):
        t1, t2 = self.saved_tensors
        v = self.args
        return (g if self.needs(0) else None,
                g * v / t2 if self.needs(1) else None,
                -g * v * t1 / (t2 * t2) if self.needs(2) else None)


def _three(op, input, t1, t2):
    """The three arrays cast to PyTorch's common dtype."""
    x, a = _pw._promoted(input._data, t1._data)
    x, b = _pw._promoted(x, t2._data)
    return [x.astype(b.dtype, copy=False), a.astype(b.dtype, copy=False), b]


def addcmul(input, tensor1, tensor2, *, value=1):
    x, a, b = _three("addcmul", input, tensor1, tensor2)
    try:
        data = x + value * (a * b) if value != 1 else x + a * b
    except ValueError:
        raise RuntimeError(
            f"addcmul: shapes {list(x.shape)}, {list(a.shape)} and {list(b.shape)} cannot be "
            "broadcast together") from None
    data = array_module(x).asarray(data).astype(x.dtype, copy=False)
    return record(AddcmulBackward0, data, (input, tensor1, tensor2), (tensor1, tensor2), args=value)


def addcdiv(input, tensor1, tensor2, *, value=1):
    if tensor1._data.dtype.kind in "biu" and tensor2._data.dtype.kind in "biu":
        raise RuntimeError(
            "Integer division with addcdiv is no longer supported, and in a future release "
            "addcdiv will perform a true division of tensor1 and tensor2. The historic addcdiv "
            "behavior can be implemented as (input + value * torch.trunc(tensor1 / tensor2))."
            "to(input.dtype) for integer inputs and as (input + value * tensor1 / tensor2) for "
            "float inputs. The future addcdiv behavior is just the latter implementation: "
            "(input + value * tensor1 / tensor2), for all dtypes.")
    x, a, b = _three("addcdiv", input, tensor1, tensor2)
    xp = array_module(x)
    try:
        with _quiet(xp):
            data = x + value * (a / b)
    except ValueError:
        raise RuntimeError(
            f"addcdiv: shapes {list(x.shape)}, {list(a.shape)} and {list(b.shape)} cannot be "
            "broadcast together") from None
    data = xp.asarray(data).astype(x.dtype, copy=False)
    return record(AddcdivBackward0, data, (input, tensor1, tensor2), (tensor1, tensor2), args=value)


# ================================================================== scans
def _rev_cumsum(t, d):
    return t.flip(d).cumsum(d).flip(d)


class CumprodBackward0(Node):
    def backward(self, g):
        x, out = self.saved_tensors
        d = self.args
        if x.dim() == 0:
            return g * 1
        if not bool((x._data == 0).any()):
            return _rev_cumsum(g * out, d) / x
        # With zeros: d out_j / d x_i = prod_{k <= j, k != i} x_k, from a cumprod of a copy
        # of the input with x_i set to 1 for each i (quadratic in the dim's length).
        n = x.shape[d]
        xm = x.movedim(d, -1)
        gm = g.movedim(d, -1)
        from .creation import eye
        e = eye(n, dtype=x.dtype, device=x.device)
        rows = xm.unsqueeze(-2) * (1 - e) + e            # [..., i, k]
        p = cumprod(rows, -1)                            # [..., i, j]
        tri = (1 - e).triu() + e                         # j >= i
        gi = (p * tri * gm.unsqueeze(-2)).sum(-1)
        return gi.movedim(-1, d)


def cumprod(input, dim, *, dtype=None):
    x = input._data
    if dtype is not None:
        x = x.astype(_dt.to_np(dtype))
    elif x.dtype.kind in "biu":
        x = x.astype(np.int64)
    d = wrap_dim(dim, x.ndim, "cumprod")
    xp = array_module(x)
    data = _down(xp.cumprod(_up(x), axis=d), x.dtype) if x.ndim else x.copy()
    src = input if dtype is None or input._data.dtype == x.dtype else input.to(_dt.to_dtype(dtype))
    return record(CumprodBackward0, data, (src,), (src, OUTPUT), args=d)


cummax_t = namedtuple("cummax", ["values", "indices"])
cummin_t = namedtuple("cummin", ["values", "indices"])


class CummaxBackward0(Node):
    def backward(self, g):
        shape, d, idx = self.args
        from .creation import zeros
        from .indexing import scatter_add
        if not shape:
            return g * 1
        return scatter_add(zeros(shape, dtype=g.dtype, device=g.device), d, idx, g)


class CumminBackward0(CummaxBackward0):
    pass


def _cum_extreme(input, dim, is_max):
    op = "cummax" if is_max else "cummin"
    x = input._data
    d = wrap_dim(dim, x.ndim, op)
    xp = array_module(x)
    if x.ndim == 0:
        idx = xp.zeros((), np.int64)
        vals = x.copy()
    else:
        xm = xp.moveaxis(x, d, 0)
        vals = xp.empty_like(xm)
        idx = xp.empty(xm.shape, np.int64)
        best = xm[0].copy() if xm.shape[0] else None
        bi = xp.zeros(xm.shape[1:], np.int64)
        for i in range(xm.shape[0]):
            cur = xm[i]
            better = (cur >= best) if is_max else (cur <= best)
            if _dt.kind_of(x.dtype) == "f":
                better = better | xp.isnan(cur)
                better = better & ~xp.isnan(best) | xp.isnan(cur)
            best = xp.where(better, cur, best)
            bi = xp.where(better, i, bi)
            vals[i] = best
            idx[i] = bi
        vals = xp.moveaxis(vals, 0, d)
        idx = xp.moveaxis(idx, 0, d)
    i_t = _wrap(xp.ascontiguousarray(idx))
    v = record(CummaxBackward0 if is_max else CumminBackward0, xp.ascontiguousarray(vals), (input,),
               args=(x.shape, d, i_t))
    return (cummax_t if is_max else cummin_t)(v, i_t)


def cummax(input, dim):
    return _cum_extreme(input, dim, True)


def cummin(input, dim):
    return _cum_extreme(input, dim, False)


class LogcumsumexpBackward0(Node):
    def backward(self, g):
        x, out = self.saved_tensors
        d = self.args
        if x.dim() == 0:
            return g * 1
        # grad_i = sum_{j >= i} g_j exp(x_i - out_j); x_i <= out_j there, so no overflow.
        xm, om, gm = x.movedim(d, -1), out.movedim(d, -1), g.movedim(d, -1)
        n = xm.shape[-1]
        from .creation import ones
        upper = ones(n, n, dtype=_dt.bool, device=x.device).triu()
        diff = xm.unsqueeze(-1) - om.unsqueeze(-2)      # [..., i, j]
        w = _pw.exp(_pw.where(upper, diff, -math.inf))
        return (w * gm.unsqueeze(-2)).sum(-1).movedim(-1, d)


def logcumsumexp(input, dim):
    x = result_float(input._data)
    d = wrap_dim(dim, x.ndim, "logcumsumexp")
    xp = array_module(x)
    if x.ndim == 0:
        data = x.copy()
    else:
        with _quiet(xp):
            data = xp.logaddexp.accumulate(_up(x), axis=d) if xp is np else _logcumsumexp_loop(xp, _up(x), d)
    return record(LogcumsumexpBackward0, data.astype(x.dtype, copy=False), (input,), (input, OUTPUT), args=d)


def _logcumsumexp_loop(xp, x, d):
    xm = xp.moveaxis(x, d, 0)
    out = xp.empty_like(xm)
    acc = xm[0]
    out[0] = acc
    for i in range(1, xm.shape[0]):
        acc = xp.logaddexp(acc, xm[i])
        out[i] = acc
    return xp.moveaxis(out, 0, d)


# ================================================================ reductions
def nanmean(input, dim=None, keepdim=False, *, dtype=None):
    if _dt.kind_of(input._data.dtype) != "f":
        raise RuntimeError(
            f"nanmean(): expected input to have floating point or complex dtype but got {_dt.from_numpy_dtype(input._data.dtype)}")
    count = _pw.logical_not(_pw.isnan(input)).sum(dim=dim, keepdim=keepdim)
    return _red.nansum(input, dim=dim, keepdim=keepdim, dtype=dtype).div(count)


def count_nonzero(input, dim=None):
    x = input._data
    xp = array_module(x)
    axis = None if dim is None else (tuple(wrap_dim(d, x.ndim, "count_nonzero") for d in dim)
                                     if isinstance(dim, (tuple, list)) else wrap_dim(dim, x.ndim, "count_nonzero"))
    return _wrap(xp.asarray(xp.count_nonzero(x, axis=axis)).astype(np.int64))


aminmax_t = namedtuple("aminmax", ["min", "max"])


def aminmax(input, *, dim=None, keepdim=False):
    if input.numel() == 0:
        raise RuntimeError("aminmax(): cannot compute aminmax over an empty dimension as the operation has no identity.")
    if dim is None:
        lo, hi = _red.amin(input, (), keepdim), _red.amax(input, (), keepdim)
    else:
        lo, hi = _red.amin(input, dim, keepdim), _red.amax(input, dim, keepdim)
    return aminmax_t(named(lo, "AminmaxBackward0"), named(hi, "AminmaxBackward0"))


median_t = namedtuple("median", ["values", "indices"])
nanmedian_t = namedtuple("nanmedian", ["values", "indices"])
mode_t = namedtuple("mode", ["values", "indices"])


class MedianBackward0(Node):
    """Global median: the gradient is shared evenly by the elements equal to the result."""

    def backward(self, g):
        (x, out) = self.saved_tensors
        m = (x == out) | (_pw.isnan(x) & _pw.isnan(out))
        m = m.to(g.dtype)
        return g * m / m.sum()


class NanmedianBackward0(MedianBackward0):
    pass


class _ValueSelectBackward(Node):
    def backward(self, g):
        shape, d, idx, keepdim = self.args
        from .creation import zeros
        from .indexing import scatter_add
        if not shape:
            return g * 1
        if not keepdim:
            g = g.unsqueeze(d)
        return scatter_add(zeros(shape, dtype=g.dtype, device=g.device), d, idx.unsqueeze(d) if not keepdim else idx, g)


class MedianBackward1(_ValueSelectBackward):
    pass


class NanmedianBackward1(_ValueSelectBackward):
    pass


class ModeBackward0(_ValueSelectBackward):
    pass


def _median_pos(xp, s, ignore_nan):
    """Index of the lower median in sorted rows ``s`` (last axis; NaN sorts last)."""
    n = s.shape[-1]
    if ignore_nan:
        k = (~xp.isnan(s)).sum(-1)
        pos = xp.maximum(k - 1, 0) // 2
        return pos
    pos = xp.full(s.shape[:-1], (n - 1) // 2, np.int64)
    has_nan = xp.isnan(s).any(-1) if _dt.kind_of(s.dtype) == "f" else xp.zeros(s.shape[:-1], bool)
    return xp.where(has_nan, n - 1, pos)  # a NaN in the row makes the median NaN


def _median(input, dim, keepdim, ignore_nan):
    op = "nanmedian" if ignore_nan else "median"
    x = input._data
    xp = array_module(x)
    if dim is None:
        if x.size == 0:
            return _wrap(xp.asarray(xp.nan, x.dtype))
        flat = x.reshape(-1)
        order = xp.argsort(flat, kind="stable") if xp is np else xp.argsort(flat)
        s = flat[order]
        pos = int(_median_pos(xp, s[None], ignore_nan)[0])
        data = s[pos].copy()
        cls = NanmedianBackward0 if ignore_nan else MedianBackward0
        return record(cls, xp.asarray(data), (input,), (input, OUTPUT))
    d = wrap_dim(dim, x.ndim, op)
    if x.ndim == 0:
        v = record(NanmedianBackward1 if ignore_nan else MedianBackward1, x.copy(), (input,),
                   args=((), 0, None, keepdim))
        return (nanmedian_t if ignore_nan else median_t)(v, _wrap(xp.zeros((), np.int64)))
    if x.shape[d] == 0:
        raise IndexError(f"{op}(): Expected reduction dim {d} to have non-zero size.")
    xm = xp.moveaxis(x, d, -1)
    order = xp.argsort(xm, axis=-1, kind="stable") if xp is np else xp.argsort(xm, axis=-1)
    s = xp.take_along_axis(xm, order, -1)
    pos = _median_pos(xp, s, ignore_nan)[..., None]
    vals = xp.take_along_axis(s, pos, -1)[..., 0]
    idx = xp.take_along_axis(order, pos, -1)[..., 0].astype(np.int64)
    vals, idx = xp.moveaxis(vals[..., None], -1, d), xp.moveaxis(idx[..., None], -1, d)
    if not keepdim:
        vals, idx = vals.squeeze(d), idx.squeeze(d)
    i_t = _wrap(xp.ascontiguousarray(idx))
    v = record(NanmedianBackward1 if ignore_nan else MedianBackward1, xp.ascontiguousarray(vals), (input,),
               args=(x.shape, d, i_t, keepdim))
    return (nanmedian_t if ignore_nan else median_t)(v, i_t)


def median(input, dim=None, keepdim=False):
    return _median(input, dim, keepdim, False)


def nanmedian(input, dim=None, keepdim=False):
    return _median(input, dim, keepdim, True)


def mode(input, dim=-1, keepdim=False):
    """The most frequent value along ``dim`` (the smallest of equally frequent ones) and
    the index of its last occurrence, as torch.mode on the CPU."""
    x = input._data
    xp = array_module(x)
    if x.ndim == 0:
        v = record(ModeBackward0, x.copy(), (input,), args=((), 0, None, keepdim))
        return mode_t(v, _wrap(xp.zeros((), np.int64)))
    d = wrap_dim(dim, x.ndim, "mode")
    xm = np.asarray(xp.moveaxis(x, d, -1)) if xp is np else xp.asnumpy(xp.moveaxis(x, d, -1))
    rows = xm.reshape(-1, xm.shape[-1])
    vals = np.empty(rows.shape[0], x.dtype)
    idx = np.empty(rows.shape[0], np.int64)
    for r, row in enumerate(rows):
        u, counts = np.unique(row, return_counts=True)
        best = u[np.argmax(counts)]
        vals[r] = best
        idx[r] = np.nonzero(row == best)[0][-1]
    vals = vals.reshape(xm.shape[:-1])
    idx = idx.reshape(xm.shape[:-1])
    if keepdim:
        vals, idx = np.expand_dims(vals, d), np.expand_dims(idx, d)
    vals, idx = xp.asarray(vals), xp.asarray(idx)
    i_t = _wrap(idx)
    v = record(ModeBackward0, vals, (input,), args=(x.shape, d, i_t, keepdim))
    return mode_t(v, i_t)


_INTERP = ("linear", "lower", "higher", "midpoint", "nearest")


def _quantile(input, q, dim, keepdim, interpolation, ignore_nan):
    op = "nanquantile" if ignore_nan else "quantile"
    from .creation import tensor as _tensor
    from .sorting import sort
    if _dt.kind_of(input._data.dtype) != "f":
        raise RuntimeError(f"{op}() input tensor must be either float or double dtype")
    if interpolation not in _INTERP:
        raise RuntimeError(
            f"{op}() interpolation must be one of linear, lower, higher, midpoint or nearest, "
            f"but got {interpolation}")
    scalar_q = not isinstance(q, Tensor)
    qt = _tensor(q, dtype=input.dtype, device=input.device) if scalar_q else q
    if qt.dim() > 1:
        raise RuntimeError(f"{op}() q must be a scalar or 1D tensor")
    if qt.dtype != input.dtype:
        raise RuntimeError(f"{op}() q tensor must be same dtype as the input tensor")
    qa = np.asarray(qt._data if array_module(qt._data) is np else array_module(qt._data).asnumpy(qt._data))
    if ((qa < 0) | (qa > 1)).any():
        bad = qa.reshape(-1)[((qa < 0) | (qa > 1)).reshape(-1)][0]
        raise RuntimeError(f"{op}() q must be in the range [0, 1] but got {bad:g}")
    x = input
    if dim is None:
        x = x.reshape(-1)
        d = 0
    else:
        d = wrap_dim(dim, x.dim(), op)
        if x.dim() == 0:
            x = x.reshape(1)
    if x.shape[d] == 0:
        raise IndexError(f"{op}() input tensor must be non-empty")
    s = sort(x.movedim(d, -1), dim=-1).values                     # [..., n], NaN last
    n = s.shape[-1]
    xp = array_module(s._data)
    nan = xp.isnan(s._data)
    if ignore_nan:
        k = (~nan).sum(-1).astype(s._data.dtype)                    # [...]
    else:
        k = xp.where(nan.any(-1), 0.0, float(n)).astype(s._data.dtype)
    qv = xp.asarray(qa.reshape(-1), dtype=s._data.dtype)            # [Q]
    rank = qv.reshape((-1,) + (1,) * k.ndim) * (xp.maximum(k, 1) - 1)   # [Q, ...]
    if interpolation == "lower":
        rank = xp.floor(rank)
    elif interpolation == "higher":
        rank = xp.ceil(rank)
    elif interpolation == "nearest":
        rank = xp.round(rank)
    lo = xp.floor(rank).astype(np.int64)
    hi = xp.ceil(rank).astype(np.int64)
    allnan = k == 0
    lo = xp.where(allnan, n - 1, lo)
    hi = xp.where(allnan, n - 1, hi)
    sq = s.unsqueeze(0).expand((qv.shape[0],) + tuple(s.shape))
    vlo = sq.gather(-1, _wrap(lo[..., None])).squeeze(-1)
    vhi = sq.gather(-1, _wrap(hi[..., None])).squeeze(-1)
    if interpolation == "midpoint":
        out = vlo + (vhi - vlo) * 0.5
    elif interpolation == "linear":
        w = _wrap((rank - xp.floor(rank)).astype(s._data.dtype))
        out = vlo + (vhi - vlo) * w
    else:
        out = vlo
    # out: [Q, ...rest without d]
    if keepdim:
        if dim is None:
            out = out.reshape((out.shape[0],) + (1,) * input.dim())
        else:
            out = out.unsqueeze(d + 1) if input.dim() else out
    if scalar_q:
        out = out.squeeze(0)
    return out


def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    return _quantile(input, q, dim, keepdim, interpolation, False)


def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    return _quantile(input, q, dim, keepdim, interpolation, True)


# ============================================================ dtype queries
class finfo:
    """Machine limits of a floating-point dtype, as torch.finfo."""

    def __init__(self, type=None):
        d = _dt.get_default_dtype() if type is None else _dt.to_dtype(type)
        if not d.is_floating_point:
            raise TypeError("torch.finfo() requires a floating point input type. Use torch.iinfo to handle 'torch.finfo'")
        fi = np.finfo(d.np)
        self.dtype = d.name
        self.bits = fi.bits
        self.eps = float(fi.eps)
        self.max = float(fi.max)
        self.min = float(fi.min)
        self.tiny = self.smallest_normal = float(fi.tiny)
        self.resolution = 10.0 ** -int(fi.precision)

    def __repr__(self):
        return (f"finfo(resolution={self.resolution}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
                f"smallest_normal={self.tiny:g}, tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo:
    """Limits of an integer dtype, as torch.iinfo."""

    def __init__(self, type):
        d = _dt.to_dtype(type)
        if d.is_floating_point:
            raise TypeError("torch.iinfo() requires an integer input type. Use torch.finfo to handle 'torch.iinfo'")
        if d.np.kind == "b":
            self.bits, self.min, self.max = 8, 0, 1
        else:
            ii = np.iinfo(d.np)
            self.bits, self.min, self.max = ii.bits, int(ii.min), int(ii.max)
        self.dtype = d.name

    def __repr__(self):
        return f"iinfo(min={self.min}, max={self.max}, dtype={self.dtype})"


def is_floating_point(input):
    return input.is_floating_point()


def is_complex(input):
    return False


def is_nonzero(input):
    n = input.numel()
    if n == 0:
        raise RuntimeError("Boolean value of Tensor with no values is ambiguous")
    if n > 1:
        raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
    return bool(input._data.reshape(-1)[0])


def promote_types(type1, type2):
    a, b = _dt.to_dtype(type1), _dt.to_dtype(type2)
    return _dt.from_numpy_dtype(np.dtype(_pw._promote_types(np, a.np, b.np)))


def _category(kind):
    return {"b": 0, "u": 1, "i": 1, "f": 2}[kind]


def result_type(tensor1, tensor2):
    """The dtype PyTorch's promotion gives ``tensor1`` op ``tensor2`` (tensors or numbers)."""
    def arr(v, other):
        if isinstance(v, Tensor):
            return v._data
        if isinstance(other, Tensor):
            return as_tensor_arg(v, other, "result_type")._data
        if isinstance(v, bool):
            return np.asarray(v)
        if isinstance(v, int):
            return np.asarray(v, np.int64)
        return np.asarray(v, _dt.get_default_dtype().np)

    if not isinstance(tensor1, Tensor) and not isinstance(tensor2, Tensor):
        # Two numbers: the higher category in its default dtype.
        a, b = arr(tensor1, None), arr(tensor2, None)
        return _dt.from_numpy_dtype(a.dtype if _category(_dt.kind_of(a.dtype)) >= _category(_dt.kind_of(b.dtype)) else b.dtype)
    x, y = _pw._promoted(arr(tensor1, tensor2), arr(tensor2, tensor1))
    return _dt.from_numpy_dtype(x.dtype)


def can_cast(from_, to):
    a, b = _dt.to_dtype(from_), _dt.to_dtype(to)
    if _dt.kind_of(a.np) == "f" and b.np.kind in "biu":
        return False
    return not (a.np.kind != "b" and b.np.kind == "b")


def broadcast_shapes(*shapes):
    from ..tensor import Size
    norm = [(s,) if isinstance(s, int) else tuple(s) for s in shapes]
    n = builtins.max((len(s) for s in norm), default=0)
    out = [1] * n
    for s in norm:
        for i, v in enumerate(s):
            j = n - len(s) + i
            if v < 0:
                raise RuntimeError(f"Trying to create tensor with negative dimension {v}: {list(s)}")
            if out[j] == 1:
                out[j] = v
            elif v != 1 and v != out[j]:
                raise RuntimeError(
                    f"Shape mismatch: objects cannot be broadcast to a single shape.  Mismatch is "
                    f"between arg {norm.index(s)} and arg 0.")
    return Size(out)
