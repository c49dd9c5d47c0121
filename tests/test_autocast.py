"""Autocast against PyTorch's CPU autocast: which ops run in low precision, which in
float32, and which keep their inputs' dtypes (for float16 and bfloat16 regions); the
values and gradients of small models; the weight-cast cache; backward inside a
region; GradScaler with float16 training; the trainer's run.precision."""
from __future__ import annotations

import numpy as np
import pytest

import distgrad as dg

torch = pytest.importorskip("torch")

LOW = [pytest.param("float16", id="fp16"),
       pytest.param("bfloat16", id="bf16",
                    marks=pytest.mark.skipif(not hasattr(dg, "bfloat16"), reason="needs ml_dtypes"))]

RNG = np.random.default_rng(0)


def _args(lib, shapes, dtype):
    return [lib.tensor(RNG.standard_normal(s)).to(getattr(lib, dtype)) for s in shapes]


OPS = {
    "linear": (lambda L, a, b, c: L.nn.functional.linear(a, b, c), [(3, 4), (5, 4), (5,)]),
    "matmul": (lambda L, a, b: a @ b, [(3, 4), (4, 5)]),
    "matmul_fn": (lambda L, a, b: L.matmul(a, b), [(2, 3, 4), (4, 5)]),
    "mm": (lambda L, a, b: L.mm(a, b), [(3, 4), (4, 5)]),
    "bmm": (lambda L, a, b: L.bmm(a, b), [(2, 3, 4), (2, 4, 5)]),
    "addmm": (lambda L, a, b, c: L.addmm(a, b, c), [(3, 5), (3, 4), (4, 5)]),
    "baddbmm": (lambda L, a, b, c: L.baddbmm(a, b, c), [(2, 3, 5), (2, 3, 4), (2, 4, 5)]),
    "einsum": (lambda L, a, b: L.einsum("ij,jk->ik", a, b), [(3, 4), (4, 5)]),
    "conv1d": (lambda L, a, b: L.nn.functional.conv1d(a, b), [(1, 2, 6), (3, 2, 2)]),
    "conv2d": (lambda L, a, b, c: L.nn.functional.conv2d(a, b, c, padding=1), [(1, 2, 5, 5), (3, 2, 3, 3), (3,)]),
    "conv_transpose2d": (lambda L, a, b: L.nn.functional.conv_transpose2d(a, b), [(1, 2, 3, 3), (2, 3, 2, 2)]),
    "sdpa": (lambda L, q, k, v: L.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
             [(1, 2, 3, 4)] * 3),
    "prelu": (lambda L, a, w: L.nn.functional.prelu(a, w), [(2, 3), (1,)]),
    "cross_entropy": (lambda L, a: L.nn.functional.cross_entropy(a, L.tensor([0, 2, 1])), [(3, 4)]),
    "mse_loss": (lambda L, a, b: L.nn.functional.mse_loss(a, b), [(3, 4), (3, 4)]),
    "l1_loss": (lambda L, a, b: L.nn.functional.l1_loss(a, b), [(3, 4), (3, 4)]),
    "bce_logits": (lambda L, a, b: L.nn.functional.binary_cross_entropy_with_logits(a, b.sigmoid()), [(3,), (3,)]),
    "kl_div": (lambda L, a, b: L.nn.functional.kl_div(a, b.softmax(-1), reduction="batchmean"), [(2, 3), (2, 3)]),
    "prod": (lambda L, a: a.prod(), [(4,)]),
    "cdist": (lambda L, a, b: L.cdist(a, b), [(3, 2), (4, 2)]),
    "softmax": (lambda L, a: a.softmax(-1), [(2, 3)]),
    "sum": (lambda L, a: a.sum(), [(2, 3)]),
    "relu_add": (lambda L, a, b: L.relu(a) + b, [(2, 3), (2, 3)]),
    "layer_norm": (lambda L, a: L.nn.functional.layer_norm(a, (3,)), [(2, 3)]),
    "gelu": (lambda L, a: L.nn.functional.gelu(a), [(2, 3)]),
    "cat": (lambda L, a, b: L.cat([a, b.to(L.float32)]), [(2,), (2,)]),
    "pad_reflect": (lambda L, a: L.nn.functional.pad(a, (1, 1), mode="reflect"), [(1, 2, 4)]),
    "pad_constant": (lambda L, a: L.nn.functional.pad(a, (1, 1)), [(1, 2, 4)]),
}


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("inputs", ["float32", "low", "float64"])
def test_output_dtypes_match_torch_cpu_autocast(low, name, inputs):
    fn, shapes = OPS[name]
    dtype = low if inputs == "low" else inputs
    seed = RNG.integers(1 << 30)
    got = {}
    for L in (dg, torch):
        np.random.seed(seed)
        args = [L.tensor(np.random.standard_normal(s)).to(getattr(L, dtype)) for s in shapes]
        with L.autocast("cpu", dtype=getattr(L, low)):
            try:
                out = fn(L, *args)
            except RuntimeError as e:   # PyTorch refuses some float16 kernels on the CPU
                if L is torch:
                    pytest.skip(f"torch: {e}")
                raise
        got[L.__name__] = str(out.dtype).split(".")[-1]
    assert got["distgrad"] == got["torch"], got


@pytest.mark.parametrize("low", LOW)
def test_mlp_and_cnn_values_and_gradients_match_torch(low):
    """A small CNN + MLP head trained for 3 steps under autocast: losses and float32
    parameters stay within low-precision rounding of PyTorch's."""
    def build(L):
        L.manual_seed(0)
        return L.nn.Sequential(L.nn.Conv2d(1, 4, 3, padding=1), L.nn.ReLU(), L.nn.Flatten(),
                               L.nn.Linear(4 * 6 * 6, 16), L.nn.GELU(), L.nn.LayerNorm(16), L.nn.Linear(16, 3))

    tm, dm = build(torch), build(dg)
    dm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    x = RNG.standard_normal((8, 1, 6, 6)).astype(np.float32)
    y = RNG.integers(0, 3, 8)
    runs = {}
    for L, m in ((torch, tm), (dg, dm)):
        opt = L.optim.SGD(m.parameters(), lr=0.1)
        losses = []
        for _ in range(3):
            with L.autocast("cpu", dtype=getattr(L, low)):
                out = m(L.tensor(x))
                loss = L.nn.functional.cross_entropy(out, L.tensor(y))
            assert str(out.dtype).endswith(low) and str(loss.dtype).endswith("float32")
            opt.zero_grad()
            loss.backward()
            assert all(str(p.grad.dtype).endswith("float32") for p in m.parameters())
            opt.step()
            losses.append(loss.item())
        runs[L.__name__] = (losses, {k: v.detach().numpy().copy() for k, v in m.state_dict().items()})
    tol = 2e-2 if low == "bfloat16" else 3e-3
    np.testing.assert_allclose(runs["distgrad"][0], runs["torch"][0], rtol=tol)
    for k, v in runs["torch"][1].items():
        np.testing.assert_allclose(runs["distgrad"][1][k], v, rtol=tol, atol=tol, err_msg=k)


def test_weights_are_cast_once_per_region_and_recast_after_an_update():
    from distgrad.amp import autocast_mode

    lin = dg.nn.Linear(4, 4)
    x = dg.randn(2, 4)
    with dg.autocast("cpu", dtype=dg.float16):
        a = lin(x)
        b = lin(x)
        first = autocast_mode._casts[id(lin.weight)][3]
        assert autocast_mode._casts[id(lin.weight)][3] is first     # b reused a's copy
        np.testing.assert_array_equal(a.detach().float().numpy(), b.detach().float().numpy())
        with dg.no_grad():
            lin.weight.mul_(2)          # a new version: the cached copy is stale
        c = lin(x)
        assert autocast_mode._casts[id(lin.weight)][3] is not first
        want = x.numpy() @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        np.testing.assert_allclose(c.detach().float().numpy(), want, rtol=1e-2, atol=1e-2)
    assert not autocast_mode._casts                   # cleared when the outermost region ends
    with dg.autocast("cpu", dtype=dg.float16, cache_enabled=False):
        lin(x)
        assert not autocast_mode._casts


def test_backward_inside_a_region_equals_backward_outside():
    lin = dg.nn.Linear(4, 3)
    x = dg.randn(5, 4, requires_grad=True)
    with dg.autocast("cpu", dtype=dg.float16):
        loss = lin(x).float().square().mean()
        g_inside = dg.autograd.grad(loss, [x, lin.weight], retain_graph=True)
    g_outside = dg.autograd.grad(loss, [x, lin.weight])
    for a, b in zip(g_inside, g_outside):
        assert a.dtype == b.dtype == dg.float32
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_float64_and_disabled_regions_are_untouched():
    a, b = dg.randn(3, 4, dtype=dg.float64), dg.randn(4, 2, dtype=dg.float64)
    with dg.autocast("cpu", dtype=dg.float16):
        assert (a @ b).dtype == dg.float64
        with dg.autocast("cpu", enabled=False):
            assert (a.float() @ b.float()).dtype == dg.float32
        assert (a.float() @ b.float()).dtype == dg.float16
    assert (a.float() @ b.float()).dtype == dg.float32


def test_custom_fwd_casts_inputs_and_runs_without_autocast():
    from distgrad.amp import custom_bwd, custom_fwd

    class Square(dg.autograd.Function):
        @staticmethod
        @custom_fwd(device_type="cpu", cast_inputs=dg.float32)
        def forward(ctx, x):
            ctx.save_for_backward(x)
            assert not dg.is_autocast_enabled("cpu")
            return x * x

        @staticmethod
        @custom_bwd(device_type="cpu")
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    x = dg.randn(3, requires_grad=True)
    with dg.autocast("cpu", dtype=dg.float16):
        y = Square.apply(x.half())
    assert y.dtype == dg.float32


def test_grad_scaler_with_float16_autocast_trains_as_torch():
    """GradScaler + float16 autocast on the CPU for a few steps, with a scale large
    enough to overflow at first: the same skipped steps and scales as PyTorch, and
    parameters within float16 rounding."""
    def build(L):
        L.manual_seed(0)
        return L.nn.Sequential(L.nn.Linear(6, 16), L.nn.Tanh(), L.nn.Linear(16, 2))

    tm, dm = build(torch), build(dg)
    dm.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    x = RNG.standard_normal((16, 6)).astype(np.float32) * 100
    y = RNG.standard_normal((16, 2)).astype(np.float32)
    trace = {}
    for L, m in ((torch, tm), (dg, dm)):
        opt = L.optim.Adam(m.parameters(), lr=1e-2)
        scaler = L.amp.GradScaler("cpu", init_scale=2.0 ** 24, growth_interval=2)
        scales = []
        for _ in range(6):
            opt.zero_grad()
            with L.autocast("cpu", dtype=L.float16):
                loss = L.nn.functional.mse_loss(m(L.tensor(x)), L.tensor(y))
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            L.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        trace[L.__name__] = (scales, [p.detach().numpy().copy() for p in m.parameters()])
    assert trace["distgrad"][0] == trace["torch"][0]
    assert trace["torch"][0][0] < 2.0 ** 24          # the first steps did overflow
    for a, b in zip(trace["distgrad"][1], trace["torch"][1]):
        np.testing.assert_allclose(a, b, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("low", LOW)
def test_checkpointed_blocks_recompute_under_their_forwards_autocast(reentrant, low):
    """Recomputation runs inside backward, where autocast is off; a checkpointed block
    is recomputed under the autocast state of its forward, so its gradients are
    bit-identical to the run without checkpointing."""
    from distgrad.utils.checkpoint import checkpoint

    dg.manual_seed(0)
    a, b = dg.nn.Linear(8, 16), dg.nn.Linear(16, 4)
    x = dg.randn(5, 8)
    grads = []
    for ckpt in (False, True):
        a.zero_grad()
        b.zero_grad()
        xx = x.clone().requires_grad_()
        with dg.autocast("cpu", dtype=getattr(dg, low)):
            block = (lambda t: dg.tanh(a(t)))
            h = checkpoint(block, xx, use_reentrant=reentrant) if ckpt else block(xx)
            y = b(h).float().sum()
        y.backward()
        assert h.dtype == getattr(dg, low)
        grads.append([a.weight.grad.numpy().copy(), b.weight.grad.numpy().copy(), xx.grad.numpy().copy()])
    for u, v in zip(*grads):
        np.testing.assert_array_equal(u, v)
