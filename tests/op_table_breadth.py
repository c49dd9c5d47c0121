"""Op-table entries for the breadth ops: more elementwise math, scans and order
statistics, shape and indexing ops, and matrix functions (imported at the end of
op_table.py). Samples keep away from the points where an op is not differentiable
(ties for median/cummax, the edges of acos/asin's domain, repeated singular values).
Matrix factorizations are checked through quantities that do not depend on the
sign of each singular vector or eigenvector."""
from __future__ import annotations

import numpy as np
from op_table import T, away, distinct, idx, mask, normal, one, op, positive


def _unit(rng, *shape):
    return T(rng.uniform(-0.8, 0.8, shape))


def _u01(rng, *shape):
    return T(rng.uniform(0.15, 0.85, shape))


# ----------------------------------------------------------------- unary
_UNARY = [
    ("acos", _unit), ("asin", _unit), ("atan", normal), ("cosh", normal), ("sinh", normal),
    ("tan", _unit), ("log10", positive), ("log2", positive), ("exp2", normal), ("erfc", normal),
    ("erfinv", _unit), ("frac", lambda rng, *s: T(rng.uniform(0.1, 0.9, s) + rng.integers(-3, 3, s))),
    ("lgamma", lambda rng, *s: T(rng.uniform(0.3, 6.0, s))),
    ("digamma", lambda rng, *s: T(rng.uniform(0.3, 6.0, s))),
    ("logit", _u01), ("sinc", away), ("deg2rad", normal), ("rad2deg", normal), ("sgn", away),
    ("nan_to_num", normal), ("negative", normal), ("absolute", away), ("positive", normal),
]
for _name, _gen in _UNARY:
    # PyTorch refuses to differentiate sgn of a real tensor in its own backward; ours is zero.
    op(_name, (lambda n: lambda m, x: getattr(m, n)(x))(_name),
       (lambda g: lambda rng: [((g(rng, 2, 3),), {}), ((g(rng, 4),), {})])(_gen), method=_name,
       torch_grad=_name != "sgn")

op("lgamma", lambda m, x: m.lgamma(x), lambda rng: one((T([-2.5, -0.4, 0.7, 11.3, 30.2]),)),
   variant="negative")
op("digamma", lambda m, x: m.digamma(x), lambda rng: one((T([-2.5, -0.4, 0.7, 11.3, 30.2]),)),
   variant="negative")
op("polygamma", lambda m, x: m.polygamma(2, x), lambda rng: one((T(rng.uniform(0.5, 4.0, (5,))),)),
   tol={"atol": 1e-5, "rtol": 1e-4})
op("logit", lambda m, x: m.logit(x, eps=0.2), lambda rng: one((T([0.05, 0.3, 0.6, 0.95]),)),
   variant="eps")
op("erfc", lambda m, x: m.erfc(x), lambda rng: one((T([-3.0, -1.0, 0.5, 2.5, 4.0, 7.0]),)),
   variant="tails")


# ----------------------------------------------------------------- binary
def _pair(gen_a, gen_b):
    def samples(rng):
        yield (gen_a(rng, 2, 3), gen_b(rng, 2, 3)), {}
        yield (gen_a(rng, 2, 3), gen_b(rng, 3)), {}
        yield (gen_a(rng, 2, 1), gen_b(rng, 1, 3)), {}
    return samples


for _name, _ga, _gb in [("atan2", normal, away), ("hypot", away, away), ("logaddexp", normal, normal),
                        ("logaddexp2", normal, normal), ("xlogy", normal, positive),
                        ("copysign", away, away), ("subtract", normal, normal),
                        ("true_divide", normal, away)]:
    op(_name, (lambda n: lambda m, a, b: getattr(m, n)(a, b))(_name), _pair(_ga, _gb), method=_name)

op("arctan2", lambda m, a, b: m.arctan2(a, b), _pair(normal, away))
op("xlogy", lambda m, a: m.xlogy(a, 2.5), lambda rng: one((normal(rng, 3),)), variant="scalar")
op("copysign", lambda m, a: m.copysign(a, -1.0), lambda rng: one((away(rng, 4),)), variant="scalar")
op("fmod", lambda m, a, b: m.fmod(a, b),
   lambda rng: one((T([2.3, -3.7, 5.2, -0.4]), T([1.5, 1.5, -2.0, 0.3]))), method="fmod")
op("fmod", lambda m, a: m.fmod(a, 1.5), lambda rng: one((T([2.3, -3.7, 5.2, -0.4]),)), variant="scalar")
op("fmax", lambda m, a, b: m.fmax(a, b), lambda rng: one(tuple(distinct(rng, (2, 3), (2, 3)))),
   method="fmax")
op("fmin", lambda m, a, b: m.fmin(a, b), lambda rng: one(tuple(distinct(rng, (2, 3), (3,)))),
   method="fmin")
op("float_power", lambda m, a: m.float_power(a, 3), lambda rng: one((positive(rng, 4),)))
op("float_power", lambda m, a, b: m.float_power(a, b), lambda rng: one((positive(rng, 3), normal(rng, 3))),
   variant="tensor")
op("clamp_min", lambda m, x, v: m.clamp_min(x, v), lambda rng: one((T([-1.0, 0.5, 2.0, -0.3]), 0.1)),
   method="clamp_min")
op("clamp_max", lambda m, x, v: m.clamp_max(x, v), lambda rng: one((T([-1.0, 0.5, 2.0, -0.3]), 0.1)),
   method="clamp_max")
op("clamp_min", lambda m, x, lo: m.clamp_min(x, lo),
   lambda rng: one((T([-1.0, 0.5, 2.0, -0.3]), T([0.0, 1.0, 1.0, -1.0]))), variant="tensor")
op("clamp_max", lambda m, x, hi: m.clamp_max(x, hi),
   lambda rng: one((T([-1.0, 0.5, 2.0, -0.3]), T([0.0, 1.0, 1.0, -1.0]))), variant="tensor")
op("lerp", lambda m, a, b: m.lerp(a, b, 0.3), _pair(normal, normal))
op("lerp", lambda m, a, b: m.lerp(a, b, 0.8), lambda rng: one((normal(rng, 3), normal(rng, 3))),
   variant="high_weight")
op("lerp", lambda m, a, b, w: m.lerp(a, b, w),
   lambda rng: one((normal(rng, 2, 3), normal(rng, 3), _u01(rng, 2, 1))), variant="tensor", method="lerp")
op("addcmul", lambda m, x, a, b, **k: m.addcmul(x, a, b, **k),
   lambda rng: [((normal(rng, 2, 3), normal(rng, 3), normal(rng, 2, 1)), {}),
                ((normal(rng, 3), normal(rng, 3), normal(rng, 3)), {"value": 0.5})], method="addcmul")
op("addcdiv", lambda m, x, a, b, **k: m.addcdiv(x, a, b, **k),
   lambda rng: [((normal(rng, 2, 3), normal(rng, 3), away(rng, 2, 1)), {}),
                ((normal(rng, 3), normal(rng, 3), away(rng, 3)), {"value": -2})], method="addcdiv")


# ------------------------------------------------------------- reductions / scans
op("cumprod", lambda m, x, d: m.cumprod(x, d), lambda rng: [((away(rng, 3, 4), 1), {}),
                                                             ((away(rng, 3, 4), 0), {})], method="cumprod")
op("cumprod", lambda m, x: m.cumprod(x, 0), lambda rng: one((T([1.5, 0.0, -2.0, 0.7]),)),
   variant="zero")
op("cummax", lambda m, x, d: m.cummax(x, d), lambda rng: one((distinct(rng, (3, 4)), 1)), method="cummax")
op("cummin", lambda m, x, d: m.cummin(x, d), lambda rng: one((distinct(rng, (3, 4)), 0)), method="cummin")
op("logcumsumexp", lambda m, x, d: m.logcumsumexp(x, d),
   lambda rng: [((normal(rng, 3, 4), 1), {}), ((normal(rng, 5), 0), {})], method="logcumsumexp")
op("nanmean", lambda m, x, **k: m.nanmean(x, **k),
   lambda rng: [((normal(rng, 3, 4),), {}), ((normal(rng, 3, 4),), {"dim": 1, "keepdim": True})],
   method="nanmean")
op("median", lambda m, x: m.median(x), lambda rng: one((distinct(rng, (3, 5)),)), method="median")
op("median", lambda m, x, **k: m.median(x, **k),
   lambda rng: [((distinct(rng, (3, 4)),), {"dim": 1}), ((distinct(rng, (4, 3)),), {"dim": 0, "keepdim": True})],
   variant="dim", method="median")
op("nanmedian", lambda m, x, **k: m.nanmedian(x, **k),
   lambda rng: [((distinct(rng, (3, 4)),), {}), ((distinct(rng, (3, 4)),), {"dim": 1})], method="nanmedian")
op("mode", lambda m, x: m.mode(x, 1), lambda rng: one((distinct(rng, (3, 4)),)), method="mode")
op("quantile", lambda m, x, q, **k: m.quantile(x, q, **k),
   lambda rng: [((distinct(rng, (7,)), 0.3), {}), ((distinct(rng, (3, 5)), 0.75), {"dim": 1}),
                ((distinct(rng, (3, 5)), 0.4), {"dim": 0, "keepdim": True, "interpolation": "midpoint"}),
                ((distinct(rng, (3, 5)), 0.6), {"dim": 1, "interpolation": "lower"}),
                ((distinct(rng, (3, 5)), 0.6), {"dim": 1, "interpolation": "nearest"}),
                ((distinct(rng, (3, 5)), 0.6), {"interpolation": "higher", "keepdim": True})],
   method="quantile")
op("quantile", lambda m, x: m.quantile(x, m.tensor([0.1, 0.5, 0.9], dtype=m.float64), dim=1),
   lambda rng: one((distinct(rng, (2, 6)),)), variant="tensor_q")
op("nanquantile", lambda m, x, q, **k: m.nanquantile(x, q, **k),
   lambda rng: [((distinct(rng, (3, 5)), 0.35), {"dim": 1}), ((distinct(rng, (6,)), 0.8), {})],
   method="nanquantile")
op("aminmax", lambda m, x, **k: tuple(m.aminmax(x, **k)),
   lambda rng: [((distinct(rng, (3, 4)),), {}), ((distinct(rng, (3, 4)),), {"dim": 1})])


# ----------------------------------------------------------------- shape / indexing
op("roll", lambda m, x, s, d=None: m.roll(x, s, d),
   lambda rng: [((normal(rng, 3, 4), 1, 0), {}), ((normal(rng, 3, 4), (1, -2), (0, 1)), {}),
                ((normal(rng, 3, 4), 5), {})], method="roll")
op("rot90", lambda m, x, k: m.rot90(x, k, (0, 1)),
   lambda rng: [((normal(rng, 2, 3), 1), {}), ((normal(rng, 2, 3), 2), {}), ((normal(rng, 2, 3, 2), -1), {})])
op("tile", lambda m, x, d: m.tile(x, d), lambda rng: [((normal(rng, 2, 3), (2,)), {}),
                                                       ((normal(rng, 3), (2, 2)), {})], method="tile")
op("repeat_interleave", lambda m, x, *a, **k: m.repeat_interleave(x, *a, **k),
   lambda rng: [((normal(rng, 2, 3), 2), {}), ((normal(rng, 2, 3), 2), {"dim": 1}),
                ((normal(rng, 3, 2), idx([1, 0, 3])), {"dim": 0})], method="repeat_interleave")
op("diag", lambda m, x, *a: m.diag(x, *a),
   lambda rng: [((normal(rng, 3),), {}), ((normal(rng, 3), 1), {}), ((normal(rng, 3, 4),), {}),
                ((normal(rng, 4, 3), -1), {})], method="diag")
op("diagonal", lambda m, x, **k: m.diagonal(x, **k),
   lambda rng: [((normal(rng, 3, 4),), {}), ((normal(rng, 2, 3, 4),), {"offset": 1, "dim1": 1, "dim2": 2}),
                ((normal(rng, 4, 3),), {"offset": -2})], method="diagonal")
op("diag_embed", lambda m, x, **k: m.diag_embed(x, **k),
   lambda rng: [((normal(rng, 2, 3),), {}), ((normal(rng, 3),), {"offset": 1, "dim1": 0, "dim2": 1})],
   method="diag_embed")
op("diagflat", lambda m, x: m.diagflat(x), lambda rng: one((normal(rng, 2, 2),)), method="diagflat")
op("trace", lambda m, x: m.trace(x), lambda rng: [((normal(rng, 3, 3),), {}), ((normal(rng, 2, 4),), {})],
   method="trace")
op("meshgrid", lambda m, a, b, **k: m.meshgrid(a, b, **k),
   lambda rng: [((normal(rng, 3), normal(rng, 2)), {"indexing": "ij"}),
                ((normal(rng, 3), normal(rng, 2)), {"indexing": "xy"})])
op("diff", lambda m, x, **k: m.diff(x, **k),
   lambda rng: [((normal(rng, 3, 4),), {}), ((normal(rng, 3, 4),), {"n": 2, "dim": 0}),
                ((normal(rng, 4),), {"prepend": normal(rng, 2), "append": normal(rng, 1)})], method="diff")
op("fliplr", lambda m, x: m.fliplr(x), lambda rng: one((normal(rng, 2, 3),)), method="fliplr")
op("flipud", lambda m, x: m.flipud(x), lambda rng: one((normal(rng, 2, 3),)), method="flipud")
op("ravel", lambda m, x: m.ravel(x.t()), lambda rng: one((normal(rng, 2, 3),)))
op("moveaxis", lambda m, x: m.moveaxis(x, 0, -1), lambda rng: one((normal(rng, 2, 3, 4),)))
op("swapdims", lambda m, x: m.swapdims(x, 0, 2), lambda rng: one((normal(rng, 2, 3, 4),)))
op("atleast_3d", lambda m, a, b, c: (m.atleast_1d(a), m.atleast_2d(b), m.atleast_3d(c), m.atleast_3d(b)),
   lambda rng: one((normal(rng), normal(rng, 3), normal(rng, 2, 3))))
op("column_stack", lambda m, a, b: m.column_stack([a, b]), lambda rng: one((normal(rng, 3), normal(rng, 3, 2))))
op("dstack", lambda m, a, b: m.dstack([a, b]), lambda rng: one((normal(rng, 2, 3), normal(rng, 2, 3))))
op("tensor_split", lambda m, x, s, **k: m.tensor_split(x, s, **k),
   lambda rng: [((normal(rng, 7, 2), 3), {}), ((normal(rng, 2, 7), [1, 4]), {"dim": 1})],
   method="tensor_split")
op("hsplit", lambda m, x: m.hsplit(x, 2), lambda rng: one((normal(rng, 2, 4),)))
op("vsplit", lambda m, x: m.vsplit(x, [1]), lambda rng: one((normal(rng, 3, 2),)))
op("dsplit", lambda m, x: m.dsplit(x, 2), lambda rng: one((normal(rng, 2, 1, 4),)))
op("take", lambda m, x, i: m.take(x, i), lambda rng: one((normal(rng, 3, 4), idx([[0, 5], [11, 5]]))),
   method="take")
op("take_along_dim", lambda m, x, i, d=None: m.take_along_dim(x, i, d),
   lambda rng: [((normal(rng, 3, 4), idx([[0, 3], [1, 1], [2, 0]]), 1), {}),
                ((normal(rng, 3, 4), idx([0, 7, 11])), {})], method="take_along_dim")
op("index_fill", lambda m, x, d, i, v: m.index_fill(x, d, i, v),
   lambda rng: [((normal(rng, 3, 4), 1, idx([0, 2]), -1.5), {}), ((normal(rng, 3, 4), 0, idx([1]), 2.0), {})],
   method="index_fill")
op("index_fill", lambda m, x, v: m.index_fill(x, 1, m.tensor([0, 2, 0]), v),
   lambda rng: one((normal(rng, 3, 4), normal(rng))), variant="tensor_value")
op("index_copy", lambda m, x, d, i, s: m.index_copy(x, d, i, s),
   lambda rng: [((normal(rng, 4, 3), 0, idx([3, 0]), normal(rng, 2, 3)), {})], method="index_copy")
op("masked_scatter", lambda m, x, k, s: m.masked_scatter(x, k, s),
   lambda rng: one((normal(rng, 2, 3), mask([[True, False, True], [False, True, False]]), normal(rng, 2, 3))),
   method="masked_scatter")
def _scatter_reduce_samples(rng):
    i = idx([[0, 1], [2, 1], [0, 0], [1, 2]])
    x, src = distinct(rng, (3, 2), (4, 2))
    yield (x, i, src), {}
    x, src = distinct(rng, (3, 2), (4, 2))
    yield (x, i, src), {"include_self": False}


for _red in ("sum", "prod", "mean", "amax", "amin"):
    op("scatter_reduce", (lambda r: lambda m, x, i, s, **k: m.scatter_reduce(x, 0, i, s, r, **k))(_red),
       _scatter_reduce_samples, variant=_red)
op("kron", lambda m, a, b: m.kron(a, b), lambda rng: [((normal(rng, 2, 3), normal(rng, 2, 2)), {}),
                                                       ((normal(rng, 3), normal(rng, 2, 2)), {})], method="kron")
op("tensordot", lambda m, a, b, **k: m.tensordot(a, b, **k),
   lambda rng: [((normal(rng, 2, 3, 4), normal(rng, 3, 4, 2)), {}),
                ((normal(rng, 2, 3), normal(rng, 3, 2)), {"dims": ([1], [0])}),
                ((normal(rng, 2, 3), normal(rng, 4)), {"dims": 0})])
op("inner", lambda m, a, b: m.inner(a, b), lambda rng: [((normal(rng, 2, 3), normal(rng, 4, 3)), {}),
                                                         ((normal(rng, 3), normal(rng, 3)), {})], method="inner")
op("vdot", lambda m, a, b: m.vdot(a, b), lambda rng: one((normal(rng, 3), normal(rng, 3))), method="vdot")
op("cross", lambda m, a, b, **k: m.cross(a, b, **k),
   lambda rng: [((normal(rng, 2, 3), normal(rng, 2, 3)), {"dim": 1}),
                ((normal(rng, 3, 2), normal(rng, 3, 2)), {"dim": 0})], method="cross")
op("linalg.cross", lambda m, a, b: m.linalg.cross(a, b), lambda rng: one((normal(rng, 4, 3), normal(rng, 1, 3))))
op("cdist", lambda m, a, b, **k: m.cdist(a, b, **k),
   lambda rng: [((normal(rng, 3, 2), normal(rng, 4, 2)), {}), ((normal(rng, 2, 3, 2), normal(rng, 2, 4, 2)), {}),
                ((normal(rng, 3, 2), normal(rng, 4, 2)), {"p": 1.0}),
                ((normal(rng, 3, 2), normal(rng, 4, 2)), {"p": 3.0})], tol={"atol": 1e-5, "rtol": 1e-4})
op("block_diag", lambda m, a, b, c: m.block_diag(a, b, c),
   lambda rng: one((normal(rng, 2, 3), normal(rng, 1, 2), normal(rng, 2))))
op("cartesian_prod", lambda m, a, b: m.cartesian_prod(a, b), lambda rng: one((normal(rng, 3), normal(rng, 2))))
op("combinations", lambda m, x, **k: m.combinations(x, **k),
   lambda rng: [((normal(rng, 4),), {}), ((normal(rng, 3),), {"r": 3}),
                ((normal(rng, 3),), {"with_replacement": True})])
op("vander", lambda m, x, **k: m.vander(x, **k),
   lambda rng: [((normal(rng, 3),), {}), ((T([0.0, 1.5, -2.0]),), {"N": 4, "increasing": True})],
   torch_grad=False)  # PyTorch's own vander cannot be differentiated (an in-place cumprod)
op("unfold", lambda m, x, d, s, st: x.unfold(d, s, st),
   lambda rng: [((normal(rng, 7), 0, 3, 2), {}), ((normal(rng, 2, 6), 1, 2, 1), {}),
                ((normal(rng, 5, 2), 0, 2, 3), {})])


# ----------------------------------------------------------------------- linalg
def _spd(m, x):
    n = x.shape[-1]
    return x @ x.transpose(-2, -1) + n * m.eye(n, dtype=x.dtype)


def _sym(m, x):
    return x + x.transpose(-2, -1)


def _sign_fixed(m, U, V=None):
    """Columns of U (and V) with the sign that makes U's first row positive."""
    s = m.sign(U[..., :1, :])
    return (U * s,) if V is None else (U * s, V * s)


op("det", lambda m, x: m.det(x), lambda rng: [((normal(rng, 3, 3),), {}), ((normal(rng, 2, 2, 2),), {})],
   method="det")
op("linalg.det", lambda m, x: m.linalg.det(x), lambda rng: one((normal(rng, 4, 4),)))
op("slogdet", lambda m, x: m.linalg.slogdet(x).logabsdet * 1 + m.slogdet(x)[0],
   lambda rng: one((normal(rng, 3, 3),)))
op("logdet", lambda m, x: m.logdet(_spd(m, x)), lambda rng: one((normal(rng, 3, 3),)), method=None)
op("inverse", lambda m, x: m.inverse(x), lambda rng: [((normal(rng, 3, 3) ,), {}), ((normal(rng, 2, 2, 2),), {})],
   method="inverse")
op("linalg.inv", lambda m, x: m.linalg.inv(_spd(m, x)), lambda rng: one((normal(rng, 3, 3),)))
op("linalg.solve", lambda m, a, b: m.linalg.solve(_spd(m, a), b),
   lambda rng: [((normal(rng, 3, 3), normal(rng, 3)), {}), ((normal(rng, 3, 3), normal(rng, 3, 2)), {}),
                ((normal(rng, 2, 3, 3), normal(rng, 2, 3)), {})])
op("linalg.cholesky", lambda m, x: m.linalg.cholesky(_spd(m, x)),
   lambda rng: [((normal(rng, 3, 3),), {}), ((normal(rng, 2, 2, 2),), {})])
op("linalg.qr", lambda m, x: (lambda q, r: (q * m.sign(m.diagonal(r, 0, -2, -1)).unsqueeze(-2),
                                            r * m.sign(m.diagonal(r, 0, -2, -1)).unsqueeze(-1)))(*m.linalg.qr(x)),
   lambda rng: [((normal(rng, 3, 3),), {}), ((normal(rng, 4, 2),), {})])
op("linalg.eigh", lambda m, x: (lambda L, V: (L,) + _sign_fixed(m, V))(*m.linalg.eigh(_sym(m, x))),
   lambda rng: one((normal(rng, 3, 3),)))
op("linalg.svd", lambda m, x: (lambda U, S, Vh: (S,) + _sign_fixed(m, U, Vh.transpose(-2, -1)))(
    *m.linalg.svd(x, full_matrices=False)),
   lambda rng: [((normal(rng, 3, 3),), {}), ((normal(rng, 4, 2),), {}), ((normal(rng, 2, 3),), {})])
op("svd", lambda m, x: (lambda U, S, V: (S,) + _sign_fixed(m, U, V))(*m.svd(x)),
   lambda rng: one((normal(rng, 4, 3),)))
op("pinverse", lambda m, x: m.pinverse(x), lambda rng: [((normal(rng, 3, 2),), {}), ((normal(rng, 2, 4),), {})],
   method="pinverse")
op("linalg.pinv", lambda m, x: m.linalg.pinv(x), lambda rng: one((normal(rng, 3, 3),)))
op("linalg.vector_norm", lambda m, x, **k: m.linalg.vector_norm(x, **k),
   lambda rng: [((normal(rng, 2, 3),), {}), ((normal(rng, 2, 3),), {"ord": 1, "dim": 1}),
                ((normal(rng, 2, 3),), {"ord": 3, "dim": (0, 1), "keepdim": True})])
op("linalg.matrix_norm", lambda m, x, **k: m.linalg.matrix_norm(x, **k),
   lambda rng: [((normal(rng, 2, 3),), {}), ((distinct(rng, (3, 3)),), {"ord": 1}),
                ((distinct(rng, (3, 3)),), {"ord": float("inf")}), ((normal(rng, 3, 3),), {"ord": "nuc"}),
                ((normal(rng, 3, 3),), {"ord": 2})])
op("linalg.norm", lambda m, x, **k: m.linalg.norm(x, **k),
   lambda rng: [((normal(rng, 2, 3),), {}), ((normal(rng, 4),), {"ord": 1}), ((normal(rng, 2, 3),), {"dim": 1})])
op("matrix_exp", lambda m, x: m.matrix_exp(x), lambda rng: [((normal(rng, 3, 3),), {}),
                                                             ((T(np.eye(2) * 3.0 + 0.5),), {})])
