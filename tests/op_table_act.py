"""Op-table entries for leaky_relu, elu, hardtanh/relu6, pad (every mode) and pixel
(un)shuffle (imported at the end of op_table.py).

Piecewise activations draw inputs away from their kinks (0 for leaky_relu and elu, the
bounds for hardtanh and relu6), so finite differences are meaningful.
"""
from __future__ import annotations

from op_table import F, T, avoiding, normal, op


def _away_from(rng, shape, points, scale=1.0):
    return T(avoiding(rng, shape, [p / scale for p in points]) * scale)


# --------------------------------------------------------------- activations
op("leaky_relu", lambda m, x, *a, **k: F(m).leaky_relu(x, *a, **k),
   lambda rng: [((_away_from(rng, (2, 3), [0]),), {}),
                ((_away_from(rng, (4,), [0]), 0.2), {}),
                ((_away_from(rng, (2, 2, 3), [0]),), {"negative_slope": -0.5})])
op("leaky_relu", lambda m, x: F(m).leaky_relu(x * 1, 0.1, inplace=True),
   lambda rng: [((_away_from(rng, (3, 2), [0]),), {})], variant="inplace")
op("elu", lambda m, x, *a, **k: F(m).elu(x, *a, **k),
   lambda rng: [((_away_from(rng, (2, 3), [0]),), {}),
                ((_away_from(rng, (5,), [0]), 0.5), {}),
                ((_away_from(rng, (2, 2, 2), [0], 2.0),), {"alpha": 2.0})])
op("elu", lambda m, x: F(m).elu(x * 1, 1.5, inplace=True),
   lambda rng: [((_away_from(rng, (3, 2), [0]),), {})], variant="inplace")
op("hardtanh", lambda m, x, *a, **k: F(m).hardtanh(x, *a, **k),
   lambda rng: [((_away_from(rng, (2, 3), [-1, 1], 1.5),), {}),
                ((_away_from(rng, (4,), [-0.5, 2], 2.0), -0.5, 2.0), {})])
op("relu6", lambda m, x: F(m).relu6(x),
   lambda rng: [((_away_from(rng, (3, 4), [0, 6], 4.0),), {})])

# ----------------------------------------------------------------------- pad
op("pad", lambda m, x, p, **k: F(m).pad(x, p, **k),
   lambda rng: [((normal(rng, 2, 3), (1, 2)), {}),
                ((normal(rng, 2, 3, 4), (1, 0, 2, 1)), {"value": 1.5}),
                ((normal(rng, 2, 3, 4), (0, 1, 1, 1, 2, 0)), {"mode": "constant"}),
                ((normal(rng, 3, 5), (-1, 2, 1, -2)), {}),
                ((normal(rng, 2, 2, 2, 2, 2), (1, 1, 1, 1, 1, 1, 1, 1, 1, 1)), {"value": -1.0})],
   variant="constant")
op("pad", lambda m, x, p: F(m).pad(x, p, mode="reflect"),
   lambda rng: [((normal(rng, 2, 5), (2, 3)), {}), ((normal(rng, 2, 3, 4), (1, 2)), {}),
                ((normal(rng, 1, 2, 3, 4), (1, 2, 2, 0)), {}),
                ((normal(rng, 2, 3, 4), (3, 1, 1, 2)), {}),
                ((normal(rng, 1, 1, 2, 3, 3), (1, 1, 2, 0, 1, 1)), {})],
   variant="reflect")
op("pad", lambda m, x, p: F(m).pad(x, p, mode="replicate"),
   lambda rng: [((normal(rng, 2, 3), (3, 1)), {}), ((normal(rng, 1, 2, 3, 2), (2, 1, 0, 3)), {}),
                ((normal(rng, 2, 3, 3), (1, 1, 2, 2)), {}),
                ((normal(rng, 2, 2, 2, 3), (1, 0, 2, 1, 1, 2)), {})],
   variant="replicate")
op("pad", lambda m, x, p: F(m).pad(x, p, mode="circular"),
   lambda rng: [((normal(rng, 2, 4), (2, 3)), {}), ((normal(rng, 1, 2, 3, 4), (1, 2, 3, 0)), {}),
                ((normal(rng, 2, 3, 4), (4, 1, 0, 2)), {}),
                ((normal(rng, 1, 1, 2, 3, 2), (1, 1, 1, 2, 2, 0)), {})],
   variant="circular")

# ------------------------------------------------------------ pixel (un)shuffle
op("pixel_shuffle", lambda m, x, r: F(m).pixel_shuffle(x, r),
   lambda rng: [((normal(rng, 1, 8, 2, 3), 2), {}), ((normal(rng, 9, 2, 2), 3), {}),
                ((normal(rng, 2, 1, 4, 1, 2), 2), {}), ((normal(rng, 1, 3, 2, 2), 1), {})])
op("pixel_unshuffle", lambda m, x, r: F(m).pixel_unshuffle(x, r),
   lambda rng: [((normal(rng, 1, 2, 4, 6), 2), {}), ((normal(rng, 1, 6, 3), 3), {}),
                ((normal(rng, 2, 1, 3, 2, 4), 2), {})])

# ------------------------------------------------------- expand with several -1
op("expand", lambda m, x, *sizes: x.expand(*sizes),
   lambda rng: [((normal(rng, 3, 1, 2), -1, 4, -1), {}), ((normal(rng, 1, 3), 2, -1, -1), {}),
                ((normal(rng, 2, 1), (-1, -1)), {})],
   variant="several_minus_one")
