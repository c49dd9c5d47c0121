"""Test helpers, as ``torch.testing``: ``assert_close`` and ``make_tensor``."""
from __future__ import annotations

import collections.abc
import math
import numbers

import numpy as np
from .dtype import kind_of as _kind_of

__all__ = ["assert_allclose", "assert_close", "make_tensor"]

# dtype name -> (rtol, atol) used when neither is given, as PyTorch's defaults
_DTYPE_PRECISIONS = {
    "float16": (0.001, 1e-5),
    "bfloat16": (0.016, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
    "complex64": (1.3e-6, 1e-5),
    "complex128": (1e-7, 1e-7),
}


class _Failure(Exception):
    def __init__(self, exc_type, msg, path=()):
        self.exc_type, self.msg, self.path = exc_type, msg, path


def _tolerances(*dtype_names, rtol=None, atol=None):
    if (rtol is None) ^ (atol is None):
        raise ValueError("Both 'rtol' and 'atol' must be either specified or omitted, "
                         f"but got no {'rtol' if rtol is None else 'atol'}.")
    if rtol is not None:
        return rtol, atol
    rtols, atols = zip(*[_DTYPE_PRECISIONS.get(n, (0.0, 0.0)) for n in dtype_names])
    return max(rtols), max(atols)


def _mismatch_msg(*, default_identifier, extra, abs_diff, abs_idx, atol, rel_diff, rel_idx, rtol):
    equality = rtol == 0 and atol == 0

    def diff_msg(kind, diff, idx, tol):
        msg = f"{kind.title()} difference: {diff}" if idx is None else \
            f"Greatest {kind} difference: {diff} at index {idx}"
        if not equality:
            msg += f" (up to {tol} allowed)"
        return msg + "\n"

    msg = f"{default_identifier} are not {'equal' if equality else 'close'}!\n\n"
    if extra:
        msg += f"{extra.strip()}\n"
    msg += diff_msg("absolute", abs_diff, abs_idx, atol)
    msg += diff_msg("relative", rel_diff, rel_idx, rtol)
    return msg.strip()


def _scalar_msg(actual, expected, rtol, atol):
    abs_diff = abs(actual - expected)
    rel_diff = float("inf") if expected == 0 else abs_diff / abs(expected)
    return _mismatch_msg(default_identifier="Scalars", extra=f"Expected {expected} but got {actual}.",
                         abs_diff=abs_diff, abs_idx=None, atol=atol, rel_diff=rel_diff, rel_idx=None,
                         rtol=rtol)


def _compare_numbers(actual, expected, rtol, atol, equal_nan):
    if isinstance(actual, bool) or isinstance(expected, bool) or \
            isinstance(actual, np.bool_) or isinstance(expected, np.bool_):
        if bool(actual) != bool(expected):
            raise _Failure(AssertionError, f"Booleans mismatch: {actual} is not {expected}")
        return
    names = ["float64" if isinstance(v, (float, np.floating)) else
             "complex128" if isinstance(v, complex) else "int" for v in (actual, expected)]
    rtol, atol = _tolerances(*names, rtol=rtol, atol=atol)
    if actual == expected:
        return
    if equal_nan and isinstance(actual, (float, complex)) and isinstance(expected, (float, complex)) \
            and _isnan(actual) and _isnan(expected):
        return
    if _isnan(actual) or _isnan(expected) or abs(actual - expected) > atol + rtol * abs(expected):
        raise _Failure(AssertionError, _scalar_msg(actual, expected, rtol, atol))


def _isnan(v):
    return isinstance(v, (float, np.floating)) and math.isnan(v) or \
        isinstance(v, complex) and (math.isnan(v.real) or math.isnan(v.imag))


def _unravel(flat_index, shape):
    return tuple(int(i) for i in np.unravel_index(int(flat_index), shape)) if shape else ()


def _compare_arrays(a, e, *, rtol, atol, equal_nan, a_meta, e_meta, check_dtype, check_device):
    """a, e: numpy arrays; *_meta: (shape, dtype, device, dtype name) to report."""
    if a_meta[0] != e_meta[0]:
        raise _Failure(AssertionError,
                       f"The values for attribute 'shape' do not match: {a_meta[0]} != {e_meta[0]}.")
    if check_device and a_meta[2] != e_meta[2]:
        raise _Failure(AssertionError,
                       f"The values for attribute 'device' do not match: {a_meta[2]} != {e_meta[2]}.")
    if check_dtype and a_meta[1] != e_meta[1]:
        raise _Failure(AssertionError,
                       f"The values for attribute 'dtype' do not match: {a_meta[1]} != {e_meta[1]}.")
    rtol, atol = _tolerances(a_meta[3], e_meta[3], rtol=rtol, atol=atol)
    if a.dtype != e.dtype:
        common = np.promote_types(a.dtype, e.dtype)
        a, e = a.astype(common), e.astype(common)
    floating = _kind_of(a.dtype) in "fc"
    if floating:
        matches = np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=equal_nan)
    else:
        matches = a == e if rtol == 0 and atol == 0 else \
            np.isclose(a.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol)
    if bool(np.all(matches)):
        return
    if a.shape == ():
        raise _Failure(AssertionError, _scalar_msg(a.item(), e.item(), rtol, atol))
    total = matches.size
    mismatches = total - int(matches.sum())
    extra = f"Mismatched elements: {mismatches} / {total} ({mismatches / total:.1%})"
    af, ef, mf = a.reshape(-1), e.reshape(-1), matches.reshape(-1)
    if not floating:
        af, ef = af.astype(np.int64), ef.astype(np.int64)
    with np.errstate(all="ignore"):
        abs_diff = np.abs(af - ef)
        abs_diff[mf] = 0
        rel_diff = abs_diff / np.abs(ef)
        if not floating:
            rel_diff = rel_diff.astype(np.float32)
        rel_diff[mf] = 0
    abs_i = int(np.argmax(np.where(np.isnan(abs_diff), np.inf, abs_diff))) if floating else int(np.argmax(abs_diff))
    rel_i = int(np.argmax(np.where(np.isnan(rel_diff), np.inf, rel_diff)))
    if np.isnan(abs_diff).any():
        abs_i = int(np.flatnonzero(np.isnan(abs_diff))[0])
    if np.isnan(rel_diff).any():
        rel_i = int(np.flatnonzero(np.isnan(rel_diff))[0])
    raise _Failure(AssertionError, _mismatch_msg(
        default_identifier="Tensor-likes", extra=extra,
        abs_diff=abs_diff[abs_i].item(), abs_idx=_unravel(abs_i, a.shape), atol=atol,
        rel_diff=rel_diff[rel_i].item(), rel_idx=_unravel(rel_i, a.shape), rtol=rtol))


def _is_tensor(x):
    from .tensor import Tensor

    return isinstance(x, Tensor)


def _compare(actual, expected, path, opts):
    try:
        _compare_inner(actual, expected, path, opts)
    except _Failure as failure:
        if not failure.path:
            failure.path = path
        raise


def _compare_inner(actual, expected, path, opts):
    if actual is None and expected is None:
        return
    if _is_tensor(actual) and _is_tensor(expected):
        a_meta = (actual.shape, actual.dtype, actual.device, actual.dtype.name)
        e_meta = (expected.shape, expected.dtype, expected.device, expected.dtype.name)
        a = np.asarray(actual.detach().cpu().numpy())
        e = np.asarray(expected.detach().cpu().numpy())
        _compare_arrays(a, e, a_meta=a_meta, e_meta=e_meta, **opts)
        return
    if isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray):
        a_meta = (actual.shape, actual.dtype, "cpu", actual.dtype.name)
        e_meta = (expected.shape, expected.dtype, "cpu", expected.dtype.name)
        _compare_arrays(actual, expected, a_meta=a_meta, e_meta=e_meta, **opts)
        return
    number = (numbers.Number, np.bool_, np.number)
    if isinstance(actual, number) and isinstance(expected, number) and \
            not _is_tensor(actual) and not _is_tensor(expected):
        _compare_numbers(actual, expected, opts["rtol"], opts["atol"], opts["equal_nan"])
        return
    if isinstance(actual, collections.abc.Sequence) and not isinstance(actual, str) and \
            isinstance(expected, collections.abc.Sequence) and not isinstance(expected, str):
        if len(actual) != len(expected):
            raise _Failure(AssertionError,
                           f"The length of the sequences mismatch: {len(actual)} != {len(expected)}", path)
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, path + (i,), opts)
        return
    if isinstance(actual, collections.abc.Mapping) and isinstance(expected, collections.abc.Mapping):
        a_keys, e_keys = set(actual.keys()), set(expected.keys())
        if a_keys != e_keys:
            missing, extra = e_keys - a_keys, a_keys - e_keys
            msg = "The keys of the mappings do not match:\n"
            if missing:
                msg += f"Missing keys in the actual mapping: {sorted(missing)}\n"
            if extra:
                msg += f"Extra keys in the actual mapping: {sorted(extra)}\n"
            raise _Failure(AssertionError, msg.strip(), path)
        for key in sorted(e_keys, key=str):
            _compare(actual[key], expected[key], path + (key,), opts)
        return
    raise _Failure(TypeError, f"No comparison pair was able to handle inputs of type "
                              f"{_type_repr(actual)} and {_type_repr(expected)}.", path)


def _type_repr(x):
    return "<class 'distgrad.Tensor'>" if type(x).__name__ == "Tensor" and _is_tensor(x) else str(type(x))


def assert_close(actual, expected, *, allow_subclasses=True, rtol=None, atol=None, equal_nan=False,
                 check_device=True, check_dtype=True, check_layout=True, check_stride=False,
                 msg=None):
    """Assert that ``actual`` and ``expected`` are close, as ``torch.testing.assert_close``.

    Tensors (and numpy arrays) are compared elementwise with
    ``|actual - expected| <= atol + rtol * |expected|``; when ``rtol``/``atol`` are
    omitted they default by dtype (float16: 1e-3/1e-5, float32: 1.3e-6/1e-5,
    float64: 1e-7/1e-7, integers and bool: exact). Shapes, devices and (with
    ``check_dtype``) dtypes must match. Numbers, sequences and mappings are compared
    item by item. ``msg`` replaces the error message, or (a callable) rewrites it.
    """
    opts = dict(rtol=rtol, atol=atol, equal_nan=equal_nan, check_dtype=check_dtype,
                check_device=check_device)
    if (rtol is None) ^ (atol is None):
        _tolerances(rtol=rtol, atol=atol)
    try:
        _compare(actual, expected, (), opts)
    except _Failure as failure:
        text = failure.msg
        if failure.exc_type is AssertionError and failure.path:
            text += "\n\nThe failure occurred for item " + "".join(f"[{p!r}]" for p in failure.path)
        if callable(msg):
            text = msg(text)
        elif msg is not None:
            text = msg
        raise failure.exc_type(text) from None


def assert_allclose(actual, expected, rtol=None, atol=None, equal_nan=True, msg=""):
    """Deprecated form of :func:`assert_close` (no dtype check, NaNs equal by default)."""
    assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan, check_dtype=False,
                 check_device=False, msg=msg or None)


def make_tensor(*shape, dtype, device=None, low=None, high=None, requires_grad=False,
                noncontiguous=False, exclude_zero=False, memory_format=None):
    """A tensor of ``shape`` filled with random values from the default generator:
    floats uniform in ``[low, high)`` (default ``[-9, 9)``), integers in ``[low, high)``
    (default ``[-9, 10)``, ``[0, 10)`` for unsigned), bools at random."""
    import distgrad as dg

    from .random import default_generator

    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    if requires_grad and not dtype.is_floating_point:
        raise ValueError("make_tensor: requires_grad must be False for integral dtype")
    g = default_generator._rng
    npd = dtype.np
    if npd.kind == "b":
        arr = g.integers(0, 2, shape).astype(bool)
    elif npd.kind in "iu":
        info = np.iinfo(npd)
        lo = -9 if low is None else low
        hi = 10 if high is None else high
        lo, hi = max(math.ceil(lo), info.min), min(math.ceil(hi), info.max)
        if npd.kind == "u":
            lo = max(lo, 0)
        if lo > hi:
            raise ValueError(f"`low` must be less than or equal to `high`, but got {lo} > {hi}")
        if hi == lo:
            hi = lo + 1
        arr = g.integers(lo, hi, shape).astype(npd)
        if exclude_zero:
            arr[arr == 0] = 1
    else:
        info = np.finfo(npd)
        lo = -9.0 if low is None else max(float(low), float(info.min))
        hi = 9.0 if high is None else min(float(high), float(info.max))
        if lo > hi:
            raise ValueError(f"`low` must be less than or equal to `high`, but got {lo} > {hi}")
        arr = g.uniform(lo, hi, shape).astype(npd)
        if exclude_zero:
            arr[arr == 0] = info.tiny
    return dg.tensor(arr, dtype=dtype, device=device, requires_grad=requires_grad)
