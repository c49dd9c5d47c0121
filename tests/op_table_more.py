"""Op-table entries for sorting and selection, einsum, addmm/baddbmm and the losses
(imported at the end of op_table.py).

Sorting samples draw pairwise distinct values, so no two elements tie and the
selected positions (and PyTorch's indices) are unambiguous. argsort has no gradient
of its own: its entry gathers the input with the indices it returns, so the indices
are checked through a differentiable result (and compared with PyTorch's directly).
Loss weights that are not differentiated are made inside ``fn`` (a sample's float
tensors all require grad).
"""
from __future__ import annotations

import numpy as np
from op_table import F, T, avoiding, distinct, idx, normal, one, op, positive


# --------------------------------------------------------------- sort / topk / kthvalue
def _sort_samples(rng):
    yield (distinct(rng, (2, 3, 4)),), {}
    yield (distinct(rng, (2, 3, 4)),), {"dim": 1, "descending": True}
    yield (distinct(rng, (3, 4)),), {"dim": 0, "stable": True}
    yield (distinct(rng, (5,)),), {"descending": True, "stable": True}


op("sort", lambda m, x, **k: m.sort(x, **k), _sort_samples, method="sort")
op("sort", lambda m, x: m.sort(x, 0, True).values,
   lambda rng: one((distinct(rng, (4, 2)),)), variant="positional")


def _argsort(m, x, **k):
    i = m.argsort(x, **k)
    d = k.get("dim", -1)
    return m.gather(x, d, i), i


op("argsort", _argsort,
   lambda rng: [((distinct(rng, (2, 5)),), {}), ((distinct(rng, (3, 2, 2)),), {"dim": 0}),
                ((distinct(rng, (2, 4)),), {"dim": 1, "descending": True}),
                ((distinct(rng, (6,)),), {"stable": True})])
op("argsort", lambda m, x: (x.gather(-1, x.argsort(descending=True)), x.argsort(descending=True)),
   lambda rng: one((distinct(rng, (2, 4)),)), variant="method")


def _topk_samples(rng):
    yield (distinct(rng, (2, 5)), 2), {}
    yield (distinct(rng, (3, 4)), 3), {"dim": 0}
    yield (distinct(rng, (2, 3, 4)), 1), {"dim": 1, "largest": False}
    yield (distinct(rng, (6,)), 6), {"largest": False}


op("topk", lambda m, x, k, **kw: m.topk(x, k, **kw), _topk_samples, method="topk")
op("topk", lambda m, x: x.topk(2)[0] * 2 + x.topk(2).values,
   lambda rng: one((distinct(rng, (3, 4)),)), variant="tuple_access")


def _kthvalue_samples(rng):
    yield (distinct(rng, (2, 5)), 2), {}
    yield (distinct(rng, (3, 4)), 3), {"dim": 0}
    yield (distinct(rng, (2, 3, 4)), 1), {"dim": 1, "keepdim": True}
    yield (distinct(rng, (5,)), 5), {}
    yield (distinct(rng, ()), 1), {}


op("kthvalue", lambda m, x, k, **kw: m.kthvalue(x, k, **kw), _kthvalue_samples, method="kthvalue")

# ------------------------------------------------------------------------- einsum
_EINSUM = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("i,j->ij", [(3,), (2,)]),
    ("ij,ij->i", [(2, 3), (2, 3)]),
    ("i,i", [(4,), (4,)]),
    ("...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 2), (1, 2, 4, 2)]),
    ("iij->j", [(2, 2, 3)]),
    ("bn,anm,bm->ba", [(2, 3), (2, 3, 2), (2, 2)]),
    ("Ab,ab", [(2, 3), (2, 3)]),
    (" ij , jk ", [(2, 2), (2, 3)]),
]


def _einsum_samples(rng):
    for eq, shapes in _EINSUM:
        yield (eq, *[normal(rng, *s) for s in shapes]), {}


op("einsum", lambda m, eq, *ts: m.einsum(eq, *ts), _einsum_samples)
op("einsum", lambda m, eq, ts: m.einsum(eq, ts),
   lambda rng: [(("ij,jk", [normal(rng, 2, 3), normal(rng, 3, 2)]), {}),
                (("i,i->i", (normal(rng, 3), normal(rng, 3))), {})],
   variant="list")

# ------------------------------------------------------------------ addmm / baddbmm
op("addmm", lambda m, i, a, b, **k: m.addmm(i, a, b, **k),
   lambda rng: [((normal(rng, 2, 4), normal(rng, 2, 3), normal(rng, 3, 4)), {}),
                ((normal(rng, 4), normal(rng, 2, 3), normal(rng, 3, 4)), {"beta": 0.5, "alpha": -2}),
                ((normal(rng, 2, 1), normal(rng, 2, 3), normal(rng, 3, 4)), {"beta": 0}),
                ((normal(rng), normal(rng, 3, 2), normal(rng, 2, 2)), {"alpha": 3})],
   method="addmm")
op("baddbmm", lambda m, i, a, b, **k: m.baddbmm(i, a, b, **k),
   lambda rng: [((normal(rng, 2, 2, 4), normal(rng, 2, 2, 3), normal(rng, 2, 3, 4)), {}),
                ((normal(rng, 4), normal(rng, 2, 2, 3), normal(rng, 2, 3, 4)), {"beta": 2.0, "alpha": 0.5}),
                ((normal(rng, 2, 1, 1), normal(rng, 2, 1, 3), normal(rng, 2, 3, 2)), {"beta": 0})],
   method="baddbmm")


# --------------------------------------------------------------------------- losses
_RED = ("mean", "sum", "none")


def _pair_losses(gen_a, gen_b, shape=(3, 4), **extra):
    def samples(rng):
        for r in _RED:
            yield (gen_a(rng, *shape), gen_b(rng, *shape)), {"reduction": r, **extra}
    return samples


def _unit(rng, *shape):
    return T(rng.uniform(0.1, 0.9, shape))


def _logits(rng, *shape):
    return T(rng.uniform(-4.0, 4.0, shape))


def _kink_samples(kw_name, value):
    """Pairs whose difference stays away from the kinks at 0 and +-value."""
    def samples(rng):
        for r in _RED:
            y = rng.standard_normal((3, 4))
            d = avoiding(rng, (3, 4), (-value, value, 0.0), margin=0.15)
            yield (T(d + y), T(y)), {"reduction": r, kw_name: value}
    return samples


op("mse_loss", lambda m, a, b, **k: F(m).mse_loss(a, b, **k), _pair_losses(normal, normal))
op("l1_loss", lambda m, a, b, **k: F(m).l1_loss(a, b, **k), _pair_losses(normal, normal))
op("smooth_l1_loss", lambda m, a, b, **k: F(m).smooth_l1_loss(a, b, **k), _kink_samples("beta", 0.7))
op("huber_loss", lambda m, a, b, **k: F(m).huber_loss(a, b, **k), _kink_samples("delta", 0.6))
op("binary_cross_entropy_with_logits",
   lambda m, a, b, **k: F(m).binary_cross_entropy_with_logits(a, b, **k), _pair_losses(_logits, _unit))


def _bce_logits_weighted(m, a, b, **k):
    w = m.tensor([0.5, 1.0, 2.0, 1.5], dtype=m.float64)
    pw = m.tensor([3.0, 0.5, 1.0, 2.0], dtype=m.float64)
    return F(m).binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=pw, **k)


op("binary_cross_entropy_with_logits", _bce_logits_weighted, _pair_losses(_logits, _unit),
   variant="weighted")
op("binary_cross_entropy", lambda m, a, b, **k: F(m).binary_cross_entropy(a, b, **k),
   _pair_losses(_unit, _unit))


def _bce_weighted(m, a, b, **k):
    return F(m).binary_cross_entropy(a, b, weight=m.tensor([[0.5], [1.0], [2.0]], dtype=m.float64), **k)


op("binary_cross_entropy", _bce_weighted, _pair_losses(_unit, _unit), variant="weighted")


def _log_probs(rng, *shape):
    return T(np.log(rng.uniform(0.1, 0.9, shape)))


def _kl_samples(rng):
    for r in _RED + ("batchmean",):
        yield (_log_probs(rng, 3, 4), _unit(rng, 3, 4)), {"reduction": r}
    yield (_log_probs(rng, 3, 4), _log_probs(rng, 3, 4)), {"reduction": "batchmean", "log_target": True}
    yield (_log_probs(rng, 3, 4), _log_probs(rng, 3, 4)), {"reduction": "none", "log_target": True}


op("kl_div", lambda m, a, b, **k: F(m).kl_div(a, b, **k), _kl_samples)


def _nll_samples(rng):
    for r in _RED:
        yield (normal(rng, 4, 3), idx([0, 2, 1, 2])), {"reduction": r}
        yield (normal(rng, 2, 3, 4), idx([[0, 2, 1, 1], [2, 2, 0, 1]])), {"reduction": r}
        yield (normal(rng, 2, 3, 2, 2), idx([[[0, 2], [1, 1]], [[2, 2], [0, 1]]])), {"reduction": r}
        yield (normal(rng, 3), idx(1)), {"reduction": r}
    yield (normal(rng, 4, 3), idx([0, -100, 1, 2])), {"ignore_index": -100}


op("nll_loss", lambda m, a, t, **k: F(m).nll_loss(a, t, **k), _nll_samples)


def _nll_weighted(m, a, t, **k):
    return F(m).nll_loss(a, t, weight=m.tensor([0.5, 2.0, 1.0], dtype=m.float64), **k)


op("nll_loss", _nll_weighted,
   lambda rng: [((normal(rng, 4, 3), idx([0, 2, 1, 2])), {"reduction": r}) for r in _RED],
   variant="weighted")
op("cross_entropy", lambda m, a, t, **k: F(m).cross_entropy(a, t, **k),
   lambda rng: [((normal(rng, 2, 3, 4), positive(rng, 2, 3, 4)), {"reduction": r}) for r in _RED]
   + [((normal(rng, 4, 3), positive(rng, 4, 3)), {"label_smoothing": 0.2})],
   variant="probabilities")

# ------------------------------------------------------------------------- nansum
op("nansum", lambda m, x, **k: m.nansum(x, **k),
   lambda rng: [((normal(rng, 2, 3),), {}), ((normal(rng, 2, 3, 2),), {"dim": 1}),
                ((normal(rng, 2, 3),), {"dim": (0, 1), "keepdim": True})], method="nansum")
