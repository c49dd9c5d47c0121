"""bfloat16 against PyTorch's CPU bfloat16: the op table's samples cast to bfloat16 (values
to a few bfloat16 ulps, dtypes exactly, first gradients), type promotion, reductions that
accumulate in float32, matrix products and convolutions, serialization, printing, finfo,
and a small MLP trained in bfloat16."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import distgrad as dg
from op_table import OPS

torch = pytest.importorskip("torch")

TOL = {"rtol": 2e-2, "atol": 2e-2}     # a few bfloat16 ulps (eps = 2**-7)
GRAD_TOL = {"rtol": 5e-2, "atol": 5e-2}

# PyTorch's own bfloat16 result is wrong here (so there is nothing to compare with).
TORCH_WRONG = {"matrix_exp"}
# A representative subset whose first gradients are compared with PyTorch's.
GRAD_OPS = set("""add sub mul div pow neg abs exp log sqrt rsqrt sin cos tanh sigmoid relu gelu silu
    softplus clamp maximum minimum where sum mean prod max min amax var std norm logsumexp softmax
    log_softmax cumsum matmul bmm mm addmm einsum linear conv1d conv2d layer_norm group_norm batch_norm
    cross_entropy mse_loss nll_loss cat stack gather index_select getitem erf log1p expm1
    reciprocal interpolate avg_pool2d max_pool2d embedding""".split())


def _tensors(obj):
    if isinstance(obj, dg.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _tensors(x)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in _tensors(x)]
    return []


def _substitute(obj, fn):
    if isinstance(obj, dg.Tensor):
        return fn(obj)
    if isinstance(obj, list):
        return [_substitute(x, fn) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_substitute(x, fn) for x in obj)
    if isinstance(obj, dict):
        return {k: _substitute(x, fn) for k, x in obj.items()}
    return obj


def _to_bf16(obj):
    """The sample with its float64 tensors rounded to bfloat16 (leaves, same requires_grad)."""
    return _substitute(obj, lambda t: t.detach().to(dg.bfloat16).requires_grad_(t.requires_grad)
                       if t.dtype == dg.float64 else t)


def _to_torch(obj):
    made = {}

    def conv(t):
        if t.dtype == dg.bfloat16:
            tt = torch.tensor(t.detach().float().numpy()).to(torch.bfloat16)
        else:
            tt = torch.tensor(np.asarray(t.detach().numpy()).copy())
        tt.requires_grad_(t.requires_grad)
        made[id(t)] = tt
        return tt

    return _substitute(obj, conv), made


def _outputs(out):
    return [out] if not isinstance(out, (tuple, list)) else list(out)


def _f64(t):
    """Values as float64 numpy (bfloat16 through float32, exactly)."""
    if isinstance(t, torch.Tensor):
        t = t.detach()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy().astype(np.float64)
    t = t.detach()
    return np.asarray((t.float() if t.dtype == dg.bfloat16 else t).numpy()).astype(np.float64)


def _name(dtype):
    return str(dtype).split(".")[-1]


def _cases():
    out = []
    for op in OPS:
        if op.name in TORCH_WRONG or op.xfail.get("torch") or op.xfail.get("all"):
            continue
        n = len(list(op.samples(np.random.default_rng(zlib.crc32(op.id.encode())))))
        out += [pytest.param(op, k, id=f"{op.id}-{k}") for k in range(n)]
    return out


def _run_both(op, k):
    args, kwargs = list(op.samples(np.random.default_rng(zlib.crc32(op.id.encode()))))[k]
    bargs, bkw = _to_bf16((args, kwargs))
    (targs, tkw), made = _to_torch((bargs, bkw))
    try:
        touts = _outputs(op.fn(torch, *targs, **tkw))
    except (RuntimeError, TypeError, NotImplementedError) as e:
        pytest.skip(f"PyTorch cannot run {op.id} in bfloat16 on the CPU: {str(e)[:80]}")
    outs = _outputs(op.fn(dg, *bargs, **bkw))
    return (bargs, bkw), made, outs, touts


@pytest.mark.parametrize("op,k", _cases())
def test_op_matches_torch_in_bf16(op, k):
    (bargs, bkw), made, outs, touts = _run_both(op, k)
    assert any(t.dtype == dg.bfloat16 for t in _tensors((bargs, bkw)))
    assert len(outs) == len(touts)
    for i, (o, to) in enumerate(zip(outs, touts)):
        assert _name(o.dtype) == _name(to.dtype), f"output {i}: dtype {o.dtype} vs {to.dtype}"
        assert tuple(o.shape) == tuple(to.shape), f"output {i}: shape"
        np.testing.assert_allclose(_f64(o), _f64(to), equal_nan=True, err_msg=f"output {i}", **TOL)
    if op.name not in GRAD_OPS or not op.torch_grad:
        return
    inputs = [t for t in _tensors((bargs, bkw)) if t.requires_grad]
    rng = np.random.default_rng(1)
    pairs = [(o, to, rng.standard_normal(tuple(o.shape))) for o, to in zip(outs, touts)
             if o.dtype.is_floating_point and o.requires_grad]
    if not pairs or not inputs:
        return
    tg = torch.autograd.grad([p[1] for p in pairs], [made[id(t)] for t in inputs],
                             [torch.tensor(c).to(to.dtype) for _, to, c in pairs], allow_unused=True)
    gg = dg.autograd.grad([p[0] for p in pairs], inputs,
                          [dg.tensor(c).to(o.dtype) for o, _, c in pairs], allow_unused=True)
    for i, (g, t_) in enumerate(zip(gg, tg)):
        assert (g is None) == (t_ is None), f"gradient {i}: None in one library only"
        if g is None:
            continue
        if inputs[i].dtype == dg.bfloat16 and t_.dtype == torch.bfloat16:
            assert g.dtype == dg.bfloat16, f"gradient {i}: dtype {g.dtype}"
        np.testing.assert_allclose(_f64(g), _f64(t_), equal_nan=True, err_msg=f"gradient {i}", **GRAD_TOL)


def test_the_table_runs_in_bf16():
    """Most of the table must take part (not skipped as unsupported by PyTorch)."""
    assert len(_cases()) > 500


# ------------------------------------------------------------------ the dtype itself
def test_dtype_properties():
    assert isinstance(dg.bfloat16, dg.dtype)
    d = dg.bfloat16
    assert repr(d) == "distgrad.bfloat16" and d.itemsize == 2
    assert d.is_floating_point and d.is_signed
    x = dg.tensor([1.0, 2.5], dtype=dg.bfloat16)
    assert x.dtype == dg.bfloat16 and x.is_floating_point()
    assert x.float().dtype == dg.float32 and x.float().bfloat16().dtype == dg.bfloat16
    assert dg.tensor([1.0]).to(dg.bfloat16).dtype == dg.bfloat16
    assert dg.tensor([1.0]).to("bfloat16").dtype == dg.bfloat16
    assert dg.zeros(2, dtype=dg.bfloat16).requires_grad_().requires_grad
    assert dg.tensor([1.0 + 2 ** -9], dtype=dg.bfloat16).item() == 1.0  # rounded to 8 bits


def test_finfo_matches_torch():
    f, t = dg.finfo(dg.bfloat16), torch.finfo(torch.bfloat16)
    for name in ("eps", "max", "min", "tiny", "smallest_normal", "resolution", "bits"):
        assert getattr(f, name) == getattr(t, name), name
    assert f.eps == 0.0078125 and f.bits == 16 and f.resolution == 0.01


NAMES = ["bfloat16", "float16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool"]


@pytest.mark.parametrize("other", NAMES)
@pytest.mark.parametrize("shapes", [((2,), (2,)), ((2,), ()), ((), (2,)), ((), ())], ids=str)
def test_promotion_matches_torch(other, shapes):
    (sa, sb) = shapes
    for a, b in (("bfloat16", other), (other, "bfloat16")):
        ta, tb = torch.ones(sa, dtype=getattr(torch, a)), torch.ones(sb, dtype=getattr(torch, b))
        da, db = dg.ones(*sa, dtype=getattr(dg, a)), dg.ones(*sb, dtype=getattr(dg, b))
        assert _name(dg.result_type(da, db)) == _name(torch.result_type(ta, tb)), (a, b)
        for fn in ("add", "mul", "maximum"):
            assert _name(getattr(dg, fn)(da, db).dtype) == _name(getattr(torch, fn)(ta, tb).dtype), (fn, a, b)
    assert _name(dg.promote_types(dg.bfloat16, getattr(dg, other))) == \
        _name(torch.promote_types(torch.bfloat16, getattr(torch, other)))


@pytest.mark.parametrize("scalar", [2, 2.5, True])
def test_scalar_promotion_matches_torch(scalar):
    x, t = dg.tensor([1.5, 3.0], dtype=dg.bfloat16), torch.tensor([1.5, 3.0], dtype=torch.bfloat16)
    for fn in (lambda a: a + scalar, lambda a: scalar * a, lambda a: a / scalar, lambda a: a ** 2):
        r, q = fn(x), fn(t)
        assert _name(r.dtype) == _name(q.dtype) == "bfloat16"
        np.testing.assert_array_equal(_f64(r), _f64(q))
    assert (dg.tensor([1, 2]) + dg.tensor(2.5, dtype=dg.bfloat16)).dtype == dg.bfloat16


# ---------------------------------------------------------- accumulation in float32
def test_sum_of_1000_ones_is_1000():
    x, t = dg.ones(1000, dtype=dg.bfloat16), torch.ones(1000, dtype=torch.bfloat16)
    assert np.asarray(x.numpy()).sum() != 1000  # numpy alone adds in bfloat16 (stops at 256)
    assert x.sum().item() == t.sum().item() == 1000.0
    assert x.sum().dtype == dg.bfloat16
    assert x.mean().item() == 1.0
    assert x.cumsum(0)[-1].item() == t.cumsum(0)[-1].item() == 1000.0
    assert x.reshape(10, 100).sum(1).tolist() == [100.0] * 10
    assert dg.ones(1000, dtype=dg.float32).sum(dtype=dg.bfloat16).item() == 1000.0


@pytest.mark.parametrize("fn", [
    lambda m, x: x.sum(), lambda m, x: x.mean(), lambda m, x: x.var(), lambda m, x: x.std(),
    lambda m, x: x.norm(), lambda m, x: x.logsumexp(0), lambda m, x: x.softmax(0)[:5],
    lambda m, x: x.log_softmax(0)[:5], lambda m, x: x.cumsum(0)[-5:], lambda m, x: x[:64].prod(),
    lambda m, x: m.nn.functional.layer_norm(x.reshape(4, -1), (x.numel() // 4,))[:, :3],
    lambda m, x: m.nn.functional.mse_loss(x, x * 0.5), lambda m, x: (x @ x),
    lambda m, x: m.einsum("i,i->", x, x),
], ids=["sum", "mean", "var", "std", "norm", "logsumexp", "softmax", "log_softmax", "cumsum", "prod",
        "layer_norm", "mse_loss", "matmul", "einsum"])
def test_reductions_accumulate_in_float32(request, fn):
    rng = np.random.default_rng(0)
    v = rng.uniform(0.5, 1.5, 4096).astype(np.float32)
    x, t = dg.tensor(v).bfloat16(), torch.tensor(v).bfloat16()
    r, q = fn(dg, x), fn(torch, t)
    assert r.dtype == dg.bfloat16 and q.dtype == torch.bfloat16
    exact = fn(torch, t.double())  # the bfloat16 inputs in float64, rounded once below
    np.testing.assert_allclose(_f64(r), exact.detach().numpy(), rtol=1e-2, atol=1e-2)
    if "prod" not in request.node.name:  # PyTorch's CPU prod multiplies in bfloat16 (5% off here)
        np.testing.assert_allclose(_f64(r), _f64(q), rtol=1e-2, atol=1e-2)


def test_matmul_linear_conv_outputs_are_bf16():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 64)).astype(np.float32)
    w = rng.standard_normal((5, 64)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    da, dw, db = (dg.tensor(v).bfloat16() for v in (a, w, b))
    ta, tw, tb = (torch.tensor(v).bfloat16() for v in (a, w, b))
    for r, q in ((da @ dw.T, ta @ tw.T), (dg.nn.functional.linear(da, dw, db), torch.nn.functional.linear(ta, tw, tb)),
                 (dg.mm(da, dw.T), torch.mm(ta, tw.T)), (dg.addmm(db, da, dw.T), torch.addmm(tb, ta, tw.T)),
                 (dg.bmm(da[None], dw.T[None]), torch.bmm(ta[None], tw.T[None])), (da[0] @ dw[0], ta[0] @ tw[0])):
        assert r.dtype == dg.bfloat16 and q.dtype == torch.bfloat16
        np.testing.assert_allclose(_f64(r), _f64(q), rtol=2e-2, atol=5e-2)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    k = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dx, dk = dg.tensor(x).bfloat16().requires_grad_(), dg.tensor(k).bfloat16().requires_grad_()
    tx, tk = torch.tensor(x).bfloat16().requires_grad_(), torch.tensor(k).bfloat16().requires_grad_()
    for r, q in ((dg.nn.functional.conv2d(dx, dk, padding=1), torch.nn.functional.conv2d(tx, tk, padding=1)),
                 (dg.nn.functional.conv_transpose2d(dx, dk.transpose(0, 1)),
                  torch.nn.functional.conv_transpose2d(tx, tk.transpose(0, 1)))):
        assert r.dtype == dg.bfloat16 and q.dtype == torch.bfloat16
        np.testing.assert_allclose(_f64(r), _f64(q), rtol=2e-2, atol=6e-2)
        r.sum().backward()
        q.sum().backward()
        assert dx.grad.dtype == dk.grad.dtype == dg.bfloat16
        np.testing.assert_allclose(_f64(dk.grad), _f64(tk.grad), rtol=2e-2, atol=0.3)
        dx.grad = dk.grad = tx.grad = tk.grad = None


# ------------------------------------------------------------------- serialization
def test_save_load_round_trip_with_torch(tmp_path):
    vals = [[1.1, -2.7, 3e30], [1e-3, 0.5, -65504.0]]
    x = dg.tensor(vals, dtype=dg.bfloat16)
    dg.save({"x": x, "row": x[1], "dtype": dg.bfloat16}, tmp_path / "a.pt")
    got = torch.load(tmp_path / "a.pt")
    assert got["x"].dtype == torch.bfloat16 and got["dtype"] is torch.bfloat16
    assert torch.equal(got["x"], torch.tensor(vals, dtype=torch.bfloat16))
    assert torch.equal(got["row"], torch.tensor(vals[1], dtype=torch.bfloat16))

    p = torch.nn.Parameter(torch.tensor([0.1, 0.2], dtype=torch.bfloat16))
    torch.save({"y": torch.tensor(vals, dtype=torch.bfloat16), "p": p}, tmp_path / "b.pt")
    back = dg.load(tmp_path / "b.pt")
    assert back["y"].dtype == dg.bfloat16 and back["p"].dtype == dg.bfloat16
    np.testing.assert_array_equal(_f64(back["y"]), _f64(torch.tensor(vals, dtype=torch.bfloat16)))
    assert back["p"].requires_grad

    torch.save({"y": torch.tensor(vals[0], dtype=torch.bfloat16)}, tmp_path / "c.pt",
               _use_new_zipfile_serialization=False)
    legacy = dg.load(tmp_path / "c.pt")
    np.testing.assert_array_equal(_f64(legacy["y"]), _f64(torch.tensor(vals[0], dtype=torch.bfloat16)))


def test_safetensors_checkpoint_reads_bf16():
    from safetensors.numpy import save as st_save
    from safetensors.torch import load as st_torch_load
    from safetensors.torch import save as st_torch_save

    from distgrad.train.checkpoint import _parse_tensors

    x = dg.tensor([1.5, -2.25, 3e30], dtype=dg.bfloat16)
    blob = st_save({"x": np.asarray(x.numpy())})
    assert st_torch_load(blob)["x"].dtype == torch.bfloat16   # written as "BF16"
    got = _parse_tensors("t.safetensors", blob)["x"]
    assert got.dtype == dg.bfloat16.np and got.tolist() == x.tolist()
    got = _parse_tensors("t.safetensors", st_torch_save({"x": torch.tensor([0.5, 7.0]).bfloat16()}))["x"]
    assert got.dtype == dg.bfloat16.np and got.tolist() == [0.5, 7.0]


# ------------------------------------------------------------------------ printing
@pytest.mark.parametrize("vals", [[1.1, -2.7, 3e30], [1.5, 2.25], [0.1, 0.2, 0.3], [1.0, 2.0],
                                  [float("nan"), float("inf"), 1.0], [1e-8, 1.0], 3.5,
                                  list(range(2000))], ids=str)
def test_printing_matches_torch(vals):
    ours = repr(dg.tensor(vals, dtype=dg.bfloat16))
    assert "dtype=distgrad.bfloat16" in ours
    assert ours.replace("distgrad.", "torch.") == repr(torch.tensor(vals, dtype=torch.bfloat16))


def test_grad_fn_printing():
    r = dg.tensor([1.5, 2.0], dtype=dg.bfloat16, requires_grad=True) * 2
    q = torch.tensor([1.5, 2.0], dtype=torch.bfloat16, requires_grad=True) * 2
    assert repr(r).replace("distgrad.", "torch.") == repr(q)


def test_cuda_bf16_support_flag():
    assert dg.cuda.is_bf16_supported() == (dg.cuda.is_available() and
                                           int(__import__("cupy").__version__.split(".")[0]) >= 14)


# ------------------------------------------------------------------------ training
def test_mlp_trains_in_bf16_like_torch():
    def build(m):
        m.manual_seed(0)
        net = m.nn.Sequential(m.nn.Linear(8, 16), m.nn.Tanh(), m.nn.Linear(16, 3))
        return net

    tnet = build(torch)
    dnet = build(dg)
    dnet.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tnet.state_dict().items()})
    tnet, dnet = tnet.bfloat16(), dnet.bfloat16()
    assert all(p.dtype == dg.bfloat16 for p in dnet.parameters())
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((16, 8)).astype(np.float32)
    ys = rng.integers(0, 3, 16)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.1)
    dopt = dg.optim.SGD(dnet.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        tl = torch.nn.functional.cross_entropy(tnet(torch.tensor(xs).bfloat16()), torch.tensor(ys))
        dl = dg.nn.functional.cross_entropy(dnet(dg.tensor(xs).bfloat16()), dg.tensor(ys))
        assert dl.dtype == dg.bfloat16 and tl.dtype == torch.bfloat16
        losses.append((dl.item(), tl.item()))
        topt.zero_grad()
        dopt.zero_grad()
        tl.backward()
        dl.backward()
        topt.step()
        dopt.step()
    for d, t in losses:
        assert abs(d - t) < 3e-2 * max(1.0, abs(t))
    assert losses[-1][0] < losses[0][0]  # it learns
    for (k, p), (_, q) in zip(dnet.state_dict().items(), tnet.state_dict().items()):
        assert p.dtype == dg.bfloat16
        np.testing.assert_allclose(_f64(p), _f64(q), rtol=3e-2, atol=3e-2, err_msg=k)
