"""Convolution and pooling layers against PyTorch: modules with the same weights,
a LeNet-style network's loss and every gradient (float32 and float64), second
derivatives through a convolution, initialization, reprs and the errors.
(The functional ops themselves are in the op table: tests/op_table_conv.py.)"""
from __future__ import annotations

import math

import numpy as np
import pytest

import distgrad as dg

torch = pytest.importorskip("torch")

TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-5}, np.float64: {"rtol": 1e-10, "atol": 1e-10}}


def _np(t):
    return t.detach().numpy()


def _copy_weights(module, tmodule):
    tmodule.load_state_dict({k: torch.tensor(v.numpy()) for k, v in module.state_dict().items()})


def _run_both(make, x, dtype=np.float64, **call):
    """The same module in both libraries (torch gets distgrad's weights); outputs and
    the gradients of input and parameters for a fixed random cotangent."""
    m, tm = make(dg), make(torch)
    if dtype == np.float64:
        m, tm = m.to(dg.float64), tm.double()
    _copy_weights(m, tm)
    xd = dg.tensor(x.astype(dtype), requires_grad=True)
    xt = torch.tensor(x.astype(dtype), requires_grad=True)
    out, tout = m(xd, **call), tm(xt, **call)
    out, tout = (out[0], tout[0]) if isinstance(out, tuple) else (out, tout)
    cot = np.random.default_rng(7).standard_normal(tuple(out.shape)).astype(dtype)
    out.backward(dg.tensor(cot))
    tout.backward(torch.tensor(cot))
    grads = {"input": (xd.grad, xt.grad)}
    tparams = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        grads[name] = (p.grad, tparams[name].grad)
    return (out, tout), grads


def _assert_same(pair, grads, dtype=np.float64):
    out, tout = pair
    assert tuple(out.shape) == tuple(tout.shape)
    np.testing.assert_allclose(_np(out), _np(tout), **TOL[dtype])
    for name, (g, tg) in grads.items():
        np.testing.assert_allclose(_np(g), tg.numpy(), err_msg=name, **TOL[dtype])


X = np.random.default_rng(0).standard_normal((2, 4, 9, 8))

CONV2D_CASES = [
    {},
    {"stride": 2, "padding": 1},
    {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)},
    {"padding": "same", "dilation": 2},
    {"padding": "valid", "bias": False},
    {"groups": 2, "padding": 1},
    {"padding": 2, "padding_mode": "reflect"},
    {"padding": (1, 2), "padding_mode": "replicate", "stride": 2},
    {"padding": "same", "padding_mode": "circular"},
]


@pytest.mark.parametrize("kw", CONV2D_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_conv2d_module_matches_torch(kw):
    pair, grads = _run_both(lambda lib: lib.nn.Conv2d(4, 6, 3, **kw), X)
    _assert_same(pair, grads)
    assert pair[0].grad_fn.name() == pair[1].grad_fn.name() == "ConvolutionBackward0"


def test_conv2d_module_float32_and_unbatched_input():
    _assert_same(*_run_both(lambda lib: lib.nn.Conv2d(4, 5, (3, 2), padding=1), X, np.float32), np.float32)
    pair, grads = _run_both(lambda lib: lib.nn.Conv2d(4, 5, 3), X[0])
    _assert_same(pair, grads)
    assert pair[0].grad_fn.name() == pair[1].grad_fn.name()


@pytest.mark.parametrize("kw", [{}, {"stride": 2, "padding": 2, "dilation": 2}, {"groups": 2},
                                {"padding": "same", "padding_mode": "reflect"}])
def test_conv1d_module_matches_torch(kw):
    _assert_same(*_run_both(lambda lib: lib.nn.Conv1d(4, 6, 3, **kw), X[:, :, 0]))


@pytest.mark.parametrize("kw", [{}, {"stride": 2, "padding": 1, "output_padding": 1},
                                {"stride": (2, 3), "dilation": (2, 1), "groups": 2, "bias": False}])
def test_conv_transpose2d_module_matches_torch(kw):
    pair, grads = _run_both(lambda lib: lib.nn.ConvTranspose2d(4, 6, 3, **kw), X)
    _assert_same(pair, grads)
    assert pair[0].grad_fn.name() == "ConvolutionBackward0"


def test_conv_transpose_output_size_chooses_output_padding():
    pair, grads = _run_both(lambda lib: lib.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1), X,
                            output_size=[18, 16])
    assert tuple(pair[0].shape) == (2, 3, 18, 16)
    _assert_same(pair, grads)
    with pytest.raises(ValueError, match="output size"):
        dg.nn.ConvTranspose2d(4, 3, 3, stride=2)(dg.tensor(X), output_size=[30, 30])


def test_conv_transpose1d_matches_torch():
    _assert_same(*_run_both(lambda lib: lib.nn.ConvTranspose1d(4, 2, 4, stride=3, padding=1), X[:, :, 0]))


POOLS = [
    ("MaxPool2d", (2,), {}),
    ("MaxPool2d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True}),
    ("MaxPool2d", ((2, 3),), {"dilation": (2, 1), "return_indices": True}),
    ("AvgPool2d", (2,), {}),
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1, "count_include_pad": False, "ceil_mode": True}),
    ("AvgPool2d", (2,), {"divisor_override": 3}),
    ("AdaptiveAvgPool2d", ((4, 3),), {}),
    ("AdaptiveAvgPool2d", ((None, 5),), {}),
    ("AdaptiveAvgPool2d", (1,), {}),
]


@pytest.mark.parametrize("name,args,kw", POOLS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(POOLS)])
def test_pooling_modules_match_torch(name, args, kw):
    x = np.random.default_rng(1).permutation(X.size).reshape(X.shape) / 10.0  # no ties
    m, tm = getattr(dg.nn, name)(*args, **kw), getattr(torch.nn, name)(*args, **kw)
    assert repr(m) == repr(tm)
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = m(xd), tm(xt)
    if kw.get("return_indices"):
        np.testing.assert_array_equal(out[1].numpy(), tout[1].numpy())
        assert out[1].dtype == dg.int64
        out, tout = out[0], tout[0]
    np.testing.assert_allclose(_np(out), _np(tout), **TOL[np.float64])
    assert out.grad_fn.name() == tout.grad_fn.name()
    cot = np.random.default_rng(2).standard_normal(tuple(out.shape))
    out.backward(dg.tensor(cot))
    tout.backward(torch.tensor(cot))
    np.testing.assert_allclose(_np(xd.grad), xt.grad.numpy(), **TOL[np.float64])


@pytest.mark.parametrize("name,args", [("MaxPool1d", (3, 2, 1)), ("AvgPool1d", (3, 2, 1)),
                                       ("AdaptiveAvgPool1d", (3,))])
def test_1d_pooling_modules_match_torch(name, args):
    x = X[:, :, 0]
    m, tm = getattr(dg.nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(m) == repr(tm)
    xd, xt = dg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, tout = m(xd), tm(xt)
    np.testing.assert_allclose(_np(out), _np(tout), **TOL[np.float64])
    out.sum().backward()
    tout.sum().backward()
    np.testing.assert_allclose(_np(xd.grad), xt.grad.numpy(), **TOL[np.float64])


def _lenet(lib):
    nn = lib.nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.pool2 = nn.AvgPool2d(2)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 10)

        def forward(self, x):
            x = self.pool1(lib.relu(self.conv1(x)))
            x = self.pool2(lib.relu(self.conv2(x)))
            return self.fc2(lib.relu(self.fc1(x.flatten(1))))

    return LeNet()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lenet_loss_and_all_gradients_match_torch(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, 8)
    dg.manual_seed(0)
    m, tm = _lenet(dg), _lenet(torch)
    if dtype == np.float64:
        m, tm = m.to(dg.float64), tm.double()
    _copy_weights(m, tm)
    loss = dg.nn.functional.cross_entropy(m(dg.tensor(x)), dg.tensor(y))
    tloss = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), **TOL[dtype])
    tparams = dict(tm.named_parameters())
    names = [n for n, _ in m.named_parameters()]
    assert names == list(tparams)
    for name, p in m.named_parameters():
        assert p.grad.dtype == p.dtype
        np.testing.assert_allclose(_np(p.grad), tparams[name].grad.numpy(), err_msg=name, **TOL[dtype])


@pytest.mark.parametrize("transposed", [False, True])
def test_second_derivatives_through_a_convolution_match_torch(transposed):
    rng = np.random.default_rng(4)
    fn = "conv_transpose2d" if transposed else "conv2d"
    x, w, b = rng.standard_normal((2, 4, 5, 6)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    kw = {"stride": 2, "padding": 1, "groups": 2}
    results = []
    for lib in (dg, torch):
        xs = [lib.tensor(a, requires_grad=True) for a in (x, w, b)]
        out = getattr(lib.nn.functional, fn)(*xs, **kw)
        gx, gw = lib.autograd.grad((out * out).sum(), xs[:2], create_graph=True)
        (gx.pow(2).sum() + (gw * gw).sum()).backward()
        results.append([_np(t.grad) for t in xs])
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-9, atol=1e-9)


def test_grad_fn_names_match_torch():
    x = dg.randn(1, 2, 6, 6, requires_grad=True)
    w = dg.randn(3, 2, 3, 3, requires_grad=True)
    F = dg.nn.functional
    assert F.conv2d(x, w).grad_fn.name() == "ConvolutionBackward0"
    assert F.conv_transpose2d(x, w.transpose(0, 1)).grad_fn.name() == "ConvolutionBackward0"
    assert F.max_pool2d(x, 2).grad_fn.name() == "MaxPool2DWithIndicesBackward0"
    assert F.avg_pool2d(x, 2).grad_fn.name() == "AvgPool2DBackward0"
    assert F.adaptive_avg_pool2d(x, 4).grad_fn.name() == "AdaptiveAvgPool2DBackward0"
    assert F.adaptive_avg_pool2d(x, 1).grad_fn.name() == "MeanBackward1"
    assert F.max_pool1d(x[0], 2).grad_fn.name() == "SqueezeBackward1"
    assert F.conv2d(x, w, padding=1).detach().grad_fn is None


@pytest.mark.parametrize("cls,args", [("Conv2d", (4, 6, 3)), ("Conv2d", (4, 6, (3, 2), 2, 1, 1, 2, False)),
                                      ("Conv1d", (4, 6, 3)), ("ConvTranspose2d", (4, 6, 3)),
                                      ("ConvTranspose2d", (4, 6, 3, 2, 1, 1, 2))])
def test_conv_init_shapes_bounds_and_repr_match_torch(cls, args):
    dg.manual_seed(0)
    m, tm = getattr(dg.nn, cls)(*args), getattr(torch.nn, cls)(*args)
    assert repr(m) == repr(tm)
    tparams = dict(tm.named_parameters())
    assert [n for n, _ in m.named_parameters()] == list(tparams)
    w = tparams["weight"]
    fan_in = w.shape[1] * math.prod(w.shape[2:])
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform with a=sqrt(5), and the bias's bound
    for name, p in m.named_parameters():
        assert tuple(p.shape) == tuple(tparams[name].shape) and p.dtype == dg.float32
        a = p.detach().numpy()
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.5 * bound


def test_module_reprs_with_strings_and_modes_match_torch():
    for kw in ({"padding": "same"}, {"padding": 1, "padding_mode": "reflect"}, {"dilation": 2, "bias": False}):
        assert repr(dg.nn.Conv2d(2, 3, 3, **kw)) == repr(torch.nn.Conv2d(2, 3, 3, **kw))


def _err(match, fn, *a, exc=RuntimeError, **k):
    with pytest.raises(exc, match=match):
        fn(*a, **k)


def test_errors_name_the_op_and_the_shapes():
    F = dg.nn.functional
    x, w = dg.randn(2, 4, 5, 5), dg.randn(6, 4, 3, 3)
    _err(r"expected weight to be divisible by 4 at dimension 0.*\[6, 4, 3, 3\]", F.conv2d, x, w, groups=4)
    _err(r"expected input\[2, 4, 5, 5\] to have 8 channels, but got 4", F.conv2d, x, dg.randn(6, 8, 3, 3))
    _err(r"Kernel size: \(7 x 7\). Kernel size can't be greater than actual input size", F.conv2d, x,
         dg.randn(6, 4, 7, 7))
    _err("not supported for strided convolutions", F.conv2d, x, w, stride=2, padding="same")
    _err("Invalid padding string", F.conv2d, x, w, padding="full")
    _err(r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[4, 5\]",
         F.conv2d, dg.randn(4, 5), w)
    _err(r"bias to be 1-dimensional with 6 elements, but got bias of size \[5\]", F.conv2d, x, w, dg.randn(5))
    _err(r"Input type \(distgrad.float64\) and weight type \(distgrad.float32\)", F.conv2d, x.double(), w)
    _err("non-positive stride", F.conv2d, x, w, stride=0)
    _err("output padding must be smaller than either stride or dilation", F.conv_transpose2d, x,
         dg.randn(4, 2, 3, 3), output_padding=1)
    _err(r"Given transposed=1, weight of size \[3, 2, 3, 3\], expected input\[2, 4, 5, 5\] to have 3 channels",
         F.conv_transpose2d, x, dg.randn(3, 2, 3, 3))
    _err("pad should be at most half of effective kernel size", F.max_pool2d, x, 2, padding=2)
    _err("pad should be at most half of kernel size", F.avg_pool2d, x, 2, padding=2)
    _err(r"Output size is too small", F.max_pool2d, x, 3, dilation=3)
    _err("kernel_size must be greater than zero", F.max_pool2d, x, 0)
    _err("Expected 3D or 4D", F.max_pool2d, dg.randn(5, 5), 2)
    _err("reflect padding", dg.nn.Conv2d(4, 2, 3, padding=5, padding_mode="reflect"), x)


def test_module_argument_errors_match_torch():
    for kw, match in (({"groups": 3}, "in_channels must be divisible by groups"),
                      ({"padding_mode": "mirror"}, "padding_mode must be one of"),
                      ({"padding": "same", "stride": 2}, "not supported for strided convolutions"),
                      ({"padding": "full"}, "Invalid padding string")):
        for lib in (dg, torch):
            with pytest.raises(ValueError, match=match):
                lib.nn.Conv2d(4, 6, 3, **kw)
    with pytest.raises(ValueError, match='Only "zeros" padding mode'):
        dg.nn.ConvTranspose2d(4, 6, 3, padding_mode="reflect")


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", [(2, 2, 0, False), (3, 1, 1, False), (3, 2, 1, True),
                                                             (2, 1, 0, True)])
def test_max_pool_windows_with_nan_route_the_gradient_as_torch(kernel, stride, padding, ceil_mode):
    """A window holding NaN outputs NaN, and its index (and gradient) is its last NaN in
    scan order, as PyTorch's CPU kernel picks; windows without NaN take their first maximum."""
    rng = np.random.default_rng(kernel * 10 + stride)
    a = rng.standard_normal((2, 3, 7, 6))
    a[rng.random(a.shape) < 0.2] = np.nan
    a[0, 0, :2, :2] = 1.5                            # a tie
    got = []
    for lib in (dg, torch):
        x = lib.tensor(a, requires_grad=True)
        y, i = lib.nn.functional.max_pool2d(x, kernel, stride, padding, return_indices=True, ceil_mode=ceil_mode)
        y1 = lib.nn.functional.max_pool1d(x[0], kernel, stride, padding, ceil_mode=ceil_mode)
        (y.masked_fill(y.isnan(), 0.0) * 2).sum().backward()
        got.append((y.detach().numpy(), i.numpy(), x.grad.numpy(), y1.detach().numpy()))
    for d, t in zip(*got):
        np.testing.assert_array_equal(d, t)
