"""The wider torch.nn surface: more activations (logsigmoid ... rrelu, softmin,
Softmax2d), channel-wise and alpha dropout, the margin/embedding/NLL losses,
cosine_similarity and pairwise_distance, ParameterList/ParameterDict, LazyLinear,
Bilinear, InstanceNorm and LocalResponseNorm: values, first and second-order
gradients, grad_fn names, state_dict keys, reprs and errors against PyTorch."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import distgrad as dg
import distgrad.nn as dnn
import distgrad.nn.functional as DF
from distgrad.autograd import gradcheck, gradgradcheck

torch = pytest.importorskip("torch")
tnn = torch.nn
TF = torch.nn.functional

RNG = np.random.default_rng(0)


def pair(a, requires_grad=True):
    a = np.asarray(a)
    rg = requires_grad and a.dtype.kind == "f"
    return dg.tensor(a, requires_grad=rg), torch.tensor(a, requires_grad=rg)


def close(d, t, rtol=1e-7, atol=1e-10):
    dv = d.detach().numpy() if isinstance(d, dg.Tensor) else np.asarray(d)
    tv = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    assert dv.shape == tv.shape, (dv.shape, tv.shape)
    np.testing.assert_allclose(dv, tv, rtol=rtol, atol=atol)


def name(t):
    return type(t.grad_fn).__name__ if isinstance(t, dg.Tensor) else t.grad_fn.name()


def backward_both(yd, yt, seed=0):
    g = np.random.default_rng(seed).standard_normal(tuple(yt.shape))
    yd.backward(dg.tensor(g))
    yt.backward(torch.tensor(g))


def copy_params(dmod, tmod):
    sd = {k: dg.tensor(v.detach().numpy().copy()) for k, v in tmod.state_dict().items()}
    dmod.load_state_dict(sd)


# A float64 input away from the activations' kinks (|x| in [0.05, 4.5], none near
# +-0.5 or +-3), so finite differences see smooth functions.
def _smooth_input(shape, seed=1):
    r = np.random.default_rng(seed)
    mag = r.uniform(0.05, 4.5, shape)
    for k in (0.5, 3.0, 1.0):
        mag = np.where(np.abs(mag - k) < 0.06, mag + 0.15, mag)
    return mag * r.choice([-1.0, 1.0], shape)


X = _smooth_input((2, 4, 3, 6))
XS = _smooth_input((2, 4), seed=2)


# ------------------------------------------------------------------ activations
ACTS = {
    "logsigmoid": lambda m, x: m.nn.functional.logsigmoid(x),
    "softsign": lambda m, x: m.nn.functional.softsign(x),
    "tanhshrink": lambda m, x: m.nn.functional.tanhshrink(x),
    "softshrink": lambda m, x: m.nn.functional.softshrink(x),
    "softshrink_1": lambda m, x: m.nn.functional.softshrink(x, 1.0),
    "hardshrink": lambda m, x: m.nn.functional.hardshrink(x),
    "hardshrink_1": lambda m, x: m.nn.functional.hardshrink(x, 1.0),
    "hardswish": lambda m, x: m.nn.functional.hardswish(x),
    "hardsigmoid": lambda m, x: m.nn.functional.hardsigmoid(x),
    "mish": lambda m, x: m.nn.functional.mish(x),
    "selu": lambda m, x: m.nn.functional.selu(x),
    "celu": lambda m, x: m.nn.functional.celu(x),
    "celu_alpha": lambda m, x: m.nn.functional.celu(x, alpha=0.6),
    "glu": lambda m, x: m.nn.functional.glu(x),
    "glu_dim1": lambda m, x: m.nn.functional.glu(x[:, :2], 1),
    "threshold": lambda m, x: m.nn.functional.threshold(x, 0.1, 20.0),
    "rrelu_eval": lambda m, x: m.nn.functional.rrelu(x),
    "rrelu_eval_bounds": lambda m, x: m.nn.functional.rrelu(x, 0.1, 0.5),
    "softmin": lambda m, x: m.nn.functional.softmin(x, 1),
    "softmin_dtype": lambda m, x: m.nn.functional.softmin(x, -1, dtype=m.float64),
    "relu": lambda m, x: m.nn.functional.relu(x),
    "silu": lambda m, x: m.nn.functional.silu(x),
    "LogSigmoid": lambda m, x: m.nn.LogSigmoid()(x),
    "Softsign": lambda m, x: m.nn.Softsign()(x),
    "Tanhshrink": lambda m, x: m.nn.Tanhshrink()(x),
    "Softshrink": lambda m, x: m.nn.Softshrink(0.7)(x),
    "Hardshrink": lambda m, x: m.nn.Hardshrink(0.7)(x),
    "Hardswish": lambda m, x: m.nn.Hardswish()(x),
    "Hardsigmoid": lambda m, x: m.nn.Hardsigmoid()(x),
    "Mish": lambda m, x: m.nn.Mish()(x),
    "SELU": lambda m, x: m.nn.SELU()(x),
    "CELU": lambda m, x: m.nn.CELU(2.0)(x),
    "GLU": lambda m, x: m.nn.GLU(-1)(x),
    "Threshold": lambda m, x: m.nn.Threshold(-0.2, -5.0)(x),
    "RReLU_eval": lambda m, x: m.nn.RReLU().eval()(x),
    "Softmin": lambda m, x: m.nn.Softmin(dim=2)(x),
    "Softmax2d": lambda m, x: m.nn.Softmax2d()(x),
    "Softmax2d_3d": lambda m, x: m.nn.Softmax2d()(x[0]),
}


@pytest.mark.parametrize("key", list(ACTS))
def test_activation_values_grads_and_names(key):
    fn = ACTS[key]
    xd, xt = pair(X)
    yd, yt = fn(dg, xd), fn(torch, xt)
    close(yd, yt)
    assert name(yd) == name(yt)
    backward_both(yd, yt)
    # PyTorch's celu backward rounds 1/alpha to float32; distgrad's is exact
    close(xd.grad, xt.grad, rtol=1e-6 if key == "celu_alpha" else 1e-7)


@pytest.mark.parametrize("key", [k for k in ACTS if k not in ("relu", "silu")])
def test_activation_second_order(key):
    fn = ACTS[key]
    x = dg.tensor(X[:1, :2, :2, :4], requires_grad=True)
    assert gradcheck(lambda t: fn(dg, t), (x,))
    assert gradgradcheck(lambda t: fn(dg, t), (x,))


@pytest.mark.parametrize("key", ["logsigmoid", "mish", "selu", "celu", "hardswish", "softsign", "glu"])
def test_activation_double_backward_matches_torch(key):
    fn = ACTS[key]
    xd, xt = pair(XS)
    gd, = dg.autograd.grad(fn(dg, xd).sum(), xd, create_graph=True)
    gt, = torch.autograd.grad(fn(torch, xt).sum(), xt, create_graph=True)
    close(gd, gt)
    close(dg.autograd.grad((gd * gd).sum(), xd)[0], torch.autograd.grad((gt * gt).sum(), xt)[0])


def test_logsigmoid_is_stable_for_large_inputs():
    xd, xt = pair(np.array([-800.0, -30.0, 0.0, 30.0, 800.0]))
    yd, yt = DF.logsigmoid(xd), TF.logsigmoid(xt)
    close(yd, yt)
    backward_both(yd, yt)
    close(xd.grad, xt.grad)
    assert np.isfinite(yd.detach().numpy()).all()


INPLACE = {
    "relu": (lambda m, x: m.nn.functional.relu(x, inplace=True)),
    "relu_": (lambda m, x: m.nn.functional.relu_(x)),
    "selu": (lambda m, x: m.nn.functional.selu(x, inplace=True)),
    "selu_": (lambda m, x: m.nn.functional.selu_(x)),
    "celu": (lambda m, x: m.nn.functional.celu(x, 0.5, inplace=True)),
    "celu_": (lambda m, x: m.nn.functional.celu_(x, 0.5)),
    "threshold": (lambda m, x: m.nn.functional.threshold(x, 0.2, -1.0, inplace=True)),
    "threshold_": (lambda m, x: m.nn.functional.threshold_(x, 0.2, -1.0)),
    "hardswish": (lambda m, x: m.nn.functional.hardswish(x, inplace=True)),
    "hardsigmoid": (lambda m, x: m.nn.functional.hardsigmoid(x, inplace=True)),
    "mish": (lambda m, x: m.nn.functional.mish(x, inplace=True)),
    "silu": (lambda m, x: m.nn.functional.silu(x, inplace=True)),
    "rrelu_eval": (lambda m, x: m.nn.functional.rrelu_(x)),
    "SELU": (lambda m, x: m.nn.SELU(inplace=True)(x)),
    "Threshold": (lambda m, x: m.nn.Threshold(0.0, 3.0, True)(x)),
    "Hardswish": (lambda m, x: m.nn.Hardswish(True)(x)),
}


@pytest.mark.parametrize("key", list(INPLACE))
def test_inplace_forms(key):
    fn = INPLACE[key]
    xd, xt = pair(XS)
    hd, ht = xd * 1.0, xt * 1.0
    yd, yt = fn(dg, hd), fn(torch, ht)
    assert yd is hd and yt is ht
    close(hd, ht)
    backward_both(yd, yt)
    close(xd.grad, xt.grad)
    # without a graph the input's own storage is written
    with dg.no_grad():
        z = dg.tensor(XS)
        fn(dg, z)
    close(z, ht)


def test_inplace_on_leaf_requiring_grad_is_refused():
    x = dg.tensor(XS, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        DF.selu_(x)


@pytest.mark.parametrize("n", [1, 4])
def test_prelu_module(n):
    tm = tnn.PReLU(n, init=0.1).double()
    dm = dnn.PReLU(n, init=0.1).double()
    with torch.no_grad():
        tm.weight.copy_(torch.tensor(np.linspace(-0.5, 0.7, n)))
    copy_params(dm, tm)
    assert list(dm.state_dict()) == ["weight"]
    assert repr(dm) == repr(tm) == f"PReLU(num_parameters={n})"
    xd, xt = pair(X)
    yd, yt = dm(xd), tm(xt)
    close(yd, yt)
    assert name(yd) == name(yt) == "PreluKernelBackward0"
    backward_both(yd, yt)
    close(xd.grad, xt.grad)
    close(dm.weight.grad, tm.weight.grad)


def test_prelu_default_init_and_second_order():
    m = dnn.PReLU()
    assert m.weight.shape == (1,) and float(m.weight) == pytest.approx(0.25)
    x = dg.tensor(XS, requires_grad=True)
    w = dg.tensor([0.3, -0.2, 0.5, 0.1], dtype=dg.float64, requires_grad=True)
    x2 = dg.tensor(X[:, :3, 0, :4], requires_grad=True)
    w3 = dg.tensor([0.3, -0.2, 0.5], dtype=dg.float64, requires_grad=True)
    assert gradcheck(lambda a, b: DF.prelu(a, b), (x2, w3))
    assert gradgradcheck(lambda a, b: DF.prelu(a, b), (x2, w3))
    w1 = dg.tensor([0.3], dtype=dg.float64, requires_grad=True)
    assert gradgradcheck(lambda a, b: DF.prelu(a, b), (x, w1))
    # a 1-D input has one channel
    xd, xt = pair(XS[0])
    close(DF.prelu(xd, dg.tensor([0.2], dtype=dg.float64)),
          TF.prelu(xt, torch.tensor([0.2], dtype=torch.float64)))
    del w


def test_prelu_errors():
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers and input channel size"):
        DF.prelu(dg.randn(2, 3), dg.randn(2))
    with pytest.raises(RuntimeError, match="channel size = 3"):
        dnn.PReLU(4)(dg.randn(2, 3, 5))


def test_rrelu_training_draws_slopes_from_the_global_generator():
    x = dg.tensor(-np.abs(RNG.standard_normal((50, 40))) - 0.1, requires_grad=True)
    m = dnn.RReLU(0.1, 0.3)
    assert repr(m) == repr(tnn.RReLU(0.1, 0.3)) == "RReLU(lower=0.1, upper=0.3)"
    dg.manual_seed(3)
    y = m(x)
    slopes = (y / x).detach().numpy()
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3
    assert slopes.std() > 0.03  # random, not one slope
    assert abs(slopes.mean() - 0.2) < 0.01
    assert name(y) == "RreluWithNoiseBackward0"
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), slopes)
    dg.manual_seed(3)
    np.testing.assert_array_equal(m(x).detach().numpy(), y.detach().numpy())
    # positive inputs pass unchanged; eval uses the mean slope
    pos = dg.tensor(np.abs(RNG.standard_normal(10)) + 0.1)
    close(m(pos), pos)
    m.eval()
    close(m(x), x.detach() * 0.2)


def test_rrelu_bounds_error():
    with pytest.raises(RuntimeError, match="Lower bound should be less than or equal to the upper bound"):
        DF.rrelu(dg.randn(3), 0.5, 0.2, True)


def test_activation_reprs():
    pairs = [
        (dnn.LogSigmoid(), tnn.LogSigmoid()), (dnn.Softsign(), tnn.Softsign()),
        (dnn.Tanhshrink(), tnn.Tanhshrink()), (dnn.Softshrink(), tnn.Softshrink()),
        (dnn.Hardshrink(0.3), tnn.Hardshrink(0.3)), (dnn.Hardswish(True), tnn.Hardswish(True)),
        (dnn.Hardsigmoid(), tnn.Hardsigmoid()), (dnn.Mish(), tnn.Mish()), (dnn.SELU(), tnn.SELU()),
        (dnn.SELU(True), tnn.SELU(True)), (dnn.CELU(0.5, True), tnn.CELU(0.5, True)),
        (dnn.GLU(1), tnn.GLU(1)), (dnn.Threshold(0.1, 20, True), tnn.Threshold(0.1, 20, True)),
        (dnn.RReLU(), tnn.RReLU()), (dnn.Softmin(), tnn.Softmin()), (dnn.Softmin(1), tnn.Softmin(1)),
        (dnn.Softmax2d(), tnn.Softmax2d()), (dnn.PReLU(), tnn.PReLU()),
    ]
    for d, t in pairs:
        assert repr(d) == repr(t)


def test_activation_errors():
    with pytest.raises(RuntimeError, match="alpha cannot be 0 for CELU"):
        dnn.CELU(0.0)(dg.randn(3))
    with pytest.raises(RuntimeError, match="lambda must be greater or equal to 0"):
        DF.softshrink(dg.randn(3), -1.0)
    with pytest.raises(RuntimeError, match="Halving dimension must be even, but dimension 0 is size 3"):
        DF.glu(dg.randn(3))
    with pytest.raises(RuntimeError, match="glu does not support scalars"):
        DF.glu(dg.tensor(1.0))
    with pytest.raises(ValueError, match="Softmax2d: expected input to be 3D or 4D, got 2D instead"):
        dnn.Softmax2d()(dg.randn(3, 4))


def test_softmin_implicit_dim_warns_and_picks_pytorchs_dim():
    xd, xt = pair(XS)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmin"):
        yd = dnn.Softmin()(xd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yt = tnn.Softmin()(xt)
    close(yd, yt)


# ------------------------------------------------------------------ dropout
@pytest.mark.parametrize("cls,shape,chan", [
    ("Dropout1d", (6, 40, 7), 2), ("Dropout1d", (40, 7), 1),
    ("Dropout2d", (6, 40, 3, 4), 2), ("Dropout3d", (6, 40, 2, 3, 2), 2),
    ("Dropout3d", (40, 2, 3, 2), 1),
])
def test_channel_dropout_zeroes_whole_channels(cls, shape, chan):
    p = 0.4
    m = getattr(dnn, cls)(p)
    assert repr(m) == repr(getattr(tnn, cls)(p)) == f"{cls}(p=0.4, inplace=False)"
    x = dg.tensor(np.abs(RNG.standard_normal(shape)) + 0.5, requires_grad=True)
    dg.manual_seed(0)
    y = m(x)
    ratio = (y / x).detach().numpy().reshape(shape[:chan] + (-1,))
    # one factor per (sample, channel): 0 or 1/(1-p)
    assert np.allclose(ratio, ratio[..., :1])
    vals = np.unique(np.round(ratio[..., 0], 12))
    assert set(vals) <= {0.0, round(1 / (1 - p), 12)} and len(vals) == 2
    frac = (ratio[..., 0] == 0).mean()
    assert 0.15 < frac < 0.65
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy().reshape(ratio.shape), ratio)
    m.eval()
    assert m(x) is x


def test_channel_dropout_functional_and_inplace():
    x = dg.ones(4, 30, 5)
    dg.manual_seed(1)
    out = DF.dropout1d(x, 0.5, True, inplace=True)
    assert out is x
    v = x.numpy()
    assert set(np.unique(v)) == {0.0, 2.0}
    assert DF.dropout3d(x.unsqueeze(0), 0.5, training=False).shape == (1, 4, 30, 5)
    z = DF.dropout2d(dg.ones(2, 3, 4, 4), 1.0)
    assert float(z.abs().sum()) == 0.0
    with pytest.warns(UserWarning, match="Received a 3D input to dropout2d"):
        DF.dropout2d(dg.ones(2, 3, 4))
    with pytest.warns(UserWarning, match="Received a 2-D input to dropout3d"):
        DF.dropout3d(dg.ones(2, 3))


def test_dropout_errors():
    with pytest.raises(RuntimeError, match="dropout1d: Expected 2D or 3D input, but received a 1D input"):
        DF.dropout1d(dg.randn(3))
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        dnn.Dropout2d(1.5)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got -0.1"):
        DF.alpha_dropout(dg.randn(3), -0.1, True)
    with pytest.raises(RuntimeError, match="Feature dropout requires at least 2 dimensions"):
        DF.feature_alpha_dropout(dg.randn(3), 0.5, True)


def test_alpha_dropout_keeps_selu_statistics():
    p = 0.3
    x = dg.tensor(RNG.standard_normal((400, 500)), requires_grad=True)
    m = dnn.AlphaDropout(p)
    assert repr(m) == repr(tnn.AlphaDropout(p))
    dg.manual_seed(0)
    y = m(x)
    v = y.detach().numpy()
    assert abs(v.mean()) < 0.01 and abs(v.std() - 1.0) < 0.01
    alpha = 1.7580993408473766
    a = 1 / np.sqrt((alpha ** 2 * p + 1) * (1 - p))
    dropped_value = -alpha * a * (1 - p)  # a * (0 - alpha) + alpha * a * p
    xv = x.detach().numpy()
    y.sum().backward()
    grad = x.grad.numpy()
    kept = grad != 0
    np.testing.assert_allclose(grad[kept], a)
    np.testing.assert_allclose(v[kept], a * xv[kept] + alpha * a * p)
    np.testing.assert_allclose(v[~kept], dropped_value)
    assert abs((~kept).mean() - p) < 0.01
    assert name(y) == "AddBackward0"
    m.eval()
    assert m(x) is x
    # functional default is training=False, as in PyTorch
    assert DF.alpha_dropout(x, 0.5) is x and DF.feature_alpha_dropout(x, 0.5) is x


def test_feature_alpha_dropout_is_per_channel():
    p = 0.5
    x = dg.tensor(RNG.standard_normal((20, 30, 6)))
    dg.manual_seed(5)
    y = dnn.FeatureAlphaDropout(p)(x).numpy()
    alpha = 1.7580993408473766
    a = 1 / np.sqrt((alpha ** 2 * p + 1) * (1 - p))
    xv = x.numpy()
    dropped = np.isclose(y, -alpha * a * (1 - p)).all(axis=2)
    kept = np.isclose(y, a * xv + alpha * a * p).all(axis=2)
    assert (dropped ^ kept).all()
    assert 0.35 < dropped.mean() < 0.65


# ------------------------------------------------------------------ distances
def test_cosine_similarity_and_pairwise_distance():
    a, b = RNG.standard_normal((5, 6)), RNG.standard_normal((5, 6))
    for fn in [lambda m, x, y: m.nn.functional.cosine_similarity(x, y),
               lambda m, x, y: m.cosine_similarity(x, y, dim=0),
               lambda m, x, y: m.nn.CosineSimilarity(dim=-1, eps=1e-6)(x, y[:1]),
               lambda m, x, y: m.nn.functional.pairwise_distance(x, y),
               lambda m, x, y: m.pairwise_distance(x, y, p=1.0, keepdim=True),
               lambda m, x, y: m.nn.PairwiseDistance(p=3.0, eps=1e-4)(x, y),
               lambda m, x, y: m.nn.PairwiseDistance(keepdim=True)(x[0], y[0])]:
        (ad, at), (bd, bt) = pair(a), pair(b)
        yd, yt = fn(dg, ad, bd), fn(torch, at, bt)
        close(yd, yt)
        assert name(yd) == name(yt)
        backward_both(yd, yt)
        close(ad.grad, at.grad)
        close(bd.grad, bt.grad)
    assert repr(dnn.CosineSimilarity()) == "CosineSimilarity()"
    assert repr(dnn.PairwiseDistance()) == "PairwiseDistance()"
    x = dg.tensor(a[:2, :3], requires_grad=True)
    y = dg.tensor(b[:2, :3], requires_grad=True)
    assert gradgradcheck(DF.cosine_similarity, (x, y))
    assert gradgradcheck(DF.pairwise_distance, (x, y))


def test_cosine_similarity_zero_vector_and_errors():
    xd, xt = pair(np.zeros((2, 3)))
    yd, yt = pair(RNG.standard_normal((2, 3)))
    close(DF.cosine_similarity(xd, yd), TF.cosine_similarity(xt, yt))
    with pytest.raises(RuntimeError, match="cosine_similarity"):
        DF.cosine_similarity(dg.randn(2, 3), dg.randn(2, 4))


# ------------------------------------------------------------------ losses
def _sign_target(shape, seed=3):
    return np.random.default_rng(seed).choice([-1.0, 1.0], shape)


A = RNG.standard_normal((4, 5))
B = RNG.standard_normal((4, 5))
C = RNG.standard_normal((4, 5))
LABELS01 = (RNG.uniform(size=(4, 5)) > 0.5).astype(np.float64)
CLS = np.array([0, 3, 4, 1])
MLM = np.array([[3, 0, -1, 1, 0], [1, 2, 3, 0, 4], [4, -1, 0, 0, 0], [2, 2, -1, 3, 3]])
W5 = np.array([0.5, 1.0, 2.0, 0.3, 1.5])

LOSSES = {
    "margin_ranking": (lambda m, x, r: m.nn.functional.margin_ranking_loss(x, r(B), r(_sign_target(5)[None].repeat(4, 0)), margin=0.3, reduction=r.red)),
    "hinge_embedding": (lambda m, x, r: m.nn.functional.hinge_embedding_loss(x, r(_sign_target((4, 5))), margin=0.8, reduction=r.red)),
    "soft_margin": (lambda m, x, r: m.nn.functional.soft_margin_loss(x, r(_sign_target((4, 5))), reduction=r.red)),
    "multilabel_soft_margin": (lambda m, x, r: m.nn.functional.multilabel_soft_margin_loss(x, r(LABELS01), reduction=r.red)),
    "multilabel_soft_margin_w": (lambda m, x, r: m.nn.functional.multilabel_soft_margin_loss(x, r(LABELS01), weight=r(W5), reduction=r.red)),
    "multi_margin": (lambda m, x, r: m.nn.functional.multi_margin_loss(x, r(CLS), reduction=r.red)),
    "multi_margin_p2_w": (lambda m, x, r: m.nn.functional.multi_margin_loss(x, r(CLS), p=2, margin=0.7, weight=r(W5), reduction=r.red)),
    "multi_margin_1d": (lambda m, x, r: m.nn.functional.multi_margin_loss(x[0], r(np.array(2)), reduction=r.red)),
    "multilabel_margin": (lambda m, x, r: m.nn.functional.multilabel_margin_loss(x, r(MLM), reduction=r.red)),
    "multilabel_margin_1d": (lambda m, x, r: m.nn.functional.multilabel_margin_loss(x[1], r(MLM[0]), reduction=r.red)),
    "cosine_embedding": (lambda m, x, r: m.nn.functional.cosine_embedding_loss(x, r(B), r(np.array([1.0, -1.0, -1.0, 1.0])), margin=-0.2, reduction=r.red)),
    "cosine_embedding_0d": (lambda m, x, r: m.nn.functional.cosine_embedding_loss(x[0], r(B[0]), r(np.array(-1.0)), reduction=r.red)),
    "triplet": (lambda m, x, r: m.nn.functional.triplet_margin_loss(x, r(B), r(C), margin=2.0, reduction=r.red)),
    "triplet_p1_swap": (lambda m, x, r: m.nn.functional.triplet_margin_loss(x, r(B), r(C), margin=2.0, p=1, swap=True, reduction=r.red)),
    "triplet_dist": (lambda m, x, r: m.nn.functional.triplet_margin_with_distance_loss(x, r(B), r(C), margin=1.5, reduction=r.red)),
    "triplet_dist_cos_swap": (lambda m, x, r: m.nn.functional.triplet_margin_with_distance_loss(x, r(B), r(C), distance_function=lambda a, b: 1 - m.nn.functional.cosine_similarity(a, b), swap=True, reduction=r.red)),
    "poisson": (lambda m, x, r: m.nn.functional.poisson_nll_loss(x, r(np.abs(C) * 3), reduction=r.red)),
    "poisson_full": (lambda m, x, r: m.nn.functional.poisson_nll_loss(x, r(np.abs(C) * 3), full=True, reduction=r.red)),
    "poisson_nolog": (lambda m, x, r: m.nn.functional.poisson_nll_loss(x.abs() + 0.1, r(np.abs(C) * 3), log_input=False, reduction=r.red)),
    "gaussian": (lambda m, x, r: m.nn.functional.gaussian_nll_loss(x, r(B), r(np.abs(C) + 0.1), reduction=r.red)),
    "gaussian_full_homo": (lambda m, x, r: m.nn.functional.gaussian_nll_loss(x, r(B), r(np.abs(C[:, 0]) + 0.1), full=True, reduction=r.red)),
    "gaussian_float_var": (lambda m, x, r: m.nn.functional.gaussian_nll_loss(x, r(B), 0.7, reduction=r.red)),
    "MarginRankingLoss": (lambda m, x, r: m.nn.MarginRankingLoss(0.5, reduction=r.red)(x, r(B), r(_sign_target((4, 5))))),
    "HingeEmbeddingLoss": (lambda m, x, r: m.nn.HingeEmbeddingLoss(reduction=r.red)(x, r(_sign_target((4, 5))))),
    "SoftMarginLoss": (lambda m, x, r: m.nn.SoftMarginLoss(reduction=r.red)(x, r(_sign_target((4, 5))))),
    "MultiLabelSoftMarginLoss": (lambda m, x, r: m.nn.MultiLabelSoftMarginLoss(weight=r(W5), reduction=r.red)(x, r(LABELS01))),
    "MultiMarginLoss": (lambda m, x, r: m.nn.MultiMarginLoss(p=2, weight=r(W5), reduction=r.red)(x, r(CLS))),
    "MultiLabelMarginLoss": (lambda m, x, r: m.nn.MultiLabelMarginLoss(reduction=r.red)(x, r(MLM))),
    "CosineEmbeddingLoss": (lambda m, x, r: m.nn.CosineEmbeddingLoss(0.1, reduction=r.red)(x, r(B), r(np.array([1.0, -1.0, 1.0, -1.0])))),
    "TripletMarginLoss": (lambda m, x, r: m.nn.TripletMarginLoss(1.5, p=3, swap=True, reduction=r.red)(x, r(B), r(C))),
    "TripletMarginWithDistanceLoss": (lambda m, x, r: m.nn.TripletMarginWithDistanceLoss(margin=2.0, reduction=r.red)(x, r(B), r(C))),
    "PoissonNLLLoss": (lambda m, x, r: m.nn.PoissonNLLLoss(full=True, reduction=r.red)(x, r(np.abs(C) * 3))),
    "GaussianNLLLoss": (lambda m, x, r: m.nn.GaussianNLLLoss(full=True, eps=1e-3, reduction=r.red)(x, r(B), r(np.abs(C) + 0.1))),
}


class _Maker:
    """Builds constant tensors of one library (float64 for floats, int64 for ints)."""

    def __init__(self, lib, red):
        self.lib, self.red = lib, red

    def __call__(self, a):
        a = np.asarray(a)
        return self.lib.tensor(a)


@pytest.mark.parametrize("red", ["mean", "sum", "none"])
@pytest.mark.parametrize("key", list(LOSSES))
def test_loss_parity(key, red):
    fn = LOSSES[key]
    xd, xt = pair(A)
    yd, yt = fn(dg, xd, _Maker(dg, red)), fn(torch, xt, _Maker(torch, red))
    close(yd, yt, rtol=1e-6)
    backward_both(yd, yt)
    close(xd.grad, xt.grad, rtol=1e-6)
    if red != "none" and not key.startswith(("multi_margin", "multilabel_margin", "soft_margin",
                                             "MultiMarginLoss", "MultiLabelMarginLoss",
                                             "SoftMarginLoss")):
        assert name(yd) == name(yt)


@pytest.mark.parametrize("key", [k for k in LOSSES if k[0].islower()])
def test_loss_second_order(key):
    fn = LOSSES[key]
    x = dg.tensor(A, requires_grad=True)
    f = (lambda t: fn(dg, t, _Maker(dg, "sum")))
    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))


def test_loss_gradients_wrt_second_inputs():
    for fn in [lambda m, x, y: m.nn.functional.margin_ranking_loss(x, y, m.tensor(_sign_target((4, 5)))),
               lambda m, x, y: m.nn.functional.cosine_embedding_loss(x, y, m.tensor([1.0, -1.0, 1.0, -1.0])),
               lambda m, x, y: m.nn.functional.triplet_margin_loss(x, y, x.flip(0) * 0.5),
               lambda m, x, y: m.nn.functional.gaussian_nll_loss(x, m.tensor(B), y.abs() + 0.1),
               lambda m, x, y: m.nn.functional.poisson_nll_loss(x, y.abs() * 2, full=True)]:
        (xd, xt), (yd_, yt_) = pair(A), pair(B)
        od, ot = fn(dg, xd, yd_), fn(torch, xt, yt_)
        close(od, ot)
        od.backward()
        ot.backward()
        close(xd.grad, xt.grad)
        close(yd_.grad, yt_.grad)


def test_gaussian_nll_var_gradient_passes_through_the_clamp():
    xd, xt = pair(A)
    vd, vt = pair(np.where(np.abs(C) < 0.5, 1e-9, np.abs(C)))
    od = DF.gaussian_nll_loss(xd, dg.tensor(B), vd)
    ot = TF.gaussian_nll_loss(xt, torch.tensor(B), vt)
    close(od, ot, rtol=1e-6)
    od.backward()
    ot.backward()
    close(vd.grad, vt.grad, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:size_average and reduce args")
def test_legacy_size_average_and_reduce():
    for d, t in [(dnn.SoftMarginLoss(size_average=False), tnn.SoftMarginLoss(size_average=False)),
                 (dnn.HingeEmbeddingLoss(reduce=False), tnn.HingeEmbeddingLoss(reduce=False))]:
        assert d.reduction == t.reduction
    with pytest.warns(UserWarning, match="reduction='sum'"):
        v = DF.soft_margin_loss(dg.tensor(A), dg.tensor(_sign_target((4, 5))), size_average=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        close(v, TF.soft_margin_loss(torch.tensor(A), torch.tensor(_sign_target((4, 5))), size_average=False))


def test_loss_reprs_and_state():
    for name_ in ["MarginRankingLoss", "HingeEmbeddingLoss", "SoftMarginLoss",
                  "MultiLabelSoftMarginLoss", "MultiMarginLoss", "MultiLabelMarginLoss",
                  "CosineEmbeddingLoss", "TripletMarginLoss", "PoissonNLLLoss", "GaussianNLLLoss",
                  "TripletMarginWithDistanceLoss"]:
        assert repr(getattr(dnn, name_)()) == repr(getattr(tnn, name_)())
    m = dnn.MultiMarginLoss(weight=dg.ones(3))
    assert list(m.state_dict()) == list(tnn.MultiMarginLoss(weight=torch.ones(3)).state_dict()) == ["weight"]
    assert dnn.MultiMarginLoss().margin == 1.0 and dnn.TripletMarginLoss().p == 2.0
    assert dnn.PoissonNLLLoss().eps == 1e-8 and dnn.GaussianNLLLoss().eps == 1e-6


def test_loss_errors():
    with pytest.raises(RuntimeError, match="margin_ranking_loss : All input tensors should have same dimension"):
        DF.margin_ranking_loss(dg.randn(3), dg.randn(3, 1), dg.randn(3))
    with pytest.raises(ValueError, match="only p == 1 and p == 2 supported"):
        dnn.MultiMarginLoss(p=3)
    with pytest.raises(ValueError, match="weight must be one-dimensional"):
        DF.multi_margin_loss(dg.randn(2, 3), dg.tensor([0, 1]), weight=dg.ones(3, 1))
    with pytest.raises(RuntimeError, match="target out of range"):
        DF.multi_margin_loss(dg.randn(3, 4), dg.tensor([0, 1, 5]))
    with pytest.raises(RuntimeError, match="inconsistent target size: \\[3, 3\\] for input of size: \\[3, 4\\]"):
        DF.multilabel_margin_loss(dg.randn(3, 4), dg.zeros(3, 3, dtype=dg.int64))
    with pytest.raises(RuntimeError, match="0D or 1D target tensor expected"):
        DF.cosine_embedding_loss(dg.randn(3, 4), dg.randn(3, 4), dg.ones(3, 1))
    with pytest.raises(RuntimeError, match="anchor 2D, positive 2D, and negative 1D inputs"):
        DF.triplet_margin_loss(dg.randn(3, 4), dg.randn(3, 4), dg.randn(4))
    with pytest.raises(ValueError, match="TripletMarginLoss: expected margin to be greater than 0, got 0"):
        dnn.TripletMarginLoss(margin=0)
    with pytest.raises(ValueError, match="margin must be greater than 0, got -1"):
        DF.triplet_margin_with_distance_loss(dg.randn(2, 3), dg.randn(2, 3), dg.randn(2, 3), margin=-1)
    with pytest.raises(ValueError, match="var is of incorrect size"):
        DF.gaussian_nll_loss(dg.randn(4, 5), dg.randn(4, 5), dg.ones(3))
    with pytest.raises(ValueError, match="var has negative entry"):
        DF.gaussian_nll_loss(dg.randn(4, 5), dg.randn(4, 5), -dg.ones(4, 5))
    with pytest.raises(ValueError, match="bad is not a valid value for reduction"):
        DF.poisson_nll_loss(dg.randn(2), dg.randn(2), reduction="bad")
    with pytest.raises(ValueError, match="bad is not a valid value for reduction"):
        DF.hinge_embedding_loss(dg.randn(2), dg.randn(2), reduction="bad")


# ------------------------------------------------------------ ParameterList/Dict
def test_parameter_list():
    pl = dnn.ParameterList([dnn.Parameter(dg.randn(2, 3)), dg.randn(3)])
    tl = tnn.ParameterList([tnn.Parameter(torch.randn(2, 3)), torch.randn(3)])
    assert len(pl) == 2 and isinstance(pl[1], dnn.Parameter) and pl[1].requires_grad
    assert list(pl.state_dict()) == list(tl.state_dict()) == ["0", "1"]
    assert repr(pl) == repr(tl).replace("torch.", "distgrad.")
    pl.append(dg.zeros(4))
    pl.extend([dg.ones(1), dnn.Parameter(dg.ones(2))])
    pl += [dg.ones(5)]
    assert len(pl) == 6 and [tuple(p.shape) for p in pl][-3:] == [(1,), (2,), (5,)]
    assert pl[-1] is pl[5]
    sub = pl[1:3]
    assert isinstance(sub, dnn.ParameterList) and len(sub) == 2 and sub[0] is pl[1]
    pl[0] = dg.full((2,), 7.0)
    assert isinstance(pl[0], dnn.Parameter) and float(pl[0][0]) == 7.0
    with pytest.raises(IndexError, match="index 6 is out of range"):
        _ = pl[6]
    with pytest.raises(TypeError, match="ParameterList.extend should be called with an iterable"):
        pl.extend(dg.ones(2))
    with pytest.raises(RuntimeError, match="ParameterList should not be called"):
        pl()

    class Net(dnn.Module):
        def __init__(self):
            super().__init__()
            self.ps = dnn.ParameterList([dnn.Parameter(dg.ones(2)) for _ in range(3)])

        def forward(self, x):
            for p in self.ps:
                x = x * p
            return x.sum()

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["ps.0", "ps.1", "ps.2"]
    net(dg.full((2,), 2.0)).backward()
    assert all(np.allclose(p.grad.numpy(), 2.0) for p in net.ps)
    sd = net.state_dict()
    net2 = Net()
    net2.load_state_dict({k: v * 3 for k, v in sd.items()})
    assert np.allclose(net2.ps[2].detach().numpy(), 3.0)


def test_parameter_dict():
    pd = dnn.ParameterDict({"b": dg.randn(3), "a": dnn.Parameter(dg.randn(2, 3))})
    td = tnn.ParameterDict({"b": torch.randn(3), "a": tnn.Parameter(torch.randn(2, 3))})
    assert list(pd.keys()) == list(td.keys()) == ["a", "b"]  # a plain dict goes in sorted
    assert list(pd.state_dict()) == list(td.state_dict())
    assert repr(pd) == repr(td)
    assert isinstance(pd["b"], dnn.Parameter) and "a" in pd and "z" not in pd
    pd["c"] = dg.zeros(1)
    pd.update([("d", dg.ones(2)), ("a", dg.ones(4))])
    assert list(pd) == ["a", "b", "c", "d"] and tuple(pd["a"].shape) == (4,)
    assert [n for n, _ in pd.named_parameters()] == ["a", "b", "c", "d"]
    assert pd.get("zz") is None and pd.setdefault("e", dg.ones(1)) is pd["e"]
    k, v = pd.popitem()
    assert k == "e" and "e" not in pd and len(pd) == 4
    v = pd.pop("c")
    assert tuple(v.shape) == (1,) and "c" not in dict(pd.named_parameters())
    del pd["d"]
    assert list(pd) == ["a", "b"] and list(reversed(pd)) == ["b", "a"]
    merged = pd | dnn.ParameterDict({"q": dg.ones(1)})
    assert list(merged) == ["a", "b", "q"] and merged["a"] is pd["a"]
    cp = pd.copy()
    assert list(cp) == ["a", "b"] and cp["b"] is pd["b"]
    with pytest.raises(TypeError, match="not a string"):
        pd[1] = dg.ones(1)
    with pytest.raises(ValueError, match="has length 3; 2 is required"):
        pd.update([("x", dg.ones(1), 3)])
    pd.clear()
    assert len(pd) == 0 and list(pd.parameters()) == []


# ------------------------------------------------------------------ LazyLinear
def test_lazy_linear():
    m = dnn.LazyLinear(3)
    t = tnn.LazyLinear(3)
    assert repr(m) == repr(t) == "LazyLinear(in_features=0, out_features=3, bias=True)"
    assert isinstance(m.weight, dnn.UninitializedParameter) and repr(m.weight) == "<UninitializedParameter>"
    assert list(m.state_dict()) == list(t.state_dict()) == ["weight", "bias"]
    with pytest.raises(RuntimeError, match="Can't access the shape of an uninitialized parameter"):
        _ = m.weight.shape
    dg.manual_seed(0)
    y = m(dg.randn(2, 7))
    assert type(m) is dnn.Linear and m.in_features == 7 and tuple(y.shape) == (2, 3)
    assert type(m.weight) is dnn.Parameter and tuple(m.weight.shape) == (3, 7)
    bound = 1 / np.sqrt(7)
    assert np.abs(m.weight.detach().numpy()).max() <= bound
    assert repr(m) == "Linear(in_features=7, out_features=3, bias=True)"
    t(torch.randn(2, 7))
    copy_params(m, t.double())
    m.double()
    xd, xt = pair(RNG.standard_normal((4, 7)))
    yd, yt = m(xd), t(xt)
    close(yd, yt)
    backward_both(yd, yt)
    close(m.weight.grad, t.weight.grad)
    close(m.bias.grad, t.bias.grad)
    close(xd.grad, xt.grad)


def test_lazy_linear_no_bias_dtype_and_load_state_dict():
    m = dnn.LazyLinear(2, bias=False, dtype=dg.float64)
    assert list(m.state_dict()) == ["weight"]
    m(dg.randn(5, 4, dtype=dg.float64))
    assert m.weight.dtype == dg.float64 and m.bias is None
    fresh = dnn.LazyLinear(3)
    sd = {"weight": dg.ones(3, 6), "bias": dg.zeros(3)}
    fresh.load_state_dict(sd)
    assert type(fresh) is dnn.Linear and fresh.in_features == 6
    np.testing.assert_array_equal(fresh.weight.detach().numpy(), np.ones((3, 6)))
    # parameters handed to an optimizer before the first forward are the same objects after
    lazy = dnn.LazyLinear(1)
    params = list(lazy.parameters())
    opt = dg.optim.SGD(params, lr=0.1)
    lazy(dg.randn(3, 2)).sum().backward()
    before = lazy.weight.detach().numpy().copy()
    opt.step()
    assert params[0] is lazy.weight and not np.allclose(before, lazy.weight.detach().numpy())


# ------------------------------------------------------------------ Bilinear
def test_bilinear():
    t = tnn.Bilinear(3, 4, 5).double()
    d = dnn.Bilinear(3, 4, 5).double()
    assert repr(d) == repr(t)
    assert list(d.state_dict()) == list(t.state_dict()) == ["weight", "bias"]
    bound = 1 / np.sqrt(3)
    assert np.abs(d.weight.detach().numpy()).max() <= bound
    copy_params(d, t)
    (ad, at), (bd, bt) = pair(RNG.standard_normal((2, 6, 3))), pair(RNG.standard_normal((2, 6, 4)))
    yd, yt = d(ad, bd), t(at, bt)
    close(yd, yt)
    backward_both(yd, yt)
    close(ad.grad, at.grad)
    close(bd.grad, bt.grad)
    close(d.weight.grad, t.weight.grad)
    close(d.bias.grad, t.bias.grad)
    nb = dnn.Bilinear(2, 2, 1, bias=False)
    assert nb.bias is None and repr(nb).endswith("bias=False)")
    x1 = dg.tensor(RNG.standard_normal((2, 2)), requires_grad=True)
    x2 = dg.tensor(RNG.standard_normal((2, 3)), requires_grad=True)
    w = dg.tensor(RNG.standard_normal((2, 2, 3)), requires_grad=True)
    b = dg.tensor(RNG.standard_normal(2), requires_grad=True)
    assert gradcheck(DF.bilinear, (x1, x2, w, b))
    assert gradgradcheck(DF.bilinear, (x1, x2, w, b))


def test_bilinear_errors():
    with pytest.raises(RuntimeError, match="bilinear\\(\\): input2 size does not match weight size: got 4 but expected 3"):
        DF.bilinear(dg.randn(2, 3), dg.randn(2, 4), dg.randn(5, 3, 3))
    with pytest.raises(RuntimeError, match="input batch dimensions do not match"):
        DF.bilinear(dg.randn(2, 3), dg.randn(3, 3), dg.randn(5, 3, 3))


# ------------------------------------------------------------------ InstanceNorm
@pytest.mark.parametrize("cls,shape", [("InstanceNorm1d", (3, 4, 6)), ("InstanceNorm2d", (3, 4, 3, 5)),
                                       ("InstanceNorm3d", (2, 4, 2, 3, 2)),
                                       ("InstanceNorm2d", (4, 3, 5))])
@pytest.mark.parametrize("affine,track", [(False, False), (True, False), (False, True), (True, True)])
def test_instance_norm_parity(cls, shape, affine, track):
    t = getattr(tnn, cls)(4, affine=affine, track_running_stats=track, momentum=0.3).double()
    d = getattr(dnn, cls)(4, affine=affine, track_running_stats=track, momentum=0.3).double()
    assert repr(d) == repr(t)
    assert list(d.state_dict()) == list(t.state_dict())
    if affine:
        with torch.no_grad():
            t.weight.copy_(torch.linspace(0.5, 2.0, 4))
            t.bias.copy_(torch.linspace(-1.0, 1.0, 4))
    copy_params(d, t)
    for step in range(2):
        xd, xt = pair(RNG.standard_normal(shape) * 2 + 1)
        yd, yt = d(xd), t(xt)
        close(yd, yt, rtol=1e-6)
        backward_both(yd, yt, seed=step)
        close(xd.grad, xt.grad, rtol=1e-6, atol=1e-9)
        if affine:
            close(d.weight.grad, t.weight.grad, rtol=1e-6)
            close(d.bias.grad, t.bias.grad, rtol=1e-6)
    for k, v in t.state_dict().items():
        close(d.state_dict()[k], v)
    d.eval()
    t.eval()
    xd, xt = pair(RNG.standard_normal(shape))
    close(d(xd), t(xt), rtol=1e-6)


def test_instance_norm_second_order_and_functional():
    x = dg.tensor(RNG.standard_normal((2, 2, 4)), requires_grad=True)
    w = dg.tensor([0.7, 1.3], dtype=dg.float64, requires_grad=True)
    b = dg.tensor([0.1, -0.2], dtype=dg.float64, requires_grad=True)
    f = lambda x_, w_, b_: DF.instance_norm(x_, weight=w_, bias=b_)
    assert gradcheck(f, (x, w, b))
    assert gradgradcheck(f, (x, w, b))
    rm, rv = dg.zeros(2, dtype=dg.float64), dg.ones(2, dtype=dg.float64)
    trm, trv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    xd, xt = pair(RNG.standard_normal((3, 2, 5)))
    close(DF.instance_norm(xd, rm, rv, momentum=0.5), TF.instance_norm(xt, trm, trv, momentum=0.5))
    close(rm, trm)
    close(rv, trv)
    close(DF.instance_norm(xd, rm, rv, use_input_stats=False),
          TF.instance_norm(xt, trm, trv, use_input_stats=False))


def test_instance_norm_errors():
    with pytest.raises(ValueError, match="expected 3D or 4D input \\(got 2D input\\)"):
        dnn.InstanceNorm2d(3)(dg.randn(3, 4))
    with pytest.raises(ValueError, match="expected input's size at dim=1 to match num_features \\(3\\), but got: 4."):
        dnn.InstanceNorm2d(3, affine=True)(dg.randn(1, 4, 3, 3))
    with pytest.warns(UserWarning, match="does not match num_features"):
        dnn.InstanceNorm1d(3)(dg.randn(2, 4, 5))
    with pytest.raises(ValueError, match="Expected more than 1 spatial element when training"):
        DF.instance_norm(dg.randn(1, 4, 1))


# ------------------------------------------------------------ LocalResponseNorm
@pytest.mark.parametrize("shape,size", [((2, 6, 5), 3), ((2, 6, 3, 4), 2), ((1, 5, 2, 2, 3), 4), ((2, 3, 4), 7)])
def test_local_response_norm(shape, size):
    xd, xt = pair(RNG.standard_normal(shape))
    d = dnn.LocalResponseNorm(size, alpha=0.1, beta=0.6, k=2.0)
    t = tnn.LocalResponseNorm(size, alpha=0.1, beta=0.6, k=2.0)
    assert repr(d) == repr(t)
    yd, yt = d(xd), t(xt)
    close(yd, yt)
    backward_both(yd, yt)
    close(xd.grad, xt.grad)


def test_local_response_norm_second_order_and_errors():
    x = dg.tensor(RNG.standard_normal((1, 4, 3)), requires_grad=True)
    assert gradgradcheck(lambda t: DF.local_response_norm(t, 3, alpha=0.5), (x,))
    with pytest.raises(ValueError, match="Expected 3D or higher dimensionality input \\(got 2 dimensions\\)"):
        DF.local_response_norm(dg.randn(3, 3), 2)


def test_all_names_exported():
    for n in ["logsigmoid", "softsign", "tanhshrink", "softshrink", "hardshrink", "hardswish",
              "hardsigmoid", "mish", "selu", "celu", "prelu", "glu", "threshold", "rrelu", "softmin",
              "relu_", "selu_", "celu_", "threshold_", "rrelu_", "dropout1d", "dropout2d",
              "dropout3d", "alpha_dropout", "feature_alpha_dropout", "margin_ranking_loss",
              "hinge_embedding_loss", "soft_margin_loss", "multilabel_soft_margin_loss",
              "multi_margin_loss", "multilabel_margin_loss", "cosine_embedding_loss",
              "triplet_margin_loss", "triplet_margin_with_distance_loss", "poisson_nll_loss",
              "gaussian_nll_loss", "cosine_similarity", "pairwise_distance", "bilinear",
              "instance_norm", "local_response_norm"]:
        assert n in DF.__all__ and callable(getattr(DF, n)), n
    assert dg.cosine_similarity is DF.cosine_similarity and dg.pairwise_distance is DF.pairwise_distance


# ------------------------------------------------------------------ EmbeddingBag
EB_IDX = np.array([1, 2, 4, 5, 4, 3, 2, 9, 0, 0])
EB_OFF = np.array([0, 3, 3, 7])  # the third bag is empty


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("variant", ["offsets", "2d", "last_offset", "padding", "psw"])
def test_embedding_bag_parity(mode, variant):
    if variant == "psw" and mode != "sum":
        pytest.skip("per_sample_weights needs mode='sum'")
    kw = {"mode": mode}
    if variant == "last_offset":
        kw["include_last_offset"] = True
    if variant == "padding":
        kw["padding_idx"] = 4
    t = tnn.EmbeddingBag(10, 3, **kw).double()
    d = dnn.EmbeddingBag(10, 3, **kw).double()
    assert repr(d) == repr(t)
    assert list(d.state_dict()) == ["weight"]
    copy_params(d, t)
    args_d, args_t = [], []
    if variant == "2d":
        inp = EB_IDX.reshape(2, 5)
    else:
        inp = EB_IDX
        off = np.append(EB_OFF, 10) if variant == "last_offset" else EB_OFF
        args_d, args_t = [dg.tensor(off)], [torch.tensor(off)]
    kwd, kwt = {}, {}
    if variant == "psw":
        psw = RNG.uniform(0.5, 2.0, EB_IDX.shape)
        pd_, pt_ = pair(psw)
        kwd, kwt = {"per_sample_weights": pd_}, {"per_sample_weights": pt_}
    yd = d(dg.tensor(inp), *args_d, **kwd)
    yt = t(torch.tensor(inp), *args_t, **kwt)
    close(yd, yt)
    backward_both(yd, yt)
    close(d.weight.grad, t.weight.grad)
    if variant == "psw":
        close(pd_.grad, pt_.grad)


def test_embedding_bag_second_order_and_errors():
    w = dg.tensor(RNG.standard_normal((6, 2)), requires_grad=True)
    idx, off = dg.tensor([0, 2, 2, 5, 1]), dg.tensor([0, 2])
    assert gradgradcheck(lambda w_: DF.embedding_bag(idx, w_ * w_, off, mode="mean"), (w,))
    with pytest.raises(ValueError, match="offsets has to be a 1D Tensor but got None"):
        DF.embedding_bag(idx, w)
    with pytest.raises(ValueError, match="if input is 2D, then offsets has to be None"):
        DF.embedding_bag(idx.reshape(1, 5), w, off)
    with pytest.raises(RuntimeError, match="offsets\\[0\\] has to be 0"):
        DF.embedding_bag(idx, w, dg.tensor([1, 2]))
    with pytest.raises(NotImplementedError, match="per_sample_weights is only supported for mode='sum'"):
        DF.embedding_bag(idx, w, off, per_sample_weights=dg.ones(5))
    with pytest.raises(ValueError, match="mode has to be one of sum, mean or max"):
        DF.embedding_bag(idx, w, off, mode="min")
    pre = dnn.EmbeddingBag.from_pretrained(dg.ones(4, 2), mode="sum")
    assert not pre.weight.requires_grad
    close(pre(dg.tensor([[0, 1, 3]])), np.full((1, 2), 3.0))


def test_soft_margin_loss_computes_in_the_inputs_dtype():
    torch = pytest.importorskip("torch")
    y = np.array([1.0, -1.0, 1.0])
    for dtype in ("float32", "bfloat16"):
        for lib in (dg, torch):
            x = lib.ones(3, dtype=getattr(lib, dtype))
            assert str(lib.nn.functional.soft_margin_loss(x, lib.tensor(y)).dtype).endswith(dtype)
