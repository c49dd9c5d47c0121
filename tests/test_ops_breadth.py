"""The breadth ops without gradients (unique, bincount, searchsorted, ...), the in-place
forms (version counters, leaf errors), dtype queries, error messages and grad_fn names,
against PyTorch where it is installed (and against fixed expectations otherwise)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import distgrad as dg


def _np(t):
    return np.asarray(t.detach().numpy())


def _torch():
    return pytest.importorskip("torch")


def _same(a, b):
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert str(x.dtype).split(".")[-1] == str(y.dtype).split(".")[-1]
        assert tuple(x.shape) == tuple(y.shape)
        np.testing.assert_allclose(_np(x), y.detach().numpy(), rtol=1e-7, atol=1e-12, equal_nan=True)


# ------------------------------------------------------------ without gradients
X = [3, 1, 2, 3, 1, 5, 5, 5, 0]
M = [[1, 2], [1, 2], [0, 4], [1, 2]]
NO_GRAD = [
    ("unique", lambda m: m.unique(m.tensor(X))),
    ("unique_all", lambda m: m.unique(m.tensor(X), return_inverse=True, return_counts=True)),
    ("unique_dim", lambda m: m.unique(m.tensor(M), dim=0, return_inverse=True, return_counts=True)),
    ("unique_method", lambda m: m.tensor(X).unique(return_counts=True)),
    ("unique_consecutive", lambda m: m.unique_consecutive(m.tensor([1, 1, 2, 2, 3, 1, 1]),
                                                          return_inverse=True, return_counts=True)),
    ("unique_consecutive_dim", lambda m: m.unique_consecutive(m.tensor(M), dim=0, return_counts=True)),
    ("bincount", lambda m: m.bincount(m.tensor(X))),
    ("bincount_minlength", lambda m: m.bincount(m.tensor([0, 2]), minlength=5)),
    ("bincount_weights", lambda m: m.bincount(m.tensor([0, 2, 2]), m.tensor([0.5, 1.0, 2.0]))),
    ("bincount_weights64", lambda m: m.bincount(m.tensor([0, 2, 2]), m.tensor([0.5, 1.0, 2.0], dtype=m.float64))),
    ("searchsorted", lambda m: m.searchsorted(m.tensor([1.0, 3.0, 5.0, 7.0]), m.tensor([3.0, 6.0, 9.0]))),
    ("searchsorted_right", lambda m: m.searchsorted(m.tensor([1, 3, 5, 7]), m.tensor([3, 6, 0]), right=True)),
    ("searchsorted_side", lambda m: m.searchsorted(m.tensor([1, 3, 5, 7]), m.tensor([3, 7]), side="right")),
    ("searchsorted_2d", lambda m: m.searchsorted(m.tensor([[1, 3, 5], [2, 4, 6]]), m.tensor([[3, 6], [1, 5]]))),
    ("searchsorted_int32", lambda m: m.searchsorted(m.tensor([1, 3, 5]), m.tensor([4]), out_int32=True)),
    ("bucketize", lambda m: m.bucketize(m.tensor([[1, 6], [3, 9]]), m.tensor([1, 3, 5, 7]))),
    ("bucketize_right", lambda m: m.bucketize(m.tensor([1, 6, 3, 9]), m.tensor([1, 3, 5, 7]), right=True)),
    ("isin", lambda m: m.isin(m.tensor([[1, 2], [3, 4]]), m.tensor([2, 3]))),
    ("isin_invert", lambda m: m.isin(m.tensor([1, 2, 3, 4]), m.tensor([2, 3]), invert=True)),
    ("unravel_index", lambda m: m.unravel_index(m.tensor([4, 1, 11]), (3, 4))),
    ("tril_indices", lambda m: m.tril_indices(3, 4)),
    ("tril_indices_offset", lambda m: m.tril_indices(4, 3, -1)),
    ("triu_indices", lambda m: m.triu_indices(3, 3, 1)),
    ("count_nonzero", lambda m: m.count_nonzero(m.tensor([[0, 1, 2], [0, 0, 3]]))),
    ("count_nonzero_dim", lambda m: m.count_nonzero(m.tensor([[0, 1, 2], [0, 0, 3]]), dim=1)),
    ("signbit", lambda m: m.signbit(m.tensor([-1.0, 0.0, -0.0, 2.0]))),
    ("isposinf", lambda m: m.isposinf(m.tensor([-math.inf, 0.0, math.inf]))),
    ("isneginf", lambda m: m.isneginf(m.tensor([-math.inf, 0.0, math.inf]))),
    ("isreal", lambda m: m.isreal(m.tensor([1.0, 2.0]))),
    ("heaviside", lambda m: m.heaviside(m.tensor([-1.5, 0.0, 2.0]), m.tensor([0.5]))),
    ("repeat_interleave_counts", lambda m: m.repeat_interleave(m.tensor([2, 0, 3]))),
    ("repeat_interleave_int", lambda m: m.tensor([[1, 2], [3, 4]]).repeat_interleave(2, dim=0)),
    ("mode_ties", lambda m: m.mode(m.tensor([[1.0, 2.0, 2.0, 1.0, 3.0], [4.0, 4.0, 0.0, 0.0, 0.0]]))),
    ("median_even", lambda m: m.median(m.tensor([4.0, 1.0, 3.0, 2.0]))),
    ("median_dim_indices", lambda m: m.median(m.tensor([[4.0, 1.0, 3.0, 2.0], [0.0, 9.0, 8.0, 7.0]]), 1)),
    ("median_nan", lambda m: m.median(m.tensor([1.0, math.nan, 2.0]))),
    ("nanmedian_nan", lambda m: m.nanmedian(m.tensor([[1.0, math.nan, 2.0, 5.0], [3.0, 1.0, math.nan, math.nan]]), 1)),
    ("nanmean_nan", lambda m: m.nanmean(m.tensor([[1.0, math.nan], [3.0, 4.0]]), 0)),
    ("nanquantile_nan", lambda m: m.nanquantile(m.tensor([1.0, math.nan, 2.0, 4.0]), 0.5)),
    ("quantile_nan", lambda m: m.quantile(m.tensor([1.0, math.nan, 2.0]), 0.5)),
    ("nan_to_num", lambda m: m.nan_to_num(m.tensor([math.nan, math.inf, -math.inf, 1.0]))),
    ("nan_to_num_args", lambda m: m.tensor([math.nan, math.inf, -math.inf]).nan_to_num(1.0, 2.0, -3.0)),
    ("cummax_ties", lambda m: m.cummax(m.tensor([1.0, 3.0, 3.0, 2.0, 5.0]), 0)),
    ("cummin_ties", lambda m: m.cummin(m.tensor([3.0, 1.0, 1.0, 2.0, 0.0]), 0)),
    ("cumprod_int", lambda m: m.cumprod(m.tensor([1, 2, 3], dtype=m.int32), 0)),
    ("fmax_nan", lambda m: m.fmax(m.tensor([1.0, math.nan, math.nan]), m.tensor([math.nan, 2.0, math.nan]))),
    ("fmod_int", lambda m: m.fmod(m.tensor([7, -7, 5]), m.tensor([3, 3, -2]))),
    ("clamp_min_int", lambda m: m.clamp_min(m.tensor([1, 5, -2]), 0)),
    ("frac_neg", lambda m: m.frac(m.tensor([-1.25, 2.5]))),
    ("lgamma_poles", lambda m: m.lgamma(m.tensor([0.0, -1.0, 1.0, 2.0, 1e-8, 170.5]))),
    ("digamma_values", lambda m: m.digamma(m.tensor([0.0, 1.0, 0.5, -0.5, 100.0], dtype=m.float64))),
    ("erfinv_edges", lambda m: m.erfinv(m.tensor([-1.0, 1.0, 0.0, 0.999999, 2.0], dtype=m.float64))),
    ("erfc_tail", lambda m: m.erfc(m.tensor([5.0, 10.0, -5.0, 26.0], dtype=m.float64))),
    ("exp2_int", lambda m: m.exp2(m.tensor([1, 2, 3]))),
    ("atan2_int", lambda m: m.atan2(m.tensor([1, -2]), m.tensor([2, 2]))),
    ("logaddexp_inf", lambda m: m.logaddexp(m.tensor([-math.inf, 1000.0]), m.tensor([-math.inf, 1000.0]))),
    ("float_power_int", lambda m: m.float_power(m.tensor([2, 3]), 2)),
    ("aminmax_int", lambda m: m.aminmax(m.tensor([[3, 1], [2, 7]]), dim=0)),
    ("diag_int", lambda m: m.diag(m.tensor([1, 2]))),
    ("trace_int", lambda m: m.trace(m.tensor([[1, 2], [3, 4]], dtype=m.int32))),
    ("kron_int", lambda m: m.kron(m.tensor([[1, 2]]), m.tensor([[1], [3]]))),
    ("diff_bool", lambda m: m.diff(m.tensor([True, False, False, True]))),
    ("fill_diagonal_wrap", lambda m: m.zeros(7, 3).fill_diagonal_(5.0, wrap=True)),
    ("combinations_empty", lambda m: m.combinations(m.tensor([1.0]), 2)),
    ("block_diag_mixed", lambda m: m.block_diag(m.tensor([[1, 2]]), m.tensor([3.0]))),
    ("vander_int", lambda m: m.vander(m.tensor([1, 2, 3]), N=3)),
    ("hsplit_1d", lambda m: m.hsplit(m.arange(6), [2, 4])),
    ("tensor_split_tensor", lambda m: m.tensor_split(m.arange(7), m.tensor([1, 5]))),
]


@pytest.mark.parametrize("name,fn", NO_GRAD, ids=[c[0] for c in NO_GRAD])
def test_matches_torch_without_grad(name, fn):
    torch = _torch()
    _same(fn(dg), fn(torch))


def test_expected_values_without_torch():
    assert _np(dg.unique(dg.tensor(X))).tolist() == [0, 1, 2, 3, 5]
    assert _np(dg.bincount(dg.tensor([0, 2, 2]))).tolist() == [1, 0, 2]
    assert _np(dg.searchsorted(dg.tensor([1, 3, 5]), dg.tensor([3]), right=True)).tolist() == [2]
    assert _np(dg.tril_indices(3, 3)).tolist() == [[0, 1, 1, 2, 2, 2], [0, 0, 1, 0, 1, 2]]
    v, i = dg.median(dg.tensor([[4.0, 1.0, 3.0, 2.0]]), 1)
    assert v.item() == 2.0 and i.item() == 3  # the lower median, as PyTorch
    assert dg.quantile(dg.tensor([0.0, 10.0]), 0.25).item() == 2.5
    assert dg.cumprod(dg.tensor([1.0, 2.0, 3.0]), 0).tolist() == [1.0, 2.0, 6.0]
    np.testing.assert_allclose(dg.lgamma(dg.tensor([5.0], dtype=dg.float64)).item(), math.log(24), rtol=1e-14)
    np.testing.assert_allclose(dg.erfinv(dg.tensor([0.5], dtype=dg.float64)).item(), 0.4769362762044699, rtol=1e-13)


# -------------------------------------------------------------------- grad_fn names
GRAD_FN = [
    ("acos", lambda m, x: m.acos(x * 0.1)), ("tan", lambda m, x: m.tan(x)),
    ("atan2", lambda m, x: m.atan2(x, x + 3)), ("log2", lambda m, x: m.log2(x.exp())),
    ("lerp_scalar", lambda m, x: m.lerp(x, x * 2, 0.3)), ("lerp_tensor", lambda m, x: m.lerp(x, x * 2, x)),
    ("addcmul", lambda m, x: m.addcmul(x, x, x)), ("addcdiv", lambda m, x: m.addcdiv(x, x, x + 5)),
    ("clamp_min", lambda m, x: m.clamp_min(x, 0.0)), ("clamp_max_tensor", lambda m, x: m.clamp_max(x, x * 0)),
    ("nan_to_num", lambda m, x: m.nan_to_num(x)), ("xlogy", lambda m, x: m.xlogy(x, x.exp())),
    ("xlogy_scalar", lambda m, x: m.xlogy(x, 2.0)), ("fmod", lambda m, x: m.fmod(x, 2.0)),
    ("fmod_tensor", lambda m, x: m.fmod(x, x + 5)), ("copysign", lambda m, x: m.copysign(x, 2.0)),
    ("sgn", lambda m, x: m.sgn(x)), ("erfinv", lambda m, x: m.erfinv(x * 0.1)),
    ("lgamma", lambda m, x: m.lgamma(x.exp())), ("polygamma", lambda m, x: m.polygamma(1, x.exp())),
    ("cumprod", lambda m, x: m.cumprod(x, 0)), ("cummax", lambda m, x: m.cummax(x, 0)[0]),
    ("logcumsumexp", lambda m, x: m.logcumsumexp(x, 1)), ("median", lambda m, x: m.median(x)),
    ("median_dim", lambda m, x: m.median(x, 0)[0]), ("mode", lambda m, x: m.mode(x, 0)[0]),
    ("nanmedian", lambda m, x: m.nanmedian(x)), ("aminmax", lambda m, x: m.aminmax(x).max),
    ("roll", lambda m, x: m.roll(x, 1, 0)), ("rot90", lambda m, x: m.rot90(x)),
    ("diag", lambda m, x: m.diag(x[0])), ("diagonal", lambda m, x: m.diagonal(x)),
    ("trace", lambda m, x: m.trace(x)), ("cross", lambda m, x: m.cross(x, x + 1, dim=0)),
    ("cdist", lambda m, x: m.cdist(x, x + 1)), ("take", lambda m, x: m.take(x, m.tensor([1]))),
    ("index_fill", lambda m, x: m.index_fill(x, 0, m.tensor([1]), 2.0)),
    ("index_copy", lambda m, x: m.index_copy(x, 0, m.tensor([1]), x[:1] * 2)),
    ("masked_scatter", lambda m, x: m.masked_scatter(x, x > 0, x * 2)),
    ("scatter_reduce", lambda m, x: m.scatter_reduce(x, 0, m.zeros(3, 3, dtype=m.long), x, "amax")),
    ("unfold", lambda m, x: x.unfold(0, 2, 1)), ("block_diag", lambda m, x: m.block_diag(x, x)),
    ("det", lambda m, x: m.det(x)), ("inverse", lambda m, x: m.inverse(x)),
    ("slogdet", lambda m, x: m.linalg.slogdet(x)[1]), ("solve", lambda m, x: m.linalg.solve(x, x[0])),
    ("svd", lambda m, x: m.linalg.svd(x)[1]), ("qr", lambda m, x: m.linalg.qr(x)[1]),
    ("eigh", lambda m, x: m.linalg.eigh(x + x.T)[0]),
    ("cholesky", lambda m, x: m.linalg.cholesky(x @ x.T + m.eye(3, dtype=x.dtype))),
    ("pinv", lambda m, x: m.linalg.pinv(x)), ("vector_norm", lambda m, x: m.linalg.vector_norm(x)),
    ("matrix_exp", lambda m, x: m.linalg.matrix_exp(x)),
]


@pytest.mark.parametrize("name,fn", GRAD_FN, ids=[c[0] for c in GRAD_FN])
def test_grad_fn_name_matches_torch(name, fn):
    torch = _torch()
    data = [[0.3, -1.2, 0.8], [1.5, 0.2, -0.7], [-0.4, 0.9, 2.0]]
    y = fn(dg, dg.tensor(data, dtype=dg.float64, requires_grad=True))
    ty = fn(torch, torch.tensor(data, dtype=torch.float64, requires_grad=True))
    assert y.grad_fn.name() == ty.grad_fn.name()


# -------------------------------------------------------------------- in-place forms
INPLACE = [
    ("nan_to_num_", lambda x: x.nan_to_num_(), ()),
    ("addcmul_", lambda x, a: x.addcmul_(a, a, value=2), ("a",)),
    ("addcdiv_", lambda x, a: x.addcdiv_(a, a + 3, value=0.5), ("a",)),
    ("lerp_", lambda x, a: x.lerp_(a, 0.25), ("a",)),
    ("clamp_min_", lambda x: x.clamp_min_(0.0), ()),
    ("clamp_max_", lambda x: x.clamp_max_(0.0), ()),
    ("floor_", lambda x: x.floor_(), ()), ("ceil_", lambda x: x.ceil_(), ()),
    ("round_", lambda x: x.round_(), ()), ("trunc_", lambda x: x.trunc_(), ()),
    ("frac_", lambda x: x.frac_(), ()), ("sign_", lambda x: x.sign_(), ()),
    ("absolute_", lambda x: x.absolute_(), ()), ("square_", lambda x: x.square_(), ()),
    ("fmod_", lambda x: x.fmod_(0.7), ()), ("copysign_", lambda x, a: x.copysign_(a), ("a",)),
    ("atan2_", lambda x, a: x.atan2_(a), ("a",)), ("tan_", lambda x: x.tan_(), ()),
    ("index_fill_", lambda x: x.index_fill_(0, (x[0, :1] * 0 + 1).long(), -1.0), ()),
]


@pytest.mark.parametrize("name,fn,extra", INPLACE, ids=[c[0] for c in INPLACE])
def test_inplace_forms(name, fn, extra):
    torch = _torch()
    data = [[0.3, -1.2, 0.8], [1.5, 0.2, -0.7]]
    other = [[0.5, 0.4, -0.3], [-1.0, 2.0, 0.6]]
    x = dg.tensor(data, dtype=dg.float64)
    v0 = x._version
    args = [dg.tensor(other, dtype=dg.float64) for _ in extra]
    r = fn(x, *args)
    assert r is x and x._version > v0
    tx = torch.tensor(data, dtype=torch.float64)
    targs = [torch.tensor(other, dtype=torch.float64) for _ in extra]
    fn(tx, *targs)
    np.testing.assert_allclose(_np(x), tx.numpy(), rtol=1e-12)
    # A leaf that requires grad refuses in-place changes.
    leaf = dg.tensor(data, dtype=dg.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        fn(leaf, *args)


def test_inplace_gradients_match_torch():
    torch = _torch()
    data = [0.3, -1.2, 0.8, 1.5]
    for lib in (dg, torch):
        a = lib.tensor(data, dtype=lib.float64, requires_grad=True)
        b = a * 1
        b.addcmul_(a, a, value=0.5).lerp_(a * 3, 0.25).clamp_min_(-0.5)
        b.sum().backward()
        if lib is dg:
            ours = _np(a.grad)
        else:
            np.testing.assert_allclose(ours, a.grad.numpy(), rtol=1e-12)


def test_inplace_saved_value_is_checked():
    x = dg.tensor([0.5, 1.0], requires_grad=True)
    z = x.exp2()  # saves its output
    z.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()
    y = x * 1
    y.tan_()
    y.sum().backward()
    np.testing.assert_allclose(_np(x.grad), 1 / np.cos([0.5, 1.0]) ** 2, rtol=1e-6)


def test_shape_inplace_ops():
    torch = _torch()
    for name, args in [("squeeze_", ()), ("unsqueeze_", (0,)), ("t_", ()), ("transpose_", (0, 1))]:
        x = dg.zeros(1, 3) if name != "squeeze_" else dg.zeros(1, 3, 1)
        tx = torch.zeros(tuple(x.shape))
        assert getattr(x, name)(*args) is x
        getattr(tx, name)(*args)
        assert tuple(x.shape) == tuple(tx.shape)
    a = dg.tensor([[1.0, 2.0]], requires_grad=True)
    b = a * 1
    b.t_()
    (b * dg.tensor([[1.0], [3.0]])).sum().backward()
    assert a.grad.tolist() == [[1.0, 3.0]]


def test_fill_diagonal_and_views():
    x = dg.zeros(3, 4)
    x.fill_diagonal_(2.0)
    assert _np(x).trace() == 6.0 and _np(x).sum() == 6.0
    y = dg.zeros(3, 3)
    y.diagonal().fill_(1.0)  # diagonal is a view: writing to it writes y
    assert _np(y).tolist() == np.eye(3).tolist()
    u = dg.arange(6.0)
    w = u.unfold(0, 2, 2)
    assert w.shape == (3, 2) and w._base is u


# ------------------------------------------------------------------- dtype queries
def test_finfo_iinfo_match_torch():
    torch = _torch()
    for d in ("float16", "float32", "float64"):
        a, b = dg.finfo(getattr(dg, d)), torch.finfo(getattr(torch, d))
        for attr in ("eps", "max", "min", "tiny", "bits", "resolution"):
            assert getattr(a, attr) == getattr(b, attr), (d, attr)
        assert a.dtype == b.dtype
    for d in ("uint8", "int8", "int16", "int32", "int64"):
        a, b = dg.iinfo(getattr(dg, d)), torch.iinfo(getattr(torch, d))
        assert (a.bits, a.min, a.max, a.dtype) == (b.bits, b.min, b.max, b.dtype)
    assert dg.finfo().eps == torch.finfo().eps
    with pytest.raises(TypeError):
        dg.finfo(dg.int32)
    with pytest.raises(TypeError):
        dg.iinfo(dg.float32)


def test_promotion_queries_match_torch():
    torch = _torch()
    names = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")
    for a in names:
        for b in names:
            assert str(dg.promote_types(getattr(dg, a), getattr(dg, b))).split(".")[-1] == \
                str(torch.promote_types(getattr(torch, a), getattr(torch, b))).split(".")[-1]
            assert dg.can_cast(getattr(dg, a), getattr(dg, b)) == torch.can_cast(getattr(torch, a), getattr(torch, b))
    cases = [lambda m: (m.tensor([1, 2]), 2.5), lambda m: (m.tensor([1, 2], dtype=m.int32), m.tensor(5)),
             lambda m: (m.tensor([1.0]), m.tensor(2.0, dtype=m.float64)), lambda m: (1, 2.0),
             lambda m: (m.tensor([True]), 3)]
    for c in cases:
        assert str(dg.result_type(*c(dg))).split(".")[-1] == str(torch.result_type(*c(torch))).split(".")[-1]
    assert tuple(dg.broadcast_shapes((2, 1), (3,), 1)) == tuple(torch.broadcast_shapes((2, 1), (3,), 1))
    with pytest.raises(RuntimeError):
        dg.broadcast_shapes((2,), (3,))
    x = dg.tensor([1.5])
    assert dg.is_floating_point(x) and not dg.is_complex(x) and dg.is_nonzero(x)
    with pytest.raises(RuntimeError, match="more than one value"):
        dg.is_nonzero(dg.tensor([1, 2]))


# -------------------------------------------------------------------------- errors
ERRORS = [
    ("addcdiv_int", lambda m: m.addcdiv(m.tensor([1]), m.tensor([1]), m.tensor([2])), RuntimeError,
     "Integer division with addcdiv"),
    ("clamp_none", lambda m: m.clamp(m.tensor([1.0])), RuntimeError, "At least one of 'min' or 'max'"),
    ("diagonal_same_dims", lambda m: m.diagonal(m.zeros(2, 2), 0, 1, 1), RuntimeError, "cannot be identical"),
    ("bincount_2d", lambda m: m.bincount(m.tensor([[1]])), RuntimeError, "1-d non-negative integral"),
    ("bincount_negative", lambda m: m.bincount(m.tensor([-1, 2])), RuntimeError, "non-negative"),
    ("cross_len", lambda m: m.linalg.cross(m.zeros(2, 2), m.zeros(2, 2)), RuntimeError, "must have length 3"),
    ("quantile_range", lambda m: m.quantile(m.zeros(3), 1.5), RuntimeError, r"q must be in the range \[0, 1\] but got 1.5"),
    ("quantile_int", lambda m: m.quantile(m.tensor([1, 2]), 0.5), RuntimeError, "input tensor must be either float or double"),
    ("quantile_interp", lambda m: m.quantile(m.zeros(3), 0.5, interpolation="bad"), RuntimeError, "interpolation must be one of"),
    ("searchsorted_side", lambda m: m.searchsorted(m.zeros(3), m.zeros(1), side="middle"), RuntimeError, "side can only be"),
    ("rot90_dims", lambda m: m.rot90(m.zeros(2, 2), 1, [0, 0]), RuntimeError, "expected rotation dims to be different"),
    ("hsplit_divisible", lambda m: m.hsplit(m.zeros(2, 3), 2), RuntimeError, "not divisible by the split_size"),
    ("cdist_cols", lambda m: m.cdist(m.zeros(2, 3), m.zeros(2, 4)), RuntimeError, "same number of columns"),
    ("lerp_dtype", lambda m: m.lerp(m.zeros(2), m.zeros(2, dtype=m.float64), 0.5), RuntimeError, "expected dtype"),
    ("inv_square", lambda m: m.linalg.inv(m.zeros(2, 3)), RuntimeError, "must be batches of square matrices"),
    ("meshgrid_2d", lambda m: m.meshgrid(m.zeros(2, 2), indexing="ij"), RuntimeError, "Expected 0D or 1D tensor"),
    ("nanmean_int", lambda m: m.nanmean(m.tensor([1, 2])), RuntimeError, "floating point"),
    ("polygamma_neg", lambda m: m.polygamma(-1, m.zeros(2)), RuntimeError, "does not support negative n"),
]


@pytest.mark.parametrize("name,fn,exc,msg", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_match_torch(name, fn, exc, msg):
    with pytest.raises(exc, match=msg):
        fn(dg)
    torch = _torch()
    with pytest.raises(exc, match=msg):
        fn(torch)


def test_meshgrid_warns_without_indexing():
    with pytest.warns(UserWarning, match="indexing"):
        dg.meshgrid(dg.zeros(2), dg.zeros(3))


def test_out_and_linalg_namespace():
    out = dg.empty(3)
    r = dg.atan2(dg.tensor([1.0, 0.0, -1.0]), dg.tensor([1.0, 1.0, 1.0]), out=out)
    assert r is out
    np.testing.assert_allclose(_np(out), np.arctan2([1.0, 0.0, -1.0], 1.0), rtol=1e-6)
    for n in ("det", "inv", "pinv", "svd", "norm", "vector_norm", "matrix_norm", "solve", "cholesky",
              "qr", "eigh", "slogdet", "cross", "matrix_exp"):
        assert callable(getattr(dg.linalg, n)), n


def test_special_functions_accurate_over_their_range():
    """The hand-written special functions against PyTorch's: erfinv into its tails
    (1 - x down to the float64 spacing), erfc, lgamma and digamma over wide ranges."""
    rng = np.random.default_rng(11)
    cases = {
        "erfinv": np.concatenate([rng.uniform(-1, 1, 4000), 1 - np.geomspace(1.2e-16, 1e-1, 200),
                                  -1 + np.geomspace(1.2e-16, 1e-1, 200)]),
        "erfc": rng.uniform(-6, 26, 4000),
        "lgamma": np.concatenate([rng.uniform(-40, 40, 4000) + 0.01, np.geomspace(1e-6, 1e6, 200)]),
        "digamma": np.concatenate([rng.uniform(-40, 40, 4000) + 0.01, np.geomspace(1e-6, 1e6, 200)]),
    }
    torch = _torch()
    for name, x in cases.items():
        d = getattr(dg, name)(dg.tensor(x)).numpy()
        t = getattr(torch, name)(torch.tensor(x)).numpy()
        np.testing.assert_allclose(d, t, rtol=1e-9, atol=1e-12, err_msg=name)
