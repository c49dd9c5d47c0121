"""Spatial sampling: ``affine_grid`` and ``grid_sample`` (2-D and 3-D), as PyTorch's.

Both are compositions of differentiable ops (products, gathers, floors, ``where``),
so gradients flow to the input, to the grid and to the affine matrices, of every
order, and each result carries PyTorch's node name.
"""
from __future__ import annotations

import warnings

from ..dtype import int64
from ..autograd.grad_mode import no_grad
from ._util import Tensor, _wrap, array_module
from .math_extra import named

_ALIGN_WARNING = ("Default grid_sample and affine_grid behavior has changed to align_corners=False since "
                  "1.3.0. Please specify align_corners=True if the old behavior is desired. See the "
                  "documentation of grid_sample for details.")


def _base_coords(n, align_corners, xp, dtype):
    """The normalized [-1, 1] coordinates of ``n`` pixel positions (centres, or corners
    with ``align_corners``)."""
    if n <= 1:
        return xp.zeros(max(n, 1), dtype)
    r = xp.arange(n, dtype=dtype)
    if align_corners:
        return r * (2.0 / (n - 1)) - 1.0
    return (r * 2.0 + 1.0) / n - 1.0


def affine_grid(theta, size, align_corners=None):
    """The sampling grid (N, H, W, 2) (or (N, D, H, W, 3)) of the affine maps ``theta``
    (N, 2, 3) (or (N, 3, 4)) for an output of ``size`` (N, C, H, W) (or 5-D)."""
    if align_corners is None:
        warnings.warn(_ALIGN_WARNING, stacklevel=2)
        align_corners = False
    if not isinstance(theta, Tensor) or not theta.dtype.is_floating_point:
        got = theta.dtype if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(f"Expected theta to have floating point type, but got {got}")
    size = [int(s) for s in size]
    if len(size) == 4:
        if theta.dim() != 3 or tuple(theta.shape[-2:]) != (2, 3):
            raise ValueError(f"Expected a batch of 2D affine matrices of shape Nx2x3 for size {size}. Got "
                             f"{list(theta.shape)}.")
        spatial = size[-2:]
    elif len(size) == 5:
        if theta.dim() != 3 or tuple(theta.shape[-2:]) != (3, 4):
            raise ValueError(f"Expected a batch of 3D affine matrices of shape Nx3x4 for size {size}. Got "
                             f"{list(theta.shape)}.")
        spatial = size[-3:]
    else:
        raise NotImplementedError(f"affine_grid only supports 4D and 5D sizes, for 2D and 3D affine transforms, "
                                  f"respectively. Got size {size}.")
    if min(size) <= 0:
        raise ValueError(f"Expected non-zero, positive output size. Got {size}")
    if theta.shape[0] != size[0]:
        raise ValueError(f"Expected theta batch size {theta.shape[0]} to match size[0] = {size[0]}")
    xp = array_module(theta._data)
    dt = theta._data.dtype
    # base[..., :] = (x, y[, z], 1), x varying fastest, as PyTorch builds it
    axes = [_base_coords(n, align_corners, xp, dt) for n in spatial]
    nd = len(spatial)
    base = xp.ones(tuple(spatial) + (nd + 1,), dt)
    for k in range(nd):                      # coordinate k is spatial axis nd-1-k
        shape = [1] * nd
        shape[nd - 1 - k] = spatial[nd - 1 - k]
        base[..., k] = axes[nd - 1 - k].reshape(shape)
    # (1, *spatial, nd+1) @ (N, 1.., nd+1, nd) -> (N, *spatial, nd): a new tensor, not a view
    thetas = theta.transpose(1, 2).reshape([size[0]] + [1] * (nd - 1) + [nd + 1, nd])
    return named(_wrap(base[None]).matmul(thetas), "AffineGridGeneratorBackward0")


# ------------------------------------------------------------------ grid_sample
def _unnormalize(coord, size, align_corners):
    if align_corners:
        return (coord + 1.0) * ((size - 1) / 2.0)
    return ((coord + 1.0) * size - 1.0) / 2.0


def _reflect(coord, low2, high2):
    """PyTorch's reflect_coordinates: fold ``coord`` into [low2/2, high2/2] by mirroring."""
    if low2 == high2:
        return coord * 0.0
    lo = low2 / 2.0
    span = (high2 - low2) / 2.0
    a = (coord - lo).abs()
    with no_grad():
        flips = (a.detach() / span).floor()
        odd = (flips.remainder(2) == 1)
    extra = a - flips * span
    return extra.where(~odd, span - extra) + lo


def _source(coord, size, padding_mode, align_corners):
    c = _unnormalize(coord, size, align_corners)
    if padding_mode == "border":
        c = c.clamp(0, size - 1)
    elif padding_mode == "reflection":
        c = _reflect(c, 0, 2 * (size - 1)) if align_corners else _reflect(c, -1, 2 * size - 1)
        c = c.clamp(0, size - 1)
    return c


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """Sample ``input`` (N, C, H, W) (or (N, C, D, H, W)) at the normalized positions of
    ``grid`` (N, Ho, Wo, 2) (or (N, Do, Ho, Wo, 3)), x first: ``bilinear`` or
    ``nearest`` interpolation, ``zeros``, ``border`` or ``reflection`` padding."""
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise ValueError(f"nn.functional.grid_sample(): expected mode to be 'bilinear', 'nearest' or 'bicubic', "
                         f"but got: '{mode}'")
    if mode == "bicubic":
        raise NotImplementedError("grid_sample: mode 'bicubic' is not implemented in distgrad; use 'bilinear'")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"nn.functional.grid_sample(): expected padding_mode to be 'zeros', 'border', or "
                         f"'reflection', but got: '{padding_mode}'")
    if align_corners is None:
        warnings.warn(_ALIGN_WARNING, stacklevel=2)
        align_corners = False
    if input.dim() not in (4, 5) or grid.dim() != input.dim():
        raise RuntimeError(f"grid_sampler(): expected 4D or 5D input and grid with same number of dimensions, "
                           f"but got input with sizes {list(input.shape)} and grid with sizes {list(grid.shape)}")
    nd = input.dim() - 2
    if input.shape[0] != grid.shape[0]:
        raise RuntimeError(f"grid_sampler(): expected grid and input to have same batch size, but got input with "
                           f"sizes {list(input.shape)} and grid with sizes {list(grid.shape)}")
    if grid.shape[-1] != nd:
        raise RuntimeError(f"grid_sampler(): expected grid to have size {nd} in last dimension, but got grid with "
                           f"sizes {list(grid.shape)}")
    if input.dtype != grid.dtype:
        raise RuntimeError(f"grid_sampler(): expected input and grid to have same dtype, but input has "
                           f"{input.dtype} and grid has {grid.dtype}")
    n, c = input.shape[:2]
    spatial = list(input.shape[2:])             # (D,) H, W
    out_spatial = list(grid.shape[1:-1])
    m = 1
    for s in out_spatial:
        m *= s
    flat_in = input.reshape(n, c, -1)
    g = grid.reshape(n, m, nd)
    # coordinate k of the grid indexes spatial axis nd-1-k (x is the last axis)
    src = [_source(g[..., k], spatial[nd - 1 - k], padding_mode, align_corners) for k in range(nd)]
    strides = [1] * nd
    for k in range(1, nd):
        strides[k] = strides[k - 1] * spatial[nd - k]

    shaped = [n, c] + out_spatial

    def gather(corner):
        """Values at integer positions ``corner`` (one (N, M) tensor per coordinate),
        zero outside the input, shaped (N, C, *out_spatial)."""
        with no_grad():
            valid = None
            index = None
            for k, pos in enumerate(corner):
                ok = (pos >= 0) & (pos <= spatial[nd - 1 - k] - 1)
                valid = ok if valid is None else valid & ok
                part = pos.clamp(0, spatial[nd - 1 - k] - 1).to(int64) * strides[k]
                index = part if index is None else index + part
        vals = flat_in.gather(2, index.unsqueeze(1).expand(n, c, m))
        return vals.reshape(shaped) * valid.to(input.dtype).reshape([n, 1] + out_spatial)

    name = "GridSampler2DBackward0" if nd == 2 else "GridSampler3DBackward0"
    if mode == "nearest":
        with no_grad():
            corner = [_wrap(array_module(s._data).rint(s._data)) for s in src]
        # the grid's gradient is zero (PyTorch's too): a zero term keeps the grid in the graph
        zero = sum((s - s.detach()) * 0.0 for s in src).reshape([n, 1] + out_spatial)
        return named(gather(corner) + zero, name)
    with no_grad():
        lows = [s.detach().floor() for s in src]
    out = None
    for bits in range(1 << nd):
        corner, weight = [], None
        for k in range(nd):
            high = (bits >> k) & 1
            pos = lows[k] + high
            corner.append(pos)
            w = (src[k] - lows[k]) if high else (lows[k] + 1 - src[k])
            weight = w if weight is None else weight * w
        term = gather(corner) * weight.reshape([n, 1] + out_spatial)
        out = term if out is None else out + term
    return named(out, name)
