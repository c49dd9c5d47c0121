"""Op-table entries for convolution and pooling (imported at the end of op_table.py).

Small float64 shapes keep finite differences quick; max pooling draws pairwise
distinct values, so no window holds a tie.
"""
from __future__ import annotations

import numpy as np
from op_table import F, T, distinct, normal, op


def _conv1d_samples(rng):
    yield (normal(rng, 2, 4, 7), normal(rng, 6, 4, 3), normal(rng, 6)), {}
    yield (normal(rng, 2, 4, 7), normal(rng, 6, 2, 3)), {"stride": 2, "padding": 1, "groups": 2}
    yield (normal(rng, 1, 2, 6), normal(rng, 3, 2, 2)), {"padding": "same", "dilation": 2}
    yield (normal(rng, 2, 5), normal(rng, 3, 2, 3), normal(rng, 3)), {"padding": "valid"}  # unbatched


def _conv2d_samples(rng):
    yield (normal(rng, 2, 3, 5, 4), normal(rng, 4, 3, 3, 2), normal(rng, 4)), {}
    yield (normal(rng, 2, 2, 6, 5), normal(rng, 3, 2, 3, 3), normal(rng, 3)), {"stride": 2, "padding": 1}
    yield (normal(rng, 1, 2, 5, 5), normal(rng, 2, 2, 2, 3)), {"stride": (1, 2), "padding": (2, 0),
                                                               "dilation": (2, 1)}
    yield (normal(rng, 1, 2, 5, 4), normal(rng, 3, 2, 2, 3)), {"padding": "same", "dilation": (1, 2)}
    yield (normal(rng, 2, 4, 4, 4), normal(rng, 6, 2, 2, 2)), {"groups": 2}
    yield (normal(rng, 2, 4, 4), normal(rng, 2, 2, 3, 3), normal(rng, 2)), {"padding": 1}  # unbatched


def _conv_transpose2d_samples(rng):
    yield (normal(rng, 2, 3, 3, 4), normal(rng, 3, 2, 3, 2), normal(rng, 2)), {}
    yield (normal(rng, 1, 2, 3, 3), normal(rng, 2, 2, 3, 3), normal(rng, 2)), {
        "stride": 2, "padding": 1, "output_padding": 1}
    yield (normal(rng, 2, 4, 3, 2), normal(rng, 4, 1, 2, 2)), {"groups": 2, "stride": (1, 2),
                                                               "dilation": (2, 1)}


def _max_pool2d_samples(rng):
    yield (distinct(rng, (2, 2, 4, 4)), 2), {}
    yield (distinct(rng, (1, 2, 5, 5)), 3), {"stride": 2, "padding": 1}
    yield (distinct(rng, (1, 2, 6, 5)), (2, 3)), {"stride": (2, 1), "dilation": (2, 1), "ceil_mode": True}
    yield (distinct(rng, (2, 5, 5)), 2), {"ceil_mode": True}  # unbatched


def _avg_pool2d_samples(rng):
    yield (normal(rng, 2, 2, 4, 4), 2), {}
    yield (normal(rng, 1, 2, 5, 5), 3), {"stride": 2, "padding": 1}
    yield (normal(rng, 1, 2, 5, 5), 3), {"stride": 2, "padding": 1, "count_include_pad": False,
                                         "ceil_mode": True}
    yield (normal(rng, 1, 2, 4, 5), (2, 3)), {"stride": (1, 2), "divisor_override": 4}


def _adaptive_avg_pool2d_samples(rng):
    for size in (3, (2, 4), (None, 3), 1):
        yield (normal(rng, 2, 2, 5, 6), size), {}


op("conv1d", lambda m, x, w, b=None, **k: F(m).conv1d(x, w, b, **k), _conv1d_samples)
op("conv2d", lambda m, x, w, b=None, **k: F(m).conv2d(x, w, b, **k), _conv2d_samples)
op("conv_transpose2d", lambda m, x, w, b=None, **k: F(m).conv_transpose2d(x, w, b, **k),
   _conv_transpose2d_samples)
op("max_pool2d", lambda m, x, *a, **k: F(m).max_pool2d(x, *a, **k), _max_pool2d_samples)
op("max_pool2d", lambda m, x, *a, **k: F(m).max_pool2d(x, *a, return_indices=True, **k),
   _max_pool2d_samples, variant="indices")
op("avg_pool2d", lambda m, x, *a, **k: F(m).avg_pool2d(x, *a, **k), _avg_pool2d_samples)
op("adaptive_avg_pool2d", lambda m, x, size: F(m).adaptive_avg_pool2d(x, size), _adaptive_avg_pool2d_samples)
op("max_pool1d", lambda m, x, *a, **k: F(m).max_pool1d(x, *a, **k),
   lambda rng: [((distinct(rng, (2, 2, 7)), 3), {"stride": 2, "padding": 1})])
op("avg_pool1d", lambda m, x, *a, **k: F(m).avg_pool1d(x, *a, **k),
   lambda rng: [((normal(rng, 2, 2, 7), 3), {"stride": 2, "padding": 1, "ceil_mode": True})])
op("adaptive_avg_pool1d", lambda m, x, size: F(m).adaptive_avg_pool1d(x, size),
   lambda rng: [((normal(rng, 2, 2, 7), 3), {})])


# --------------------------------------- 3-D convolution, unfold/fold, adaptive max, unpool, interpolate
def _conv3d_samples(rng):
    yield (normal(rng, 1, 2, 3, 4, 3), normal(rng, 2, 2, 2, 2, 2), normal(rng, 2)), {}
    yield (normal(rng, 1, 4, 3, 3, 4), normal(rng, 2, 2, 2, 1, 2)), {"stride": (1, 2, 1), "padding": 1,
                                                                     "groups": 2}


def _conv_transpose3d_samples(rng):
    yield (normal(rng, 1, 2, 2, 2, 3), normal(rng, 2, 2, 2, 2, 2), normal(rng, 2)), {"stride": 2, "padding": 1}


def _unfold_samples(rng):
    yield (normal(rng, 2, 2, 4, 5), 2), {}
    yield (normal(rng, 1, 2, 5, 4), (2, 3)), {"dilation": (1, 2), "padding": 1, "stride": (2, 1)}
    yield (normal(rng, 2, 4, 4), 3), {"padding": 1}  # unbatched


def _fold_samples(rng):
    yield (normal(rng, 2, 8, 12), (4, 5), 2), {}
    yield (normal(rng, 1, 6, 6), (5, 4), (2, 3)), {"dilation": (1, 2), "padding": 1, "stride": (2, 1)}
    yield (normal(rng, 4, 9), (4, 4), 2), {"padding": 1, "stride": 2}   # unbatched: 3 x 3 blocks


def _adaptive_max_pool2d_samples(rng):
    for size in ((2, 3), 1, (None, 2), (5, 6)):
        yield (distinct(rng, (2, 2, 5, 6)), size), {}


def _unpool(m, x, **k):
    """max_unpool2d of ``x`` at the indices of a fixed max pooling (made in ``m``'s library)."""
    src = m.tensor(np.arange(x.shape[0] * x.shape[1] * 36, dtype=np.float64)[::-1].copy()).reshape(
        x.shape[0], x.shape[1], 6, 6)
    _, idx = F(m).max_pool2d(src, 3, stride=2, padding=1, return_indices=True)
    return F(m).max_unpool2d(x, idx, 3, stride=2, padding=1, **k)


def _interpolate_samples(rng):
    yield (normal(rng, 1, 2, 3, 4),), {"scale_factor": 1.5, "mode": "nearest"}
    yield (normal(rng, 1, 2, 3, 4),), {"size": (5, 3), "mode": "nearest-exact"}
    yield (normal(rng, 1, 2, 3, 4),), {"scale_factor": (1.7, 0.6), "mode": "bilinear"}
    yield (normal(rng, 1, 2, 3, 4),), {"size": (4, 7), "mode": "bilinear", "align_corners": True}
    yield (normal(rng, 2, 2, 5),), {"scale_factor": 2.5, "mode": "linear"}
    yield (normal(rng, 1, 1, 2, 3, 2),), {"size": (3, 4, 3), "mode": "trilinear"}
    yield (normal(rng, 1, 2, 5, 4),), {"size": (2, 3), "mode": "area"}


op("conv3d", lambda m, x, w, b=None, **k: F(m).conv3d(x, w, b, **k), _conv3d_samples)
op("conv_transpose3d", lambda m, x, w, b=None, **k: F(m).conv_transpose3d(x, w, b, **k),
   _conv_transpose3d_samples)
op("unfold", lambda m, x, *a, **k: F(m).unfold(x, *a, **k), _unfold_samples, variant="functional")
op("fold", lambda m, x, *a, **k: F(m).fold(x, *a, **k), _fold_samples)
op("adaptive_max_pool2d", lambda m, x, size: F(m).adaptive_max_pool2d(x, size, return_indices=True),
   _adaptive_max_pool2d_samples)
op("adaptive_max_pool1d", lambda m, x, size: F(m).adaptive_max_pool1d(x, size),
   lambda rng: [((distinct(rng, (2, 2, 7)), 3), {})])
op("max_unpool2d", _unpool, lambda rng: [((normal(rng, 2, 2, 3, 3),), {}),
                                         ((normal(rng, 1, 2, 3, 3),), {"output_size": (6, 6)})])
op("interpolate", lambda m, x, **k: F(m).interpolate(x, **k), _interpolate_samples)


def _grid_sample_samples(rng):
    for mode, pad, ac in (("bilinear", "zeros", False), ("bilinear", "border", True),
                          ("bilinear", "reflection", False), ("nearest", "zeros", False)):
        grid = T(rng.uniform(-1.2, 1.2, (2, 3, 2, 2)))
        yield (normal(rng, 2, 2, 4, 3), grid), {"mode": mode, "padding_mode": pad, "align_corners": ac}
    yield (normal(rng, 1, 1, 2, 3, 2), T(rng.uniform(-1.1, 1.1, (1, 2, 2, 2, 3)))), {"align_corners": False}


# bilinear sampling is piecewise linear in the grid: finite differences must not cross a
# pixel boundary, which a uniform draw of positions avoids with probability ~1 at eps 1e-6
op("grid_sample", lambda m, x, g, **k: F(m).grid_sample(x, g, **k), _grid_sample_samples)
op("affine_grid", lambda m, t, size, ac: F(m).affine_grid(t, size, align_corners=ac),
   lambda rng: [((normal(rng, 2, 2, 3), (2, 1, 3, 4), False), {}), ((normal(rng, 1, 3, 4), (1, 1, 2, 3, 2), True),
                                                                     {})])
