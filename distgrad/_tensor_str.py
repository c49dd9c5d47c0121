"""Render numpy arrays exactly the way PyTorch's ``repr(tensor)`` does."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
from .dtype import kind_of as _kind_of


@dataclasses.dataclass
class _PrintOptions:
    precision: int = 4
    threshold: float = 1000
    edgeitems: int = 3
    linewidth: int = 80
    sci_mode: bool | None = None


PRINT_OPTS = _PrintOptions()

# (precision, threshold, edgeitems, linewidth), as in torch.set_printoptions
_PROFILES = {
    "default": (4, 1000, 3, 80),
    "short": (2, 1000, 2, 80),
    "full": (4, math.inf, 3, 80),
}


def set_printoptions(precision=None, threshold=None, edgeitems=None,
                     linewidth=None, profile=None, sci_mode=None):
    """Set printing options; same arguments and semantics as torch.set_printoptions."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"unknown print profile {profile!r}")
        (PRINT_OPTS.precision, PRINT_OPTS.threshold,
         PRINT_OPTS.edgeitems, PRINT_OPTS.linewidth) = _PROFILES[profile]
    if precision is not None:
        PRINT_OPTS.precision = precision
    if threshold is not None:
        PRINT_OPTS.threshold = threshold
    if edgeitems is not None:
        PRINT_OPTS.edgeitems = edgeitems
    if linewidth is not None:
        PRINT_OPTS.linewidth = linewidth
    # PyTorch always overwrites sci_mode, so omitting it resets it to automatic.
    PRINT_OPTS.sci_mode = sci_mode


def get_printoptions() -> dict:
    return dataclasses.asdict(PRINT_OPTS)


@contextlib.contextmanager
def printoptions(**kwargs):
    old = get_printoptions()
    set_printoptions(**kwargs)
    try:
        yield
    finally:
        set_printoptions(**old)


class _Formatter:
    """Picks one notation and column width shared by every element of a tensor."""

    def __init__(self, flat: np.ndarray):
        self.is_float = _kind_of(flat.dtype) == "f"
        self.int_mode = True
        self.sci_mode = False
        self.width = 1
        if not self.is_float:
            for v in flat.tolist():
                self.width = max(self.width, len(str(v)))
            return
        # Zeros, infs and nans take no part in choosing the notation or width.
        vals = flat[np.isfinite(flat) & (flat != 0)]
        if vals.size == 0:
            return
        # float64 so that float16 cannot overflow in the ratio below.
        mags = np.abs(vals).astype(np.float64)
        lo, hi = mags.min(), mags.max()
        self.int_mode = bool(np.all(vals == np.ceil(vals)))
        if PRINT_OPTS.sci_mode is None:
            self.sci_mode = bool(hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4)
        else:
            self.sci_mode = PRINT_OPTS.sci_mode
        p = PRINT_OPTS.precision
        if self.sci_mode:
            strs = (f"{v:.{p}e}" for v in vals.tolist())
        elif self.int_mode:
            strs = (f"{v:.0f}." for v in vals.tolist())
        else:
            strs = (f"{v:.{p}f}" for v in vals.tolist())
        self.width = max(self.width, max(map(len, strs)))

    def format(self, v) -> str:
        p = PRINT_OPTS.precision
        if not self.is_float:
            s = str(v)
        elif self.sci_mode:
            s = f"{v:{self.width}.{p}e}"
        elif self.int_mode:
            # The trailing dot marks a float tensor; inf and nan need no marker.
            s = f"{v:.0f}" + ("" if math.isinf(v) or math.isnan(v) else ".")
        else:
            s = f"{v:.{p}f}"
        return s.rjust(self.width)


def _summarized(a: np.ndarray) -> np.ndarray:
    """The elements that remain visible once ``...`` elides the middle of each dim."""
    e = PRINT_OPTS.edgeitems
    if not e:
        # PyTorch keeps a whole 1-d tensor here (its ``t[-0:]`` is everything).
        return a if a.ndim <= 1 else a.reshape(-1)[:0]
    for axis, n in enumerate(a.shape):
        if n > 2 * e:
            a = np.take(a, list(range(e)) + list(range(n - e, n)), axis=axis)
    return a


def _render(a: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    e = PRINT_OPTS.edgeitems
    if a.ndim == 0:
        return fmt.format(a.item())
    if a.ndim == 1:
        per_line = max(1, math.floor((PRINT_OPTS.linewidth - indent) / (fmt.width + 2)))
        if summarize and not e:
            items = ["..."]
        elif summarize and a.shape[0] > 2 * e:
            items = ([fmt.format(v) for v in a[:e].tolist()] + [" ..."]
                     + [fmt.format(v) for v in a[-e:].tolist()])
        else:
            items = [fmt.format(v) for v in a.tolist()]
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    n = a.shape[0]
    if summarize and n > 2 * e:
        rows = ([_render(a[i], indent + 1, summarize, fmt) for i in range(e)] + ["..."]
                + [_render(a[i], indent + 1, summarize, fmt) for i in range(n - e, n)])
    else:
        rows = [_render(a[i], indent + 1, summarize, fmt) for i in range(n)]
    # Deeper tensors get one blank line per extra dimension between blocks.
    sep = "," + "\n" * (a.ndim - 1) + " " * (indent + 1)
    return "[" + sep.join(rows) + "]"


def _add_suffixes(text: str, suffixes, indent: int) -> str:
    parts = [text]
    # Overcounts the last line by 2 characters, exactly as PyTorch does.
    last_len = len(text) - text.rfind("\n") + 1
    for s in suffixes:
        if last_len + len(s) + 2 > PRINT_OPTS.linewidth:
            parts.append(",\n" + " " * indent + s)
            last_len = indent + len(s)
        else:
            parts.append(", " + s)
            last_len += len(s) + 2
    parts.append(")")
    return "".join(parts)


def format_tensor(arr, suffixes=(), dtype_name=None) -> str:
    """Return ``repr`` of a PyTorch tensor holding ``arr``.

    ``suffixes`` (e.g. ``"grad_fn=<AddBackward0>"``) are appended in order after
    the data; ``dtype_name`` is shown as ``dtype=...`` before them when given.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind == "c":
        raise TypeError("complex arrays are not supported")
    prefix = "tensor("
    indent = len(prefix)
    extra = []
    if arr.size == 0:
        if arr.ndim != 1:
            extra.append(f"size={tuple(arr.shape)}")
        # Nothing in "[]" reveals the dtype, so PyTorch names any non-float32 one.
        if dtype_name is None and arr.dtype != np.float32:
            dtype_name = f"distgrad.{arr.dtype.name}"
        body = "[]"
    else:
        if not PRINT_OPTS.edgeitems:
            extra.append(f"size={tuple(arr.shape)}")
        summarize = arr.size > PRINT_OPTS.threshold
        fmt = _Formatter((_summarized(arr) if summarize else arr).reshape(-1))
        body = _render(arr, indent, summarize, fmt)
    if dtype_name is not None:
        extra.append(f"dtype={dtype_name}")
    return _add_suffixes(prefix + body, extra + list(suffixes), indent)
