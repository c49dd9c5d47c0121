"""Op-table entries for the functional activations, losses, distances and norms of
``torch.nn.functional`` that the op table did not have (imported at the end of
op_table.py), so they also run on the GPU path through the same table.

Piecewise functions draw their inputs away from the kinks; targets and labels that
are not differentiated are made inside ``fn``; piecewise-linear activations have no
second derivative to check (``gradgrad=False``).
"""
from __future__ import annotations

import numpy as np
from op_table import F, normal, one, op, positive
from op_table_act import _away_from


def _labels(m, values):
    return m.tensor(values)


# ---------------------------------------------------------------- activations
_SMOOTH = {
    "logsigmoid": lambda m, x: F(m).logsigmoid(x),
    "softsign": lambda m, x: F(m).softsign(x),
    "tanhshrink": lambda m, x: F(m).tanhshrink(x),
    "mish": lambda m, x: F(m).mish(x),
    "selu": lambda m, x: F(m).selu(x),
    "celu": lambda m, x: F(m).celu(x, 1.5),
    "softmin": lambda m, x: F(m).softmin(x, dim=-1),
    "glu": lambda m, x: F(m).glu(x, -1),
}
for _name, _fn in _SMOOTH.items():
    op(_name, _fn, lambda rng: [((_away_from(rng, (3, 4), [0]),), {})])
op("hardswish", lambda m, x: F(m).hardswish(x), lambda rng: one((_away_from(rng, (3, 4), [-3, 3], 4.0),)))
op("hardsigmoid", lambda m, x: F(m).hardsigmoid(x), lambda rng: one((_away_from(rng, (3, 4), [-3, 3], 4.0),)),
   gradgrad=False)
op("softshrink", lambda m, x: F(m).softshrink(x, 0.5), lambda rng: one((_away_from(rng, (3, 4), [-0.5, 0.5]),)),
   gradgrad=False)
op("hardshrink", lambda m, x: F(m).hardshrink(x, 0.5), lambda rng: one((_away_from(rng, (3, 4), [-0.5, 0.5]),)),
   gradgrad=False)
op("threshold", lambda m, x: F(m).threshold(x, 0.2, -1.0), lambda rng: one((_away_from(rng, (3, 4), [0.2]),)),
   gradgrad=False)
op("prelu", lambda m, x, w: F(m).prelu(x, w),
   lambda rng: [((_away_from(rng, (2, 3, 4), [0]), normal(rng, 3)), {}),
                ((_away_from(rng, (2, 3), [0]), normal(rng, 1)), {})], gradgrad=False)


# ---------------------------------------------------------------------- losses
def _signs(m, n):
    return m.tensor(np.where(np.arange(n) % 2 == 0, 1.0, -1.0))


op("margin_ranking_loss", lambda m, a, b, **k: F(m).margin_ranking_loss(a, b, _signs(m, 5), **k),
   lambda rng: [((_away_from(rng, (5,), [0]), normal(rng, 5)), {"margin": 0.1})], gradgrad=False)
op("hinge_embedding_loss", lambda m, x, **k: F(m).hinge_embedding_loss(x, _signs(m, 6), **k),
   lambda rng: [((_away_from(rng, (6,), [1.0]),), {"reduction": "sum"})], gradgrad=False)
op("soft_margin_loss", lambda m, x: F(m).soft_margin_loss(x, _signs(m, 6)), lambda rng: one((normal(rng, 6),)))
op("multilabel_soft_margin_loss",
   lambda m, x: F(m).multilabel_soft_margin_loss(x, m.tensor([[1.0, 0, 1], [0, 1, 0]])),
   lambda rng: one((normal(rng, 2, 3),)))
op("multi_margin_loss", lambda m, x, **k: F(m).multi_margin_loss(x, _labels(m, [0, 2, 1]), **k),
   lambda rng: [((normal(rng, 3, 4),), {}), ((normal(rng, 3, 4),), {"p": 2, "margin": 0.5})], gradgrad=False)
op("multilabel_margin_loss",
   lambda m, x: F(m).multilabel_margin_loss(x, _labels(m, [[0, 2, -1, 1], [3, -1, 0, 0]])),
   lambda rng: one((normal(rng, 2, 4),)), gradgrad=False)
op("cosine_embedding_loss", lambda m, a, b: F(m).cosine_embedding_loss(a, b, _signs(m, 3), margin=-0.5),
   lambda rng: one((normal(rng, 3, 4), normal(rng, 3, 4))))
op("triplet_margin_loss", lambda m, a, p, n: F(m).triplet_margin_loss(a, p, n, margin=5.0),
   lambda rng: one((normal(rng, 3, 4), normal(rng, 3, 4), normal(rng, 3, 4))))
op("poisson_nll_loss", lambda m, x, **k: F(m).poisson_nll_loss(x, m.tensor([1.0, 0, 3, 2]), **k),
   lambda rng: [((normal(rng, 4),), {}), ((positive(rng, 4),), {"log_input": False, "full": True})])
op("gaussian_nll_loss", lambda m, x, t, v: F(m).gaussian_nll_loss(x, t, v),
   lambda rng: one((normal(rng, 3, 2), normal(rng, 3, 2), positive(rng, 3, 2))))


def _ctc(m, x):
    return F(m).ctc_loss(x.log_softmax(2), m.tensor([[1, 2, 2], [3, 1, 1]]), (6, 5), (3, 1), reduction="sum")


op("ctc_loss", _ctc, lambda rng: one((normal(rng, 6, 2, 4),)))

# ---------------------------------------------------------- distances and norms
op("cosine_similarity", lambda m, a, b, **k: F(m).cosine_similarity(a, b, **k),
   lambda rng: [((normal(rng, 3, 4), normal(rng, 3, 4)), {}), ((normal(rng, 2, 3), normal(rng, 3)), {"dim": -1})])
op("pairwise_distance", lambda m, a, b, **k: F(m).pairwise_distance(a, b, **k),
   lambda rng: [((normal(rng, 3, 4), normal(rng, 3, 4)), {}), ((normal(rng, 3, 4), normal(rng, 3, 4)), {"p": 3.0})])
op("bilinear", lambda m, a, b, w, c: F(m).bilinear(a, b, w, c),
   lambda rng: one((normal(rng, 2, 3), normal(rng, 2, 4), normal(rng, 5, 3, 4), normal(rng, 5))))
op("instance_norm", lambda m, x, w, b: F(m).instance_norm(x, weight=w, bias=b),
   lambda rng: one((normal(rng, 2, 3, 5), normal(rng, 3), normal(rng, 3))))
op("local_response_norm", lambda m, x: F(m).local_response_norm(x, 3),
   lambda rng: one((normal(rng, 2, 4, 3),)))
