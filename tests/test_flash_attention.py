"""Flash attention: the numpy reference of the tiled algorithm against the plain formula
(distgrad's own autograd in float64) on the CPU, there also run through the kernels'
strided index arithmetic on the views a GPT block makes; on a GPU, the kernels against
that reference, in place on those views, the autograd node against the math path, what
the node saves, double backward, the switches that route around it, and its memory."""
import numpy as np
import pytest

import distgrad as dg
from distgrad import backend
from distgrad.ops import cuda_kernels
from distgrad.ops import flash_attention as fa

HAS_CUDA = dg.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA (CuPy and an NVIDIA GPU)")
FLASH = "ScaledDotProductFlashAttentionBackward0"

# (N, L, S, D): one tile and several, lengths that are not multiples of the tile,
# L > S and L < S, head dims from 1 to the limit.
SHAPES = [(1, 1, 1, 1), (2, 7, 7, 4), (2, 32, 32, 16), (3, 45, 70, 7), (2, 70, 45, 9),
          (1, 33, 97, 64), (1, 65, 31, 128), (2, 100, 3, 2)]


def _plain(q, k, v, go, scale, causal):
    """Output, row logsumexp and gradients of sum(out * go) by the plain formula."""
    tq, tk, tv = (dg.tensor(a, requires_grad=True) for a in (q, k, v))
    out = dg.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal, scale=scale)
    (out * dg.tensor(go)).sum().backward()
    s = q @ k.transpose(0, 2, 1) * scale
    if causal:
        s = np.where(np.tril(np.ones(s.shape[1:], bool)), s, -np.inf)
    mx = s.max(-1, keepdims=True)
    lse = (mx + np.log(np.exp(s - mx).sum(-1, keepdims=True)))[..., 0]
    return out.detach().numpy(), lse, tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


def _inputs(shape, seed, dtype=np.float64):
    n, L, S, D = shape
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(dtype) for s in ((n, L, D), (n, S, D), (n, S, D), (n, L, D)))


# ------------------------------------------------------------ without a GPU
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tiled_reference_matches_the_plain_formula(shape, causal):
    q, k, v, go = _inputs(shape, sum(shape))
    scale = 1.3 / np.sqrt(shape[-1])
    out0, lse0, dq0, dk0, dv0 = _plain(q, k, v, go, scale, causal)
    out, lse = fa.reference_forward(q, k, v, scale, causal)
    np.testing.assert_allclose(out, out0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lse, lse0, rtol=1e-12, atol=1e-12)
    dq, dk, dv = fa.reference_backward(q, k, v, out, lse, go, scale, causal)
    for got, want in ((dq, dq0), (dk, dk0), (dv, dv0)):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)


def test_tiled_reference_in_float32_stays_close_and_keeps_the_dtype():
    q, k, v, go = _inputs((2, 50, 40, 24), 3)
    out0, lse0, *grads0 = _plain(q, k, v, go, 0.2, True)
    f32 = [a.astype(np.float32) for a in (q, k, v, go)]
    out, lse = fa.reference_forward(*f32[:3], 0.2, True)
    grads = fa.reference_backward(*f32[:3], out, lse, f32[3], 0.2, True)
    assert out.dtype == lse.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    np.testing.assert_allclose(out, out0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lse, lse0, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads0):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("L,S", [(1, 1), (31, 33), (64, 64), (100, 40), (40, 100), (97, 97)])
def test_causal_tile_bounds_visit_every_visible_pair_and_skip_only_hidden_tiles(L, S):
    """The loop bounds that the kernels share with the reference: the dq pass (query
    tiles over key tiles) and the dk/dv pass (key tiles over query tiles) each visit
    every pair (i, j <= i) once, and every tile they skip holds no visible pair."""
    seen_q = np.zeros((L, S), int)
    seen_k = np.zeros((L, S), int)
    for m0 in range(0, L, fa.BLOCK_M):
        for n0 in range(0, fa._key_end(m0, S, True), fa.BLOCK_N):
            seen_q[m0:m0 + fa.BLOCK_M, n0:n0 + fa.BLOCK_N] += 1
    for n0 in range(0, S, fa.BLOCK_N):
        for m0 in range(fa._query_begin(n0, True), L, fa.BLOCK_M):
            seen_k[m0:m0 + fa.BLOCK_M, n0:n0 + fa.BLOCK_N] += 1
    visible = np.tril(np.ones((L, S), bool))
    for seen in (seen_q, seen_k):
        assert seen.max() == 1
        assert (seen[visible] == 1).all()


def _heads(buf, lo, H, D):
    """Columns lo .. lo + H * D of a (B, T, W) array as (B, H, T, D): a view, as a GPT
    block makes q, k and v from its (B, T, 3C) projection."""
    B, T, _ = buf.shape
    return buf[:, :, lo:lo + H * D].reshape(B, T, H, D).transpose(0, 2, 1, 3)


def _gpt_views(B, H, L, S, D, seed, dtype=np.float64, xp=np):
    """q, k, v and the output's gradient as strided views: for L == S from one (B, T, 3C)
    buffer; else q from a (B, L, C + 5) one (an offset start), k and v from one
    (B, S, 2C); the gradient as the backward of ``transpose(1, 2)`` hands it over."""
    rng = np.random.default_rng(seed)
    C = H * D

    def buf(*shape):
        return xp.asarray(rng.standard_normal(shape).astype(dtype))

    if L == S:
        qkv = buf(B, L, 3 * C)
        q, k, v = (_heads(qkv, i * C, H, D) for i in range(3))
    else:
        kv = buf(B, S, 2 * C)
        q = _heads(buf(B, L, C + 5), 5, H, D)
        k, v = _heads(kv, 0, H, D), _heads(kv, C, H, D)
    return q, k, v, buf(B, L, H, D).transpose(0, 2, 1, 3)


def _bthd(a):
    """Whether a (B, H, L, D) array is laid out (B, L, H, D): its transpose(1, 2) is contiguous."""
    return a.transpose(0, 2, 1, 3).flags.c_contiguous


# (B, H, L, S, D): self- and cross-attention, lengths off the tile, head dims to the limit.
GPT_SHAPES = [(1, 1, 1, 1, 1), (2, 3, 7, 7, 4), (1, 3, 45, 70, 7), (2, 2, 70, 45, 9),
              (2, 2, 33, 33, 64), (1, 2, 65, 31, 128)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", GPT_SHAPES, ids=str)
def test_flash_functions_read_and_write_gpt_views_through_their_strides(shape, causal):
    """flash_forward and flash_backward on numpy arrays: the reference on rows gathered
    and scattered by the kernels' index arithmetic, from and into the layouts the GPU
    uses; against the plain formula on contiguous copies."""
    B, H, L, _, D = shape
    q, k, v, go = _gpt_views(*shape, seed=sum(shape))
    heads = [fa.as_heads(a) for a in (q, k, v, go)]
    assert all(h is a for h, a in zip(heads, (q, k, v, go)))   # read in place: no copies
    scale = 1.1 / np.sqrt(D)
    out, lse = fa.flash_forward(*heads[:3], scale, causal)
    assert out.shape == q.shape and _bthd(out) and lse.shape == (B * H, L)
    flat = [np.ascontiguousarray(a).reshape(B * H, -1, D) for a in (q, k, v, go)]
    out0, lse0, dq0, dk0, dv0 = _plain(*flat, scale, causal)
    np.testing.assert_allclose(out.reshape(B * H, L, D), out0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lse, lse0, rtol=1e-12, atol=1e-12)
    grads = fa.flash_backward(*heads[:3], out, lse, heads[3], scale, causal)
    for g, a, want in zip(grads, (q, k, v), (dq0, dk0, dv0)):
        assert g.shape == a.shape and _bthd(g)
        np.testing.assert_allclose(g.reshape(want.shape), want, rtol=1e-11, atol=1e-11)


def test_as_heads_copies_only_what_the_kernels_cannot_read():
    x = np.arange(2 * 3 * 5 * 4 * 6, dtype=np.float32).reshape(2, 3, 5, 4, 6)
    four = x[0].transpose(1, 0, 2, 3)                 # (H, B, L, D) seen as (B, H, L, D)
    assert fa.as_heads(four) is four
    three = x[0, 0]                                   # (N, L, D): one head per batch entry
    assert fa.as_heads(three).shape == (5, 1, 4, 6) and np.shares_memory(fa.as_heads(three), x)
    five = x[:, :, 1:3]                               # two lead dims that merge into one
    assert fa.as_heads(five).shape == (6, 2, 4, 6) and np.shares_memory(fa.as_heads(five), x)
    for bad in (x[0, :, :, :, ::2], x[0, :, ::-1], x[..., 0, :].transpose(0, 1, 3, 2)):
        h = fa.as_heads(bad)                          # strided or reversed: copied
        assert h.flags.c_contiguous and not np.shares_memory(h, x)
        np.testing.assert_array_equal(h.reshape(bad.shape), bad)
    merged_apart = x.transpose(1, 0, 2, 3, 4)         # (3, 2, ...) lead dims: no single stride
    h = fa.as_heads(merged_apart)
    assert h.shape == (6, 5, 4, 6) and not np.shares_memory(h, x)
    np.testing.assert_array_equal(h.reshape(merged_apart.shape), merged_apart)


@pytest.fixture
def flash_on_cpu(monkeypatch):
    """The flash node on the CPU: flash_forward and flash_backward run the numpy
    reference through the kernels' index arithmetic (the node's wiring and layouts are
    tested here; the kernels on a GPU)."""
    monkeypatch.setattr(fa, "applies", lambda q, k, v: True)


def _sdpa_and_grads(q, k, v, gy, causal, create_graph=False):
    out = dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out, dg.autograd.grad((out * gy).sum(), [q, k, v], create_graph=create_graph)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_node_wiring_matches_the_math_path(flash_on_cpu, monkeypatch, causal):
    rng = np.random.default_rng(2)
    q, k, v = (dg.tensor(rng.standard_normal(s), requires_grad=True)
               for s in ((2, 3, 37, 5), (2, 3, 50, 5), (2, 3, 50, 5)))
    gy = dg.tensor(rng.standard_normal((2, 3, 37, 5)))
    node = dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal).grad_fn
    assert node.name() == FLASH
    rows = (q.shape[0] * q.shape[1], q.shape[2])   # each query row's logsumexp
    assert [tuple(t.shape) for t in node.saved_tensors] == [q.shape, k.shape, v.shape, q.shape, rows]
    out, grads = _sdpa_and_grads(q, k, v, gy, causal)
    # create_graph: the node's tensor-op formulas, differentiated once more
    _, g1 = _sdpa_and_grads(q, k, v, gy, causal, create_graph=True)
    gg1 = dg.autograd.grad(sum((g * g).sum() for g in g1), [q, k, v])
    monkeypatch.setattr(fa, "applies", lambda q, k, v: False)
    out0, grads0 = _sdpa_and_grads(q, k, v, gy, causal)
    assert out0.grad_fn.name() != FLASH
    _, g0 = _sdpa_and_grads(q, k, v, gy, causal, create_graph=True)
    gg0 = dg.autograd.grad(sum((g * g).sum() for g in g0), [q, k, v])
    np.testing.assert_allclose(out.detach().numpy(), out0.detach().numpy(), rtol=1e-12, atol=1e-12)
    for a, b in zip(list(grads) + list(g1) + list(gg1), list(grads0) + list(g0) + list(gg0)):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-10)


def test_flash_node_gives_only_the_gradients_asked_for(flash_on_cpu):
    rng = np.random.default_rng(3)
    q = dg.tensor(rng.standard_normal((2, 9, 4)), requires_grad=True)
    k, v = (dg.tensor(rng.standard_normal((2, 11, 4))) for _ in range(2))
    out = dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.grad_fn.name() == FLASH
    out.sum().backward()
    assert q.grad is not None and q.grad.shape == q.shape and k.grad is None and v.grad is None


def _gpt_attention(qkv, B, T, H, D):
    """A GPT block's attention: q, k, v split from one projection, heads back side by side."""
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2))
    out = dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return q, k, v, out, out.transpose(1, 2).reshape(B, T, H * D)


def test_gpt_block_attention_on_the_flash_node_copies_nothing(flash_on_cpu, monkeypatch):
    B, T, H, D = 2, 37, 3, 8
    rng = np.random.default_rng(4)
    qkv = dg.tensor(rng.standard_normal((B, T, 3 * H * D)), requires_grad=True)
    gy = dg.tensor(rng.standard_normal((B, T, H * D)))
    q, k, v, out, y = _gpt_attention(qkv, B, T, H, D)
    assert out.grad_fn.name() == FLASH
    assert all(fa.as_heads(t._data) is t._data for t in (q, k, v))   # read in place
    # The output is laid out (B, T, H, D): the heads side by side are a view of it.
    assert y.grad_fn.name() == "ViewBackward0" and y.is_contiguous()
    assert y.data_ptr() == out.data_ptr()
    grads = {}
    for name, t in (("q", q), ("k", k), ("v", v)):
        t.register_hook(lambda g, name=name: grads.setdefault(name, g))
    (g1,) = dg.autograd.grad((y * gy).sum(), qkv)
    for g in grads.values():   # gradients laid out (B, T, H, D): transposed back, contiguous
        assert g.shape == (B, H, T, D) and g.transpose(1, 2).is_contiguous()
    monkeypatch.setattr(fa, "applies", lambda q, k, v: False)
    *_, out0, y0 = _gpt_attention(qkv, B, T, H, D)
    assert out0.grad_fn.name() != FLASH
    (g0,) = dg.autograd.grad((y0 * gy).sum(), qkv)
    np.testing.assert_allclose(y.detach().numpy(), y0.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g1.numpy(), g0.numpy(), rtol=1e-10, atol=1e-10)


def test_flash_does_not_apply_to_cpu_arrays():
    q = np.zeros((2, 4, 8), np.float32)
    assert not fa.applies(q, q, q)


def test_sdp_switches_follow_pytorch():
    cuda = dg.backends.cuda
    assert cuda.flash_sdp_enabled() and cuda.math_sdp_enabled()
    try:
        cuda.enable_flash_sdp(False)
        assert not cuda.flash_sdp_enabled()
        cuda.enable_math_sdp(False)
        assert not cuda.math_sdp_enabled()
    finally:
        cuda.enable_flash_sdp(True)
        cuda.enable_math_sdp(True)
    with cuda.sdp_kernel(enable_flash=False):
        assert not cuda.flash_sdp_enabled() and cuda.math_sdp_enabled()
    assert cuda.flash_sdp_enabled()
    with pytest.raises(TypeError, match="must be bool"):
        cuda.enable_flash_sdp(1)


def test_math_disabled_leaves_the_cpu_path_alone():
    q = dg.randn(2, 5, 4)
    want = dg.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    with dg.backends.cuda.sdp_kernel(enable_flash=False, enable_math=False):
        got = dg.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


# --------------------------------------------------------------- with a GPU
# Tolerances relative to the largest magnitude of the value compared: float32 sums in
# another order; float16 and bfloat16 round every input and output (10 and 7 bits).
TOL = {"float32": 2e-5, "float16": 4e-3, "bfloat16": 3e-2}
DTYPES = ["float32", "float16", pytest.param("bfloat16", marks=pytest.mark.skipif(
    not (HAS_CUDA and dg.cuda.is_bf16_supported()), reason="needs bfloat16 on the GPU (CuPy 14)"))]


def _close(got, want, tol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.isfinite(got).all()
    err = np.abs(got - want).max() if want.size else 0.0
    assert err <= tol * max(1.0, np.abs(want).max()), f"max error {err} over tolerance {tol}"


def _np_dtype(name):
    return getattr(dg, name).np


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernels_match_the_tiled_reference(shape, causal, dtype):
    cp = backend.cupy()
    arrays = _inputs(shape, sum(shape), _np_dtype(dtype))
    q, k, v, go = (fa.as_heads(cp.asarray(a)) for a in arrays)   # (N, 1, L, D)
    scale = 1.0 / np.sqrt(shape[-1])
    out, lse = fa.flash_forward(q, k, v, scale, causal)
    assert out.dtype == q.dtype and out.shape == q.shape and lse.dtype == np.float32
    out = out.reshape(arrays[0].shape)
    ref_out, ref_lse = fa.reference_forward(*arrays[:3], scale, causal)
    _close(out.get(), ref_out, TOL[dtype])
    _close(lse.get(), ref_lse, TOL["float32"] * 10)
    # Backward from the same (rounded) output and logsumexp on both sides.
    grads = fa.flash_backward(q, k, v, fa.as_heads(out), lse, go, scale, causal)
    ref = fa.reference_backward(*arrays[:3], out.get(), lse.get(), arrays[3], scale, causal)
    for got, want in zip(grads, ref):
        assert got.dtype == q.dtype
        _close(got.get().reshape(want.shape), want, TOL[dtype] * 2)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", GPT_SHAPES, ids=str)
def test_kernels_read_and_write_gpt_views_in_place(shape, causal, dtype):
    """The kernels on the strided views a GPT block makes, without copies, against the
    reference on contiguous copies; the output and gradients laid out (B, L, H, D)."""
    cp = backend.cupy()
    B, H, L, _, D = shape
    views = _gpt_views(*shape, seed=sum(shape), dtype=_np_dtype(dtype), xp=cp)
    heads = [fa.as_heads(a) for a in views]
    assert all(h is a for h, a in zip(heads, views))
    flat = [np.ascontiguousarray(a.get()).reshape(B * H, -1, D) for a in views]
    scale = 1.0 / np.sqrt(D)
    out, lse = fa.flash_forward(*heads[:3], scale, causal)
    assert out.shape == views[0].shape and _bthd(out) and lse.shape == (B * H, L)
    ref_out, ref_lse = fa.reference_forward(*flat[:3], scale, causal)
    out_flat = np.ascontiguousarray(out.get()).reshape(B * H, L, D)
    _close(out_flat, ref_out, TOL[dtype])
    _close(lse.get(), ref_lse, TOL["float32"] * 10)
    grads = fa.flash_backward(*heads[:3], out, lse, heads[3], scale, causal)
    ref = fa.reference_backward(*flat[:3], out_flat, lse.get(), flat[3], scale, causal)
    for got, a, want in zip(grads, views, ref):
        assert got.shape == a.shape and got.dtype == a.dtype and _bthd(got)
        _close(np.ascontiguousarray(got.get()).reshape(want.shape), want, TOL[dtype] * 2)


def _qkv(dtype, B=2, H=3, L=40, S=56, D=16, seed=0):
    rng = np.random.default_rng(seed)
    return [dg.tensor(rng.standard_normal((B, H, n, D)).astype(_np_dtype(dtype)), device="cuda",
                      requires_grad=True) for n in (L, S, S)]


def _run(q, k, v, causal, gy):
    out = dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    grads = dg.autograd.grad((out * gy).sum(), [q, k, v])
    return out, [out.detach().cpu().float().numpy()] + [g.cpu().float().numpy() for g in grads]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_flash_node_matches_the_math_path(dtype, causal):
    q, k, v = _qkv(dtype)
    gy = dg.randn(q.shape, device="cuda").to(q.dtype)
    out, flash = _run(q, k, v, causal, gy)
    assert out.grad_fn.name() == FLASH and out.dtype == q.dtype
    with dg.backends.cuda.sdp_kernel(enable_flash=False):
        out0, math_ = _run(q, k, v, causal, gy)
    assert out0.grad_fn.name() != FLASH
    # The math path rounds its (L, S) matrices to the dtype as well: twice the tolerance.
    for got, want in zip(flash, math_):
        _close(got, want, 2 * TOL[dtype])


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_flash_node_takes_strided_views_as_a_gpt_block_makes_them(dtype):
    rng = np.random.default_rng(1)
    B, T, H, D = 2, 37, 3, 8
    qkv = dg.tensor(rng.standard_normal((B, T, 3 * H * D)).astype(_np_dtype(dtype)), device="cuda",
                    requires_grad=True)
    gy = dg.tensor(rng.standard_normal((B, T, H * D)).astype(_np_dtype(dtype)), device="cuda")
    q, k, v, out, y = _gpt_attention(qkv, B, T, H, D)
    assert out.grad_fn.name() == FLASH
    assert all(fa.as_heads(t._data) is t._data for t in (q, k, v))   # read in place
    assert y.grad_fn.name() == "ViewBackward0" and y.is_contiguous()
    assert y.data_ptr() == out.data_ptr()
    grads = []
    for t in (q, k, v):
        t.register_hook(grads.append)
    (g1,) = dg.autograd.grad((y * gy).sum(), qkv)
    assert len(grads) == 3 and all(g.transpose(1, 2).is_contiguous() for g in grads)
    with dg.backends.cuda.sdp_kernel(enable_flash=False):
        *_, out0, y0 = _gpt_attention(qkv, B, T, H, D)
        assert out0.grad_fn.name() != FLASH
        (g0,) = dg.autograd.grad((y0 * gy).sum(), qkv)
    _close(y.detach().cpu().float().numpy(), y0.detach().cpu().float().numpy(), 2 * TOL[dtype])
    _close(g1.cpu().float().numpy(), g0.cpu().float().numpy(), 2 * TOL[dtype])


@gpu
def test_flash_node_saves_no_attention_matrix():
    q, k, v = _qkv("float32", L=40, S=56)
    out = dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    node = out.grad_fn
    assert node.name() == FLASH
    saved = node.saved_tensors
    assert len(saved) == 5
    n, L, S = q.shape[0] * q.shape[1], q.shape[2], k.shape[2]
    for t in saved:
        assert t.numel() < n * L * S and tuple(t.shape[-2:]) != (L, S)
    assert tuple(saved[4].shape) == (n, L) and saved[4].dtype == dg.float32


@gpu
@pytest.mark.parametrize("causal", [False, True])
def test_double_backward_through_the_flash_node(causal):
    q, k, v = _qkv("float32", L=20, S=28, D=8)

    def gg():
        out = dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        (gq,) = dg.autograd.grad(out.sum(), q, create_graph=True)
        return [g.cpu().numpy() for g in dg.autograd.grad((gq * gq).sum(), [q, k, v])], out.grad_fn.name()

    got, name = gg()
    assert name == FLASH
    with dg.backends.cuda.sdp_kernel(enable_flash=False):
        want, name0 = gg()
    assert name0 != FLASH
    for a, b in zip(got, want):
        _close(a, b, 1e-4)


@gpu
def test_switches_route_to_the_old_path():
    q, k, v = _qkv("float32")

    def name():
        return dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).grad_fn.name()

    assert name() == FLASH
    dg.backends.cuda.enable_flash_sdp(False)
    try:
        assert name() == "ScaledDotProductAttentionBackward0"
    finally:
        dg.backends.cuda.enable_flash_sdp(True)
    cuda_kernels.enabled = False
    try:
        assert name() != FLASH
    finally:
        cuda_kernels.enabled = True
    assert name() == FLASH
    # Cases flash does not take go to the old path; with math off as well they raise.
    mask = dg.ones(q.shape[-2], k.shape[-2], dtype=dg.bool, device="cuda")
    assert dg.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).grad_fn.name() != FLASH
    with dg.backends.cuda.sdp_kernel(enable_math=False):
        assert name() == FLASH
        with pytest.raises(RuntimeError, match="no available kernel"):
            dg.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    big = _qkv("float32", D=160)
    assert dg.nn.functional.scaled_dot_product_attention(*big).grad_fn.name() != FLASH


@gpu
def test_flash_memory_stays_far_below_the_attention_matrix():
    cp = backend.cupy()
    pool = cp.get_default_memory_pool()
    B, H, L, D = 2, 4, 1024, 16
    attn_bytes = B * H * L * L * 4

    def growth():
        q, k, v = _qkv("float32", B=B, H=H, L=L, S=L, D=D)
        gy = dg.randn(q.shape, device="cuda")
        cp.cuda.Device().synchronize()
        pool.free_all_blocks()
        before = pool.total_bytes()   # freed blocks stay in the pool: total is the high-water mark
        out = dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        dg.autograd.grad((out * gy).sum(), [q, k, v])
        cp.cuda.Device().synchronize()
        return pool.total_bytes() - before, out.grad_fn.name()

    flash, name = growth()
    assert name == FLASH
    with dg.backends.cuda.sdp_kernel(enable_flash=False):
        math_, _ = growth()
    assert math_ >= attn_bytes      # the measure sees the old path's matrix
    assert flash < attn_bytes / 4
