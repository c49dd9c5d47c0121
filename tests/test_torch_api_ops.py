"""PyTorch parity of sorting and selection (sort, argsort, topk, kthvalue), einsum,
addmm/baddbmm, ``out=`` arguments, the legacy constructors (``Tensor(2, 3)``,
``FloatTensor``, ``Tensor.type``) and the losses: values, indices, gradients and the
``grad_fn`` names PyTorch prints."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import distgrad as dg
from distgrad.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _np(t):
    return np.asarray(t.detach().numpy())


def _pair(arrays, grad=None):
    """The same float64 arrays as distgrad and torch tensors (``grad``: which require grad)."""
    grad = range(len(arrays)) if grad is None else grad
    d = [dg.tensor(a, requires_grad=(i in grad and np.asarray(a).dtype.kind == "f"))
         for i, a in enumerate(arrays)]
    t = [torch.tensor(a, requires_grad=(i in grad and np.asarray(a).dtype.kind == "f"))
         for i, a in enumerate(arrays)]
    return d, t


def _check(fn, arrays, grad=None, rtol=1e-7, atol=1e-10, seed=0):
    """fn(lib, *tensors) on both libraries: values, indices, gradients and grad_fn name."""
    d, t = _pair(arrays, grad)
    out, tout = fn(dg, *d), fn(torch, *t)
    outs = list(out) if isinstance(out, tuple) else [out]
    touts = list(tout) if isinstance(tout, tuple) else [tout]
    assert len(outs) == len(touts)
    for o, to in zip(outs, touts):
        assert tuple(o.shape) == tuple(to.shape)
        assert str(o.dtype).split(".")[-1] == str(to.dtype).split(".")[-1]
        np.testing.assert_allclose(_np(o), _np(to), rtol=rtol, atol=atol)
    first, tfirst = outs[0], touts[0]
    assert (first.grad_fn is None) == (tfirst.grad_fn is None)
    if tfirst.grad_fn is None:
        return out
    assert first.grad_fn.name() == tfirst.grad_fn.name()
    g = np.random.default_rng(seed).standard_normal(tuple(tfirst.shape))
    ins = [x for x in d if x.requires_grad]
    tins = [x for x in t if x.requires_grad]
    gd = dg.autograd.grad(first, ins, dg.tensor(g), allow_unused=True)
    gt = torch.autograd.grad(tfirst, tins, torch.tensor(g), allow_unused=True)
    for a, b, x in zip(gd, gt, ins):
        a = np.zeros(tuple(x.shape)) if a is None else _np(a)
        b = np.zeros(tuple(x.shape)) if b is None else _np(b)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    return out


def _distinct(rng, *shape):
    n = int(np.prod(shape))
    return rng.permutation(np.arange(n) * 0.37 - n * 0.1).reshape(shape)


# ============================================================ sort / topk / kthvalue
SORT_CASES = [
    ("default", lambda m, x: m.sort(x)),
    ("dim_desc", lambda m, x: m.sort(x, 1, True)),
    ("stable_kw", lambda m, x: m.sort(x, dim=0, stable=True)),
    ("method", lambda m, x: x.sort(descending=True)),
    ("topk", lambda m, x: m.topk(x, 2)),
    ("topk_dim_smallest", lambda m, x: x.topk(2, dim=1, largest=False)),
    ("topk_dim0", lambda m, x: m.topk(x, 1, 0)),
    ("kthvalue", lambda m, x: m.kthvalue(x, 2)),
    ("kthvalue_keepdim", lambda m, x: x.kthvalue(3, 1, True)),
    ("kthvalue_dim0", lambda m, x: m.kthvalue(x, 1, dim=0)),
]


@pytest.mark.parametrize("name,fn", SORT_CASES, ids=[c[0] for c in SORT_CASES])
def test_sorting_matches_torch(name, fn):
    x = _distinct(np.random.default_rng(1), 2, 3, 4)
    _check(fn, [x])


@pytest.mark.parametrize("name,make,node", [
    ("sort", lambda m, x: m.sort(x), "SortBackward0"),
    ("sort_stable", lambda m, x: m.sort(x, stable=True), "SortBackward1"),
    ("topk", lambda m, x: m.topk(x, 2), "TopkBackward0"),
    ("kthvalue", lambda m, x: m.kthvalue(x, 1), "KthvalueBackward0"),
])
def test_sorting_named_tuples(name, make, node):
    x = dg.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, -1.0]], requires_grad=True)
    res = make(dg, x)
    ref = make(torch, torch.tensor(_np(x)))
    values, indices = res                       # unpacks as a pair
    assert res.values is values and res.indices is indices and res[0] is values
    assert type(res).__name__ == type(ref).__name__ == name.split("_")[0]
    assert res._fields == ("values", "indices")
    assert values.grad_fn.name() == node
    assert indices.dtype == dg.int64 and not indices.requires_grad
    values.sum().backward()
    expected = np.zeros((2, 3))
    np.put_along_axis(expected, _np(indices).reshape(2, -1), 1.0, axis=1)
    np.testing.assert_array_equal(_np(x.grad), expected)


def test_argsort_matches_torch():
    x = _distinct(np.random.default_rng(2), 3, 5)
    for kw in ({}, {"dim": 0}, {"descending": True}, {"dim": -1, "descending": True, "stable": True}):
        out = dg.argsort(dg.tensor(x), **kw)
        ref = torch.argsort(torch.tensor(x), **kw)
        assert out.dtype == dg.int64
        np.testing.assert_array_equal(_np(out), ref.numpy())
        np.testing.assert_array_equal(_np(dg.tensor(x).argsort(**kw)), ref.numpy())


@pytest.mark.parametrize("descending", [False, True])
def test_stable_sort_ties_and_nan(descending):
    data = [1.0, 2.0, 1.0, float("nan"), 2.0, 0.0, 1.0]
    out = dg.sort(dg.tensor(data), descending=descending, stable=True)
    ref = torch.sort(torch.tensor(data), descending=descending, stable=True)
    np.testing.assert_array_equal(_np(out.values), ref.values.numpy())  # NaN as the largest
    np.testing.assert_array_equal(_np(out.indices), ref.indices.numpy())  # ties in index order
    np.testing.assert_array_equal(_np(dg.argsort(dg.tensor(data), descending=descending, stable=True)),
                                  torch.argsort(torch.tensor(data), descending=descending, stable=True))


def test_sorting_edge_cases():
    s = dg.tensor(3.0, requires_grad=True)
    for fn in (lambda m, x: m.sort(x), lambda m, x: m.topk(x, 1), lambda m, x: m.kthvalue(x, 1)):
        v, i = fn(dg, s)
        tv, ti = fn(torch, torch.tensor(3.0))
        assert tuple(v.shape) == tuple(tv.shape) == () and tuple(i.shape) == tuple(ti.shape)
        assert dg.autograd.grad(v, s)[0].item() == 1.0
    v, i = dg.topk(dg.tensor([1.0, 2.0]), 0)
    assert tuple(v.shape) == (0,) and tuple(i.shape) == (0,)
    bools = dg.tensor([True, False, True]).sort()
    np.testing.assert_array_equal(_np(bools.indices), torch.tensor([True, False, True]).sort().indices)
    with pytest.raises(RuntimeError):
        dg.topk(dg.tensor([1.0, 2.0]), 3)
    with pytest.raises(IndexError):
        dg.kthvalue(dg.tensor([1.0, 2.0]), 0)
    with pytest.raises(IndexError):
        dg.sort(dg.tensor([1.0, 2.0]), dim=1)


def test_sort_double_backward():
    x = dg.tensor(_distinct(np.random.default_rng(3), 2, 4), requires_grad=True)
    assert dg.autograd.gradgradcheck(lambda a: dg.topk(a * a, 2, dim=1).values, (x,))
    assert dg.autograd.gradgradcheck(lambda a: dg.sort(a * a, 0, True).values, (x,))


# ========================================================================== einsum
EINSUM = [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("ij->ji", [(2, 3)]), ("ij->", [(2, 3)]), ("ii->i", [(3, 3)]),
    ("i,j->ij", [(3,), (2,)]), ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]), ("ij,ij->i", [(2, 3), (2, 3)]),
    ("ij->j", [(2, 3)]), ("ii", [(3, 3)]), ("ij,ij->ij", [(2, 3), (2, 3)]), ("ij->ij", [(2, 3)]),
    ("i,i->", [(3,), (3,)]), ("i,i", [(3,), (3,)]), ("...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 2)]),
    ("ba", [(2, 3)]), ("Ab,ab", [(2, 3), (2, 3)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]), ("iij->j", [(3, 3, 2)]),
    ("ijk,ikl->", [(2, 3, 4), (2, 4, 5)]), ("i,i,i->i", [(3,), (3,), (3,)]), ("...->", [(2, 3)]),
    ("ij,kj->ikj", [(2, 3), (4, 3)]), ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("i...,i...->...", [(3, 2), (3, 1)]), ("i j , j k -> i k", [(2, 3), (3, 4)]),
    ("ijj->ji", [(2, 3, 3)]), ("ij,j->i", [(2, 3), (3,)]),
]


@pytest.mark.parametrize("eq,shapes", EINSUM, ids=[e for e, _ in EINSUM])
def test_einsum_matches_torch(eq, shapes):
    """Values, gradients, and the grad_fn of PyTorch's own decomposition."""
    rng = np.random.default_rng(4)
    _check(lambda m, *ts: m.einsum(eq, *ts), [rng.standard_normal(s) for s in shapes])


def test_einsum_list_form_and_errors():
    a, b = dg.randn(2, 3), dg.randn(3, 4)
    np.testing.assert_allclose(_np(dg.einsum("ij,jk", [a, b])), _np(a @ b), rtol=1e-6)
    np.testing.assert_allclose(_np(dg.einsum("ij,jk", (a, b))), _np(a @ b), rtol=1e-6)
    for eq, ops in [("ij,jk->ik", (a,)), ("ij->ik", (a,)), ("ijk->", (a,)), ("ij,ij->", (a, b)),
                    ("ii->i", (a,)), ("ij->ii", (a,))]:
        with pytest.raises(RuntimeError):
            dg.einsum(eq, *ops)


# ================================================================= addmm / baddbmm
ADDMM = [
    ("addmm", lambda m, i, a, b: m.addmm(i, a, b), [(2, 4), (2, 3), (3, 4)]),
    ("addmm_bcast_scaled", lambda m, i, a, b: m.addmm(i, a, b, beta=0.5, alpha=-2), [(4,), (2, 3), (3, 4)]),
    ("addmm_method", lambda m, i, a, b: i.addmm(a, b, alpha=3), [(2, 1), (2, 3), (3, 4)]),
    ("baddbmm", lambda m, i, a, b: m.baddbmm(i, a, b), [(2, 2, 4), (2, 2, 3), (2, 3, 4)]),
    ("baddbmm_scaled", lambda m, i, a, b: m.baddbmm(i, a, b, beta=2.0, alpha=0.5), [(4,), (2, 2, 3), (2, 3, 4)]),
    ("baddbmm_method", lambda m, i, a, b: i.baddbmm(a, b), [(1, 2, 1), (3, 2, 3), (3, 3, 4)]),
]


@pytest.mark.parametrize("name,fn,shapes", ADDMM, ids=[c[0] for c in ADDMM])
def test_addmm_baddbmm_match_torch(name, fn, shapes):
    rng = np.random.default_rng(5)
    _check(fn, [rng.standard_normal(s) for s in shapes])


def test_addmm_beta_zero_ignores_input():
    i = [[float("nan"), 1.0], [float("inf"), 0.0]]
    a, b = np.eye(2), np.arange(4.0).reshape(2, 2)
    d = [dg.tensor(i, dtype=dg.float64, requires_grad=True), dg.tensor(a), dg.tensor(b)]
    t = [torch.tensor(i, dtype=torch.float64, requires_grad=True), torch.tensor(a), torch.tensor(b)]
    out, ref = dg.addmm(*d, beta=0), torch.addmm(*t, beta=0)
    np.testing.assert_array_equal(_np(out), _np(ref))
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_array_equal(_np(d[0].grad), t[0].grad.numpy())
    with pytest.raises(RuntimeError):
        dg.addmm(dg.zeros(2, 2), dg.zeros(2, 3), dg.zeros(2, 2))


# ============================================================================ out=
def test_out_writes_and_returns_out():
    a, b = dg.tensor([[1.0, 2.0], [3.0, 4.0]]), dg.tensor([[0.5, 0.0], [1.0, 2.0]])
    for fn, ref in [
        (lambda o: dg.matmul(a, b, out=o), _np(a) @ _np(b)),
        (lambda o: dg.add(a, b, alpha=2, out=o), _np(a) + 2 * _np(b)),
        (lambda o: dg.mul(a, 3.0, out=o), _np(a) * 3),
        (lambda o: dg.exp(a, out=o), np.exp(_np(a))),
        (lambda o: dg.where(a > 2, a, b, out=o), np.where(_np(a) > 2, _np(a), _np(b))),
    ]:
        o = dg.empty(2, 2)
        v = o._version
        r = fn(o)
        assert r is o and o._version > v
        np.testing.assert_allclose(_np(o), ref, rtol=1e-6)
    o = dg.empty(4, 2)
    assert dg.cat([a, b], out=o) is o
    np.testing.assert_array_equal(_np(o), np.concatenate([_np(a), _np(b)]))
    o = dg.empty(2)
    assert dg.sum(a, 1, out=o) is o
    np.testing.assert_array_equal(_np(o), [3.0, 7.0])
    o = dg.zeros(2, 2)
    view = o[0]
    dg.add(a, 1, out=o)                      # written in place: views see it
    np.testing.assert_array_equal(_np(view), [2.0, 3.0])
    assert dg.add(a, 1, out=a) is a          # out may be an input
    np.testing.assert_array_equal(_np(a), [[2.0, 3.0], [4.0, 5.0]])


def test_out_tuple_results():
    x = dg.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    tx = torch.tensor(_np(x))
    for name, args in [("max", (1,)), ("sort", (1,)), ("topk", (2,)), ("kthvalue", (2,))]:
        v, i = dg.empty(0), dg.empty(0, dtype=dg.int64)
        res = getattr(dg, name)(x, *args, out=(v, i))
        tv, ti = torch.empty(0), torch.empty(0, dtype=torch.long)
        getattr(torch, name)(tx, *args, out=(tv, ti))
        assert res.values is v and res.indices is i and type(res).__name__ == name
        np.testing.assert_array_equal(_np(v), tv.numpy())
        np.testing.assert_array_equal(_np(i), ti.numpy())


def test_out_resize_warns_like_torch():
    a = dg.ones(2, 3)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        o = dg.empty(0)
        dg.add(a, a, out=o)                  # no elements: resized silently
        assert tuple(o.shape) == (2, 3) and not w
        o = dg.empty(5)
        dg.add(a, a, out=o)
        assert tuple(o.shape) == (2, 3)
        assert len(w) == 1 and "was resized since it had shape [5]" in str(w[0].message)
        with pytest.warns(UserWarning, match="was resized since it had shape"):
            torch.add(torch.ones(2, 3), 1, out=torch.empty(5))
    np.testing.assert_array_equal(_np(o), np.full((2, 3), 2.0))


def test_out_dtype_rules_match_torch():
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        dg.add(dg.ones(2), 1.5, out=dg.empty(2, dtype=dg.int64))
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        torch.add(torch.ones(2), 1.5, out=torch.empty(2, dtype=torch.long))
    o = dg.empty(2)                           # an int result into a float out: cast
    dg.add(dg.tensor([1, 2]), 1, out=o)
    assert o.dtype == dg.float32
    np.testing.assert_array_equal(_np(o), [2.0, 3.0])


def test_out_with_grad_raises_like_torch():
    x = dg.ones(2, requires_grad=True)
    msg = ("add(): functions with out=... arguments don't support automatic differentiation, "
           "but one of the arguments requires grad.")
    with pytest.raises(RuntimeError) as ours:
        dg.add(x, 1, out=dg.empty(2))
    with pytest.raises(RuntimeError) as theirs:
        torch.add(torch.ones(2, requires_grad=True), 1, out=torch.empty(2))
    assert str(ours.value) == str(theirs.value) == msg
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        dg.add(dg.ones(2), 1, out=dg.empty(2, requires_grad=True))   # out itself
    with pytest.raises(RuntimeError, match="cat\\(\\): functions with out="):
        dg.cat([x, x], out=dg.empty(4))
    with dg.no_grad():
        o = dg.empty(2)
        assert dg.add(x, 1, out=o) is o and not o.requires_grad
    np.testing.assert_array_equal(_np(o), [2.0, 2.0])


def test_function_without_out_unchanged():
    assert dg.add.__name__ == "add" and dg.matmul.__wrapped__ is not None
    x = dg.ones(2, requires_grad=True)
    assert dg.add(x, 1).grad_fn.name() == "AddBackward0"


# ============================================================ legacy constructors
def test_legacy_tensor_constructor():
    for args in [(2, 3), ([1, 2],), ([[1, 2], [3, 4]],), ((2, 3),), (np.array([1.5, 2.0]),), (),
                 ([True, False],), (dg.Size([2, 3]),)]:
        targs = tuple(torch.Size(a) if isinstance(a, dg.Size) else a for a in args)
        ours, ref = dg.Tensor(*args), torch.Tensor(*targs)
        assert tuple(ours.shape) == tuple(ref.shape) and ours.dtype == dg.float32
        if args and not (len(args) == 2 or isinstance(args[0], dg.Size)):  # data, not sizes
            np.testing.assert_array_equal(_np(ours), ref.numpy())
    assert not dg.Tensor(2, 3).requires_grad and dg.Tensor(2, 3).is_leaf
    np.testing.assert_array_equal(_np(dg.Tensor(2, 3)), np.zeros((2, 3)))
    t = dg.tensor([1, 2])
    alias = dg.Tensor(t)                          # as torch.Tensor(t): the same memory
    assert alias.dtype == dg.int64 and np.shares_memory(alias._data, t._data)
    with pytest.raises(TypeError):
        dg.Tensor(2.5)
    with pytest.raises(TypeError):
        dg.Tensor(2, 3.0)
    assert isinstance(dg.Tensor(2), dg.Tensor)


def test_legacy_typed_constructors():
    cases = [("FloatTensor", "float32"), ("DoubleTensor", "float64"), ("LongTensor", "int64"),
             ("IntTensor", "int32"), ("BoolTensor", "bool"), ("HalfTensor", "float16"),
             ("ByteTensor", "uint8")]
    for name, dt in cases:
        cls, tcls = getattr(dg, name), getattr(torch, name)
        for args in [([1.7, 0.0, 2.0],), (3,)]:
            ours, ref = cls(*args), tcls(*args)
            assert ours.dtype == getattr(dg, dt) and tuple(ours.shape) == tuple(ref.shape)
            if not isinstance(args[0], int):
                np.testing.assert_array_equal(_np(ours), ref.numpy())
        assert isinstance(cls([1]), cls)
    assert isinstance(dg.ones(2), dg.FloatTensor) and not isinstance(dg.ones(2).double(), dg.FloatTensor)
    assert isinstance(dg.tensor([1]), dg.LongTensor)
    with pytest.raises(TypeError):
        dg.DoubleTensor(dg.ones(2))               # a tensor of another dtype, as torch


def test_tensor_type():
    cases = [(dg.float32, "torch.FloatTensor"), (dg.float64, "torch.DoubleTensor"),
             (dg.int64, "torch.LongTensor"), (dg.int32, "torch.IntTensor"),
             (dg.bool, "torch.BoolTensor"), (dg.float16, "torch.HalfTensor"), (dg.uint8, "torch.ByteTensor")]
    for d, name in cases:
        assert dg.zeros(2, dtype=d).type() == name
        tdt = getattr(torch, str(d).split(".")[-1])
        assert torch.zeros(2, dtype=tdt).type() == name
    x = dg.tensor([1.5, -2.0])
    assert x.type(dg.float64).dtype == dg.float64
    assert x.type("torch.DoubleTensor").dtype == dg.float64
    assert x.type("torch.LongTensor").tolist() == torch.tensor([1.5, -2.0]).type("torch.LongTensor").tolist()
    assert x.type(dg.IntTensor).dtype == dg.int32
    assert x.type(dg.float32) is x and x.type("torch.FloatTensor") is x
    y = dg.tensor([1.0], requires_grad=True)
    assert y.type(dg.float64).grad_fn.name() == "ToCopyBackward0"
    with pytest.raises(ValueError, match="invalid type: 'torch.Foo'"):
        x.type("torch.Foo")


# ========================================================================== losses
def test_bce_with_logits_gradient_underflow_float32():
    """Built as max(x, 0) - x y + log1p(exp(-|x|)), the gradient at x = -20, y = 0 is
    sigmoid(-20) = 2.06e-9 in float32, not 0."""
    x = dg.tensor([-20.0], requires_grad=True)
    tx = torch.tensor([-20.0], requires_grad=True)
    F.binary_cross_entropy_with_logits(x, dg.tensor([0.0])).backward()
    TF.binary_cross_entropy_with_logits(tx, torch.tensor([0.0])).backward()
    assert x.grad.dtype == dg.float32
    assert x.grad.item() == pytest.approx(2.0611537e-09, rel=1e-6)
    assert x.grad.item() == pytest.approx(tx.grad.item(), rel=1e-6)
    big = dg.tensor([100.0, -100.0], requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(big, dg.tensor([0.0, 1.0]), reduction="none")
    np.testing.assert_allclose(_np(loss), [100.0, 100.0])      # no overflow
    assert loss.grad_fn.name() == "BinaryCrossEntropyWithLogitsBackward0"


_RNG = np.random.default_rng(6)
_X, _Y = _RNG.standard_normal((4, 3)), _RNG.standard_normal((4, 3))
_P, _Q = _RNG.uniform(0.05, 0.95, (4, 3)), _RNG.uniform(0.0, 1.0, (4, 3))
_W = _RNG.uniform(0.5, 2.0, 3)
_T = np.array([0, 2, 1, 2])


def _loss_cases():
    X4, T4 = _RNG.standard_normal((2, 3, 2, 2)), _RNG.integers(0, 3, (2, 2, 2))
    X3, T3 = _RNG.standard_normal((2, 3, 4)), _RNG.integers(0, 3, (2, 4))
    return [
        ("mse_loss", lambda m, a, b, **k: m.nn.functional.mse_loss(a, b, **k), [_X, _Y]),
        ("l1_loss", lambda m, a, b, **k: m.nn.functional.l1_loss(a, b, **k), [_X, _Y]),
        ("smooth_l1_loss", lambda m, a, b, **k: m.nn.functional.smooth_l1_loss(a, b, beta=0.7, **k), [_X, _Y]),
        ("smooth_l1_loss_beta0", lambda m, a, b, **k: m.nn.functional.smooth_l1_loss(a, b, beta=0.0, **k),
         [_X, _Y]),
        ("huber_loss", lambda m, a, b, **k: m.nn.functional.huber_loss(a, b, delta=0.6, **k), [_X, _Y]),
        ("bce_with_logits", lambda m, a, b, **k: m.nn.functional.binary_cross_entropy_with_logits(a, b, **k),
         [_X * 4, _Q]),
        ("bce_with_logits_weights", lambda m, a, b, **k: m.nn.functional.binary_cross_entropy_with_logits(
            a, b, weight=m.tensor(_W), pos_weight=m.tensor(_W * 2), **k), [_X * 4, _Q]),
        ("bce", lambda m, a, b, **k: m.nn.functional.binary_cross_entropy(a, b, **k), [_P, _Q]),
        ("bce_weight", lambda m, a, b, **k: m.nn.functional.binary_cross_entropy(a, b, weight=m.tensor(_W), **k),
         [_P, _Q]),
        ("kl_div", lambda m, a, b, **k: m.nn.functional.kl_div(a, b, **k), [np.log(_P), _Q]),
        ("kl_div_log_target", lambda m, a, b, **k: m.nn.functional.kl_div(a, b, log_target=True, **k),
         [np.log(_P), np.log(_Q + 0.1)]),
        ("nll_loss", lambda m, a, t, **k: m.nn.functional.nll_loss(a, t, **k), [_X, _T]),
        ("nll_loss_1d", lambda m, a, t, **k: m.nn.functional.nll_loss(a, t, **k), [_X[0], np.int64(1)]),
        ("nll_loss_3d", lambda m, a, t, **k: m.nn.functional.nll_loss(a, t, **k), [X3, T3]),
        ("nll_loss_4d", lambda m, a, t, **k: m.nn.functional.nll_loss(a, t, **k), [X4, T4]),
        ("cross_entropy", lambda m, a, t, **k: m.nn.functional.cross_entropy(a, t, **k), [_X, _T]),
        ("cross_entropy_4d", lambda m, a, t, **k: m.nn.functional.cross_entropy(a, t, **k), [X4, T4]),
        ("cross_entropy_smoothing", lambda m, a, t, **k: m.nn.functional.cross_entropy(
            a, t, label_smoothing=0.1, **k), [_X, _T]),
        ("cross_entropy_probs", lambda m, a, b, **k: m.nn.functional.cross_entropy(a, b, **k), [_X, _Q]),
        ("cross_entropy_probs_weight", lambda m, a, b, **k: m.nn.functional.cross_entropy(
            a, b, weight=m.tensor(_W), label_smoothing=0.2, **k), [_X, _Q]),
    ]


LOSSES = _loss_cases()


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,fn,arrays", LOSSES, ids=[c[0] for c in LOSSES])
def test_loss_values_grads_and_grad_fn(name, fn, arrays, reduction):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's 'mean' warning, in both libraries
        _check(lambda m, *ts: fn(m, *ts, reduction=reduction), arrays, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_batchmean(log_target):
    t = np.log(_Q + 0.1) if log_target else _Q
    _check(lambda m, a, b: m.nn.functional.kl_div(a, b, reduction="batchmean", log_target=log_target),
           [np.log(_P), t])
    with pytest.warns(UserWarning, match="batchmean"):
        F.kl_div(dg.tensor(np.log(_P)), dg.tensor(_Q))


def test_loss_errors_match_torch():
    with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
        F.huber_loss(dg.ones(2), dg.ones(2), reduction="avg")
    with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1"):
        F.binary_cross_entropy(dg.tensor([1.5]), dg.tensor([1.0]))
    with pytest.raises(ValueError, match="different to the input size"):
        F.binary_cross_entropy(dg.tensor([0.5, 0.5]), dg.tensor([[1.0], [0.0]]))
    w = dg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'weight'"):
        F.binary_cross_entropy_with_logits(dg.zeros(2, 3), dg.zeros(2, 3), weight=w)
    with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'pos_weight'"):
        F.binary_cross_entropy_with_logits(dg.zeros(2, 3), dg.zeros(2, 3), pos_weight=w)


def test_bce_clamps_log_like_torch():
    p = dg.tensor([0.0, 1.0, 0.5], dtype=dg.float64, requires_grad=True)
    tp = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64, requires_grad=True)
    y = [1.0, 0.0, 0.5]
    loss = F.binary_cross_entropy(p, dg.tensor(y, dtype=dg.float64), reduction="sum")
    ref = TF.binary_cross_entropy(tp, torch.tensor(y, dtype=torch.float64), reduction="sum")
    assert loss.item() == pytest.approx(ref.item())              # log(0) clamped to -100
    loss.backward()
    ref.backward()
    np.testing.assert_allclose(_np(p.grad), tp.grad.numpy())     # divided by max(x(1-x), 1e-12)


MODULES = [
    ("HuberLoss", {"delta": 0.5}, [_X, _Y]),
    ("KLDivLoss", {"reduction": "batchmean"}, [np.log(_P), _Q]),
    ("BCELoss", {}, [_P, _Q]),
    ("BCEWithLogitsLoss", {"reduction": "sum"}, [_X, _Q]),
    ("MSELoss", {"reduction": "none"}, [_X, _Y]),
    ("SmoothL1Loss", {"beta": 0.5}, [_X, _Y]),
    ("L1Loss", {}, [_X, _Y]),
]


@pytest.mark.parametrize("name,kw,arrays", MODULES, ids=[m[0] for m in MODULES])
def test_loss_modules_match_torch(name, kw, arrays):
    _check(lambda m, a, b: getattr(m.nn, name)(**kw)(a, b), arrays)


def test_loss_modules_weights_and_legacy_flags():
    _check(lambda m, a, b: m.nn.BCELoss(weight=m.tensor(_W))(a, b), [_P, _Q])
    _check(lambda m, a, t: m.nn.NLLLoss(m.tensor(_W), None, 1)(a, t), [_X, _T])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dg.nn.MSELoss(size_average=False).reduction == torch.nn.MSELoss(size_average=False).reduction
        assert dg.nn.L1Loss(reduce=False).reduction == torch.nn.L1Loss(reduce=False).reduction
    assert dg.nn.BCEWithLogitsLoss(None, "sum").reduction == "sum"   # the earlier positional order


def test_reduction_node_names_match_torch():
    x = dg.randn(2, 3, requires_grad=True)
    tx = torch.randn(2, 3, requires_grad=True)
    for fn in (lambda t: t.sum(), lambda t: t.sum(1), lambda t: t.sum((0, 1)), lambda t: t.mean(),
               lambda t: t.mean(0), lambda t: t.mean(dim=(0, 1), keepdim=True)):
        assert fn(x).grad_fn.name() == fn(tx).grad_fn.name()


def test_nansum_and_scalar_division_match_torch():
    """nansum is one NansumBackward0 node whose gradient is 0 at NaNs; ``s / x`` is
    PyTorch's reciprocal-then-multiply (the same rounding and nodes)."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 5))
    a[1, 2] = a[3, 0] = np.nan
    outs = []
    for lib in (dg, torch):
        x = lib.tensor(a, requires_grad=True)
        s = lib.nansum(x, 1) * lib.tensor(np.arange(1.0, 5.0)) + x.nansum()
        r = 3.7 / x[0]
        (s.sum() + r.sum()).backward()
        outs.append((s.grad_fn.next_functions[1][0].name(), r.grad_fn.name(),
                     r.grad_fn.next_functions[0][0].name(), s.detach().numpy(), r.detach().numpy(),
                     x.grad.numpy()))
    d, t = outs
    assert d[:3] == t[:3] == ("NansumBackward0", "MulBackward0", "ReciprocalBackward0")
    np.testing.assert_allclose(d[3], t[3], rtol=1e-14)   # summation order may differ
    np.testing.assert_array_equal(d[4], t[4])
    np.testing.assert_array_equal(d[5], t[5])
    assert d[5][1, 2] == 0.0 and d[5][3, 0] == 0.0


@pytest.mark.parametrize("how", ["sizes", "int", "chunk", "tensor_split_dim0"])
def test_split_is_one_node_whose_gradient_is_one_concatenation(how):
    """split/chunk outputs share one SplitBackward0 (SplitWithSizesBackward0) node, as in
    PyTorch: pieces without a gradient contribute zeros, outputs are views of the input,
    retain_grad and second derivatives work."""
    rng = np.random.default_rng(8)
    a = rng.standard_normal((6, 5))
    got = []
    for lib in (dg, torch):
        x = lib.tensor(a, requires_grad=True)
        pieces = {"sizes": lambda: x.split([1, 3, 1], dim=1), "int": lambda: x.split(2),
                  "chunk": lambda: x.chunk(3, dim=1), "tensor_split_dim0": lambda: lib.split(x, 4)}[how]()
        pieces[-1].retain_grad()
        loss = (pieces[0] ** 3).sum() + (pieces[-1] * 2).sum()
        g, = lib.autograd.grad(loss, x, create_graph=True)
        gg, = lib.autograd.grad((g * g).sum(), x)
        loss.backward()
        got.append((pieces[0].grad_fn.name(), len(pieces), g.detach().numpy(), gg.numpy(), x.grad.numpy(),
                    pieces[-1].grad.numpy(), pieces[1]._base is x))
    d, t = got
    assert d[:2] == t[:2] and d[6] and t[6]
    for u, v in zip(d[2:6], t[2:6]):
        np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-13)


def test_normal_overloads_follow_torch():
    """torch.normal: std defaults to 1 for a tensor mean; tensor arguments broadcast and
    give their dtype; numbers need a size and take dtype=."""
    for lib in (dg, torch):
        assert lib.normal(lib.zeros(3, dtype=lib.float64)).dtype == lib.float64
        assert tuple(lib.normal(lib.zeros(2, 1), lib.ones(3)).shape) == (2, 3)
        assert lib.normal(0.0, 2.0, (2, 3), dtype=lib.float64).dtype == lib.float64
        assert lib.normal(1.0, lib.ones(4)).dtype == lib.float32
    dg.manual_seed(3)
    a = dg.normal(dg.full((20000,), 2.0), 0.5).numpy()
    assert abs(a.mean() - 2.0) < 0.02 and abs(a.std() - 0.5) < 0.02
    with pytest.raises(TypeError, match="needs size"):
        dg.normal(0.0, 1.0)
