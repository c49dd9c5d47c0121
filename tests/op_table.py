"""The op table that drives tests/test_ops.py: one ``OpInfo`` per op (or per form of an op).

``fn(m, *args, **kwargs)`` runs the op with ``m`` standing for the library, so the same
entry runs on ``distgrad`` and, converted, on ``torch``. ``samples(rng)`` yields
``(args, kwargs)``: float64 tensors with ``requires_grad=True`` plus the non-differentiable
arguments (dims, indices, masks). Inputs stay away from points where the op is not
differentiable (0 for abs/relu, bounds for clamp, ties for max/min), so finite differences
are meaningful. Adding an op means adding its entry here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import distgrad as dg


@dataclass(frozen=True)
class OpInfo:
    name: str                      # the op, as named in test_ops.REQUIRED_OPS
    fn: Callable                   # fn(m, *args, **kwargs), m is distgrad or torch
    samples: Callable              # samples(rng) -> iterable of (args, kwargs)
    gradgrad: bool = True          # twice differentiable at the samples
    variant: str = ""              # tells apart several entries of one op
    method: str | None = None      # args[0].<method>(*args[1:], **kwargs) must agree with fn
    torch_grad: bool = True        # False where PyTorch itself cannot differentiate the samples
    tol: dict = field(default_factory=dict)       # gradcheck eps/atol/rtol overrides
    xfail: dict = field(default_factory=dict)     # test kind -> reason (bugs outside ops/)

    @property
    def id(self) -> str:
        return f"{self.name}-{self.variant}" if self.variant else self.name


# ----------------------------------------------------------------- library helpers
def F(m):
    """``m.nn.functional``: where gelu, silu, softplus and one_hot live in both libraries."""
    return m.nn.functional


# --------------------------------------------------------------- input generators
def T(a, requires_grad=True):
    """A float64 distgrad tensor holding ``a``."""
    return dg.tensor(np.asarray(a, np.float64), requires_grad=requires_grad)


def idx(a):
    return dg.tensor(np.asarray(a, np.int64))


def mask(a):
    return dg.tensor(np.asarray(a, bool))


def normal(rng, *shape):
    return T(rng.standard_normal(shape))


def positive(rng, *shape, lo=0.5, hi=2.0):
    return T(rng.uniform(lo, hi, shape))


def away(rng, *shape, lo=0.3, hi=1.5):
    """Values with |x| in [lo, hi] and random signs: away from 0."""
    return T(rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape))


def distinct_arrays(rng, *shapes, step=0.3):
    """Arrays whose elements are pairwise at least ``step - 0.04`` apart and at least
    0.1 away from zero (for max/min, ties, abs, sign)."""
    n = sum(int(np.prod(s)) for s in shapes)
    grid = (np.arange(n) - n // 2) * step + 0.13 + rng.uniform(-0.02, 0.02, n)
    vals = rng.permutation(grid)
    out, k = [], 0
    for s in shapes:
        size = int(np.prod(s))
        out.append(vals[k:k + size].reshape(s))
        k += size
    return out


def distinct(rng, *shapes):
    ts = [T(a) for a in distinct_arrays(rng, *shapes)]
    return ts[0] if len(ts) == 1 else ts


def avoiding(rng, shape, points, margin=0.1):
    """Normal values no closer than ``margin`` to any of ``points``."""
    a = rng.standard_normal(shape)
    for _ in range(100):
        bad = np.zeros(a.shape, bool)
        for p in points:
            bad |= np.abs(a - p) < margin
        if not bad.any():
            return a
        a[bad] = rng.standard_normal(int(bad.sum()))
    raise AssertionError("could not draw values away from the given points")


def one(args, **kwargs):
    return [(args, kwargs)]


# ------------------------------------------------------------------ the entries
OPS: list[OpInfo] = []


def op(name, fn, samples, **kw):
    OPS.append(OpInfo(name, fn, samples, **kw))


# --- arithmetic: tensor-tensor (with broadcasting), tensor-scalar, scalar-tensor, function
_PAIR_SHAPES = [((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((3,), (2, 1, 3))]


def _pairs(gen_a, gen_b):
    def samples(rng):
        for sa, sb in _PAIR_SHAPES:
            yield (gen_a(rng, *sa), gen_b(rng, *sb)), {}
    return samples


def _tensor_scalar(gen, scalars):
    def samples(rng):
        for s in scalars:
            yield (gen(rng, 2, 3), s), {}
    return samples


def _scalar_tensor(gen, scalars):
    def samples(rng):
        for s in scalars:
            yield (s, gen(rng, 2, 3)), {}
    return samples


_ARITH = {
    "add": (lambda m, a, b: a + b, normal, normal, (2.5, -3)),
    "sub": (lambda m, a, b: a - b, normal, normal, (2.5, -3)),
    "mul": (lambda m, a, b: a * b, normal, normal, (2.5, -3)),
    "div": (lambda m, a, b: a / b, normal, away, (2.5, -3)),
    "pow": (lambda m, a, b: a ** b, positive, normal, (2, 3, 0.5, -1.5, 0)),
}
for _name, (_fn, _ga, _gb, _scalars) in _ARITH.items():
    op(_name, _fn, _pairs(_ga, _gb), variant="tensor")
    op(_name, _fn, _tensor_scalar(_ga, _scalars), variant="scalar")
# Reflected forms (scalar OP tensor): Python calls Tensor.__radd__ etc.
op("add", lambda m, s, x: s + x, _scalar_tensor(normal, (2.5, -3)), variant="rscalar")
op("sub", lambda m, s, x: s - x, _scalar_tensor(normal, (2.5, -3)), variant="rscalar")
op("mul", lambda m, s, x: s * x, _scalar_tensor(normal, (2.5, -3)), variant="rscalar")
op("div", lambda m, s, x: s / x, _scalar_tensor(away, (2.5, -3)), variant="rscalar")
op("pow", lambda m, s, x: s ** x, _scalar_tensor(normal, (2.0, 0.5, 3)), variant="rscalar")
# Integer powers of any sign of base.
op("pow", lambda m, a, b: a ** b, _tensor_scalar(away, (2, 3, -2)), variant="scalar_signed_base")
# Function forms, with alpha.
op("add", lambda m, a, b, **k: m.add(a, b, **k),
   lambda rng: [((normal(rng, 2, 3), normal(rng, 3)), {"alpha": 2}),
                ((normal(rng, 2, 3), 1.5), {})], variant="function", method="add")
op("sub", lambda m, a, b, **k: m.sub(a, b, **k),
   lambda rng: [((normal(rng, 2, 3), normal(rng, 3)), {"alpha": -0.5}),
                ((normal(rng, 2, 3), 1.5), {})], variant="function", method="sub")
op("rsub", lambda m, a, b, **k: m.rsub(a, b, **k),
   lambda rng: [((normal(rng, 2, 3), normal(rng, 3)), {}),
                ((normal(rng, 2, 3), 1.5), {"alpha": 2})])
op("mul", lambda m, a, b: m.mul(a, b),
   lambda rng: [((normal(rng, 2, 3), normal(rng, 2, 1)), {}), ((normal(rng, 3), -2.0), {})],
   variant="function", method="mul")
op("div", lambda m, a, b: m.div(a, b),
   lambda rng: [((normal(rng, 2, 3), away(rng, 2, 1)), {}), ((normal(rng, 3), -2.0), {})],
   variant="function", method="div")
op("pow", lambda m, a, b: m.pow(a, b),
   lambda rng: [((positive(rng, 2, 3), normal(rng, 3)), {}), ((normal(rng, 3), 2), {})],
   variant="function", method="pow")

# --- unary math
_UNARY = {
    "neg": (lambda m, x: -x, normal),
    "abs": (lambda m, x: m.abs(x), away),
    "exp": (lambda m, x: m.exp(x), normal),
    "log": (lambda m, x: m.log(x), positive),
    "sqrt": (lambda m, x: m.sqrt(x), positive),
    "rsqrt": (lambda m, x: m.rsqrt(x), positive),
    "sin": (lambda m, x: m.sin(x), normal),
    "cos": (lambda m, x: m.cos(x), normal),
    "tanh": (lambda m, x: m.tanh(x), normal),
    "sigmoid": (lambda m, x: m.sigmoid(x), normal),
    "relu": (lambda m, x: m.relu(x), away),
    "erf": (lambda m, x: m.erf(x), normal),
    "log1p": (lambda m, x: m.log1p(x), lambda rng, *s: T(rng.uniform(-0.6, 2.0, s))),
    "expm1": (lambda m, x: m.expm1(x), normal),
    "reciprocal": (lambda m, x: m.reciprocal(x), away),
}
for _name, (_fn, _gen) in _UNARY.items():
    op(_name, _fn, lambda rng, _gen=_gen: [((_gen(rng, 2, 3),), {}), ((_gen(rng, 4),), {})],
       method=None if _name == "neg" else _name)
op("neg", lambda m, x: m.neg(x), lambda rng: one((normal(rng, 2, 3),)), variant="function",
   method="neg")
op("abs", lambda m, x: abs(x), lambda rng: one((away(rng, 2, 3),)), variant="builtin")
op("sigmoid", lambda m, x: m.sigmoid(x), lambda rng: one((T([-40.0, -8.0, 0.0, 8.0, 40.0]),)),
   variant="saturated")
op("relu", lambda m, x: F(m).relu(x), lambda rng: one((away(rng, 2, 3),)), variant="functional")

# --- activations (torch.nn.functional)
op("gelu", lambda m, x, **k: F(m).gelu(x, **k),
   lambda rng: [((normal(rng, 2, 3),), {}), ((normal(rng, 2, 3),), {"approximate": "none"}),
                ((T([-4.0, -1.5, -0.3, 0.2, 1.1, 3.5]),), {"approximate": "tanh"})])
op("silu", lambda m, x: F(m).silu(x), lambda rng: one((normal(rng, 2, 3),)))
op("softplus", lambda m, x, **k: F(m).softplus(x, **k),
   lambda rng: [((normal(rng, 2, 3),), {}),
                # beta * x on both sides of the threshold (not at it)
                ((T([-1.3, -0.2, 0.3, 0.8, 1.7, 2.5]),), {"beta": 2.0, "threshold": 1.0})])

# --- clamp, maximum, minimum, where
op("clamp", lambda m, x, **k: m.clamp(x, **k),
   lambda rng: [((T(avoiding(rng, (2, 3), (-0.5, 0.5))),), {"min": -0.5, "max": 0.5}),
                ((T(avoiding(rng, (2, 3), (0.2,))),), {"min": 0.2}),
                ((T(avoiding(rng, (2, 3), (-0.1,))),), {"max": -0.1})],
   variant="scalar", method="clamp")
op("clamp", lambda m, x, lo, hi: m.clip(x, lo, hi),
   lambda rng: one((T(avoiding(rng, (2, 3), (-1.0, 1.0))), -1.0, 1.0)), variant="clip",
   method="clip")


def _clamp_tensor_samples(rng):
    x, lo, hi = distinct(rng, (2, 3), (3,), (3,))
    lo, hi = (lo, hi) if lo._data.sum() < hi._data.sum() else (hi, lo)
    yield (x,), {"min": lo, "max": hi}
    x, lo = distinct(rng, (2, 3), (2, 1))
    yield (x,), {"min": lo}
    x, hi = distinct(rng, (2, 3), (3,))
    yield (x,), {"max": hi}


op("clamp", lambda m, x, **k: m.clamp(x, **k), _clamp_tensor_samples, variant="tensor",
   method="clamp")
for _name in ("maximum", "minimum"):
    op(_name, lambda m, a, b, _n=_name: getattr(m, _n)(a, b),
       lambda rng: [(tuple(distinct(rng, (2, 3), (2, 3))), {}),
                    (tuple(distinct(rng, (2, 3), (3,))), {}),
                    (tuple(distinct(rng, (2, 1), (1, 3))), {})],
       method=_name)


def _where_samples(rng):
    c = mask(rng.random((2, 3)) < 0.5)
    yield (c, normal(rng, 2, 3), normal(rng, 2, 3)), {}
    yield (c, normal(rng, 2, 3), normal(rng, 3)), {}
    yield (mask([True, False, True]), normal(rng, 2, 1), normal(rng, 3)), {}
    yield (c, normal(rng, 2, 3), 0.0), {}
    yield (c, 1.5, normal(rng, 2, 3)), {}


op("where", lambda m, c, a, b: m.where(c, a, b), _where_samples)
# torch's method form is input.where(condition, other).
op("where", lambda m, a, c, b: a.where(c, b),
   lambda rng: one((normal(rng, 2, 3), mask(rng.random((2, 3)) < 0.5), normal(rng, 2, 3))),
   variant="method")

# --- reductions
_DIMS = [{}, {"dim": 1}, {"dim": (0, 2), "keepdim": True}, {"dim": -1, "keepdim": True},
         {"dim": [0, 1]}]


def _reduce_samples(gen, kwargs_list=_DIMS, shape=(2, 3, 2)):
    def samples(rng):
        for k in kwargs_list:
            yield (gen(rng, *shape),), k
    return samples


op("sum", lambda m, x, **k: m.sum(x, **k), _reduce_samples(normal), method="sum")
op("mean", lambda m, x, **k: m.mean(x, **k), _reduce_samples(normal), method="mean")
op("prod", lambda m, x, **k: m.prod(x, **k),
   _reduce_samples(away, [{}, {"dim": 1}, {"dim": 0, "keepdim": True}, {"dim": -1}]),
   method="prod")
# One zero: the gradient is the product of the other elements (no division by zero).
op("prod", lambda m, x, **k: m.prod(x, **k),
   lambda rng: [((T([[0.0, 1.5, -2.0], [0.7, 1.2, 0.9]]),), {}),
                ((T([[0.0, 1.5, -2.0], [0.7, 0.0, 0.9]]),), {"dim": 1})],
   variant="zero", gradgrad=False)
for _name in ("max", "min"):
    op(_name, lambda m, x, _n=_name: getattr(m, _n)(x),
       lambda rng: [((distinct(rng, (2, 3)),), {}), ((distinct(rng, (4,)),), {})],
       variant="full", method=_name)
    op(_name, lambda m, x, *a, _n=_name, **k: getattr(m, _n)(x, *a, **k),
       lambda rng: [((distinct(rng, (2, 3)), 1), {}), ((distinct(rng, (2, 3)),), {"dim": 0}),
                    ((distinct(rng, (2, 3, 2)), -1), {"keepdim": True}),
                    ((distinct(rng, (3,)), 0), {}), ((distinct(rng, ()), 0), {})],
       variant="dim", method=_name)
    # max(input, other) is maximum(input, other).
    op(_name, lambda m, a, b, _n=_name: getattr(m, _n)(a, b),
       lambda rng: one(tuple(distinct(rng, (2, 3), (3,)))), variant="binary", method=_name)
for _name in ("amax", "amin"):
    op(_name, lambda m, x, _n=_name, **k: getattr(m, _n)(x, **k),
       lambda rng: [((distinct(rng, (2, 3, 2)),), {}), ((distinct(rng, (2, 3, 2)),), {"dim": 1}),
                    ((distinct(rng, (2, 3, 2)),), {"dim": (0, 2), "keepdim": True}),
                    ((distinct(rng, (2, 3)),), {"dim": -1})],
       method=_name)
_VAR_ARGS = [{}, {"dim": 1}, {"dim": (0, 1), "keepdim": True}, {"dim": 0, "correction": 0},
             {"dim": -1, "correction": 2, "keepdim": True}, {"unbiased": False}]
op("var", lambda m, x, **k: m.var(x, **k), _reduce_samples(normal, _VAR_ARGS, (3, 4)),
   method="var")
op("std", lambda m, x, **k: m.std(x, **k), _reduce_samples(normal, _VAR_ARGS, (3, 4)),
   method="std")


def _norm_samples(rng):
    def x(*shape):  # distinct magnitudes, away from 0 (for p=inf and p=1)
        return distinct(rng, shape)

    yield (x(2, 3),), {}
    yield (x(2, 3),), {"p": 2, "dim": 1}
    yield (x(2, 3),), {"p": 1}
    yield (x(2, 3),), {"p": 1, "dim": 0, "keepdim": True}
    yield (x(2, 3),), {"p": math.inf}
    yield (x(2, 3),), {"p": math.inf, "dim": 1}
    yield (x(2, 3),), {"p": -math.inf, "dim": 1}
    yield (x(2, 3),), {"p": 3}
    yield (x(2, 3, 2),), {"p": 3, "dim": (0, 2), "keepdim": True}
    yield (x(2, 3),), {"p": "fro"}


op("norm", lambda m, x, **k: m.norm(x, **k), _norm_samples, method="norm")
op("logsumexp", lambda m, x, **k: m.logsumexp(x, **k),
   _reduce_samples(normal, [{"dim": 1}, {"dim": (0, 2)}, {"dim": -1, "keepdim": True}]),
   method="logsumexp")
for _name in ("softmax", "log_softmax"):
    op(_name, lambda m, x, *a, _n=_name, **k: getattr(m, _n)(x, *a, **k),
       lambda rng: [((normal(rng, 2, 3), 1), {}), ((normal(rng, 2, 3),), {"dim": 0}),
                    ((normal(rng, 2, 3, 2), -1), {}), ((normal(rng, 4), 0), {})],
       method=_name)
op("cumsum", lambda m, x, *a, **k: m.cumsum(x, *a, **k),
   lambda rng: [((normal(rng, 2, 3), 1), {}), ((normal(rng, 2, 3),), {"dim": 0}),
                ((normal(rng, 2, 3, 2), -1), {}), ((normal(rng, 4), 0), {}),
                ((normal(rng), 0), {})],
   method="cumsum")

# --- matrix products
_MATMUL_SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 2)), ((2, 3), (3, 4)),
                  ((2, 2, 3), (2, 3, 2)), ((2, 1, 2, 3), (3, 3, 2)), ((2, 2, 3), (3,)),
                  ((3,), (2, 3, 2)), ((2, 3), (2, 3, 2))]


def _matmul_samples(rng):
    for sa, sb in _MATMUL_SHAPES:
        yield (normal(rng, *sa), normal(rng, *sb)), {}


op("matmul", lambda m, a, b: a @ b, _matmul_samples, variant="operator")
op("matmul", lambda m, a, b: m.matmul(a, b), _matmul_samples, variant="function",
   method="matmul")
op("bmm", lambda m, a, b: m.bmm(a, b),
   lambda rng: one((normal(rng, 2, 2, 3), normal(rng, 2, 3, 2))), method="bmm")
op("mm", lambda m, a, b: m.mm(a, b), lambda rng: one((normal(rng, 2, 3), normal(rng, 3, 2))),
   method="mm")
op("mv", lambda m, a, b: m.mv(a, b), lambda rng: one((normal(rng, 2, 3), normal(rng, 3))),
   method="mv")
op("dot", lambda m, a, b: m.dot(a, b), lambda rng: one((normal(rng, 3), normal(rng, 3))),
   method="dot")
op("outer", lambda m, a, b: m.outer(a, b), lambda rng: one((normal(rng, 3), normal(rng, 2))),
   method="outer")

# --- joining and splitting
op("cat", lambda m, ts, *a, **k: m.cat(ts, *a, **k),
   lambda rng: [(([normal(rng, 2, 3), normal(rng, 1, 3)],), {}),
                (([normal(rng, 2, 1), normal(rng, 2, 3), normal(rng, 2, 2)], 1), {}),
                (((normal(rng, 2, 2), normal(rng, 2, 1)),), {"dim": -1})])
op("stack", lambda m, ts, *a, **k: m.stack(ts, *a, **k),
   lambda rng: [(([normal(rng, 2, 3), normal(rng, 2, 3)],), {}),
                (([normal(rng, 2, 3), normal(rng, 2, 3), normal(rng, 2, 3)], -1), {}),
                (((normal(rng, 3), normal(rng, 3)),), {"dim": 1})])
op("split", lambda m, x, *a, **k: m.split(x, *a, **k),
   lambda rng: [((normal(rng, 5, 2), 2), {}), ((normal(rng, 2, 3), [1, 2]), {"dim": 1}),
                ((normal(rng, 2, 4), 4, -1), {})],
   method="split")
op("chunk", lambda m, x, *a, **k: m.chunk(x, *a, **k),
   lambda rng: [((normal(rng, 5, 2), 2), {}), ((normal(rng, 2, 3), 3), {"dim": 1}),
                ((normal(rng, 2, 3), 2, -1), {})],
   method="chunk")

# --- indexing
op("gather", lambda m, x, d, i: m.gather(x, d, i),
   lambda rng: [((normal(rng, 2, 3), 1, idx([[0, 0, 2, 1], [2, 1, 1, 0]])), {}),
                ((normal(rng, 3, 2), 0, idx([[2, 0], [1, 2]])), {}),
                ((normal(rng, 3, 2), -1, idx([[1], [0]])), {})],
   method="gather")
op("scatter_add", lambda m, x, d, i, s: m.scatter_add(x, d, i, s),
   lambda rng: [((normal(rng, 2, 3), 1, idx([[0, 0, 2], [2, 1, 2]]), normal(rng, 2, 3)), {}),
                ((normal(rng, 3, 2), 0, idx([[2, 0], [2, 2]]), normal(rng, 2, 2)), {})],
   method="scatter_add")
# src larger than index: only its leading part is used, the rest gets a zero gradient
# (PyTorch 2.13's backward raises "invalid gradient" here).
op("scatter_add", lambda m, x, d, i, s: m.scatter_add(x, d, i, s),
   lambda rng: one((normal(rng, 2, 3), 1, idx([[1, 1], [0, 2]]), normal(rng, 2, 4))),
   variant="src_larger", torch_grad=False)
op("scatter", lambda m, x, d, i, s: m.scatter(x, d, i, s),
   lambda rng: [((normal(rng, 2, 3), 1, idx([[2, 0], [1, 2]]), normal(rng, 2, 2)), {}),
                ((normal(rng, 3, 2), 0, idx([[2, 0]]), normal(rng, 1, 2)), {}),
                ((normal(rng, 2, 3), 1, idx([[2, 0], [1, 2]]), 1.5), {})],
   method="scatter")
op("scatter", lambda m, x, d, i, s: m.scatter(x, d, i, s),
   lambda rng: one((normal(rng, 2, 3), 1, idx([[1], [0]]), normal(rng, 2, 3))),
   variant="src_larger", torch_grad=False)
op("index_select", lambda m, x, d, i: m.index_select(x, d, i),
   lambda rng: [((normal(rng, 3, 2), 0, idx([2, 0, 2, 1])), {}),
                ((normal(rng, 2, 3), 1, idx([1, 1])), {}),
                ((normal(rng, 2, 3), -1, idx([0])), {})],
   method="index_select")
op("index_add", lambda m, x, d, i, s, **k: m.index_add(x, d, i, s, **k),
   lambda rng: [((normal(rng, 3, 2), 0, idx([2, 0, 2]), normal(rng, 3, 2)), {}),
                ((normal(rng, 2, 3), 1, idx([1, 1]), normal(rng, 2, 2)), {"alpha": 2.0}),
                ((normal(rng, 2, 3), -1, idx([0, 2]), normal(rng, 2, 2)), {})],
   method="index_add")
op("masked_fill", lambda m, x, mk, v: m.masked_fill(x, mk, v),
   lambda rng: [((normal(rng, 2, 3), mask([[True, False, False], [False, True, True]]), 0.5), {}),
                ((normal(rng, 2, 3), mask([False, True, False]), -2.0), {}),
                ((normal(rng, 2, 3), mask([[True], [False]]), normal(rng)), {})],
   method="masked_fill")
for _name in ("tril", "triu"):
    op(_name, lambda m, x, *a, _n=_name, **k: getattr(m, _n)(x, *a, **k),
       lambda rng: [((normal(rng, 3, 3),), {}), ((normal(rng, 3, 4), 1), {}),
                    ((normal(rng, 2, 3, 3),), {"diagonal": -1})],
       method=_name)


def _basic_keys(rng):
    yield (normal(rng, 3, 4), 1), {}
    yield (normal(rng, 3, 4), -1), {}
    yield (normal(rng, 3, 4), (slice(None), 2)), {}
    yield (normal(rng, 3, 4), (slice(1, None), slice(None, None, 2))), {}
    yield (normal(rng, 3, 4), (None, Ellipsis, 0)), {}
    yield (normal(rng, 2, 3, 2), (Ellipsis, slice(0, 1))), {}
    yield (normal(rng, 2, 3, 2), (0, slice(None), -1)), {}
    yield (normal(rng, 3), slice(None, None, 2)), {}


def _advanced_keys(rng):
    yield (normal(rng, 3, 2), idx([2, 0, 2])), {}
    yield (normal(rng, 3, 4), (slice(None), idx([1, 1, 3]))), {}
    yield (normal(rng, 3, 4), (idx([0, 2, 0]), idx([1, 3, 1]))), {}
    yield (normal(rng, 3, 4), idx([[0, 1], [2, 0]])), {}
    yield (normal(rng, 3, 4), mask(rng.random((3, 4)) < 0.5)), {}
    yield (normal(rng, 3, 4), mask([True, False, True])), {}
    yield (normal(rng, 3, 4), [0, 0, 2]), {}
    yield (normal(rng, 2, 3, 2), (0, idx([2, 0]))), {}


op("getitem", lambda m, x, key: x[key], _basic_keys, variant="basic")
op("getitem", lambda m, x, key: x[key], _advanced_keys, variant="advanced")

# --- views and reshapes
op("view", lambda m, x, *shape: x.view(*shape),
   lambda rng: [((normal(rng, 2, 3), 3, 2), {}), ((normal(rng, 2, 3), -1), {}),
                ((normal(rng, 2, 3), (2, 1, 3)), {}), ((normal(rng, 6), 2, -1), {})])
op("reshape", lambda m, x, *shape: m.reshape(x, *shape),
   lambda rng: [((normal(rng, 2, 3), (3, 2)), {}), ((normal(rng, 2, 3), (-1,)), {}),
                ((normal(rng, 2, 3, 2), (2, 6)), {})],
   method="reshape")
# A transposed input cannot be viewed: reshape copies.
op("reshape", lambda m, x, *shape: x.transpose(0, 1).reshape(*shape),
   lambda rng: [((normal(rng, 2, 3), -1), {}), ((normal(rng, 2, 3), 3, 2), {})],
   variant="copy")
op("transpose", lambda m, x, d0, d1: m.transpose(x, d0, d1),
   lambda rng: [((normal(rng, 2, 3), 0, 1), {}), ((normal(rng, 2, 3, 2), -1, 0), {}),
                ((normal(rng, 2, 3), 1, 1), {})],
   method="transpose")
op("permute", lambda m, x, *dims: x.permute(*dims),
   lambda rng: [((normal(rng, 2, 3, 2), 2, 0, 1), {}), ((normal(rng, 2, 3, 2), (1, -1, 0)), {}),
                ((normal(rng, 2, 3), [1, 0]), {})])
op("permute", lambda m, x, dims: m.permute(x, dims),
   lambda rng: one((normal(rng, 2, 3, 2), (1, 0, 2))), variant="function")
op("squeeze", lambda m, x, *a: m.squeeze(x, *a),
   lambda rng: [((normal(rng, 2, 1, 3, 1),), {}), ((normal(rng, 2, 1, 3, 1), 1), {}),
                ((normal(rng, 2, 1, 3, 1), -1), {}), ((normal(rng, 2, 1, 3, 1), 0), {}),
                ((normal(rng, 2, 1, 3, 1), (1, 3)), {})],
   method="squeeze")
op("unsqueeze", lambda m, x, d: m.unsqueeze(x, d),
   lambda rng: [((normal(rng, 2, 3), 0), {}), ((normal(rng, 2, 3), -1), {}),
                ((normal(rng, 2, 3), 1), {})],
   method="unsqueeze")
op("expand", lambda m, x, *sizes: x.expand(*sizes),
   lambda rng: [((normal(rng, 3, 1), 3, 4), {}), ((normal(rng, 3, 1), 2, -1, 2), {}),
                ((normal(rng, 3), (2, 3)), {}), ((normal(rng, 1, 1), 2, 3), {})])
op("flatten", lambda m, x, *a, **k: m.flatten(x, *a, **k),
   lambda rng: [((normal(rng, 2, 3, 2),), {}), ((normal(rng, 2, 3, 2), 1), {}),
                ((normal(rng, 2, 3, 2), 0, 1), {}), ((normal(rng, 2, 3, 2),), {"start_dim": -2}),
                ((normal(rng, 2, 3),), {"start_dim": 1, "end_dim": 1})],
   method="flatten")
op("T", lambda m, x: x.T, lambda rng: [((normal(rng, 2, 3),), {}), ((normal(rng, 1, 4),), {})])
op("flip", lambda m, x, dims: m.flip(x, dims),
   lambda rng: [((normal(rng, 2, 3), (0,)), {}), ((normal(rng, 2, 3), (0, 1)), {}),
                ((normal(rng, 2, 3, 2), [-1]), {}), ((normal(rng), (0,)), {})],
   method="flip")
op("narrow", lambda m, x, d, s, n: m.narrow(x, d, s, n),
   lambda rng: [((normal(rng, 4, 3), 0, 1, 2), {}), ((normal(rng, 2, 4), 1, 0, 3), {}),
                ((normal(rng, 2, 4), -1, -2, 2), {})],
   method="narrow")
op("repeat", lambda m, x, *reps: x.repeat(*reps),
   lambda rng: [((normal(rng, 2, 3), 2, 1), {}), ((normal(rng, 2, 3), (1, 2)), {}),
                ((normal(rng, 2, 3), 2, 1, 2), {}), ((normal(rng, 3), 2, 2), {})])

# --- dtype round trip: float32 rounding needs a wider finite-difference step.
op("to", lambda m, x: x.to(m.float32).to(m.float64),
   lambda rng: one((T(rng.uniform(0.1, 0.5, (2, 3))),)), variant="dtype",
   tol={"eps": 1e-2, "atol": 1e-5, "rtol": 1e-3})
op("to", lambda m, x: x.to(dtype=m.float32).double(),
   lambda rng: one((T(rng.uniform(0.1, 0.5, (4,))),)), variant="dtype_kw",
   tol={"eps": 1e-2, "atol": 1e-5, "rtol": 1e-3})
import op_table_conv  # noqa: E402,F401  (convolution and pooling entries)
import op_table_more  # noqa: E402,F401  (sorting, einsum, addmm entries)
import op_table_act  # noqa: E402,F401  (activations, pad, pixel shuffle)
import op_table_breadth  # noqa: E402,F401  (more math, shape, indexing and linalg ops)
import op_table_methods  # noqa: E402,F401  (more Tensor methods: addmv, matrix_power, cov, ...)
import op_table_nn  # noqa: E402,F401  (nn.functional activations, losses, distances, norms)
