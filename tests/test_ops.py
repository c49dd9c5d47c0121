"""Every op of the table in op_table.py: gradients against finite differences (first and
second order, float64), values and first gradients against PyTorch where it is installed,
and the ops without gradients (comparisons, argmax, one_hot, all/any, dtype promotion)."""
from __future__ import annotations

import math
import zlib
from numbers import Number

import numpy as np
import pytest

import distgrad as dg
from op_table import OPS, F, T

# The ops the table must cover; deleting an entry fails test_table_covers_required_ops.
REQUIRED_OPS = """add sub mul div pow neg abs exp log sqrt rsqrt sin cos tanh sigmoid relu gelu
    silu softplus clamp maximum minimum where sum mean prod max min amax amin var std norm
    logsumexp softmax log_softmax cumsum matmul bmm cat stack split chunk gather scatter_add
    index_select masked_fill tril triu view reshape transpose permute squeeze unsqueeze expand
    flatten T getitem erf log1p expm1 reciprocal flip narrow repeat to index_add scatter""".split()

# Forms that must stay in the table (an op name alone does not say which forms are tested).
REQUIRED_IDS = """add-tensor add-scalar add-rscalar add-function sub-tensor sub-scalar sub-rscalar
    sub-function mul-tensor mul-scalar mul-rscalar mul-function div-tensor div-scalar div-rscalar
    div-function pow-tensor pow-scalar pow-rscalar pow-function clamp-scalar clamp-tensor
    max-full max-dim min-full min-dim matmul-operator matmul-function getitem-basic
    getitem-advanced to-dtype""".split()

F64 = {"rtol": 1e-7, "atol": 1e-10}  # float64 agreement with PyTorch


# -------------------------------------------------------------------- helpers
def _seed(op) -> int:
    return zlib.crc32(op.id.encode())


def _sample(op, k):
    return list(op.samples(np.random.default_rng(_seed(op))))[k]


def _cases(kind, select=lambda op: True):
    out = []
    for op in OPS:
        if not select(op):
            continue
        reason = op.xfail.get(kind) or (kind != "samples" and op.xfail.get("all"))
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        n = len(list(op.samples(np.random.default_rng(_seed(op)))))
        out += [pytest.param(op, k, id=f"{op.id}-{k}", marks=marks) for k in range(n)]
    return out


def _tensors(obj):
    """The tensors in nested args (lists, tuples, dicts), in order."""
    if isinstance(obj, dg.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _tensors(x)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in _tensors(x)]
    return []


def _substitute(obj, fn):
    """``obj`` with every tensor replaced by ``fn(tensor)``."""
    if isinstance(obj, dg.Tensor):
        return fn(obj)
    if isinstance(obj, list):
        return [_substitute(x, fn) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_substitute(x, fn) for x in obj)
    if isinstance(obj, dict):
        return {k: _substitute(x, fn) for k, x in obj.items()}
    return obj


def _as_function(op, args, kwargs):
    """(func, inputs): ``func(*inputs)`` runs the op with the differentiable tensors of the
    sample taken from its arguments, as gradcheck wants."""
    inputs = [t for t in _tensors((args, kwargs)) if t.requires_grad]

    def func(*ts):
        swap = {id(a): b for a, b in zip(inputs, ts)}
        sub = lambda t: swap.get(id(t), t)  # noqa: E731
        return op.fn(dg, *_substitute(args, sub), **_substitute(kwargs, sub))

    return func, tuple(inputs)


def _outputs(out):
    """The tensors an op returned (one, or a tuple such as split's or max's)."""
    return [out] if not isinstance(out, (tuple, list)) else [o for o in out]


def _np(t):
    return np.asarray(t.detach().numpy())


def _dtype_name(t):
    return str(t.dtype).split(".")[-1]


def _to_torch(torch, obj):
    """``obj`` with distgrad tensors replaced by torch copies; also the map between them."""
    made = {}

    def conv(t):
        tt = torch.tensor(_np(t).copy(), requires_grad=t.requires_grad)
        made[id(t)] = tt
        return tt

    return _substitute(obj, conv), made


def _first_grads(lib, outs, inputs, seed=1):
    """Gradients of ``outs`` (seeded with fixed random cotangents) w.r.t. ``inputs``."""
    rng = np.random.default_rng(seed)
    pairs = [(o, rng.standard_normal(tuple(o.shape))) for o in outs
             if o.dtype.is_floating_point and o.requires_grad]
    if not pairs:
        return [None] * len(inputs)
    cot = [lib.tensor(c.astype(_np(o).dtype)) for o, c in pairs]
    return lib.autograd.grad([o for o, _ in pairs], list(inputs), cot, allow_unused=True)


def _assert_grads_equal(gs, ref, inputs, **tol):
    for i, (g, r, x) in enumerate(zip(gs, ref, inputs)):
        g = np.zeros(tuple(x.shape)) if g is None else _np(g)
        r = np.zeros(tuple(x.shape)) if r is None else _np(r)
        assert g.shape == r.shape, f"input {i}: gradient shape {g.shape}, expected {r.shape}"
        np.testing.assert_allclose(g, r, err_msg=f"gradient of input {i}", **tol)


# --------------------------------------------------------------- the table itself
def test_table_covers_required_ops():
    names = {op.name for op in OPS}
    assert not set(REQUIRED_OPS) - names, f"ops missing from the table: {set(REQUIRED_OPS) - names}"
    ids = {op.id for op in OPS}
    assert not set(REQUIRED_IDS) - ids, f"forms missing from the table: {set(REQUIRED_IDS) - ids}"
    assert len(ids) == len(OPS), "two table entries share an id; give them distinct variants"


def _all_samples(name):
    for op in OPS:
        if op.name == name:
            for args, kwargs in op.samples(np.random.default_rng(0)):
                yield op, args, kwargs


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow"])
def test_table_arithmetic_forms(name):
    forms = set()
    for _, args, _ in _all_samples(name):
        a, b = args
        if isinstance(a, dg.Tensor) and isinstance(b, dg.Tensor):
            forms.add("same shape" if a.shape == b.shape else "broadcast")
        elif isinstance(a, dg.Tensor) and isinstance(b, Number):
            forms.add("tensor-scalar")
        elif isinstance(a, Number) and isinstance(b, dg.Tensor):
            forms.add("scalar-tensor")
    assert forms == {"same shape", "broadcast", "tensor-scalar", "scalar-tensor"}


def test_table_shapes_and_arguments():
    matmul = {(a.ndim, b.ndim) for _, (a, b), _ in _all_samples("matmul")}
    assert {(1, 1), (2, 1), (1, 2), (2, 2), (3, 3), (4, 3)} <= matmul
    assert {None, "none", "tanh"} == {k.get("approximate") for _, _, k in _all_samples("gelu")}
    norms = {(k.get("p", 2), "dim" in k) for _, _, k in _all_samples("norm")}
    assert {(2, False), (2, True), (1, False), (1, True), (math.inf, False), (math.inf, True),
            (3, False), (3, True)} <= norms
    for name in ("var", "std"):
        assert any("correction" in k for _, _, k in _all_samples(name))
    assert any(isinstance(k.get("min"), dg.Tensor) for _, _, k in _all_samples("clamp"))
    assert any(x.dtype == dg.int64 for _, a, _ in _all_samples("getitem")
               for x in _tensors(a))


@pytest.mark.parametrize("op,k", _cases("samples"))
def test_samples_are_float64_leaves(op, k):
    args, kwargs = _sample(op, k)
    floats = [t for t in _tensors((args, kwargs)) if t.dtype.is_floating_point]
    assert floats, "a sample needs at least one floating-point tensor"
    for t in floats:
        assert t.dtype == dg.float64 and t.requires_grad and t.is_leaf


# ------------------------------------------------------------- finite differences
@pytest.mark.parametrize("op,k", _cases("gradcheck"))
def test_gradcheck(op, k):
    func, inputs = _as_function(op, *_sample(op, k))
    assert dg.autograd.gradcheck(func, inputs, **op.tol)


@pytest.mark.parametrize("op,k", _cases("gradgradcheck", lambda op: op.gradgrad))
def test_gradgradcheck(op, k):
    func, inputs = _as_function(op, *_sample(op, k))
    assert dg.autograd.gradgradcheck(func, inputs, **op.tol)


# ---------------------------------------------------------- method vs function form
@pytest.mark.parametrize("op,k", _cases("method", lambda op: op.method))
def test_method_form_matches(op, k):
    args, kwargs = _sample(op, k)
    inputs = [t for t in _tensors((args, kwargs)) if t.requires_grad]
    by_fn = _outputs(op.fn(dg, *args, **kwargs))
    by_method = _outputs(getattr(args[0], op.method)(*args[1:], **kwargs))
    assert len(by_fn) == len(by_method)
    for a, b in zip(by_fn, by_method):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(_np(a), _np(b))
    _assert_grads_equal(_first_grads(dg, by_method, inputs), _first_grads(dg, by_fn, inputs),
                        inputs, rtol=0, atol=0)


# ------------------------------------------------------------------- vs PyTorch
@pytest.mark.parametrize("op,k", _cases("torch"))
def test_matches_torch(op, k):
    torch = pytest.importorskip("torch")
    args, kwargs = _sample(op, k)
    (targs, tkwargs), made = _to_torch(torch, (args, kwargs))
    outs = _outputs(op.fn(dg, *args, **kwargs))
    touts = _outputs(op.fn(torch, *targs, **tkwargs))
    assert len(outs) == len(touts)
    for i, (o, to) in enumerate(zip(outs, touts)):
        assert tuple(o.shape) == tuple(to.shape), f"output {i}: shape"
        assert _dtype_name(o) == _dtype_name(to), f"output {i}: dtype"
        assert o.requires_grad == to.requires_grad, f"output {i}: requires_grad"
        np.testing.assert_allclose(_np(o), _np(to), err_msg=f"output {i}", **F64)
    if not op.torch_grad:
        return
    inputs = [t for t in _tensors((args, kwargs)) if t.requires_grad]
    tinputs = [made[id(t)] for t in inputs]
    _assert_grads_equal(_first_grads(dg, outs, inputs), _first_grads(torch, touts, tinputs),
                        inputs, **F64)


# Points where an op is not differentiable: distgrad must pick PyTorch's gradient there.
KINKS = [
    ("maximum_tie", lambda m, a, b: m.maximum(a, b), ([1.0, 2.0, 3.0], [1.0, 0.0, 3.0])),
    ("minimum_tie", lambda m, a, b: m.minimum(a, b), ([1.0, 2.0, 3.0], [1.0, 0.0, 3.0])),
    ("max_full_tie", lambda m, x: x.max(), ([3.0, 1.0, 3.0],)),
    ("min_full_tie", lambda m, x: x.min(), ([1.0, 1.0, 3.0],)),
    ("amax_tie", lambda m, x: x.amax(dim=1), ([[3.0, 1.0, 3.0], [0.0, 2.0, 2.0]],)),
    ("amin_tie", lambda m, x: x.amin(), ([1.0, 1.0, 3.0],)),
    ("relu_zero", lambda m, x: m.relu(x), ([-1.0, 0.0, 1.0],)),
    ("abs_zero", lambda m, x: m.abs(x), ([-1.0, 0.0, 1.0],)),
    ("clamp_at_bounds", lambda m, x: m.clamp(x, -1.0, 1.0), ([-1.0, 0.0, 1.0, 2.0],)),
    ("clamp_tensor_bounds", lambda m, x, lo: m.clamp(x, min=lo), ([0.0, 1.0], [0.0, 2.0])),
    ("norm_zero", lambda m, x: x.norm(), ([0.0, 0.0],)),
    ("norm_inf_tie", lambda m, x: x.norm(p=math.inf), ([-2.0, 2.0, 1.0],)),
    ("norm1_zero", lambda m, x: x.norm(p=1), ([0.0, 2.0, -1.0],)),
    ("sqrt_of_square_sum", lambda m, x: m.sqrt(x), ([1.0, 4.0],)),
    ("pow_zero_base", lambda m, x, y: x ** y, ([0.0, 0.0, 2.0], [2.0, 0.5, 3.0])),
    ("prod_two_zeros", lambda m, x: x.prod(), ([0.0, 2.0, 0.0],)),
]


@pytest.mark.parametrize("name,fn,data", KINKS, ids=[k[0] for k in KINKS])
def test_gradient_at_kinks_matches_torch(name, fn, data):
    torch = pytest.importorskip("torch")
    xs = [T(d) for d in data]
    txs = [torch.tensor(d, dtype=torch.float64, requires_grad=True) for d in data]
    out, tout = fn(dg, *xs), fn(torch, *txs)
    np.testing.assert_allclose(_np(out), _np(tout), **F64)
    _assert_grads_equal(_first_grads(dg, [out], xs), _first_grads(torch, [tout], txs), xs, **F64)


# ------------------------------------------------------------ ops without gradients
A = [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]
B = [2.0, 2.0, 2.5]
COMPARE_OPS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
COMPARE_CASES = [
    ("tensor", lambda m: (m.tensor(A), m.tensor(B))),
    ("scalar", lambda m: (m.tensor(A), 2.0)),
    ("int_tensor", lambda m: (m.tensor([[1, 2, 3], [3, 2, 1]]), m.tensor([2, 2, 2]))),
    ("int_vs_float", lambda m: (m.tensor([[1, 2, 3], [3, 2, 1]]), 2.5)),
]
# Expected eq/lt results of the cases above, so the test also runs without torch.
COMPARE_EXPECTED = {
    ("eq", "tensor"): [[False, True, False], [False, True, False]],
    ("lt", "tensor"): [[True, False, False], [False, False, True]],
    ("eq", "scalar"): [[False, True, False], [False, True, False]],
    ("lt", "int_vs_float"): [[True, True, False], [False, True, True]],
}


def _compare(m, name, form, a, b):
    if form == "function":
        return getattr(m, name)(a, b)
    if form == "method":
        return getattr(a, name)(b)
    return eval(f"a {COMPARE_OPS[name]} b", {"a": a, "b": b})


@pytest.mark.parametrize("case", COMPARE_CASES, ids=[c[0] for c in COMPARE_CASES])
@pytest.mark.parametrize("form", ["function", "method", "operator"])
@pytest.mark.parametrize("name", list(COMPARE_OPS))
def test_comparisons(name, form, case):
    case_name, make = case
    out = _compare(dg, name, form, *make(dg))
    assert out.dtype == dg.bool and not out.requires_grad
    expected = COMPARE_EXPECTED.get((name, case_name))
    if expected is not None:
        np.testing.assert_array_equal(_np(out), expected)
    torch = pytest.importorskip("torch")
    ref = _compare(torch, name, form, *make(torch))
    np.testing.assert_array_equal(_np(out), _np(ref))


def test_comparison_of_a_grad_tensor_has_no_grad():
    x = dg.tensor([1.0, -1.0], requires_grad=True)
    for r in (x > 0, x == x, x.ne(0.0), x.le(x.detach())):
        assert r.dtype == dg.bool and not r.requires_grad and r.grad_fn is None


ARG_DATA = [[3.0, 1.0, 3.0, 0.5], [0.0, 2.0, -1.0, 2.0], [1.0, 1.0, 1.0, 1.0]]
ARG_CASES = [
    ("full", {}, {"argmax": 0, "argmin": 6}),
    ("dim1", {"dim": 1}, {"argmax": [0, 1, 0], "argmin": [3, 2, 0]}),
    ("dim0_keepdim", {"dim": 0, "keepdim": True}, {"argmax": [[0, 1, 0, 1]], "argmin": [[1, 0, 1, 0]]}),
    ("neg_dim", {"dim": -1}, {"argmax": [0, 1, 0], "argmin": [3, 2, 0]}),
]


@pytest.mark.parametrize("case", ARG_CASES, ids=[c[0] for c in ARG_CASES])
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(name, case):
    _, kwargs, expected = case
    x = dg.tensor(ARG_DATA, requires_grad=True)
    for out in (getattr(dg, name)(x, **kwargs), getattr(x, name)(**kwargs)):
        assert out.dtype == dg.int64 and not out.requires_grad
        np.testing.assert_array_equal(_np(out), expected[name])  # ties: the first index
    torch = pytest.importorskip("torch")
    ref = getattr(torch, name)(torch.tensor(ARG_DATA), **kwargs)
    assert tuple(out.shape) == tuple(ref.shape)
    np.testing.assert_array_equal(_np(out), ref.numpy())


def test_argmax_keepdim_without_dim_matches_torch():
    torch = pytest.importorskip("torch")
    out = dg.tensor(ARG_DATA).argmax(keepdim=True)
    ref = torch.tensor(ARG_DATA).argmax(keepdim=True)
    assert tuple(out.shape) == tuple(ref.shape)
    np.testing.assert_array_equal(_np(out), ref.numpy())


ONE_HOT_CASES = [
    ("vector", [0, 2, 1], {}, [[1, 0, 0], [0, 0, 1], [0, 1, 0]]),
    ("num_classes", [1, 0], {"num_classes": 4}, [[0, 1, 0, 0], [1, 0, 0, 0]]),
    ("matrix", [[0, 1], [1, 1]], {}, [[[1, 0], [0, 1]], [[0, 1], [0, 1]]]),
    ("scalar", 2, {"num_classes": 3}, [0, 0, 1]),
]


@pytest.mark.parametrize("case", ONE_HOT_CASES, ids=[c[0] for c in ONE_HOT_CASES])
def test_one_hot(case):
    _, data, kwargs, expected = case
    out = F(dg).one_hot(dg.tensor(data), **kwargs)
    assert out.dtype == dg.int64
    np.testing.assert_array_equal(_np(out), expected)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(_np(out), F(torch).one_hot(torch.tensor(data), **kwargs).numpy())


def test_one_hot_errors():
    with pytest.raises(RuntimeError):
        F(dg).one_hot(dg.tensor([0, 3]), num_classes=3)
    with pytest.raises(RuntimeError):
        F(dg).one_hot(dg.tensor([0.0, 1.0]))


ALL_ANY_DATA = {
    "bool": lambda m: m.tensor([[True, False, True], [True, True, True]]),
    "float": lambda m: m.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 3.0]]),
    "int": lambda m: m.tensor([[0, 0, 0], [1, 2, 0]]),
}
ALL_ANY_ARGS = [{}, {"dim": 1}, {"dim": 0, "keepdim": True}, {"dim": -1, "keepdim": True}]
ALL_ANY_EXPECTED = {("all", "bool", 0): False, ("any", "bool", 0): True,
                    ("all", "float", 1): [False, True], ("any", "int", 1): [False, True]}


@pytest.mark.parametrize("k", range(len(ALL_ANY_ARGS)))
@pytest.mark.parametrize("data", list(ALL_ANY_DATA))
@pytest.mark.parametrize("name", ["all", "any"])
def test_all_any(name, data, k):
    kwargs = ALL_ANY_ARGS[k]
    x = ALL_ANY_DATA[data](dg)
    out = getattr(dg, name)(x, **kwargs)
    np.testing.assert_array_equal(_np(out), _np(getattr(x, name)(**kwargs)))
    assert out.dtype == dg.bool
    if (name, data, k) in ALL_ANY_EXPECTED:
        np.testing.assert_array_equal(_np(out), ALL_ANY_EXPECTED[(name, data, k)])
    torch = pytest.importorskip("torch")
    ref = getattr(torch, name)(ALL_ANY_DATA[data](torch), **kwargs)
    assert tuple(out.shape) == tuple(ref.shape)
    np.testing.assert_array_equal(_np(out), ref.numpy())


# ------------------------------------------------------------ dtype promotion
# (name, expression, expected dtype name): PyTorch's rules. Tensors with dims outrank 0-d
# tensors, which outrank Python scalars; a higher category (bool < int < float) still wins,
# in its default dtype for a scalar.
PROMOTION = [
    ("int_tensor_times_float_scalar", lambda m: m.tensor([1, 2]) * 2.5, "float32"),
    ("int_div_int", lambda m: m.tensor([1, 2]) / m.tensor([2, 4]), "float32"),
    ("int_div_int_scalar", lambda m: m.tensor([1, 2]) / 2, "float32"),
    ("float32_plus_float64", lambda m: m.ones(2) + m.ones(2, dtype=m.float64), "float64"),
    ("bool_sum", lambda m: m.tensor([True, False, True]).sum(), "int64"),
    ("int32_sum", lambda m: m.tensor([1, 2], dtype=m.int32).sum(), "int64"),
    ("int_tensor_times_int_scalar", lambda m: m.tensor([1, 2]) * 3, "int64"),
    ("int32_plus_int_scalar", lambda m: m.tensor([1, 2], dtype=m.int32) + 2, "int32"),
    ("bool_plus_int_scalar", lambda m: m.tensor([True, False]) + 1, "int64"),
    ("bool_plus_float_scalar", lambda m: m.tensor([True, False]) + 2.5, "float32"),
    ("float64_times_float_scalar", lambda m: m.ones(2, dtype=m.float64) * 2.5, "float64"),
    ("float16_times_float_scalar", lambda m: m.ones(2, dtype=m.float16) * 2.5, "float16"),
    ("int64_plus_float32", lambda m: m.tensor([1, 2]) + m.tensor([0.5, 1.5]), "float32"),
    ("int32_times_float32", lambda m: m.tensor([1, 2], dtype=m.int32) * m.ones(2), "float32"),
    ("uint8_plus_int8", lambda m: m.tensor([1, 2], dtype=m.uint8) + m.tensor([1, 2], dtype=m.int8),
     "int16"),
    ("float32_times_0d_float64", lambda m: m.ones(2) * m.tensor(2.0, dtype=m.float64), "float32"),
    ("int32_plus_0d_int64", lambda m: m.tensor([1, 2], dtype=m.int32) + m.tensor(2), "int32"),
    ("int_plus_0d_float64", lambda m: m.tensor([1, 2]) + m.tensor(2.5, dtype=m.float64), "float64"),
    ("0d_float32_plus_0d_float64", lambda m: m.tensor(1.0) + m.tensor(2.0, dtype=m.float64),
     "float64"),
    ("float32_sub_0d_float64", lambda m: m.ones(2) - m.tensor(2.0, dtype=m.float64), "float32"),
    ("float32_div_0d_float64", lambda m: m.ones(2) / m.tensor(2.0, dtype=m.float64), "float32"),
    ("int_maximum_float32", lambda m: m.maximum(m.tensor([1, 2]), m.tensor([0.5, 3.0])), "float32"),
    ("where_float32_scalar", lambda m: m.where(m.tensor([True, False]), m.ones(2), 0.0), "float32"),
    ("where_float64_float32",
     lambda m: m.where(m.tensor([True, False]), m.ones(2, dtype=m.float64), m.ones(2)), "float64"),
    ("float32_pow_0d_float64", lambda m: m.ones(2) ** m.tensor(2.0, dtype=m.float64), "float32"),
    ("int_pow_int_scalar", lambda m: m.tensor([1, 2]) ** 2, "int64"),
    ("int_pow_float_scalar", lambda m: m.tensor([1, 4]) ** 0.5, "float32"),
    ("exp_of_int", lambda m: m.exp(m.tensor([1, 2])), "float32"),
    ("int_clamp_float_bound", lambda m: m.tensor([1, 5, 9]).clamp(2.5, 6), "float32"),
    ("int_clamp_int_bounds", lambda m: m.tensor([1, 5, 9], dtype=m.int32).clamp(2, 6), "int32"),
    ("cumsum_of_int32", lambda m: m.tensor([1, 2], dtype=m.int32).cumsum(0), "int64"),
    ("prod_of_bool", lambda m: m.tensor([True, True]).prod(), "int64"),
    ("max_of_int", lambda m: m.tensor([1, 5, 2]).max(), "int64"),
]


@pytest.mark.parametrize("name,expr,expected", PROMOTION, ids=[p[0] for p in PROMOTION])
def test_dtype_promotion(name, expr, expected):
    assert _dtype_name(expr(dg)) == expected


@pytest.mark.parametrize("name,expr,expected", PROMOTION, ids=[p[0] for p in PROMOTION])
def test_dtype_promotion_matches_torch(name, expr, expected):
    torch = pytest.importorskip("torch")
    ref = expr(torch)
    assert _dtype_name(ref) == expected  # the table's expectation is PyTorch's rule
    np.testing.assert_allclose(_np(expr(dg)).astype(np.float64), ref.numpy().astype(np.float64),
                               rtol=1e-6)


def test_promoted_gradient_has_input_dtype():
    a = dg.ones(2, requires_grad=True)
    b = dg.tensor(3.0, dtype=dg.float64, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.dtype == dg.float32 and b.grad.dtype == dg.float64
    np.testing.assert_allclose(_np(a.grad), [3.0, 3.0])
    np.testing.assert_allclose(_np(b.grad), 2.0)


# ------------------------------------------------------------ 0-d tensors
ZERO_D = {
    # name: (fn, value, derivative) at x = 0.5, from their formulas in float64
    "erf": (lambda t: dg.erf(t), math.erf(0.5), 2 / math.sqrt(math.pi) * math.exp(-0.25)),
    "gelu": (lambda t: dg.nn.functional.gelu(t), 0.5 * 0.5 * (1 + math.erf(0.5 / math.sqrt(2))),
             0.5 * (1 + math.erf(0.5 / math.sqrt(2))) + 0.5 * math.exp(-0.125) / math.sqrt(2 * math.pi)),
    "softmax": (lambda t: t.softmax(0), 1.0, 0.0),
    "log_softmax": (lambda t: t.log_softmax(-1), 0.0, 0.0),
    "silu": (lambda t: dg.nn.functional.silu(t), 0.5 / (1 + math.exp(-0.5)),
             1 / (1 + math.exp(-0.5)) * (1 + 0.5 * (1 - 1 / (1 + math.exp(-0.5))))),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(ZERO_D))
def test_0d_tensors_keep_their_shape_and_gradient(name, dtype):
    """A 0-d tensor through erf, GELU and softmax: a 0-d result (numpy's contiguous copy
    would make it 1-d) and the right derivative."""
    fn, value, derivative = ZERO_D[name]
    t = dg.tensor(0.5, dtype=getattr(dg, dtype), requires_grad=True)
    y = fn(t)
    assert tuple(y.shape) == () and y.dtype == t.dtype
    y.backward()
    assert tuple(t.grad.shape) == ()
    tol = 1e-6 if dtype == "float32" else 1e-12
    assert abs(y.item() - value) <= tol and abs(t.grad.item() - derivative) <= tol


def test_softmax_of_a_0d_tensor_refuses_dims_beyond_0():
    with pytest.raises(IndexError, match=r"softmax: Dimension out of range .*\[-1, 0\], but got 1"):
        dg.tensor(1.0).softmax(1)


@pytest.mark.parametrize("name", ["floor", "ceil", "round", "trunc", "sign"])
def test_step_functions_are_recorded_with_a_zero_gradient(name):
    """As in PyTorch: a FloorBackward0 (and so on) node whose gradient is zeros, even
    where the incoming gradient is inf or NaN."""
    t = dg.tensor([1.25, -2.5, 0.0, 3.75], requires_grad=True)
    y = getattr(dg, name)(t)
    assert type(y.grad_fn).__name__ == f"{name.capitalize()}Backward0"
    (y * dg.tensor([1.0, float("inf"), float("nan"), 2.0])).sum().backward()
    np.testing.assert_array_equal(_np(t.grad), np.zeros(4, np.float32))
    with dg.no_grad():
        assert getattr(dg, name)(t).grad_fn is None
    assert getattr(dg, name)(dg.tensor([1, -2])).grad_fn is None  # integers: nothing to record


def test_round_with_decimals_and_sign_of_bools():
    t = dg.tensor([1.26, -2.35, 0.5, 1.5], dtype=dg.float64)
    np.testing.assert_array_equal(_np(t.round(decimals=1)), np.round(_np(t), 1))
    np.testing.assert_array_equal(_np(dg.round(t)), [1.0, -2.0, 0.0, 2.0])  # half to even
    s = dg.sign(dg.tensor([True, False]))
    assert s.dtype == dg.bool and _np(s).tolist() == [True, False]
