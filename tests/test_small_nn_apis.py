"""leaky_relu, elu, hardtanh/relu6, softplus modules, pad, pixel (un)shuffle, orthogonal_ and
sparse_ init, expand with several -1, and the ``distgrad.utils.data`` alias: outputs, gradients,
grad_fn names, reprs and errors against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

import distgrad as dg

torch = pytest.importorskip("torch")


def pair(a, requires_grad=True):
    a = np.asarray(a, np.float64)
    return (dg.tensor(a, requires_grad=requires_grad),
            torch.tensor(a, requires_grad=requires_grad))


def close(d, t, **kw):
    np.testing.assert_allclose(d.detach().numpy(), t.detach().numpy(), rtol=1e-7, atol=1e-10, **kw)


def run_both(fn, a, grad_seed=0):
    """Runs fn(lib, x) on both libraries; compares outputs, input grads and grad_fn names."""
    xd, xt = pair(a)
    yd, yt = fn(dg, xd), fn(torch, xt)
    close(yd, yt)
    g = np.random.default_rng(grad_seed).standard_normal(tuple(yt.shape))
    yd.backward(dg.tensor(g))
    yt.backward(torch.tensor(g))
    close(xd.grad, xt.grad)
    return yd, yt


def name(t):
    return type(t.grad_fn).__name__ if isinstance(t, dg.Tensor) else t.grad_fn.name()


X = np.random.default_rng(0).standard_normal((2, 3, 4, 5))


# ------------------------------------------------------------------ activations
@pytest.mark.parametrize("fn", [
    lambda m, x: m.nn.functional.leaky_relu(x),
    lambda m, x: m.nn.functional.leaky_relu(x, 0.3),
    lambda m, x: m.nn.functional.elu(x),
    lambda m, x: m.nn.functional.elu(x, alpha=0.7),
    lambda m, x: m.nn.functional.hardtanh(x * 2, -1.5, 0.5),
    lambda m, x: m.nn.functional.relu6(x * 5),
    lambda m, x: m.nn.LeakyReLU(0.2)(x),
    lambda m, x: m.nn.ELU(2.0)(x),
    lambda m, x: m.nn.Hardtanh()(x),
    lambda m, x: m.nn.ReLU6()(x * 5),
    lambda m, x: m.nn.Softplus(2.0, 1.0)(x),
], ids=["leaky", "leaky_slope", "elu", "elu_alpha", "hardtanh", "relu6", "LeakyReLU", "ELU",
        "Hardtanh", "ReLU6", "Softplus"])
def test_activation_parity(fn):
    yd, yt = run_both(fn, X)
    assert name(yd) == name(yt)


@pytest.mark.parametrize("fn", [
    lambda m, y: m.nn.functional.leaky_relu(y, 0.1, inplace=True),
    lambda m, y: m.nn.functional.elu(y, 0.5, inplace=True),
    lambda m, y: m.nn.functional.hardtanh(y, inplace=True),
    lambda m, y: m.nn.functional.relu6(y, inplace=True),
    lambda m, y: m.nn.LeakyReLU(inplace=True)(y),
    lambda m, y: m.nn.ELU(inplace=True)(y),
], ids=["leaky", "elu", "hardtanh", "relu6", "LeakyReLU", "ELU"])
def test_inplace_activation_parity(fn):
    def go(m, x):
        y = x * 1
        r = fn(m, y)
        assert r is y
        return y

    yd, yt = run_both(go, X)
    assert name(yd) == name(yt)


def test_inplace_negative_slope_fails_in_backward():
    for m in (dg, torch):
        x = m.tensor([-1.0, 2.0], requires_grad=True)
        y = x * 1
        m.nn.functional.leaky_relu(y, -0.1, inplace=True)
        with pytest.raises(RuntimeError, match="In-place leakyReLu backward"):
            y.sum().backward()


def test_activation_gradgrad_parity():
    xd, xt = pair(X)
    for m, x in ((dg, xd), (torch, xt)):
        g, = m.autograd.grad(m.nn.functional.elu(x).sum(), x, create_graph=True)
        (g * g).sum().backward()
    close(xd.grad, xt.grad)


def test_activation_reprs_and_errors():
    for make in (lambda n: n.LeakyReLU(), lambda n: n.LeakyReLU(0.2, True), lambda n: n.ELU(),
                 lambda n: n.ELU(0.5, True), lambda n: n.Hardtanh(), lambda n: n.Hardtanh(-2, 2, True),
                 lambda n: n.ReLU6(), lambda n: n.ReLU6(True), lambda n: n.Softplus(),
                 lambda n: n.Softplus(2, 10)):
        assert repr(make(dg.nn)) == repr(make(torch.nn))
    for m in (dg, torch):
        with pytest.raises(AssertionError, match="must be greater than min_val"):
            m.nn.Hardtanh(1.0, 1.0)
    xd = dg.tensor([1, -2, 7])
    assert dg.nn.functional.relu6(xd).tolist() == [1, 0, 6]
    assert dg.nn.functional.relu6(xd).dtype == dg.int64
    assert dg.nn.functional.hardtanh(xd).tolist() == torch.nn.functional.hardtanh(
        torch.tensor([1, -2, 7])).tolist()
    assert dg.nn.functional.leaky_relu(dg.ones(2, dtype=dg.float32)).dtype == dg.float32


# ------------------------------------------------------------------------- pad
PAD_CASES = [
    ((2, 3), (1, 2), "constant", None),
    ((2, 3, 4), (1, 0, 2, 1), "constant", 2.5),
    ((3, 5), (-1, 2, 1, -2), "constant", None),
    ((2, 2, 2, 2, 2), (1,) * 10, "constant", 0.0),
    ((2, 5), (2, 3), "reflect", None),
    ((2, 3, 4), (1, 2), "reflect", None),
    ((1, 2, 3, 4), (3, 1, 2, 0), "reflect", None),
    ((1, 1, 2, 3, 3), (1, 1, 2, 0, 1, 1), "reflect", None),
    ((2, 3), (3, 1), "replicate", None),
    ((1, 2, 3, 2), (2, 1, 0, 3), "replicate", None),
    ((2, 2, 2, 3), (1, 0, 2, 1, 1, 2), "replicate", None),
    ((2, 4), (2, 3), "circular", None),
    ((1, 2, 3, 4), (1, 2, 3, 0), "circular", None),
    ((1, 1, 2, 3, 2), (1, 1, 1, 2, 2, 0), "circular", None),
]


@pytest.mark.parametrize("shape, p, mode, value", PAD_CASES)
def test_pad_parity(shape, p, mode, value):
    a = np.random.default_rng(1).standard_normal(shape)
    kw = {"mode": mode} if value is None else {"mode": mode, "value": value}
    yd, yt = run_both(lambda m, x: m.nn.functional.pad(x, p, **kw), a)
    if mode != "circular":  # PyTorch builds circular padding from slice copies (CopySlices)
        assert name(yd) == name(yt)


def test_pad_modules_and_reprs():
    rng = np.random.default_rng(2)
    inputs = {1: rng.standard_normal((2, 3, 5)), 2: rng.standard_normal((2, 3, 4, 5)),
              3: rng.standard_normal((1, 2, 3, 4, 5))}
    for dims, make in ((2, lambda n: n.ZeroPad2d(1)), (2, lambda n: n.ZeroPad2d((1, 2, 3, 4))),
                       (2, lambda n: n.ConstantPad2d(2, 3.5)), (2, lambda n: n.ReflectionPad2d(1)),
                       (2, lambda n: n.ReplicationPad2d((1, 0, 1, 0))),
                       (2, lambda n: n.CircularPad2d(1)), (1, lambda n: n.ConstantPad1d(1, 0.0)),
                       (1, lambda n: n.ReflectionPad1d(2)), (1, lambda n: n.ZeroPad1d(2)),
                       (1, lambda n: n.ReplicationPad1d((0, 3))),
                       (3, lambda n: n.ConstantPad3d(1, 2.0)), (3, lambda n: n.ReflectionPad3d(1))):
        assert repr(make(dg.nn)) == repr(make(torch.nn))
        run_both(lambda m, x, make=make: make(m.nn)(x), inputs[dims])


@pytest.mark.parametrize("args, match", [
    (((2, 3), (1,), {}), "divisible by 2"),
    (((3,), (1, 1, 1, 1), {}), "less than or equal to two times"),
    (((1, 2, 3), (3, 0), {"mode": "reflect"}), "Padding size should be less than"),
    (((1, 2, 3), (1, 0), {"mode": "reflect", "value": 1.0}), "doesn't take in value"),
])
def test_pad_errors(args, match):
    shape, p, kw = args
    for m in (dg, torch):
        with pytest.raises(RuntimeError, match=match):
            m.nn.functional.pad(m.zeros(*shape), p, **kw)


# -------------------------------------------------------------- pixel (un)shuffle
@pytest.mark.parametrize("shape, r", [((1, 8, 2, 3), 2), ((9, 2, 2), 3), ((2, 1, 4, 1, 2), 2)])
def test_pixel_shuffle_parity(shape, r):
    a = np.random.default_rng(3).standard_normal(shape)
    yd, yt = run_both(lambda m, x: m.nn.functional.pixel_shuffle(x, r), a)
    assert name(yd) == name(yt) == "PixelShuffleBackward0"
    yd, yt = run_both(lambda m, x: m.nn.PixelUnshuffle(r)(m.nn.PixelShuffle(r)(x)), a)
    assert name(yd) == name(yt) == "PixelUnshuffleBackward0"
    close(yd, torch.tensor(a))


def test_pixel_shuffle_reprs_and_errors():
    assert repr(dg.nn.PixelShuffle(2)) == repr(torch.nn.PixelShuffle(2))
    assert repr(dg.nn.PixelUnshuffle(3)) == repr(torch.nn.PixelUnshuffle(3))
    for m in (dg, torch):
        F = m.nn.functional
        with pytest.raises(RuntimeError, match="divisible by the square of upscale_factor"):
            F.pixel_shuffle(m.zeros(1, 3, 2, 2), 2)
        with pytest.raises(RuntimeError, match="at least 3 dimensions"):
            F.pixel_shuffle(m.zeros(4, 2), 2)
        with pytest.raises(RuntimeError, match="height to be divisible"):
            F.pixel_unshuffle(m.zeros(1, 1, 3, 4), 2)


# ------------------------------------------------------------------------ expand
def test_expand_several_minus_one():
    a = np.random.default_rng(4).standard_normal((3, 1, 2))
    yd, yt = run_both(lambda m, x: x.expand(-1, 4, -1), a)
    assert tuple(yd.shape) == (3, 4, 2) and name(yd) == name(yt)
    run_both(lambda m, x: x.expand(5, -1, -1, -1), a)
    run_both(lambda m, x: x.expand((2, -1, 3, -1)), a)
    for m in (dg, torch):
        with pytest.raises(RuntimeError, match="isn't allowed in a leading, non-existing dimension 0"):
            m.zeros(3).expand(-1, 3)
        with pytest.raises(RuntimeError, match=r"must match the existing size \(2\) at non-singleton "
                                               r"dimension 2"):
            m.zeros(3, 2).expand(-1, -1, 4)


# -------------------------------------------------------------------------- init
@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (8, 3), (6, 2, 2), (2, 3, 2, 2)])
def test_orthogonal_properties(shape):
    gain = 1.7
    for m in (dg, torch):
        w = m.empty(*shape)
        assert m.nn.init.orthogonal_(w, gain=gain) is w
        rows = shape[0]
        flat = w.reshape(rows, -1).double().numpy()
        small = min(flat.shape)
        gram = flat @ flat.T if rows <= flat.shape[1] else flat.T @ flat
        np.testing.assert_allclose(gram, gain ** 2 * np.eye(small), atol=1e-5)


def test_orthogonal_distribution():
    # The sign fix makes Q Haar-distributed: each entry has mean 0 and variance 1/n.
    n, draws = 4, 2000
    dg.manual_seed(0)
    vals = np.stack([dg.nn.init.orthogonal_(dg.empty(n, n)).numpy() for _ in range(draws)])
    assert abs(vals.mean()) < 0.02
    np.testing.assert_allclose(vals.var(axis=0), 1 / n, atol=0.03)
    # Without the sign fix the diagonal of Q would lean positive.
    assert abs(vals[:, 0, 0].mean()) < 0.05


def test_orthogonal_and_sparse_errors_and_sparse_counts():
    for m in (dg, torch):
        with pytest.raises(ValueError, match="Only tensors with 2 or more dimensions"):
            m.nn.init.orthogonal_(m.empty(3))
        with pytest.raises(ValueError, match="Only tensors with 2 dimensions"):
            m.nn.init.sparse_(m.empty(3, 2, 2), 0.5)
        w = m.empty(10, 6)
        assert m.nn.init.sparse_(w, 0.3, std=0.5) is w
        assert ((w == 0).sum(0) == 3).all()
        assert 0.2 < float(w[w != 0].std()) < 1.0
    assert dg.nn.init.orthogonal_(dg.empty(0, 3)).shape == (0, 3)


# ---------------------------------------------------------------- utils.data alias
def test_utils_data_alias():
    import distgrad.utils.data
    from distgrad.utils.data import DataLoader, TensorDataset

    assert distgrad.utils.data is dg.data
    assert DataLoader is dg.data.DataLoader
    loader = DataLoader(TensorDataset(dg.arange(6)), batch_size=4)
    assert [b[0].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5]]
