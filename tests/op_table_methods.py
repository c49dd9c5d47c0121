"""Op-table entries for the Tensor methods of distgrad/ops/methods_extra.py: inverse
hyperbolics, addmv/addr/addbmm, matrix_power, dist, renorm, cov/corrcoef, narrow_copy,
split_with_sizes and index_reduce (imported at the end of op_table.py)."""
from __future__ import annotations

import numpy as np
from op_table import T, distinct, idx, normal, one, op, positive


def _uniform(lo, hi):
    def samples(rng):
        yield (T(rng.uniform(lo, hi, (2, 3))),), {}
        yield (T(rng.uniform(lo, hi, (4,))),), {}
    return samples


op("asinh", lambda m, x: m.asinh(x), _uniform(-2, 2), method="asinh")
op("acosh", lambda m, x: m.acosh(x), _uniform(1.2, 3), method="acosh")
op("atanh", lambda m, x: m.atanh(x), _uniform(-0.8, 0.8), method="atanh")

op("addmv", lambda m, i, a, v, **k: m.addmv(i, a, v, **k),
   lambda rng: [((normal(rng, 2), normal(rng, 2, 3), normal(rng, 3)), {}),
                ((normal(rng, 1), normal(rng, 2, 3), normal(rng, 3)), {"beta": 0.5, "alpha": -2}),
                ((normal(rng, 2), normal(rng, 2, 3), normal(rng, 3)), {"beta": 0})],
   method="addmv")
op("addr", lambda m, i, a, b, **k: m.addr(i, a, b, **k),
   lambda rng: [((normal(rng, 2, 3), normal(rng, 2), normal(rng, 3)), {}),
                ((normal(rng, 3), normal(rng, 2), normal(rng, 3)), {"beta": 2, "alpha": 0.5})],
   method="addr")
op("addbmm", lambda m, i, a, b, **k: m.addbmm(i, a, b, **k),
   lambda rng: [((normal(rng, 2, 4), normal(rng, 3, 2, 3), normal(rng, 3, 3, 4)), {}),
                ((normal(rng, 4), normal(rng, 2, 2, 3), normal(rng, 2, 3, 4)), {"beta": 0.5, "alpha": 3})],
   method="addbmm")


def _square(rng, *batch, n=3):
    return T(rng.standard_normal(batch + (n, n)) * 0.3 + 2 * np.eye(n))


op("matrix_power", lambda m, x, n: m.matrix_power(x, n),
   lambda rng: [((_square(rng), 3), {}), ((_square(rng, 2), 2), {}), ((_square(rng), -2), {}),
                ((_square(rng), 0), {})],
   method="matrix_power")
op("dist", lambda m, x, y, *p: m.dist(x, y, *p),
   lambda rng: [((normal(rng, 2, 3), normal(rng, 2, 3)), {}),
                ((normal(rng, 2, 3), normal(rng, 3)), {}),
                ((positive(rng, 4), positive(rng, 4, lo=3.5, hi=5), 3), {})],
   method="dist")
op("renorm", lambda m, x, p, d, mx: m.renorm(x, p, d, mx),
   lambda rng: [((normal(rng, 3, 4), 2, 0, 1.0), {}), ((normal(rng, 2, 3, 2), 3, 1, 0.8), {}),
                ((T(rng.standard_normal((3, 2)) * 0.01), 2, 1, 5.0), {})],
   method="renorm")
op("cov", lambda m, x, **k: m.cov(x, **k),
   lambda rng: [((normal(rng, 3, 5),), {}), ((normal(rng, 6),), {"correction": 0})],
   method="cov")
op("corrcoef", lambda m, x: m.corrcoef(x),
   lambda rng: one((normal(rng, 3, 5),)), method="corrcoef")
op("narrow_copy", lambda m, x, d, s, n: m.narrow_copy(x, d, s, n),
   lambda rng: [((normal(rng, 3, 4), 1, 1, 2), {}), ((normal(rng, 4), 0, 0, 3), {})],
   method="narrow_copy")
op("split_with_sizes", lambda m, x, s, d=0: m.split_with_sizes(x, s, d),
   lambda rng: [((normal(rng, 5, 2), [2, 3]), {}), ((normal(rng, 2, 6), [1, 2, 3], 1), {})],
   method="split_with_sizes")


def _index_reduce_samples(rng):
    yield (distinct(rng, (3, 2)), 0, idx([0, 2, 0, 1]), distinct(rng, (4, 2)), "amax"), {}
    yield (distinct(rng, (2, 3)), 1, idx([1, 1]), distinct(rng, (2, 2)), "amin"), {"include_self": False}
    yield (positive(rng, 3, 2), 0, idx([2, 2, 0]), positive(rng, 3, 2), "prod"), {}
    yield (normal(rng, 3, 2), 0, idx([1, 0, 1]), normal(rng, 3, 2), "mean"), {}


op("index_reduce", lambda m, x, d, i, s, r, **k: m.index_reduce(x, d, i, s, r, **k),
   _index_reduce_samples, method="index_reduce")
