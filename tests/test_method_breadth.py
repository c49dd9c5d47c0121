"""More of PyTorch's Tensor and nn.Module methods, checked against PyTorch: values,
dtypes, gradients, version counters, full backward hooks and state-dict hooks."""
import warnings

import numpy as np
import pytest

import distgrad as dg

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:index_reduce\\(\\) is in beta")


def both(a, dtype=np.float64, requires_grad=False):
    a = np.asarray(a, dtype)
    return (dg.tensor(a, requires_grad=requires_grad),
            torch.tensor(a, requires_grad=requires_grad))


def close(d, t, **kw):
    if isinstance(d, (tuple, list)):
        assert len(d) == len(t)
        for x, y in zip(d, t):
            close(x, y, **kw)
        return
    assert str(d.dtype).split(".")[-1] == str(t.dtype).split(".")[-1], (d.dtype, t.dtype)
    assert tuple(d.shape) == tuple(t.shape)
    np.testing.assert_allclose(d.detach().numpy(), t.detach().numpy(), rtol=1e-6, atol=1e-9, **kw)


def grads_match(fn, *arrays):
    """fn(m, *tensors) on both libraries: values, first and second gradients agree."""
    ds = [dg.tensor(np.asarray(a, np.float64), requires_grad=True) for a in arrays]
    ts = [torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in arrays]
    yd, yt = fn(dg, *ds), fn(torch, *ts)
    close(yd, yt)
    rng = np.random.default_rng(0)
    w = rng.standard_normal(tuple(yd.shape))
    gd = dg.autograd.grad((yd * dg.tensor(w)).sum(), ds, create_graph=True, allow_unused=True)
    gt = torch.autograd.grad((yt * torch.tensor(w)).sum(), ts, create_graph=True, allow_unused=True)
    assert [g is None for g in gd] == [g is None for g in gt]
    close([g for g in gd if g is not None], [g for g in gt if g is not None])
    sd = sum((g * g).sum() for g in gd if g is not None and g.requires_grad)
    st = sum((g * g).sum() for g in gt if g is not None and g.requires_grad)
    if isinstance(st, torch.Tensor) and st.requires_grad:
        gt2 = torch.autograd.grad(st, ts, allow_unused=True)
        if not isinstance(sd, dg.Tensor):  # no second-order graph: torch's must be zeros
            assert all(b is None or not b.abs().sum().item() for b in gt2)
            return yd, yt
        gd2 = dg.autograd.grad(sd, ds, allow_unused=True)
        for a, b in zip(gd2, gt2):
            if a is None or b is None:
                assert a is None or not a.abs().sum().item()
                assert b is None or not b.abs().sum().item()
            else:
                close(a, b)
    return yd, yt


RNG = np.random.default_rng(1)
M = RNG.standard_normal((3, 3)) + 3 * np.eye(3)


# --------------------------------------------------------------- math with gradients
@pytest.mark.parametrize("name,lo,hi", [("asinh", -2, 2), ("acosh", 1.2, 3), ("atanh", -0.8, 0.8),
                                         ("arcsinh", -2, 2), ("arccosh", 1.2, 3),
                                         ("arctanh", -0.8, 0.8)])
def test_inverse_hyperbolics(name, lo, hi):
    a = RNG.uniform(lo, hi, (2, 3))
    yd, yt = grads_match(lambda m, x: getattr(m, name)(x), a)
    assert yd.grad_fn.name() == yt.grad_fn.name()
    xd, xt = both(a.astype(np.float32))
    close(getattr(xd, name)(), getattr(xt, name)())
    getattr(xd, name + "_")()
    getattr(torch, name + "_")(xt)
    close(xd, xt)
    assert xd._version == xt._version == 1
    close(getattr(dg, name)(dg.tensor([1, 2])), getattr(torch, name)(torch.tensor([1, 2])))


@pytest.mark.parametrize("fn", [
    lambda m, x, y, z: m.addmv(x[0], y, z[:, 0], beta=0.5, alpha=2),
    lambda m, x, y, z: x[0].addmv(y, z[:, 0]),
    lambda m, x, y, z: m.addr(x, y[:, 0], z[0], alpha=3),
    lambda m, x, y, z: x.addr(y[:, 0], z[0], beta=0),
    lambda m, x, y, z: m.addbmm(x, y.reshape(1, 3, 3).expand(2, 3, 3), z.expand(2, 3, 3), beta=2),
    lambda m, x, y, z: m.matrix_power(x, 3),
    lambda m, x, y, z: x.matrix_power(-2),
    lambda m, x, y, z: m.linalg.matrix_power(x, 0) + x.matrix_power(1),
    lambda m, x, y, z: m.dist(x, y) + x.dist(z, 1) + x.dist(y, 3),
    lambda m, x, y, z: x.renorm(2, 0, 2.0),
    lambda m, x, y, z: m.renorm(x, 1, 1, 3.0),
    lambda m, x, y, z: m.cov(x) + y.cov(correction=0),
    lambda m, x, y, z: m.corrcoef(x) * 2,
    lambda m, x, y, z: x.narrow_copy(1, 1, 2),
    lambda m, x, y, z: m.split_with_sizes(x, [1, 2], 1)[1] + x.unsafe_split(2)[0][:1].sum(),
    lambda m, x, y, z: m.unsafe_chunk(x, 3)[2] * x.split_with_sizes([2, 1])[1],
    lambda m, x, y, z: m.prelu(x, m.ones(1, dtype=m.float64) * 0.25 + y[0, 0] * 0),
    lambda m, x, y, z: x.hardshrink(0.3) + m.hardshrink(y),
    lambda m, x, y, z: m.multiply(x, y) + x.divide(z) + x.multiply(2),
    lambda m, x, y, z: x.adjoint() + m.adjoint(y) + x.mH + x.H,
    lambda m, x, y, z: x.conj() * m.resolve_conj(y) + x.resolve_neg(),
    lambda m, x, y, z: x.index_reduce(0, m.tensor([0, 2, 0]), y, "prod"),
    lambda m, x, y, z: m.index_reduce(x, 1, m.tensor([1, 1, 0]), y, "amax", include_self=False),
    lambda m, x, y, z: x.index_reduce(0, m.tensor([2, 2, 1]), y, "mean"),
    lambda m, x, y, z: x.broadcast_to(2, 3, 3) * 1,
], ids=["addmv", "addmv_m", "addr", "addr_beta0", "addbmm", "matrix_power", "matrix_power_neg",
        "matrix_power_0", "dist", "renorm", "renorm_p1", "cov", "corrcoef", "narrow_copy",
        "split_with_sizes", "unsafe_chunk", "prelu", "hardshrink", "aliases", "adjoint", "conj",
        "index_reduce_prod", "index_reduce_amax", "index_reduce_mean", "broadcast_to"])
def test_differentiable_against_torch(fn):
    a = RNG.standard_normal((3, 3))
    yd, yt = grads_match(fn, M, a + 0.1 * np.arange(9).reshape(3, 3), a.T + 2)
    if yt.grad_fn is not None and yt.grad_fn.name() in (
            "AddmvBackward0", "AddrBackward0", "AddbmmBackward0", "DistBackward0",
            "RenormBackward0", "IndexReduceBackward0"):
        assert yd.grad_fn.name() == yt.grad_fn.name()


def test_cov_weights_and_corrcoef_1d():
    a = RNG.standard_normal((2, 5))
    fw = np.array([1, 2, 1, 3, 1])
    aw = RNG.uniform(0.5, 2, 5)
    xd, xt = both(a)
    close(dg.cov(xd, fweights=dg.tensor(fw), aweights=dg.tensor(aw)),
          torch.cov(xt, fweights=torch.tensor(fw), aweights=torch.tensor(aw)))
    close(xd.cov(fweights=dg.tensor(fw), correction=0), xt.cov(fweights=torch.tensor(fw), correction=0))
    close(dg.corrcoef(xd[0]), torch.corrcoef(xt[0]))
    close(dg.cov(dg.tensor([1, 2, 4])), torch.cov(torch.tensor([1, 2, 4])))


def test_histc():
    a = RNG.standard_normal(50).astype(np.float32)
    xd, xt = both(a, np.float32)
    close(xd.histc(), xt.histc())
    close(dg.histc(xd, bins=7, min=-1, max=1), torch.histc(xt, bins=7, min=-1, max=1))
    close(xd.double().histc(4, 0, 0.5), xt.double().histc(4, 0, 0.5))
    close(dg.histc(dg.ones(3), 3), torch.histc(torch.ones(3), 3))
    with pytest.raises(RuntimeError):
        dg.histc(xd, bins=0)


def test_argwhere_and_comparison_aliases():
    a = np.array([[0, 1.5, 0], [2, 0, -1]])
    xd, xt = both(a)
    close(xd.argwhere(), xt.argwhere())
    close(dg.argwhere(xd), torch.argwhere(xt))
    for n in ("greater", "greater_equal", "less", "less_equal"):
        close(getattr(xd, n)(0), getattr(xt, n)(0))
        close(getattr(dg, n)(xd, xd.flip(0)), getattr(torch, n)(xt, xt.flip(0)))


# ------------------------------------------------------------------ in-place forms
INPLACE = [
    ("eq_", (1.0,)), ("ne_", (1.0,)), ("lt_", (0.5,)), ("le_", (1.0,)), ("gt_", (0.5,)),
    ("ge_", (1.0,)), ("greater_", (0.0,)), ("greater_equal_", (0.0,)), ("less_", (0.0,)),
    ("less_equal_", (0.0,)), ("logical_and_", "other"), ("logical_or_", "other"),
    ("logical_xor_", "other"), ("logical_not_", ()), ("cos_", ()), ("sin_", ()), ("expm1_", ()),
    ("log1p_", ()), ("rsqrt_", ()), ("reciprocal_", ()), ("erf_", ()), ("cumsum_", (1,)),
    ("multiply_", (3.0,)), ("divide_", (4.0,)), ("remainder_", (0.7,)), ("floor_divide_", (0.3,)),
]


@pytest.mark.parametrize("name,args", INPLACE, ids=[n for n, _ in INPLACE])
def test_inplace_forms(name, args):
    a = np.array([[0.5, 1.0, 2.0], [0.0, 1.5, 3.0]], np.float32)
    xd, xt = both(a, np.float32)
    if args == "other":
        od, ot = both(a[::-1].copy(), np.float32)
        args_d, args_t = (od,), (ot,)
    else:
        args_d = args_t = args
    rd = getattr(xd, name)(*args_d)
    getattr(xt, name)(*args_t)
    assert rd is xd
    close(xd, xt)
    assert xd._version == xt._version == 1


@pytest.mark.parametrize("name", ["bitwise_and_", "bitwise_or_", "bitwise_xor_", "bitwise_not_"])
def test_inplace_bitwise(name):
    xd, xt = both([[5, 6, 7]], np.int64)
    args = () if name == "bitwise_not_" else (3,)
    getattr(xd, name)(*args)
    getattr(xt, name)(*args)
    close(xd, xt)
    assert xd._version == 1


def test_inplace_products_and_gradients():
    a = RNG.standard_normal((3, 3))
    for name, args in (("addmm_", (M, a)), ("addmv_", (M, a[0])), ("addr_", (a[0], a[1])),
                       ("addbmm_", (np.stack([M, a]), np.stack([a, M]))),
                       ("baddbmm_", None), ("cumsum_", None), ("index_reduce_", None)):
        if name == "baddbmm_":
            base, args = np.stack([a, M]), (np.stack([M, a]), np.stack([a, a]))
        elif name == "cumsum_":
            base, args = a, (0,)
        elif name == "index_reduce_":
            base, args = a, (0, np.array([0, 0, 2]), M, "amin")
        else:
            base = a[0] if name == "addmv_" else a
        res = []
        for m in (dg, torch):
            x = m.tensor(base, requires_grad=True)
            margs = [m.tensor(v) if isinstance(v, np.ndarray) and v.dtype != np.int64
                     else (m.tensor(v) if isinstance(v, np.ndarray) else v) for v in args]
            y = x * 1
            getattr(y, name)(*margs) if name not in ("addmm_", "addmv_", "addr_", "addbmm_", "baddbmm_") \
                else getattr(y, name)(*margs, beta=0.5, alpha=2)
            assert y._version == 1
            (y * y).sum().backward()
            res.append((y, x.grad))
        close(res[0], res[1])


def test_inplace_comparison_in_graph_has_zero_gradient():
    res = []
    for m in (dg, torch):
        x = m.tensor([0.5, 1.0, 2.0], requires_grad=True)
        y = x * 1
        y.gt_(0.7)
        assert y.grad_fn.name() == "GtBackward0" and y._version == 1
        (y * 3).sum().backward()
        res.append((y, x.grad))
    close(res[0], res[1])


def test_inplace_leaf_requiring_grad_refuses():
    x = dg.tensor([0.5, 1.0], requires_grad=True)
    with pytest.raises(RuntimeError):
        x.cos_()
    with pytest.raises(RuntimeError):
        x.eq_(1.0)


# ----------------------------------------------------------- random in-place fills
@pytest.mark.parametrize("name,args,check", [
    ("exponential_", (2.0,), lambda a: (a >= 0).all() and abs(a.mean() - 0.5) < 0.05),
    ("log_normal_", (0.0, 0.5), lambda a: (a > 0).all() and abs(np.log(a).mean()) < 0.05),
    ("cauchy_", (1.0, 0.5), lambda a: abs(np.median(a) - 1.0) < 0.05),
    ("geometric_", (0.25,), lambda a: (a >= 1).all() and (a == np.round(a)).all()
     and abs(a.mean() - 4) < 0.2),
])
def test_random_fills(name, args, check):
    dg.manual_seed(3)
    x = dg.empty(20000)
    assert getattr(x, name)(*args) is x
    assert x._version == 1
    a = x.numpy()
    assert check(a)
    dg.manual_seed(3)
    y = getattr(dg.empty(20000), name)(*args)
    assert np.array_equal(a, y.numpy())  # from distgrad's generator
    g = dg.Generator().manual_seed(5)
    z1 = getattr(dg.empty(5), name)(*args, generator=g)
    g.manual_seed(5)
    z2 = getattr(dg.empty(5), name)(*args, generator=g)
    assert np.array_equal(z1.numpy(), z2.numpy())
    assert x.dtype == dg.float32


def test_random_fill_errors():
    with pytest.raises(RuntimeError):
        dg.empty(3).exponential_(-1.0)
    with pytest.raises(RuntimeError):
        dg.empty(3).geometric_(1.5)
    with pytest.raises(RuntimeError):
        dg.zeros(3, dtype=dg.int64).exponential_()


def test_multinomial_and_bernoulli_methods():
    dg.manual_seed(0)
    p = dg.tensor([[0.2, 0.8, 0.0], [0.5, 0.0, 0.5]])
    s = p.multinomial(2)
    assert s.dtype == dg.int64 and tuple(s.shape) == (2, 2)
    assert set(s[0].tolist()) == {0, 1} and set(s[1].tolist()) == {0, 2}
    s = dg.tensor([0.0, 1.0, 0.0]).multinomial(5, replacement=True)
    assert s.tolist() == [1] * 5
    b = dg.tensor([0.0, 1.0, 1.0, 0.0]).bernoulli()
    assert b.tolist() == [0.0, 1.0, 1.0, 0.0] and b.dtype == dg.float32
    b = dg.zeros(1000).bernoulli(0.3)
    assert 0.2 < b.mean().item() < 0.4


# ------------------------------------------------------------------- queries
def test_tensor_queries():
    for dt, tdt in ((dg.float32, torch.float32), (dg.int64, torch.int64), (dg.uint8, torch.uint8),
                    (dg.bool, torch.bool), (dg.float16, torch.float16)):
        xd, xt = dg.zeros(2, 3, dtype=dt), torch.zeros(2, 3, dtype=tdt)
        assert xd.nbytes == xt.nbytes and xd.itemsize == xt.itemsize
        assert xd.is_signed() == xt.is_signed()
        assert xd.is_cpu is True and xd.get_device() == xt.get_device() == -1
    x = dg.arange(12.0).reshape(3, 4)
    assert x.is_same_size(dg.zeros(3, 4)) and not x.is_same_size(dg.zeros(4, 3))
    assert x.storage_offset() == 0
    v = x[1:, 2:]
    xt = torch.arange(12.0).reshape(3, 4)
    assert v.storage_offset() == xt[1:, 2:].storage_offset() == 6
    assert v.data_ptr() - x.data_ptr() == 6 * 4
    assert x.data_ptr() != 0 and x.data_ptr() == x.view(-1).data_ptr()
    assert x[2].storage_offset() == 8
    a, b = x.split(2, dim=1)
    assert (a.output_nr, b.output_nr) == (0, 0)
    for m in (dg, torch):
        class Two(m.autograd.Function):
            @staticmethod
            def forward(ctx, a):
                return a * 2, a * 3

            @staticmethod
            def backward(ctx, g1, g2):
                return g1 * 2 + g2 * 3

        p, q = Two.apply(m.tensor([1.0, 2.0], requires_grad=True))
        assert (p.output_nr, q.output_nr) == (0, 1)
    assert dg.is_conj(x) is False and x.is_neg() is False and x.is_conj() is False
    assert x.conj() is x and x.resolve_conj() is x


def test_H_requires_matrix():
    with pytest.raises(RuntimeError, match="2-D"):
        _ = dg.zeros(3).H
    x = dg.arange(6.0).reshape(2, 3)
    assert x.H.tolist() == x.t().tolist()
    assert x.reshape(1, 2, 3).mH.shape == (1, 3, 2)


def test_legacy_new():
    x = dg.zeros(2, dtype=dg.float64)
    t = torch.zeros(2, dtype=torch.float64)
    close(x.new([1, 2]), t.new([1, 2]))
    assert x.new(2, 3).shape == t.new(2, 3).shape and x.new(2, 3).dtype == dg.float64
    assert x.new().shape == t.new().shape
    assert x.new(dg.Size([4])).shape == (4,)
    other = dg.tensor([1.0, 2.0], dtype=dg.float64)
    assert x.new(other).tolist() == [1.0, 2.0]


def test_resize():
    x = dg.arange(6.0)
    t = torch.arange(6.0)
    assert x.resize_(2, 3) is x
    t.resize_(2, 3)
    close(x, t)
    assert x._version == 1
    x.resize_(4)
    t.resize_(4)
    close(x, t)  # shrinking keeps the leading values
    x.resize_(2, 4)
    assert x.shape == (2, 4) and x[0].tolist() == [0.0, 1.0, 2.0, 3.0] and x[1].tolist() == [0.0] * 4
    y = dg.zeros(1)
    y.resize_as_(dg.zeros(3, 2))
    assert y.shape == (3, 2)
    with pytest.raises(RuntimeError, match="require grad"):
        dg.zeros(2, requires_grad=True).resize_(3)


def test_inverse_hyperbolic_grad_fn_names_and_index_reduce_errors():
    x = dg.tensor([0.3], requires_grad=True)
    assert x.atanh().grad_fn.name() == "AtanhBackward0"
    with pytest.raises(RuntimeError):
        dg.zeros(3).index_reduce(0, dg.tensor([0]), dg.ones(1), "sum")
    with pytest.raises(RuntimeError, match="sum exactly"):
        dg.zeros(3).split_with_sizes([1, 1])
    with pytest.raises(RuntimeError, match="square"):
        dg.zeros(2, 3).matrix_power(2)


# ------------------------------------------------------------------ nn.Module
def _seq(m):
    with m.no_grad():
        s = m.nn.Sequential(m.nn.Linear(3, 4), m.nn.Tanh(), m.nn.Linear(4, 2))
        for i, p in enumerate(s.parameters()):
            p.copy_(m.tensor(np.linspace(-1, 1, p.numel()).reshape(tuple(p.shape)) * (i + 1),
                             dtype=m.float32))
    return s


def _linear(m):
    with m.no_grad():
        lin = m.nn.Linear(3, 2)
        lin.weight.copy_(m.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]]))
        lin.bias.copy_(m.tensor([0.1, -0.1]))
    return lin


def _np(gs):
    return [None if g is None else g.detach().numpy().copy() for g in gs]


def _run_hooks(m, build, x_requires_grad, replace):
    net = build(m)
    x = m.tensor(np.arange(6, dtype=np.float32).reshape(2, 3) / 5, requires_grad=x_requires_grad)
    rec = []

    def pre(mod, go):
        rec.append(("pre", type(mod).__name__, _np(go)))
        return (go[0] * 2,) if replace else None

    def full(mod, gi, go):
        rec.append(("full", type(mod).__name__, _np(gi), _np(go)))
        if replace and gi[0] is not None:
            return (gi[0] + 1,)
        return None

    handles = []
    for mod in net.modules():
        handles.append(mod.register_full_backward_pre_hook(pre))
        handles.append(mod.register_full_backward_hook(full))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = net(x)
        (y * m.arange(y.numel()).reshape(tuple(y.shape))).sum().backward()
    grads = _np([p.grad for p in net.parameters()] + [x.grad if x_requires_grad else None])
    for h in handles:
        h.remove()
    net(x).sum()  # hooks removed: no record
    return rec, grads, y.grad_fn.name()


@pytest.mark.parametrize("build", [_linear, _seq], ids=["linear", "sequential"])
@pytest.mark.parametrize("x_requires_grad", [True, False])
@pytest.mark.parametrize("replace", [False, True])
def test_full_backward_hooks_match_torch(build, x_requires_grad, replace):
    rd, gd, nd = _run_hooks(dg, build, x_requires_grad, replace)
    rt, gt, nt = _run_hooks(torch, build, x_requires_grad, replace)
    assert nd == nt == "BackwardHookFunctionBackward"
    assert [r[:2] for r in rd] == [r[:2] for r in rt]
    assert len(rd) == (2 if build is _linear else 8)
    for a, b in zip(rd, rt):
        for xa, xb in zip(a[2:], b[2:]):
            assert len(xa) == len(xb)
            for u, v in zip(xa, xb):
                assert (u is None) == (v is None)
                if u is not None:
                    np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
    for u, v in zip(gd, gt):
        assert (u is None) == (v is None)
        if u is not None:
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_full_backward_hook_grad_cam_style():
    net = _seq(dg)
    acts, grads = {}, {}
    net[0].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    net[0].register_full_backward_hook(lambda m, gi, go: grads.__setitem__("g", go[0]))
    x = dg.ones(1, 3, requires_grad=True)
    net(x)[0, 1].backward()
    assert grads["g"].shape == acts["a"].shape == (1, 4)
    w = net[2].weight.detach()[1] * (1 - net[1](acts["a"].detach()) ** 2)
    np.testing.assert_allclose(grads["g"].numpy(), w.numpy(), rtol=1e-6)


def test_full_backward_hook_wrong_count_errors():
    lin = _linear(dg)
    lin.register_full_backward_hook(lambda m, gi, go: (gi[0], gi[0]))
    with pytest.raises(RuntimeError, match="invalid number of grad_input"):
        lin(dg.ones(1, 3, requires_grad=True)).sum().backward()


def test_module_cuda_compile_share_memory_to_empty():
    lin = _linear(dg)
    assert lin.share_memory() is lin
    assert lin.compile() is None
    assert lin(dg.ones(1, 3)).shape == (1, 2)
    if not dg.cuda.is_available():
        with pytest.raises(RuntimeError) as e1:
            dg.zeros(1).cuda()
        with pytest.raises(type(e1.value)) as e2:
            lin.cuda()
        assert str(e2.value) == str(e1.value)
    w = lin.weight
    assert lin.to_empty(device="cpu") is lin
    assert lin.weight is w and lin.weight.shape == (2, 3) and lin.weight.dtype == dg.float32
    assert lin.weight.requires_grad


def test_get_buffer_and_set_submodule():
    for m in (dg, torch):
        net = m.nn.Sequential(m.nn.BatchNorm1d(3), m.nn.Sequential(m.nn.Linear(3, 3)))
        assert net.get_buffer("0.running_mean") is net[0].running_mean
        with pytest.raises(AttributeError, match="is not a buffer"):
            net.get_buffer("0.weight")
        with pytest.raises(AttributeError, match="has no attribute"):
            net.get_buffer("0.nothing")
        new = m.nn.ReLU()
        net.set_submodule("1.0", new)
        assert net[1][0] is new
        with pytest.raises(AttributeError):
            net.set_submodule("1.extra", m.nn.ReLU(), strict=True)
        net.set_submodule("1.extra", m.nn.Tanh())
        assert isinstance(net[1].extra, m.nn.Tanh)
        with pytest.raises(ValueError):
            net.set_submodule("", m.nn.ReLU())
        with pytest.raises(ValueError):
            net.set_submodule("1.0", 3)


def _extra(m):
    class WithExtra(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = m.nn.Linear(2, 2)
            self.note = {"steps": 3}

        def get_extra_state(self):
            return dict(self.note)

        def set_extra_state(self, state):
            self.note = state

    return WithExtra


def test_extra_state_matches_torch():
    keys = []
    for m in (dg, torch):
        net = m.nn.Sequential(_extra(m)())
        sd = net.state_dict()
        keys.append(list(sd))
        assert sd["0._extra_state"] == {"steps": 3}
        other = m.nn.Sequential(_extra(m)())
        sd["0._extra_state"] = {"steps": 9}
        other.load_state_dict(sd)
        assert other[0].note == {"steps": 9}
        del sd["0._extra_state"]
        with pytest.raises(RuntimeError, match="_extra_state"):
            other.load_state_dict(sd)
        assert other.load_state_dict(sd, strict=False).missing_keys == ["0._extra_state"]
        with pytest.raises(RuntimeError):
            m.nn.Linear(1, 1).get_extra_state()
    assert keys[0] == keys[1]


def test_state_dict_hooks():
    for m in (dg, torch):
        net = m.nn.Sequential(m.nn.Linear(2, 2))
        calls = []
        net[0].register_state_dict_pre_hook(
            lambda mod, prefix, keep_vars, calls=calls: calls.append(("pre", prefix)))

        def post(mod, sd, prefix, meta, calls=calls):
            calls.append(("post", prefix))
            sd[prefix + "tag"] = 1

        net[0].register_state_dict_post_hook(post)
        sd = net.state_dict()
        assert calls == [("pre", "0."), ("post", "0.")]
        assert sd["0.tag"] == 1

        def rename(mod, state, prefix, meta, strict, missing, unexpected, errors, calls=calls):
            calls.append(("load_pre", prefix))
            state.pop(prefix + "tag", None)
            if prefix + "w" in state:
                state[prefix + "weight"] = state.pop(prefix + "w")

        def drop_missing(mod, keys, calls=calls):
            calls.append(("load_post", list(keys.missing_keys)))
            keys.missing_keys.clear()

        fresh = m.nn.Sequential(m.nn.Linear(2, 2))
        fresh[0].register_load_state_dict_pre_hook(rename)
        fresh[0].register_load_state_dict_post_hook(drop_missing)
        sd2 = dict(sd)
        sd2["0.w"] = sd2.pop("0.weight")
        fresh.load_state_dict(sd2)
        assert "0.w" in sd2  # the caller's dict is not edited
        assert np.array_equal(fresh[0].weight.detach().numpy(), net[0].weight.detach().numpy())
        del sd2["0.bias"]
        res = fresh.load_state_dict(sd2)  # strict, but the post hook cleared the missing key
        assert res.missing_keys == []
        assert calls[-1] == ("load_post", ["0.bias"])
