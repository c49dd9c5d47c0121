"""Every layer and functional against PyTorch with the same weights (float64: forward
values and the gradients of the input and the parameters), finite-difference checks
of the fused ops, and ``dg.nn.init``."""
import math

import numpy as np
import pytest

import distgrad as dg
import distgrad.nn.functional as F
from distgrad import nn

RTOL, ATOL = 1e-10, 1e-12


def arr(t):
    return t.detach().numpy()


def close(a, b, rtol=RTOL, atol=ATOL):
    a = a if isinstance(a, np.ndarray) else arr(a)
    b = b if isinstance(b, np.ndarray) else b.detach().numpy()
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def copy_params(dg_mod, t_mod, rng, randomize=True):
    """float64 everywhere; ``dg_mod``'s parameters (randomized) copied into ``t_mod``."""
    import torch

    dg_mod.double()
    t_mod.double()
    ours = dict(dg_mod.named_parameters())
    theirs = dict(t_mod.named_parameters())
    assert list(ours) == list(theirs)
    with dg.no_grad(), torch.no_grad():
        for n, p in ours.items():
            if randomize:
                p.copy_(dg.tensor(rng.standard_normal(tuple(p.shape))))
            theirs[n].copy_(torch.from_numpy(arr(p).copy()))
    return ours, theirs


def check_module(dg_mod, t_mod, x, rng, *, int_input=False, randomize=True, rtol=RTOL, atol=ATOL):
    """Same forward and same gradients (input and parameters) under a random upstream gradient."""
    import torch

    ours, theirs = copy_params(dg_mod, t_mod, rng, randomize)
    xd = dg.tensor(x, requires_grad=not int_input)
    xt = torch.tensor(x, requires_grad=not int_input)
    yd, yt = dg_mod(xd), t_mod(xt)
    close(yd, yt, rtol, atol)
    g = rng.standard_normal(tuple(yt.shape))
    yd.backward(dg.tensor(g))
    yt.backward(torch.tensor(g))
    if not int_input:
        close(xd.grad, xt.grad, rtol, atol)
    for n in ours:
        assert (ours[n].grad is None) == (theirs[n].grad is None), n
        if theirs[n].grad is not None:
            close(ours[n].grad, theirs[n].grad, rtol, atol)
    return xd, yd


def check_fn(dg_fn, t_fn, arrays, rng, grad=None, rtol=RTOL, atol=ATOL):
    """Apply a functional to the same inputs; ``grad`` lists the indices that require grad."""
    import torch

    grad = range(len(arrays)) if grad is None else grad
    dgi = [dg.tensor(a, requires_grad=(i in grad)) if isinstance(a, np.ndarray) else a
           for i, a in enumerate(arrays)]
    ti = [torch.tensor(a, requires_grad=(i in grad)) if isinstance(a, np.ndarray) else a
          for i, a in enumerate(arrays)]
    yd, yt = dg_fn(*dgi), t_fn(*ti)
    close(yd, yt, rtol, atol)
    g = rng.standard_normal(tuple(yt.shape))
    yd.backward(dg.tensor(g))
    yt.backward(torch.tensor(g))
    for i in grad:
        close(dgi[i].grad, ti[i].grad, rtol, atol)
    return yd


# ------------------------------------------------------------------------ Linear
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5)], ids=["1d", "2d", "3d"])
def test_linear(torch, rng, shape, bias):
    check_module(nn.Linear(5, 3, bias=bias), torch.nn.Linear(5, 3, bias=bias),
                 rng.standard_normal(shape), rng)


def test_linear_parameters_shapes():
    lin = nn.Linear(5, 3)
    assert tuple(lin.weight.shape) == (3, 5) and tuple(lin.bias.shape) == (3,)
    assert nn.Linear(5, 3, bias=False).bias is None


def test_linear_wrong_input_raises():
    with pytest.raises(RuntimeError, match="in_features"):
        nn.Linear(5, 3)(dg.randn(2, 4))


def test_functional_linear(torch, rng):
    check_fn(F.linear, torch.nn.functional.linear,
             [rng.standard_normal((2, 3, 4)), rng.standard_normal((6, 4)), rng.standard_normal(6)], rng)


# --------------------------------------------------------------------- Embedding
def test_embedding(torch, rng):
    idx = rng.integers(0, 10, size=(3, 7))
    check_module(nn.Embedding(10, 4), torch.nn.Embedding(10, 4), idx, rng, int_input=True)


def test_embedding_padding_idx_row_gets_zero_gradient(torch, rng):
    idx = np.array([[0, 2, 2, 5], [2, 9, 0, 2]])
    emb = nn.Embedding(10, 4, padding_idx=2)
    np.testing.assert_array_equal(arr(emb.weight)[2], np.zeros(4))  # initialized to zero
    check_module(emb, torch.nn.Embedding(10, 4, padding_idx=2), idx, rng, int_input=True)
    g = arr(emb.weight.grad)
    np.testing.assert_array_equal(g[2], np.zeros(4))
    assert np.abs(g[0]).sum() > 0 and np.abs(g[9]).sum() > 0
    np.testing.assert_array_equal(g[[1, 3, 4, 6, 7, 8]], np.zeros((6, 4)))  # unused rows


def test_embedding_negative_padding_idx(torch, rng):
    emb = nn.Embedding(6, 3, padding_idx=-1)
    assert emb.padding_idx == 5
    check_module(emb, torch.nn.Embedding(6, 3, padding_idx=-1), np.array([5, 1, 5, 0]), rng, int_input=True)
    np.testing.assert_array_equal(arr(emb.weight.grad)[5], np.zeros(3))


def test_embedding_rejects_float_and_out_of_range_indices():
    emb = nn.Embedding(4, 2)
    with pytest.raises(RuntimeError):
        emb(dg.tensor([1.0]))
    with pytest.raises(IndexError):
        emb(dg.tensor([4]))


def test_functional_embedding(torch, rng):
    idx = rng.integers(0, 6, size=(2, 5))
    check_fn(lambda w: F.embedding(dg.tensor(idx), w, padding_idx=3),
             lambda w: torch.nn.functional.embedding(torch.tensor(idx), w, padding_idx=3),
             [rng.standard_normal((6, 3))], rng)


# ------------------------------------------------------------------------- norms
@pytest.mark.parametrize("kw", [{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-3}],
                         ids=["affine", "no_affine", "no_bias", "eps"])
def test_layer_norm(torch, rng, kw):
    ln, tln = nn.LayerNorm(6, **kw), torch.nn.LayerNorm(6, **kw)
    if kw.get("elementwise_affine") is False:
        assert ln.weight is None and ln.bias is None and list(ln.parameters()) == []
    if kw.get("bias") is False:
        assert ln.bias is None and ln.weight is not None
    check_module(ln, tln, rng.standard_normal((3, 4, 6)) * 3 + 1, rng)


def test_layer_norm_multi_dim_shape(torch, rng):
    check_module(nn.LayerNorm((4, 6)), torch.nn.LayerNorm((4, 6)), rng.standard_normal((3, 4, 6)), rng)


def test_layer_norm_default_params():
    ln = nn.LayerNorm(3)
    np.testing.assert_array_equal(arr(ln.weight), np.ones(3))
    np.testing.assert_array_equal(arr(ln.bias), np.zeros(3))


@pytest.mark.parametrize("kw", [{}, {"eps": 1e-4}, {"elementwise_affine": False}],
                         ids=["default", "eps", "no_affine"])
def test_rms_norm(torch, rng, kw):
    check_module(nn.RMSNorm(5, **kw), torch.nn.RMSNorm(5, **kw), rng.standard_normal((2, 3, 5)), rng)


def test_functional_norms(torch, rng):
    tf = torch.nn.functional
    check_fn(lambda x, w, b: F.layer_norm(x, (4,), w, b, 1e-5),
             lambda x, w, b: tf.layer_norm(x, (4,), w, b, 1e-5),
             [rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal(4)], rng)
    check_fn(lambda x, w: F.rms_norm(x, (4,), w, 1e-6), lambda x, w: tf.rms_norm(x, (4,), w, 1e-6),
             [rng.standard_normal((3, 4)), rng.standard_normal(4)], rng)


# ----------------------------------------------------------------------- Dropout
def test_dropout_train_masks_and_scales():
    dg.manual_seed(0)
    p = 0.3
    d = nn.Dropout(p)
    x = dg.tensor(np.random.default_rng(0).uniform(1, 2, size=200_000), requires_grad=True)
    y = d(x)
    ya, xa = arr(y), arr(x)
    kept = ya != 0
    np.testing.assert_allclose(ya[kept], xa[kept] / (1 - p), rtol=1e-6)
    frac = 1 - kept.mean()
    assert abs(frac - p) < 0.01, frac
    y.sum().backward()
    g = arr(x.grad)
    np.testing.assert_allclose(g[kept], 1 / (1 - p), rtol=1e-6)
    np.testing.assert_array_equal(g[~kept], 0)
    # a new call draws a new mask
    assert not np.array_equal(arr(d(x)) != 0, kept)


def test_dropout_reproducible_with_seed():
    d = nn.Dropout(0.5)
    x = dg.ones(1000)
    dg.manual_seed(3)
    a = arr(d(x))
    dg.manual_seed(3)
    np.testing.assert_array_equal(arr(d(x)), a)


def test_dropout_eval_is_identity():
    d = nn.Dropout(0.5).eval()
    x = dg.randn(100, requires_grad=True)
    y = d(x)
    np.testing.assert_array_equal(arr(y), arr(x))
    y.sum().backward()
    np.testing.assert_array_equal(arr(x.grad), np.ones(100))
    np.testing.assert_array_equal(arr(F.dropout(x, 0.5, training=False)), arr(x))


def test_dropout_edge_probabilities():
    x = dg.randn(50)
    np.testing.assert_array_equal(arr(nn.Dropout(0.0)(x)), arr(x))
    np.testing.assert_array_equal(arr(nn.Dropout(1.0)(x)), np.zeros(50))
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


# ------------------------------------------------------------------- activations
_ACTS = {
    "relu": (lambda: nn.ReLU(), lambda t: t.nn.ReLU()),
    "gelu": (lambda: nn.GELU(), lambda t: t.nn.GELU()),
    "gelu_tanh": (lambda: nn.GELU(approximate="tanh"), lambda t: t.nn.GELU(approximate="tanh")),
    "tanh": (lambda: nn.Tanh(), lambda t: t.nn.Tanh()),
    "silu": (lambda: nn.SiLU(), lambda t: t.nn.SiLU()),
    "sigmoid": (lambda: nn.Sigmoid(), lambda t: t.nn.Sigmoid()),
    "softmax_last": (lambda: nn.Softmax(dim=-1), lambda t: t.nn.Softmax(dim=-1)),
    "softmax_1": (lambda: nn.Softmax(dim=1), lambda t: t.nn.Softmax(dim=1)),
    "identity": (lambda: nn.Identity(), lambda t: t.nn.Identity()),
}


@pytest.mark.parametrize("name", list(_ACTS))
def test_activation_modules(torch, rng, name):
    ours, theirs = _ACTS[name]
    x = rng.standard_normal((3, 4, 5)) * 3
    x[0, 0, :2] = [0.5, -0.5]
    check_module(ours(), theirs(torch), x, rng)


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_tanh", "tanh", "silu", "sigmoid", "softmax",
                                  "log_softmax"])
def test_activation_functionals(torch, rng, name):
    tf = torch.nn.functional
    pairs = {
        "relu": (F.relu, tf.relu),
        "gelu": (F.gelu, tf.gelu),
        "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: tf.gelu(x, approximate="tanh")),
        "tanh": (F.tanh, tf.tanh),
        "silu": (F.silu, tf.silu),
        "sigmoid": (F.sigmoid, tf.sigmoid),
        "softmax": (lambda x: F.softmax(x, dim=0), lambda x: tf.softmax(x, dim=0)),
        "log_softmax": (lambda x: F.log_softmax(x, dim=-1), lambda x: tf.log_softmax(x, dim=-1)),
    }
    a, b = pairs[name]
    check_fn(a, b, [rng.standard_normal((4, 6)) * 4], rng)


def test_softmax_is_stable_for_large_inputs():
    y = F.softmax(dg.tensor([1000.0, 1000.0, -1000.0], dtype=dg.float64), dim=0)
    np.testing.assert_allclose(arr(y), [0.5, 0.5, 0.0], atol=1e-15)


def test_identity_returns_its_input():
    x = dg.randn(3)
    assert nn.Identity(54, unused="x")(x) is x


# ------------------------------------------------------------ CausalSelfAttention
def _torch_causal_attention(torch, x, qkv_w, qkv_b, proj_w, proj_b, h):
    tf = torch.nn.functional
    B, T, C = x.shape
    q, k, v = tf.linear(x, qkv_w, qkv_b).split(C, dim=2)
    q = q.view(B, T, h, C // h).transpose(1, 2)
    k = k.view(B, T, h, C // h).transpose(1, 2)
    v = v.view(B, T, h, C // h).transpose(1, 2)
    y = tf.scaled_dot_product_attention(q, k, v, is_causal=True)
    return tf.linear(y.transpose(1, 2).reshape(B, T, C), proj_w, proj_b)


@pytest.mark.parametrize("bias", [True, False])
def test_causal_self_attention_matches_torch(torch, rng, bias):
    B, T, C, H = 2, 5, 8, 2
    attn = nn.CausalSelfAttention(C, H, bias=bias).double()
    params = {n: p for n, p in attn.named_parameters()}
    assert sorted(params) == sorted(["qkv.weight", "proj.weight"] + (["qkv.bias", "proj.bias"] if bias else []))
    with dg.no_grad():
        for p in params.values():
            p.copy_(dg.tensor(rng.standard_normal(tuple(p.shape)) * 0.5))
    tp = {n: torch.tensor(arr(p), requires_grad=True) for n, p in params.items()}
    x = rng.standard_normal((B, T, C))
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yd = attn(xd)
    yt = _torch_causal_attention(torch, xt, tp["qkv.weight"], tp.get("qkv.bias"), tp["proj.weight"],
                                 tp.get("proj.bias"), H)
    close(yd, yt)
    g = rng.standard_normal((B, T, C))
    yd.backward(dg.tensor(g))
    yt.backward(torch.tensor(g))
    close(xd.grad, xt.grad)
    for n, p in params.items():
        close(p.grad, tp[n].grad)


def test_causal_self_attention_is_causal():
    dg.manual_seed(0)
    B, T, C = 2, 6, 8
    attn = nn.CausalSelfAttention(C, 4).double()
    x = np.random.default_rng(0).standard_normal((B, T, C))
    y1 = arr(attn(dg.tensor(x)))
    x2 = x.copy()
    x2[:, 4:] += 10.0  # change the last two tokens
    y2 = arr(attn(dg.tensor(x2)))
    np.testing.assert_array_equal(y1[:, :4], y2[:, :4])
    assert not np.allclose(y1[:, 4:], y2[:, 4:])
    # the gradient of an early output with respect to later inputs is zero
    xd = dg.tensor(x, requires_grad=True)
    attn(xd)[:, 2].sum().backward()
    g = arr(xd.grad)
    np.testing.assert_array_equal(g[:, 3:], 0)
    assert np.abs(g[:, :3]).min(axis=-1).max() > 0


def test_causal_self_attention_rejects_bad_heads():
    with pytest.raises(ValueError):
        nn.CausalSelfAttention(10, 3)


@pytest.mark.parametrize("causal", [True, False])
def test_scaled_dot_product_attention(torch, rng, causal):
    q, k, v = (rng.standard_normal((2, 3, 4, 5)) for _ in range(3))
    check_fn(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=causal),
             lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(a, b, c, is_causal=causal),
             [q, k, v], rng)


def test_scaled_dot_product_attention_masks(torch, rng):
    q, k, v = (rng.standard_normal((2, 4, 3)) for _ in range(3))
    bmask = rng.random((4, 4)) > 0.3
    np.fill_diagonal(bmask, True)
    fmask = rng.standard_normal((4, 4))
    tf = torch.nn.functional
    check_fn(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=dg.tensor(bmask)),
             lambda a, b, c: tf.scaled_dot_product_attention(a, b, c, attn_mask=torch.tensor(bmask)),
             [q, k, v], rng)
    check_fn(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=dg.tensor(fmask), scale=0.3),
             lambda a, b, c: tf.scaled_dot_product_attention(a, b, c, attn_mask=torch.tensor(fmask), scale=0.3),
             [q, k, v], rng)


# ------------------------------------------------------------------------ losses
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("variant", ["plain", "ignore_index", "label_smoothing", "weight",
                                     "weight_ignore_smooth"])
def test_cross_entropy_class_indices(torch, rng, reduction, variant):
    N, C = 7, 5
    x = rng.standard_normal((N, C)) * 2
    t = rng.integers(0, C, size=N)
    kw = {"reduction": reduction}
    w = rng.uniform(0.5, 2.0, size=C)
    if variant in ("ignore_index", "weight_ignore_smooth"):
        t[[1, 4]] = -100 if variant == "ignore_index" else 3
        if variant == "weight_ignore_smooth":
            kw["ignore_index"] = 3
    if variant in ("label_smoothing", "weight_ignore_smooth"):
        kw["label_smoothing"] = 0.2
    use_w = variant in ("weight", "weight_ignore_smooth")
    check_fn(lambda a: F.cross_entropy(a, dg.tensor(t), weight=dg.tensor(w) if use_w else None, **kw),
             lambda a: torch.nn.functional.cross_entropy(a, torch.tensor(t),
                                                         weight=torch.tensor(w) if use_w else None, **kw),
             [x], rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("rest", [(5,), (2, 5)], ids=["NCd", "NCd1d2"])
def test_cross_entropy_k_dim(torch, rng, reduction, smoothing, rest):
    x = rng.standard_normal((3, 4) + rest)  # (N, C, d1, ...)
    t = rng.integers(0, 4, size=(3,) + rest)
    t.reshape(-1)[4] = -100
    w = rng.uniform(0.5, 2.0, size=4)
    for weight in (None, w):
        check_fn(lambda a: F.cross_entropy(a, dg.tensor(t), None if weight is None else dg.tensor(weight),
                                           reduction=reduction, label_smoothing=smoothing),
                 lambda a: torch.nn.functional.cross_entropy(
                     a, torch.tensor(t), None if weight is None else torch.tensor(weight),
                     reduction=reduction, label_smoothing=smoothing),
                 [x], rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("variant", ["plain", "smoothing", "weight", "k_dim"])
def test_cross_entropy_probability_targets(torch, rng, reduction, variant):
    shape = (3, 4, 5) if variant == "k_dim" else (6, 4)
    x = rng.standard_normal(shape)
    p = rng.random(shape)
    p /= p.sum(1, keepdims=True)
    kw = {"reduction": reduction}
    if variant == "smoothing":
        kw["label_smoothing"] = 0.15
    w = rng.uniform(0.5, 2, size=4) if variant == "weight" else None
    check_fn(lambda a, b: F.cross_entropy(a, b, None if w is None else dg.tensor(w), **kw),
             lambda a, b: torch.nn.functional.cross_entropy(a, b, None if w is None else torch.tensor(w), **kw),
             [x, p], rng)


def test_cross_entropy_unbatched(torch, rng):
    x = rng.standard_normal(5)
    check_fn(lambda a: F.cross_entropy(a, dg.tensor(2)),
             lambda a: torch.nn.functional.cross_entropy(a, torch.tensor(2)), [x], rng)


def test_cross_entropy_module(torch, rng):
    x = rng.standard_normal((4, 3))
    t = np.array([0, 2, 1, 2])
    w = np.array([1.0, 2.0, 0.5])
    ours = nn.CrossEntropyLoss(weight=dg.tensor(w), label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(w), label_smoothing=0.1)
    check_fn(lambda a: ours(a, dg.tensor(t)), lambda a: theirs(a, torch.tensor(t)), [x], rng)


def test_cross_entropy_all_ignored_mean_is_nan(torch):
    x = dg.randn(2, 3, dtype=dg.float64)
    t = dg.tensor([-100, -100])
    expected = torch.nn.functional.cross_entropy(torch.randn(2, 3), torch.tensor([-100, -100]))
    assert math.isnan(expected.item())
    assert math.isnan(F.cross_entropy(x, t).item())


def test_cross_entropy_hand_computed():
    x = dg.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    loss = F.cross_entropy(x, dg.tensor([1]))
    np.testing.assert_allclose(loss.item(), -math.log(3 / 4), rtol=1e-6)
    loss.backward()
    np.testing.assert_allclose(arr(x.grad), [[0.25, -0.25]], rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(torch, rng, reduction):
    x = rng.standard_normal((6, 4))
    t = rng.integers(0, 4, size=6)
    t[2] = 1
    w = rng.uniform(0.5, 2, size=4)
    for kw in ({}, {"ignore_index": 1}, {"weight": w}, {"weight": w, "ignore_index": 1}):
        dkw = {k: dg.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        check_fn(lambda a: F.nll_loss(a, dg.tensor(t), reduction=reduction, **dkw),
                 lambda a: torch.nn.functional.nll_loss(a, torch.tensor(t), reduction=reduction, **tkw),
                 [x], rng)
    x3 = rng.standard_normal((2, 4, 3))
    t3 = rng.integers(0, 4, size=(2, 3))
    check_fn(lambda a: F.nll_loss(a, dg.tensor(t3), reduction=reduction),
             lambda a: torch.nn.functional.nll_loss(a, torch.tensor(t3), reduction=reduction), [x3], rng)


def test_nll_loss_rejects_bad_targets():
    x = dg.randn(2, 3)
    with pytest.raises(IndexError):
        F.nll_loss(x, dg.tensor([0, 3]))
    with pytest.raises(RuntimeError):
        F.nll_loss(x, dg.tensor([0.0, 1.0]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(torch, rng, reduction):
    check_fn(lambda a, b: F.mse_loss(a, b, reduction=reduction),
             lambda a, b: torch.nn.functional.mse_loss(a, b, reduction=reduction),
             [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))], rng)
    check_fn(lambda a, b: nn.MSELoss(reduction=reduction)(a, b),
             lambda a, b: torch.nn.MSELoss(reduction=reduction)(a, b),
             [rng.standard_normal(5), rng.standard_normal(5)], rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
def test_smooth_l1_loss(torch, rng, reduction, beta):
    # differences on both sides of beta, away from the kink where the gradient jumps
    a = rng.standard_normal((4, 5)) * 2
    b = a + rng.choice([-3.0, -0.1, 0.05, 2.5], size=(4, 5))
    check_fn(lambda x, y: F.smooth_l1_loss(x, y, reduction=reduction, beta=beta),
             lambda x, y: torch.nn.functional.smooth_l1_loss(x, y, reduction=reduction, beta=beta),
             [a, b], rng)
    check_fn(lambda x, y: nn.SmoothL1Loss(reduction=reduction, beta=beta)(x, y),
             lambda x, y: torch.nn.SmoothL1Loss(reduction=reduction, beta=beta)(x, y), [a, b], rng)


def test_smooth_l1_loss_rejects_negative_beta():
    with pytest.raises(ValueError, match="negative values for beta"):
        F.smooth_l1_loss(dg.randn(3), dg.randn(3), beta=-1.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("variant", ["plain", "pos_weight", "weight", "both"])
def test_bce_with_logits(torch, rng, reduction, variant):
    x = rng.standard_normal((5, 3)) * 4
    x[0, 0] = 60.0   # stable for large logits
    x[0, 1] = -60.0
    y = rng.random((5, 3))
    y[1] = (y[1] > 0.5)
    pw = rng.uniform(0.5, 3, size=3) if variant in ("pos_weight", "both") else None
    w = rng.uniform(0.5, 2, size=(5, 1)) if variant in ("weight", "both") else None

    def t_or_none(lib, a):
        return None if a is None else lib.tensor(a)

    check_fn(lambda a, b: F.binary_cross_entropy_with_logits(a, b, t_or_none(dg, w), reduction=reduction,
                                                             pos_weight=t_or_none(dg, pw)),
             lambda a, b: torch.nn.functional.binary_cross_entropy_with_logits(
                 a, b, t_or_none(torch, w), reduction=reduction, pos_weight=t_or_none(torch, pw)),
             [x, y], rng)
    check_fn(lambda a, b: nn.BCEWithLogitsLoss(t_or_none(dg, w), reduction, t_or_none(dg, pw))(a, b),
             lambda a, b: torch.nn.BCEWithLogitsLoss(t_or_none(torch, w), reduction=reduction,
                                                     pos_weight=t_or_none(torch, pw))(a, b),
             [x, y], rng)


def test_bce_with_logits_shape_mismatch_raises():
    with pytest.raises(ValueError):
        F.binary_cross_entropy_with_logits(dg.randn(3), dg.randn(4))


def test_loss_bad_reduction_raises():
    with pytest.raises(ValueError):
        F.mse_loss(dg.randn(3), dg.randn(3), reduction="avg")


# ------------------------------------------------------------ gradcheck (float64)
def _r(*shape, seed=0, requires_grad=True):
    return dg.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad)


def test_gradcheck_linear():
    assert dg.autograd.gradcheck(F.linear, (_r(3, 4), _r(2, 4, seed=1), _r(2, seed=2)))
    assert dg.autograd.gradcheck(F.linear, (_r(2, 2, 4), _r(3, 4, seed=1)))


def test_gradcheck_layer_norm():
    assert dg.autograd.gradcheck(lambda x, w, b: F.layer_norm(x, (4,), w, b),
                                 (_r(3, 4), _r(4, seed=1), _r(4, seed=2)))
    assert dg.autograd.gradcheck(lambda x: F.layer_norm(x, (2, 3)), (_r(2, 2, 3),))


def test_gradcheck_embedding_weight():
    idx = dg.tensor([[0, 2, 2], [3, 1, 0]])
    assert dg.autograd.gradcheck(lambda w: F.embedding(idx, w), (_r(4, 3),))


def test_gradcheck_cross_entropy():
    t = dg.tensor([0, 2, -100, 1])
    w = dg.tensor([0.5, 1.0, 2.0], dtype=dg.float64)
    assert dg.autograd.gradcheck(lambda x: F.cross_entropy(x, t, label_smoothing=0.1), (_r(4, 3),))
    assert dg.autograd.gradcheck(lambda x: F.cross_entropy(x, t, w, reduction="none"), (_r(4, 3),))
    p = dg.tensor(np.random.default_rng(5).dirichlet(np.ones(3), size=2))
    assert dg.autograd.gradcheck(lambda x: F.cross_entropy(x, p), (_r(2, 3),))


def test_gradcheck_scaled_dot_product_attention():
    assert dg.autograd.gradcheck(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        (_r(1, 2, 3, 2), _r(1, 2, 3, 2, seed=1), _r(1, 2, 3, 2, seed=2)))
    assert dg.autograd.gradcheck(F.scaled_dot_product_attention,
                                 (_r(3, 2), _r(4, 2, seed=1), _r(4, 3, seed=2)))


def test_gradgradcheck_linear():
    assert dg.autograd.gradgradcheck(F.linear, (_r(3, 4), _r(2, 4, seed=1), _r(2, seed=2)))


def test_gradgradcheck_layer_norm():
    assert dg.autograd.gradgradcheck(lambda x, w, b: F.layer_norm(x, (3,), w, b),
                                     (_r(2, 3), _r(3, seed=1), _r(3, seed=2)))


def test_gradgradcheck_cross_entropy():
    t = dg.tensor([0, 2, 1])
    assert dg.autograd.gradgradcheck(lambda x: F.cross_entropy(x, t, label_smoothing=0.1), (_r(3, 3),))


def test_gradcheck_detects_a_wrong_gradient():
    """The checks above can fail: a Function with a deliberately wrong backward is caught."""

    class Wrong(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(dg.autograd.GradcheckError):
        dg.autograd.gradcheck(Wrong.apply, (_r(3),))


# --------------------------------------------------------------------- nn.init
def test_linear_default_init_statistics():
    dg.manual_seed(0)
    fan_in = 400
    lin = nn.Linear(fan_in, 300)
    bound = 1 / math.sqrt(fan_in)
    w = arr(lin.weight)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.mean()) < 0.02 * bound
    np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.02)
    b = arr(lin.bias)
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound
    assert lin.weight.dtype == dg.float32


def test_embedding_default_init_is_standard_normal():
    dg.manual_seed(0)
    w = arr(nn.Embedding(1000, 100).weight)
    assert abs(w.mean()) < 0.01
    np.testing.assert_allclose(w.std(), 1.0, rtol=0.01)
    assert np.abs(w).max() > 3.5  # a normal's tails, not a uniform's


def test_init_is_reproducible_with_manual_seed():
    dg.manual_seed(7)
    a = arr(nn.Linear(4, 4).weight)
    dg.manual_seed(7)
    np.testing.assert_array_equal(arr(nn.Linear(4, 4).weight), a)


@pytest.mark.parametrize("args", [("linear",), ("conv2d",), ("sigmoid",), ("tanh",), ("relu",),
                                  ("leaky_relu",), ("leaky_relu", 0.2), ("selu",)])
def test_calculate_gain_matches_torch(torch, args):
    assert nn.init.calculate_gain(*args) == pytest.approx(torch.nn.init.calculate_gain(*args), rel=1e-15)


def test_calculate_gain_values_and_errors():
    assert nn.init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert nn.init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError):
        nn.init.calculate_gain("softsign_typo")


def _expected_bound(kind, shape, mode="fan_in", a=0.0, nonlinearity="leaky_relu", gain=1.0):
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    if kind.startswith("kaiming"):
        g = nn.init.calculate_gain(nonlinearity, a)
        std = g / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    else:
        std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return std * math.sqrt(3.0), std  # uniform bound, normal std


_INIT_CASES = [
    ("kaiming_uniform_", (300, 200), {}),
    ("kaiming_uniform_", (300, 200), {"a": math.sqrt(5)}),
    ("kaiming_uniform_", (200, 300), {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_uniform_", (64, 16, 3, 3), {"nonlinearity": "relu"}),
    ("kaiming_normal_", (300, 200), {"nonlinearity": "relu"}),
    ("kaiming_normal_", (200, 300), {"mode": "fan_out"}),
    ("xavier_uniform_", (300, 200), {}),
    ("xavier_uniform_", (64, 16, 3, 3), {"gain": 2.0}),
    ("xavier_normal_", (300, 200), {"gain": 0.5}),
]


@pytest.mark.parametrize("name,shape,kw", _INIT_CASES)
def test_init_bounds_and_std(name, shape, kw):
    dg.manual_seed(1)
    w = dg.empty(*shape)
    out = getattr(nn.init, name)(w, **kw)
    assert out is w
    v = arr(w)
    bound, std = _expected_bound(name, shape, **kw)
    if name.endswith("uniform_"):
        assert np.abs(v).max() <= bound * (1 + 1e-6) and np.abs(v).max() > 0.99 * bound
    np.testing.assert_allclose(v.std(), std, rtol=0.03)
    assert abs(v.mean()) < 0.03 * std


@pytest.mark.parametrize("name,shape,kw", _INIT_CASES)
def test_init_bounds_and_std_match_torch(torch, name, shape, kw):
    """The distribution's scale equals torch's: compare the empirical std and max of both."""
    torch.manual_seed(1)
    dg.manual_seed(1)
    t = getattr(torch.nn.init, name)(torch.empty(*shape, dtype=torch.float64), **kw).numpy()
    v = arr(getattr(nn.init, name)(dg.empty(*shape, dtype=dg.float64), **kw))
    np.testing.assert_allclose(v.std(), t.std(), rtol=0.05)
    if name.endswith("uniform_"):
        np.testing.assert_allclose(np.abs(v).max(), np.abs(t).max(), rtol=0.01)


def test_init_fan_requires_two_dims():
    with pytest.raises(ValueError):
        nn.init.xavier_uniform_(dg.empty(5))


def test_simple_inits():
    w = dg.empty(3, 3)
    nn.init.ones_(w)
    np.testing.assert_array_equal(arr(w), np.ones((3, 3)))
    nn.init.zeros_(w)
    np.testing.assert_array_equal(arr(w), np.zeros((3, 3)))
    nn.init.constant_(w, 0.5)
    np.testing.assert_array_equal(arr(w), np.full((3, 3), 0.5))
    nn.init.eye_(w)
    np.testing.assert_array_equal(arr(w), np.eye(3))
    dg.manual_seed(0)
    big = dg.empty(100_000)
    nn.init.uniform_(big, -2, 3)
    assert arr(big).min() >= -2 and arr(big).max() < 3
    np.testing.assert_allclose(arr(big).mean(), 0.5, atol=0.02)
    nn.init.normal_(big, 1.0, 2.0)
    np.testing.assert_allclose(arr(big).std(), 2.0, rtol=0.02)
    nn.init.trunc_normal_(big, 0.0, 1.0, -1.5, 1.5)
    assert arr(big).min() >= -1.5 and arr(big).max() <= 1.5


def test_init_on_parameter_keeps_it_a_leaf():
    lin = nn.Linear(3, 3)
    nn.init.xavier_uniform_(lin.weight)
    assert lin.weight.is_leaf and lin.weight.requires_grad and lin.weight.grad_fn is None


def test_embedding_max_norm_renormalizes_looked_up_rows():
    dg.manual_seed(0)
    emb = nn.Embedding(5, 4, max_norm=1.0)
    out = arr(emb(dg.tensor([0, 1, 2])))
    assert (np.linalg.norm(out, axis=1) <= 1.0 + 1e-6).all()
    assert (np.linalg.norm(arr(emb.weight)[:3], axis=1) <= 1.0 + 1e-6).all()  # in place, as torch


_F32_CASES = {
    "linear": lambda lib, F_: (lambda x: F_.linear(x, lib.ones(3, 6) * 0.1)),
    "layer_norm": lambda lib, F_: (lambda x: F_.layer_norm(x, (6,))),
    "rms_norm": lambda lib, F_: (lambda x: F_.rms_norm(x, (6,))),
    "gelu": lambda lib, F_: F_.gelu,
    "gelu_tanh": lambda lib, F_: (lambda x: F_.gelu(x, approximate="tanh")),
    "silu": lambda lib, F_: F_.silu,
    "softmax": lambda lib, F_: (lambda x: F_.softmax(x, dim=-1)),
    "log_softmax": lambda lib, F_: (lambda x: F_.log_softmax(x, dim=-1)),
    "cross_entropy": lambda lib, F_: (lambda x: F_.cross_entropy(x.reshape(-1, 6), lib.tensor([0, 5, 2, 1, 3, 4, 0, 1]),
                                                                 label_smoothing=0.1)),
    "bce": lambda lib, F_: (lambda x: F_.binary_cross_entropy_with_logits(x, x.detach() * 0 + 0.25)),
    "sdpa": lambda lib, F_: (lambda x: F_.scaled_dot_product_attention(x, x * 0.5, x, is_causal=True)),
}


@pytest.mark.parametrize("name", list(_F32_CASES))
def test_float32_keeps_dtype_and_matches_torch(torch, rng, name):
    """float32 in, float32 out and float32 gradients, equal to torch's to float32 precision."""
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    xd = dg.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    yd = _F32_CASES[name](dg, F)(xd)
    yt = _F32_CASES[name](torch, torch.nn.functional)(xt)
    assert yd.dtype == dg.float32
    np.testing.assert_allclose(arr(yd), yt.detach().numpy(), rtol=2e-5, atol=2e-6)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yd.backward(dg.tensor(g))
    yt.backward(torch.tensor(g))
    assert xd.grad.dtype == dg.float32
    np.testing.assert_allclose(arr(xd.grad), xt.grad.numpy(), rtol=2e-5, atol=2e-6)
