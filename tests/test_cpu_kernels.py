"""The CPU kernels: erf accurate to its dtype everywhere (tails, subnormals, inf, NaN),
and fused kernels (GELU, softmax, LayerNorm) that give the same values on any number of
threads and agree with PyTorch. Every test runs twice: with the numba-compiled bodies
and with the numpy bodies alone (what runs without numba, or with DISTGRAD_NUMBA=0)."""
import math

import numpy as np
import pytest

import distgrad as dg
import distgrad.nn.functional as F
from distgrad import _threads
from distgrad.ops import _jit_kernels, cpu_kernels


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def bodies(request, monkeypatch):
    """Which kernel bodies the test runs: numba's or numpy's."""
    if request.param == "compiled":
        if _jit_kernels.get() is None:
            pytest.skip("numba is not installed")
    else:
        monkeypatch.setattr(_jit_kernels, "_kernels", None)
        monkeypatch.setattr(_jit_kernels, "_failed", True)
    assert cpu_kernels.compiled() == (request.param == "compiled")
    return request.param

_erf_exact = np.vectorize(math.erf, otypes=[np.float64])


def wide_range(dtype):
    """Points from the subnormals to beyond where erf rounds to +-1, both signs."""
    tiny = np.finfo(dtype).smallest_subnormal
    pos = np.concatenate([np.geomspace(tiny, 1e-3, 400, dtype=np.float64),
                          np.linspace(0, 7, 20001), np.geomspace(7, float(np.finfo(dtype).max) / 2, 50)])
    pos = pos.astype(dtype)
    return np.concatenate([pos, -pos])


def ulp_error(got, x, dtype):
    ref = _erf_exact(x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / ulp


@pytest.mark.parametrize("dtype, max_ulp", [(np.float32, 3.0), (np.float64, 32.0)])
def test_erf_is_within_a_few_ulp_of_math_erf_everywhere(dtype, max_ulp):
    x = wide_range(dtype)
    got = dg.erf(dg.tensor(x)).numpy()
    assert got.dtype == dtype
    err = ulp_error(got, x, dtype)
    assert err.max() <= max_ulp, f"{err.max():.2f} ulp at x={x[np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_of_special_values(dtype):
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype)
    got = dg.erf(dg.tensor(x)).numpy()
    assert got[0] == 1.0 and got[1] == -1.0
    assert np.isnan(got[2])
    assert got[3] == 0.0 and not np.signbit(got[3])
    assert got[4] == 0.0 and np.signbit(got[4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_is_odd_and_monotone(dtype):
    x = np.linspace(0, 6, 200001).astype(dtype)
    y = dg.erf(dg.tensor(x)).numpy()
    np.testing.assert_array_equal(dg.erf(dg.tensor(-x)).numpy(), -y)
    assert (np.diff(y) >= 0).all()
    assert (y <= 1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_gradient_is_two_over_sqrt_pi_exp_minus_x_squared(dtype):
    x = dg.tensor(np.linspace(-5, 5, 1001).astype(dtype), requires_grad=True)
    dg.erf(x).sum().backward()
    xs = x.detach().numpy().astype(np.float64)
    expected = 2 / math.sqrt(math.pi) * np.exp(-xs * xs)
    # x * x rounded in the dtype moves exp(-x^2) by up to x^2 eps (relative)
    bound = 4 * np.finfo(dtype).eps * (1 + xs * xs) * expected
    assert (np.abs(x.grad.numpy() - expected) <= bound).all()


def test_erf_float64_gradcheck():
    x = dg.tensor(np.linspace(-3, 3, 13), requires_grad=True)
    assert dg.autograd.gradcheck(dg.erf, (x,))


def run_threaded_and_whole(monkeypatch, fn):
    """``fn()`` on one thread over whole arrays, then on two threads over small blocks."""
    monkeypatch.setattr(_threads, "_requested", 1)
    whole = fn()
    monkeypatch.setattr(_threads, "_requested", 2)
    monkeypatch.setattr(cpu_kernels, "_BLOCK", 1000)
    for name in ("_MIN_PARALLEL", "_MIN_PARALLEL_LN", "_MIN_PARALLEL_SOFTMAX_GRAD"):
        monkeypatch.setattr(cpu_kernels, name, 2000)
    return whole, fn()


KERNELS = {
    "erf": lambda x, g: (cpu_kernels.erf(x),),
    "gelu": lambda x, g: (cpu_kernels.gelu(x),),
    "gelu_grad": lambda x, g: (cpu_kernels.gelu_grad(x, g),),
    "softmax": lambda x, g: (cpu_kernels.softmax(x),),
    "softmax_grad": lambda x, g: (cpu_kernels.softmax_grad(cpu_kernels.softmax(x), g),),
    "layer_norm": lambda x, g: (cpu_kernels.layer_norm(x, 37, x[0, 0], x[1, 1], 1e-5),),
    "layer_norm_grad": lambda x, g: cpu_kernels.layer_norm_grad(x, g, 37, x[0, 0], 1e-5, True, True),
    "gelu_keep_cdf": lambda x, g: cpu_kernels.gelu(x, keep_cdf=True),
    "gelu_grad_cdf": lambda x, g: (cpu_kernels.gelu_grad(x, g, cpu_kernels.gelu(x, keep_cdf=True)[1]),),
    "scaled_softmax": lambda x, g: (cpu_kernels.softmax(x, 0.3),),
    "scaled_softmax_grad": lambda x, g: (cpu_kernels.softmax_grad(cpu_kernels.softmax(x), g, 0.3),),
    "causal_softmax": lambda x, g: (cpu_kernels.softmax(x, 0.3, _causal(211, 37, x.dtype)),),
}


def _causal(L, S, dtype):
    """PyTorch's is_causal mask as an additive bias: 0 where key j <= query i, else -inf."""
    return np.where(np.tril(np.ones((L, S), bool)), 0, -np.inf).astype(dtype)


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernels_give_the_same_bits_on_any_number_of_threads(monkeypatch, name):
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((2, 211, 37)).astype(np.float32) * 3, \
        rng.standard_normal((2, 211, 37)).astype(np.float32)
    whole, threaded = run_threaded_and_whole(monkeypatch, lambda: KERNELS[name](x, g))
    for a, b in zip(whole, threaded):
        assert a.shape == x.shape and a.dtype == x.dtype
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def large(shape, seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def grads_of(lib, fn, arrays, g):
    ts = [lib.tensor(a, requires_grad=True) for a in arrays]
    out = fn(lib, *ts)
    out.backward(lib.tensor(g))
    return [out.detach().numpy()] + [t.grad.numpy() for t in ts]


CASES = {
    "gelu": (lambda lib, x: lib.nn.functional.gelu(x), [(64, 128, 40)]),
    "softmax": (lambda lib, x: lib.softmax(x, -1), [(64, 4, 128, 128)]),
    "layer_norm": (lambda lib, x, w, b: lib.nn.functional.layer_norm(x, (128,), w, b),
                   [(16, 256, 128), (128,), (128,)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_large_float32_kernels_match_pytorch(torch, name):
    fn, shapes = CASES[name]
    arrays = [large(s, seed=i) for i, s in enumerate(shapes)]
    g = large(shapes[0], seed=9, scale=1.0)
    ours = grads_of(dg, fn, arrays, g)
    theirs = grads_of(torch, fn, arrays, g)
    for a, b in zip(ours, theirs):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * np.abs(b).max())


def test_gelu_float32_is_close_to_its_float64_value():
    x = large((300, 1000))
    ref = F.gelu(dg.tensor(x.astype(np.float64))).numpy()
    got = F.gelu(dg.tensor(x)).numpy()
    # x (1 + erf(x / sqrt 2)) / 2, as PyTorch computes it: 1 + erf rounds to float32
    # (the negative tail cancels), so the error is a few eps times |x|
    assert (np.abs(got - ref) <= 4 * np.finfo(np.float32).eps * np.abs(x)).all()


def softmax_reference(x, scale=1.0, bias=None):
    """softmax(x * scale + bias) over the last dim, in float64."""
    z = x.astype(np.float64) * scale
    if bias is not None:
        z = z + bias
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 3, 64, 64), (4, 9, 33), (1, 1, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_scaled_masked_softmax_matches_a_float64_reference(dtype, shape, causal):
    rng = np.random.default_rng(1)
    base = (rng.standard_normal(shape[:-2] + (shape[-1], shape[-2])) * 4).astype(dtype)
    x = np.swapaxes(base, -1, -2)  # not contiguous
    L, S = shape[-2:]
    bias = _causal(L, S, dtype) if causal else None
    y = cpu_kernels.softmax(x, 0.37, bias)
    ref = softmax_reference(x, np.float64(dtype(0.37)), bias)
    assert y.dtype == dtype and y.shape == x.shape
    tol = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    if causal:
        assert (y[..., np.triu(np.ones((L, S), bool), 1)] == 0).all()
    # the gradient of softmax(x * scale + bias): scale * y (g - sum(g y))
    g = np.swapaxes(rng.standard_normal(base.shape).astype(dtype), -1, -2)
    got = cpu_kernels.softmax_grad(y, g, 0.37)
    yd, gd = y.astype(np.float64), g.astype(np.float64)
    want = yd * (gd - (gd * yd).sum(axis=-1, keepdims=True)) * np.float64(dtype(0.37))
    np.testing.assert_allclose(got, want, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", [1, 7, 128, 4097])
def test_row_sums_are_accurate_and_the_same_for_any_block_of_rows(dtype, cols):
    rng = np.random.default_rng(2)
    a = (rng.standard_normal((300, cols)) * 3).astype(dtype)
    whole = cpu_kernels._row_sums(a)
    ref = a.astype(np.float64).sum(axis=1)
    eps = np.finfo(dtype).eps
    assert (np.abs(whole - ref) <= 4 * eps * np.sqrt(cols) * np.abs(a).sum(axis=1)).all()
    for block in (1, 13, 64):
        parts = np.concatenate([cpu_kernels._row_sums(a[i:i + block]) for i in range(0, 300, block)])
        np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B, H, L, S, D", [(2, 4, 16, 16, 8), (1, 2, 7, 11, 5), (3, 1, 64, 64, 32),
                                           # causal row blocks: several, a short last one, S != L
                                           (2, 2, 128, 128, 8), (1, 2, 200, 200, 4), (1, 1, 130, 170, 4),
                                           (1, 1, 192, 100, 4)])
def test_cpu_attention_matches_pytorch(torch, dtype, causal, B, H, L, S, D):
    """scaled_dot_product_attention's CPU path (the scale and the causal mask inside the
    softmax kernel): values and gradients against PyTorch, for q, k, v that are
    transposed views of one projection, as a model makes them."""
    rng = np.random.default_rng(3)
    proj_q = rng.standard_normal((B, L, H * D)).astype(dtype)
    proj_kv = rng.standard_normal((B, S, 2 * H * D)).astype(dtype)
    g = rng.standard_normal((B, H, L, D)).astype(dtype)

    def run(lib):
        pq = lib.tensor(proj_q, requires_grad=True)
        pkv = lib.tensor(proj_kv, requires_grad=True)
        q = pq.view(B, L, H, D).transpose(1, 2)
        k, v = (t.reshape(B, S, H, D).transpose(1, 2) for t in pkv.split(H * D, dim=2))
        out = lib.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out.backward(lib.tensor(g))
        return [out.detach().numpy(), pq.grad.numpy(), pkv.grad.numpy()]

    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(run(dg), run(torch)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("shape", [(5, 7), (64, 128, 40), (3, 1000)])
def test_gelu_keeping_the_cdf_gives_the_same_bits(shape):
    """The forward that keeps Phi(x) and the gradient made from it: the same values as
    the kernels that recompute the erf, bit for bit, on non-contiguous inputs too."""
    rng = np.random.default_rng(4)
    x = np.swapaxes((rng.standard_normal(shape[::-1]) * 4).astype(np.float32), 0, -1)
    g = rng.standard_normal(shape).astype(np.float32)
    y, cdf = cpu_kernels.gelu(x, keep_cdf=True)
    np.testing.assert_array_equal(y, cpu_kernels.gelu(x))
    ref = 0.5 * (1 + _erf_exact(x.astype(np.float64) / math.sqrt(2)))
    np.testing.assert_allclose(cdf, ref, rtol=0, atol=4 * np.finfo(np.float32).eps)
    np.testing.assert_array_equal(cpu_kernels.gelu_grad(x, g, cdf), cpu_kernels.gelu_grad(x, g))


def test_gelu_autograd_uses_the_kept_cdf_and_matches_float64():
    x = large((40, 300), seed=5)
    g = large((40, 300), seed=6, scale=1.0)
    t = dg.tensor(x, requires_grad=True)
    F.gelu(t).backward(dg.tensor(g))
    t64 = dg.tensor(x.astype(np.float64), requires_grad=True)
    F.gelu(t64).backward(dg.tensor(g.astype(np.float64)))
    np.testing.assert_allclose(t.grad.numpy(), t64.grad.numpy(), rtol=1e-5, atol=1e-6)
    with dg.no_grad():  # nothing kept: the plain kernel
        np.testing.assert_array_equal(F.gelu(dg.tensor(x)).numpy(), cpu_kernels.gelu(x))


@pytest.mark.parametrize("causal", [False, True])
def test_cpu_attention_first_and_second_derivatives_are_right(causal):
    """The CPU path's node (softmax with the scale and mask inside) against finite
    differences, once and twice differentiated, in float64."""
    rng = np.random.default_rng(7)
    q, k, v = (dg.tensor(rng.standard_normal((1, 2, 5, 3)), requires_grad=True) for _ in range(3))

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    assert dg.autograd.gradcheck(f, (q, k, v))
    assert dg.autograd.gradgradcheck(f, (q, k, v))


def test_cpu_attention_is_one_node_keeping_only_the_weights_each_row_may_see():
    """PyTorch's node; with the causal mask the kept weights leave out the keys past each
    row block (3/4 of L * S with two blocks), and its gradients are the same bits on any
    number of elementwise threads."""
    rng = np.random.default_rng(11)
    blk = cpu_kernels._CAUSAL_BLOCK
    B, H, L, D = 2, 3, 2 * blk, 8
    q, k, v = (dg.tensor(rng.standard_normal((B, H, L, D)).astype(np.float32), requires_grad=True)
               for _ in range(3))
    g = dg.tensor(rng.standard_normal((B, H, L, D)).astype(np.float32))
    grads = []
    for threads in (1, 2):
        cpu_kernels._default_threads = threads
        try:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            node = out.grad_fn
            assert node.name() == "ScaledDotProductFlashAttentionForCpuBackward0"
            assert [f[0].name() for f in node.next_functions] == ["AccumulateGrad"] * 3
            weights = node.saved_tensors[3]
            assert weights.numel() == B * H * (blk * blk + blk * 2 * blk)
            grads.append(dg.autograd.grad(out, (q, k, v), g))
        finally:
            cpu_kernels._default_threads = None
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # only the gradients asked for are made
    out = F.scaled_dot_product_attention(q, k.detach(), v.detach(), is_causal=True)
    (gq,) = dg.autograd.grad(out, (q,), g)
    np.testing.assert_array_equal(gq.numpy(), grads[0][0].numpy())
    # the output of (batch, heads) attention is laid out (batch, L, heads, D): back to the
    # model's (batch, L, heads * D) without a copy
    y = out.transpose(1, 2).reshape(B, L, H * D)
    assert np.shares_memory(y.detach().numpy(), out.detach().numpy())


@pytest.mark.parametrize("L, S", [(1, 1), (1, 5), (5, 1), (127, 127), (128, 128), (129, 129), (129, 64),
                                  (64, 129), (300, 257)])
@pytest.mark.parametrize("causal", [False, True])
def test_cpu_attention_matches_its_formula_at_block_edges(L, S, causal):
    """Against softmax(q k^T * scale + mask) v written as plain tensor ops (float64, no
    PyTorch needed), at the row-block edges: one row, one key, 64 rows a block, a block
    of one row, more keys than rows and fewer."""
    rng = np.random.default_rng(L * 1000 + S)
    B, H, D = 2, 2, 3
    arrays = [rng.standard_normal((B, H, n, D)) for n in (L, S, S)]
    g = dg.tensor(rng.standard_normal((B, H, L, D)))

    def run(fused):
        q, k, v = (dg.tensor(a, requires_grad=True) for a in arrays)
        if fused:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            assert out.grad_fn.name() == "ScaledDotProductFlashAttentionForCpuBackward0"
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
            if causal:
                mask = np.where(np.tril(np.ones((L, S), bool)), 0.0, -np.inf)
                scores = scores + dg.tensor(mask)
            out = dg.softmax(scores, -1) @ v
        return [out.detach().numpy()] + [t.numpy() for t in dg.autograd.grad(out, (q, k, v), g)]

    for a, b in zip(run(True), run(False)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _qkv_attention(x, lin, heads, contiguous):
    B, T, C = x.shape
    q, k, v = lin(x).split(C, dim=2)
    q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
    if contiguous:
        q, k, v = (t.contiguous() for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2).reshape(B, T, C)


def test_attention_on_a_fused_projection_gives_its_gradient_back_without_a_concatenation(monkeypatch):
    """q, k and v split from one projection's output: attention's gradients are the
    same views of one buffer, which the split's backward takes whole (no concatenation),
    with the same bits as the gradients of packed copies of q, k and v."""
    from distgrad.ops import shape

    rng = np.random.default_rng(2)
    B, T, C, H = 2, 16, 24, 3
    lin = dg.nn.Linear(C, 3 * C)
    xs = rng.standard_normal((B, T, C)).astype(np.float32)
    gs = rng.standard_normal((B, T, C)).astype(np.float32)
    taken = []
    real = shape._adjacent_pieces
    monkeypatch.setattr(shape, "_adjacent_pieces", lambda *a: taken.append(real(*a)) or taken[-1])
    grads = []
    for contiguous in (False, True):
        x = dg.tensor(xs, requires_grad=True)
        lin.zero_grad()
        _qkv_attention(x, lin, H, contiguous).backward(dg.tensor(gs))
        grads.append([x.grad.numpy(), lin.weight.grad.numpy().copy(), lin.bias.grad.numpy().copy()])
    assert len(taken) == 2 and taken[0] is not None and taken[1] is None   # packed copies: concatenated
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_adjacent_pieces_takes_only_consecutive_views_of_one_buffer():
    from distgrad.ops import shape

    buf = np.arange(2 * 4 * 9, dtype=np.float32).reshape(2, 4, 9)
    pieces = [buf[:, :, 0:3], buf[:, :, 3:5], buf[:, :, 5:9]]
    whole = shape._adjacent_pieces(pieces, 2, (2, 4, 9))
    np.testing.assert_array_equal(whole, buf)
    assert np.shares_memory(whole, buf) and not whole.flags.writeable
    other = np.arange(2 * 4 * 9, dtype=np.float32).reshape(2, 4, 9)
    for bad in ([pieces[1], pieces[0], pieces[2]],                      # out of order
                [buf[:, :, 0:3], buf[:, :, 4:6], buf[:, :, 6:9]],      # a gap
                [buf[:, :, 0:3], other[:, :, 3:5], buf[:, :, 5:9]],    # another buffer
                [buf[:, :, 0:3].copy(), buf[:, :, 3:5], buf[:, :, 5:9]]):
        assert shape._adjacent_pieces(bad, 2, (2, 4, 9)) is None
    # pieces that do not make up the shape are refused
    assert shape._adjacent_pieces([buf[:, :, 5:7], buf[:, :, 7:9]], 2, (2, 4, 6)) is None
    assert shape._adjacent_pieces([buf[:, :3, 0:3], buf[:, :3, 3:9]], 2, (2, 4, 9)) is None
