"""The CPU kernels: erf accurate to its dtype everywhere (tails, subnormals, inf, NaN),
and fused kernels (GELU, softmax, LayerNorm) that give the same values on any number of
threads and agree with PyTorch."""
import math

import numpy as np
import pytest

import distgrad as dg
import distgrad.nn.functional as F
from distgrad import _threads
from distgrad.ops import cpu_kernels

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
    return whole, fn()


KERNELS = {
    "erf": lambda x, g: (cpu_kernels.erf(x),),
    "gelu": lambda x, g: (cpu_kernels.gelu(x),),
    "gelu_grad": lambda x, g: (cpu_kernels.gelu_grad(x, g),),
    "softmax": lambda x, g: (cpu_kernels.softmax(x),),
    "softmax_grad": lambda x, g: (cpu_kernels.softmax_grad(cpu_kernels.softmax(x), g),),
    "layer_norm": lambda x, g: (cpu_kernels.layer_norm(x, 37, x[0, 0], x[1, 1], 1e-5),),
    "layer_norm_grad": lambda x, g: cpu_kernels.layer_norm_grad(x, g, 37, x[0, 0], 1e-5, True, True),
}


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
