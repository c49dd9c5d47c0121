"""Which ops autocast changes, and how: PyTorch's op classes per device type.

- ``lower``: run in the region's low precision (float16 or bfloat16): the floating
  inputs (not float64) are cast to it, so the output is low precision too.
- ``fp32``: run in float32: low-precision floating inputs are cast up.
- ``promote``: run in the widest floating type among the inputs.

The CPU lists are PyTorch 2.13's CPU autocast, read off by running each op in
``torch.autocast("cpu", dtype=torch.bfloat16)`` on float32 and on bfloat16 inputs;
the CUDA lists are PyTorch's documented CUDA lists. Ops not listed keep their
inputs' dtypes (elementwise ops, most reductions on the CPU, shape ops, ...).

``install()`` wraps the public entry points (``distgrad.<op>``, ``Tensor`` methods and
operators, ``distgrad.nn.functional``, ``distgrad.linalg``) once, at import: outside an
enabled region a wrapper only checks one flag. Inside a wrapped op autocast is off,
as PyTorch's autocast kernels exclude themselves, so the ops it is built of are not
cast again.
"""
from __future__ import annotations

import functools

from ..dtype import float32 as _float32

_MATMULS = ["matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "einsum", "multi_dot", "chain_matmul", "vecdot",
            "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
            "scaled_dot_product_attention", "prelu", "__matmul__", "__rmatmul__"]
_LOSSES = ["cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
           "binary_cross_entropy_with_logits", "kl_div", "triplet_margin_loss", "cosine_embedding_loss",
           "poisson_nll_loss", "hinge_embedding_loss", "margin_ranking_loss", "soft_margin_loss",
           "multi_margin_loss", "multilabel_margin_loss", "ctc_loss"]

POLICIES = {
    "cpu": {
        "lower": _MATMULS,
        "fp32": _LOSSES + ["binary_cross_entropy", "prod", "cdist", "grid_sample", "inverse", "inv", "cholesky",
                           "svd", "qr", "eigh", "solve", "trace", "quantile", "nanquantile", "max_unpool2d"],
        "promote": ["cat", "stack", "index_copy"],
    },
    "cuda": {
        "lower": _MATMULS + ["mv", "addmv", "addr"],
        "fp32": _LOSSES + ["__pow__", "__rpow__", "pow", "__rtruediv__", "__rdiv__", "acos", "asin", "cosh",
                           "cosine_similarity", "cdist", "cumprod", "cumsum", "dist", "erfinv", "exp", "expm1",
                           "group_norm", "layer_norm", "log", "log_softmax", "log10", "log1p", "log2", "norm",
                           "normalize", "pdist", "prod", "reciprocal", "rsqrt", "sinh", "softmax", "softmin",
                           "softplus", "sum", "renorm", "tan"],
        "promote": ["addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "grid_sample", "index_put",
                    "scatter_add", "tensordot", "cat", "stack"],
        "refuse": ["binary_cross_entropy"],
    },
}

# The pads PyTorch's CPU autocast runs in float32 (F.pad's other modes keep the dtype).
_FP32_PAD_MODES = ("reflect", "replicate")

_BCE_MESSAGE = (
    "distgrad.nn.functional.binary_cross_entropy and distgrad.nn.BCELoss are unsafe to autocast.\n"
    "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
    "In this case, combine the two layers using distgrad.nn.functional.binary_cross_entropy_with_logits\n"
    "or distgrad.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
    "safe to autocast.")


def _policy_of(device_type: str, name: str):
    table = _TABLES[device_type]
    return table.get(name)


_TABLES = {dev: {n: kind for kind, names in lists.items() for n in names} for dev, lists in POLICIES.items()}


def _first_device_type(args, kwargs):
    from ..backend import is_device_array
    from ..tensor import Tensor

    for v in list(args) + list(kwargs.values()):
        if isinstance(v, (list, tuple)):
            for x in v:
                if isinstance(x, Tensor):
                    return "cuda" if is_device_array(x._data) else "cpu"
        elif isinstance(v, Tensor):
            return "cuda" if is_device_array(v._data) else "cpu"
    return None


def _widest(args, kwargs, low):
    """The promote policy's type: float32 if any eligible input is float32, else low."""
    from ..tensor import Tensor

    for v in list(args) + list(kwargs.values()):
        items = v if isinstance(v, (list, tuple)) else (v,)
        for x in items:
            if isinstance(x, Tensor) and x.dtype == _float32:
                return _float32
    return low


def wrap(name: str, fn):
    """``fn`` under autocast: cast its floating tensor arguments as ``name``'s policy
    for the device type of its first tensor says, with autocast off inside."""
    from . import autocast_mode as am

    if getattr(fn, "_autocast_wrapped", False):
        return fn

    @functools.wraps(fn)
    def autocast_op(*args, **kwargs):
        if not am._active[0]:
            return fn(*args, **kwargs)
        dev = _first_device_type(args, kwargs)
        if dev is None or not am._state[dev]["enabled"]:
            return fn(*args, **kwargs)
        kind = _policy_of(dev, name)
        if kind is None and name == "pad" and dev == "cpu" and kwargs.get(
                "mode", args[2] if len(args) > 2 else "constant") in _FP32_PAD_MODES:
            kind = "fp32"
        if kind is None:   # listed for the other device type only: as outside a region
            return fn(*args, **kwargs)
        if kind == "refuse":
            raise RuntimeError(_BCE_MESSAGE)
        low = am._state[dev]["dtype"]
        if kind == "lower":
            to = low
        elif kind == "fp32":
            to = _float32
        else:
            to = _widest(args, kwargs, low)
        args = tuple(am._cast(a, to, dev) for a in args)
        kwargs = {k: am._cast(v, to, dev) for k, v in kwargs.items()}
        return am._without_autocast(fn, args, kwargs)

    autocast_op._autocast_wrapped = True
    return autocast_op


def install() -> None:
    """Wrap every public entry point named in the policies (once)."""
    import distgrad

    from .. import linalg
    from ..nn import functional as F
    from ..tensor import Tensor

    names = {n for lists in POLICIES.values() for group in lists.values() for n in group} | {"pad"}
    made = {}   # one wrapper per function, whatever names it is reachable by

    def wrapped(n, fn):
        key = (n, id(fn))
        if key not in made:
            made[key] = (fn, wrap(n, fn))
        return made[key][1]

    for holder in (distgrad, F, linalg):
        for n in names:
            fn = holder.__dict__.get(n)
            if callable(fn) and not isinstance(fn, type):
                setattr(holder, n, wrapped(n, fn))
    for n in names:
        fn = Tensor.__dict__.get(n)
        if callable(fn):
            setattr(Tensor, n, wrapped(n, fn))
