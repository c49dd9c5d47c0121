"""Gradient accumulation: M microbatches, each loss scaled by 1/M, accumulate into
``.grad`` the gradient of the whole batch — for an MLP and a small GPT-like model,
with and without gradient checkpointing."""
import numpy as np
import pytest

import distgrad as dg
import distgrad.nn.functional as F
from distgrad import nn
from distgrad.utils.checkpoint import checkpoint

TOL = {dg.float64: dict(rtol=1e-12, atol=1e-12), dg.float32: dict(rtol=1e-5, atol=1e-5)}


def arr(t):
    return t.detach().numpy()


# ---------------------------------------------------------------------- models
class MLP(nn.Module):
    def __init__(self, dtype, ckpt=False):
        super().__init__()
        self.ckpt = ckpt
        self.body = nn.Sequential(nn.Linear(6, 32, dtype=dtype), nn.Tanh(), nn.Linear(32, 32, dtype=dtype),
                                  nn.GELU())
        self.head = nn.Linear(32, 3, dtype=dtype)

    def forward(self, x):
        h = checkpoint(self.body, x, use_reentrant=False) if self.ckpt else self.body(x)
        return self.head(h)


class Block(nn.Module):
    def __init__(self, c, heads, dtype):
        super().__init__()
        self.ln1 = nn.LayerNorm(c, dtype=dtype)
        self.attn = nn.CausalSelfAttention(c, heads, dtype=dtype)
        self.ln2 = nn.LayerNorm(c, dtype=dtype)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c, dtype=dtype), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * c, c, dtype=dtype))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, dtype, ckpt=False, vocab=11, block_size=6, c=16, heads=2, layers=2):
        super().__init__()
        self.ckpt = ckpt
        self.tok = nn.Embedding(vocab, c, dtype=dtype)
        self.pos = nn.Embedding(block_size, c, dtype=dtype)
        self.blocks = nn.ModuleList([Block(c, heads, dtype) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(c, dtype=dtype)
        self.head = nn.Linear(c, vocab, bias=False, dtype=dtype)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(dg.arange(T))
        for b in self.blocks:
            x = checkpoint(b, x, use_reentrant=False) if self.ckpt else b(x)
        return self.head(self.ln_f(x))


def mlp_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def gpt_loss(model, batch):
    idx, tgt = batch
    logits = model(idx)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))


def mlp_data(dtype, n=24, seed=0):
    rng = np.random.default_rng(seed)
    return (dg.tensor(rng.standard_normal((n, 6)), dtype=dtype), dg.tensor(rng.integers(0, 3, n)))


def gpt_data(dtype, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return dg.tensor(rng.integers(0, 11, (n, 6))), dg.tensor(rng.integers(0, 11, (n, 6)))


def build(kind, dtype, ckpt, seed=0):
    dg.manual_seed(seed)
    return MLP(dtype, ckpt) if kind == "mlp" else TinyGPT(dtype, ckpt)


LOSS = {"mlp": mlp_loss, "gpt": gpt_loss}
DATA = {"mlp": mlp_data, "gpt": gpt_data}


def full_batch_grads(model, loss_fn, batch):
    model.zero_grad()
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.item(), {n: arr(p.grad).copy() for n, p in model.named_parameters()}


def accumulated_grads(model, loss_fn, batch, m):
    model.zero_grad()
    n = batch[0].shape[0]
    assert n % m == 0
    k = n // m
    total = 0.0
    for i in range(m):
        micro = tuple(t[i * k:(i + 1) * k] for t in batch)
        loss = loss_fn(model, micro) / m
        loss.backward()
        total += loss.item()
    return total, {n: arr(p.grad).copy() for n, p in model.named_parameters()}


def assert_grads_close(a, b, tol):
    assert list(a) == list(b) and a
    for k in a:
        np.testing.assert_allclose(a[k], b[k], err_msg=k, **tol)


# ------------------------------------------------------------------------ tests
@pytest.mark.parametrize("kind", ["mlp", "gpt"])
@pytest.mark.parametrize("dtype", [dg.float64, dg.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("ckpt", [False, True], ids=["plain", "ckpt"])
@pytest.mark.parametrize("m", [2, 4])
def test_microbatches_give_full_batch_gradient(kind, dtype, ckpt, m):
    batch = DATA[kind](dtype)
    ref_model = build(kind, dtype, ckpt=False)
    ref_loss, ref = full_batch_grads(ref_model, LOSS[kind], batch)
    model = build(kind, dtype, ckpt=ckpt)
    loss, got = accumulated_grads(model, LOSS[kind], batch, m)
    assert np.isclose(loss, ref_loss, **TOL[dtype])
    assert_grads_close(got, ref, TOL[dtype])
    # the gradients are not trivially zero: the check above could fail
    assert max(np.abs(g).max() for g in ref.values()) > 1e-3


@pytest.mark.parametrize("kind", ["mlp", "gpt"])
def test_checkpointing_does_not_change_accumulated_gradients_at_all(kind):
    batch = DATA[kind](dg.float32)
    _, plain = accumulated_grads(build(kind, dg.float32, ckpt=False), LOSS[kind], batch, 4)
    _, ck = accumulated_grads(build(kind, dg.float32, ckpt=True), LOSS[kind], batch, 4)
    for k in plain:
        assert np.array_equal(plain[k], ck[k]), k


def test_unequal_microbatches_weighted_by_size():
    batch = mlp_data(dg.float64, n=10)
    model = build("mlp", dg.float64, ckpt=False)
    _, ref = full_batch_grads(model, mlp_loss, batch)
    model.zero_grad()
    for lo, hi in ((0, 3), (3, 7), (7, 10)):
        micro = tuple(t[lo:hi] for t in batch)
        (mlp_loss(model, micro) * ((hi - lo) / 10)).backward()
    assert_grads_close({n: arr(p.grad) for n, p in model.named_parameters()}, ref, TOL[dg.float64])


def test_unscaled_microbatches_give_m_times_the_gradient():
    """Without the 1/M scale the accumulated gradient is M times too large (so the scale matters)."""
    batch = mlp_data(dg.float64)
    model = build("mlp", dg.float64, ckpt=False)
    _, ref = full_batch_grads(model, mlp_loss, batch)
    model.zero_grad()
    for i in range(3):
        mlp_loss(model, tuple(t[i * 8:(i + 1) * 8] for t in batch)).backward()
    for n, p in model.named_parameters():
        np.testing.assert_allclose(arr(p.grad), 3 * ref[n], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ckpt", [False, True])
def test_optimizer_step_after_accumulation_equals_full_batch_step(ckpt):
    batch = gpt_data(dg.float64)
    a, b = build("gpt", dg.float64, ckpt=False), build("gpt", dg.float64, ckpt=ckpt)
    oa = dg.optim.AdamW(a.parameters(), lr=1e-2)
    ob = dg.optim.AdamW(b.parameters(), lr=1e-2)
    for _ in range(2):
        full_batch_grads(a, gpt_loss, batch)
        oa.step()
        accumulated_grads(b, gpt_loss, batch, 4)
        ob.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(arr(p), arr(q), rtol=1e-10, atol=1e-10, err_msg=n)


def test_gpt_model_matches_torch_gradients():
    """The GPT-like model itself against PyTorch with the same weights (float64)."""
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    model = build("gpt", dg.float64, ckpt=False)
    idx, tgt = gpt_data(dg.float64)
    _, ours = full_batch_grads(model, gpt_loss, (idx, tgt))
    P = {n: torch.tensor(arr(p), requires_grad=True) for n, p in model.named_parameters()}

    def attn(x, pre):
        B, T, C = x.shape
        q, k, v = tf.linear(x, P[pre + "qkv.weight"], P[pre + "qkv.bias"]).split(C, dim=2)
        q, k, v = (t.view(B, T, 2, C // 2).transpose(1, 2) for t in (q, k, v))
        y = tf.scaled_dot_product_attention(q, k, v, is_causal=True)
        return tf.linear(y.transpose(1, 2).reshape(B, T, C), P[pre + "proj.weight"], P[pre + "proj.bias"])

    ti, tt = torch.tensor(idx.numpy()), torch.tensor(tgt.numpy())
    x = tf.embedding(ti, P["tok.weight"]) + tf.embedding(torch.arange(6), P["pos.weight"])
    for i in range(2):
        pre = f"blocks.{i}."
        ln = lambda h, name: tf.layer_norm(h, (16,), P[pre + name + ".weight"], P[pre + name + ".bias"])  # noqa
        x = x + attn(ln(x, "ln1"), pre + "attn.")
        h = tf.gelu(tf.linear(ln(x, "ln2"), P[pre + "mlp.0.weight"], P[pre + "mlp.0.bias"]), approximate="tanh")
        x = x + tf.linear(h, P[pre + "mlp.2.weight"], P[pre + "mlp.2.bias"])
    logits = tf.linear(tf.layer_norm(x, (16,), P["ln_f.weight"], P["ln_f.bias"]), P["head.weight"])
    tf.cross_entropy(logits.reshape(-1, 11), tt.reshape(-1)).backward()
    for n in ours:
        np.testing.assert_allclose(ours[n], P[n].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=n)
