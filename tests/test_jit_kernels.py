"""The numba-compiled CPU kernels against the numpy bodies they replace and float64:
erf, GELU and its gradient (with their own vectorized exp and tanh) and the row kernels
(softmax, its gradient, LayerNorm) agree to float rounding, NaN, infinities and signed
zeros come out as numpy's do, and DISTGRAD_NUMBA and a missing or broken numba fall
back to numpy with a clear word."""
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from distgrad.ops import _jit_kernels, cpu_kernels, pointwise

pytestmark = pytest.mark.skipif(_jit_kernels.get() is None, reason="numba is not installed")


def numpy_bodies(monkeypatch):
    monkeypatch.setattr(_jit_kernels, "_kernels", None)
    monkeypatch.setattr(_jit_kernels, "_failed", True)
    assert not cpu_kernels.compiled()


def compiled_then_numpy(monkeypatch, fn):
    assert cpu_kernels.compiled()
    first = fn()
    numpy_bodies(monkeypatch)
    return first, fn()


def special_values(n=20000, seed=0, scale=4.0):
    """Normal values, the erf's clipping edges, subnormals, zeros, infinities and NaN,
    as a non-contiguous float32 array."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    edge = np.float32(4.5 * math.sqrt(2))
    extra = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38, 4.5, -4.5,
                      edge, -edge, np.nextafter(edge, np.float32(9)), 30.0, -30.0, 3e38, -3e38],
                     np.float32)
    x = np.concatenate([x, extra])
    return np.stack([x, x[::-1]], axis=1)[:, 0]  # every other element of a bigger array


ELEMENTWISE = {
    "erf": lambda x, g: [cpu_kernels.erf(x)],
    "gelu": lambda x, g: [cpu_kernels.gelu(x)],
    "gelu_keep_cdf": lambda x, g: list(cpu_kernels.gelu(x, keep_cdf=True)),
    "gelu_grad": lambda x, g: [cpu_kernels.gelu_grad(x, g)],
    "gelu_grad_cdf": lambda x, g: [cpu_kernels.gelu_grad(x, g, cpu_kernels.gelu(x, keep_cdf=True)[1])],
    "gelu_tanh": lambda x, g: [pointwise._gelu_value(x, "tanh")],
    "gelu_tanh_grad": lambda x, g: [_tanh_gelu_grad(x, g)],
}


def _tanh_gelu_grad(x, g):
    """The gradient of GELU's tanh form as autograd computes it."""
    import distgrad as dg

    t = dg.tensor(x, requires_grad=True)
    dg.nn.functional.gelu(t, approximate="tanh").backward(dg.tensor(g))
    return t.grad.numpy()


@pytest.mark.parametrize("name", list(ELEMENTWISE))
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy warns for inf * 0; numba does not
def test_elementwise_kernels_agree_with_the_numpy_bodies(monkeypatch, name):
    """The compiled exp, tanh and erf (numba would call the scalar libm) against numpy's
    SIMD ones: a few float32 roundings apart, the same NaN, infinities and signed zeros."""
    x = special_values()
    assert not x.flags.c_contiguous
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    ours, theirs = compiled_then_numpy(monkeypatch, lambda: ELEMENTWISE[name](x, g))
    eps = float(np.finfo(np.float32).eps)
    scale = np.maximum(1, np.abs(x.astype(np.float64))) * np.maximum(1, np.abs(g))
    for a, b in zip(ours, theirs):
        assert a.dtype == np.float32 and a.shape == x.shape
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        finite = np.isfinite(b)
        np.testing.assert_array_equal(a[~finite], b[~finite])
        np.testing.assert_array_equal(np.signbit(a[b == 0]), np.signbit(b[b == 0]))
        err = np.abs(a[finite].astype(np.float64) - b[finite])
        assert (err <= 8 * eps * scale[finite]).all(), (x[finite][np.argmax(err / scale[finite])], err.max())


def test_compiled_gelu_and_its_gradient_are_close_to_float64():
    x = np.linspace(-12, 12, 200001, dtype=np.float32)
    x64 = x.astype(np.float64)
    phi = 0.5 * np.vectorize(math.erfc)(-x64 / math.sqrt(2))  # no cancelling in the left tail
    pdf = np.exp(-x64 ** 2 / 2) / math.sqrt(2 * math.pi)
    scale = np.maximum(1, np.abs(x64))
    gelu = cpu_kernels.gelu(x)
    assert (np.abs(gelu - x64 * phi) <= 1.1e-7 * scale).all()   # PyTorch's: 1.1e-6
    grad = cpu_kernels.gelu_grad(x, np.ones_like(x))
    assert (np.abs(grad - (phi + x64 * pdf)) <= 1.5e-7 * scale).all()   # PyTorch's: 2.6e-7
    # Phi(x): the fitted polynomial is 2.3e-10 off, the rest is float32 rounding (the
    # bounds hold with and without fused multiply-adds); the left tail (1.8e-33 at -12)
    # computed directly, so within 0.1 % there, where 1 + erf(x) gives 0
    _, cdf = cpu_kernels.gelu(x, keep_cdf=True)
    assert np.abs(cdf - phi).max() <= 8.5e-8
    tail = x < -4
    assert (np.abs(cdf[tail] / phi[tail] - 1) < 2e-3).all()
    assert cdf[-1] == 1 and (np.diff(cdf) >= -1e-7).all()


def test_compiled_tanh_gelu_and_its_gradient_are_close_to_float64():
    """GELU's tanh form, x sigmoid(2u): within 1.4e-7 max(1, |x|) of float64 (PyTorch's
    1.1e-7) and its gradient within 2.2e-7 (PyTorch's 2.1e-7), 1 - sigmoid(2u) taken
    without cancelling; the left tail to 2e-5 relative down to 1e-30, where PyTorch's
    1 + tanh(u) gives 0 from x = -5 on; 0 and NaN where numpy's exp overflows."""
    x = np.linspace(-12, 12, 200001, dtype=np.float32)
    x64 = x.astype(np.float64)
    k = math.sqrt(2 / math.pi)
    s = 1 / (1 + np.exp(-2 * k * (x64 + 0.044715 * x64 ** 3)))
    scale = np.maximum(1, np.abs(x64))
    y = cpu_kernels.gelu_tanh(x)
    assert y.dtype == np.float32 and (np.abs(y - x64 * s) <= 1.4e-7 * scale).all()
    d = cpu_kernels.gelu_tanh_grad(x, np.ones_like(x))
    ref = s + x64 * s * (1 - s) * 2 * k * (1 + 3 * 0.044715 * x64 ** 2)
    assert (np.abs(d - ref) <= 2.2e-7 * scale).all()
    tail = np.abs(x64 * s) > 1e-30
    assert (np.abs(y[tail] / (x64 * s)[tail] - 1) < 2e-5).all() and (x[tail] < -5).any()
    odd = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, -30, 30], np.float32)
    np.testing.assert_array_equal(cpu_kernels.gelu_tanh(odd), [np.nan, np.inf, np.nan, -0.0, 0.0, -0.0, 30])
    np.testing.assert_array_equal(np.signbit(cpu_kernels.gelu_tanh(odd)[3:6]), [True, False, True])


def test_the_fitted_phi_polynomial_is_within_its_stated_error():
    """The polynomial of tools/fit_phi.py in float64, against math.erfc: Phi(-|x|) =
    t Q(t) exp(-x^2 / 2) / 2 within 2.3e-10 where the kernel uses it."""
    from distgrad.ops import _jit_bodies

    x = np.linspace(0.8, 13.3, 100001)
    t = 1 / (1 + _jit_bodies.PHI_P * x / math.sqrt(2))
    q = np.polynomial.polynomial.polyval(t, _jit_bodies.PHI_Q)
    phi = 0.5 * np.vectorize(math.erfc)(x / math.sqrt(2))
    err = np.abs(0.5 * t * q * np.exp(-x * x / 2) - phi)
    assert err.max() <= 2.5e-10, (x[np.argmax(err)], err.max())


def test_compiled_float32_softmax_is_close_to_float64():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((64, 200)) * 10).astype(np.float32)
    # the shift rounded in float32 as any float32 softmax rounds it; from there float64
    ref = np.exp((x - x.max(1, keepdims=True)).astype(np.float64))
    ref /= ref.sum(1, keepdims=True)
    got = cpu_kernels.softmax(x)
    np.testing.assert_allclose(got, ref, rtol=8 * np.finfo(np.float32).eps, atol=1e-30)


def causal(L, S, dtype):
    return np.where(np.tril(np.ones((L, S), bool)), 0, -np.inf).astype(dtype)


ROWS = {
    "softmax": lambda x, g: [cpu_kernels.softmax(x)],
    "scaled_softmax": lambda x, g: [cpu_kernels.softmax(x, 0.37)],
    "causal_softmax": lambda x, g: [cpu_kernels.softmax(x, 0.37, causal(x.shape[-2], x.shape[-1], x.dtype))],
    "bias_only_softmax": lambda x, g: [cpu_kernels.softmax(x, None, causal(x.shape[-2], x.shape[-1], x.dtype))],
    "softmax_grad": lambda x, g: [cpu_kernels.softmax_grad(cpu_kernels.softmax(x), g)],
    "scaled_softmax_grad": lambda x, g: [cpu_kernels.softmax_grad(cpu_kernels.softmax(x), g, 0.37)],
    "layer_norm": lambda x, g: [cpu_kernels.layer_norm(x, x.shape[-1], g[0, 0], g[0, 0] * 0.5 + 1, 1e-5)],
    "layer_norm_no_affine": lambda x, g: [cpu_kernels.layer_norm(x, x.shape[-1], None, None, 1e-5)],
    "layer_norm_2d": lambda x, g: [cpu_kernels.layer_norm(x, x.shape[-2] * x.shape[-1], None, None, 0.1)],
    "layer_norm_grad": lambda x, g: list(cpu_kernels.layer_norm_grad(x, g, x.shape[-1], g[0, 0], 1e-5,
                                                                      True, True)),
    "layer_norm_grad_input": lambda x, g: cpu_kernels.layer_norm_grad(x, g, x.shape[-1], None, 1e-5,
                                                                      True, False)[:1],
    "layer_norm_grad_weight": lambda x, g: cpu_kernels.layer_norm_grad(x, g, x.shape[-1], g[0, 0], 1e-5,
                                                                       False, True)[1:],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 45, 45), (2, 130, 300), (1, 1, 7)])
@pytest.mark.parametrize("name", list(ROWS))
def test_row_kernels_agree_with_the_numpy_bodies(monkeypatch, name, shape, dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    ours, theirs = compiled_then_numpy(monkeypatch, lambda: ROWS[name](x, g))
    eps = np.finfo(dtype).eps
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype and a.shape == shape
        # row sums are reassociated: a few roundings of the row's terms apart
        tol = 16 * eps * max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, rtol=16 * eps, atol=tol)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's inf - inf
def test_softmax_rows_with_nan_inf_or_everything_masked(monkeypatch):
    x = np.random.default_rng(3).standard_normal((6, 9)).astype(np.float32)
    x[0, 4] = np.nan                 # a NaN: the row is NaN
    x[1, :] = -np.inf                # everything masked: NaN, as numpy and PyTorch give
    x[2, 3] = np.inf                 # +inf: NaN (inf - inf)
    x[3, :5] = -np.inf               # partly masked: those get exactly 0
    x[4, :] = np.nan
    ours, theirs = compiled_then_numpy(monkeypatch, lambda: cpu_kernels.softmax(x))
    for out in (ours, theirs):
        assert np.isnan(out[[0, 1, 2, 4]]).all()
        assert (out[3, :5] == 0).all() and abs(out[3].sum() - 1) < 1e-6
        assert np.isfinite(out[5]).all() and abs(out[5].sum() - 1) < 1e-6
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_layer_norm_of_constant_rows_is_the_bias(monkeypatch):
    x = np.full((4, 64), 3.25, np.float32)
    w, b = np.linspace(-1, 1, 64, dtype=np.float32), np.linspace(2, 3, 64, dtype=np.float32)
    ours, theirs = compiled_then_numpy(monkeypatch, lambda: cpu_kernels.layer_norm(x, 64, w, b, 1e-5))
    np.testing.assert_array_equal(ours, np.broadcast_to(b, x.shape))
    np.testing.assert_array_equal(theirs, ours)


def test_layer_norm_float64_is_exact_to_double_rounding():
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal((50, 33)) * 7 + 2, rng.standard_normal((50, 33))
    w = rng.standard_normal(33)
    y = cpu_kernels.layer_norm(x, 33, w, None, 1e-5)
    mean = x.mean(1, keepdims=True)
    xhat = (x - mean) / np.sqrt(((x - mean) ** 2).mean(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, xhat * w, rtol=1e-13, atol=1e-13)
    gx, gxh = cpu_kernels.layer_norm_grad(x, g, 33, w, 1e-5, True, True)
    gw = g * w
    ref = (gw - gw.mean(1, keepdims=True) - xhat * (gw * xhat).mean(1, keepdims=True)) \
        / np.sqrt(((x - mean) ** 2).mean(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(gx, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gxh, g * xhat, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [50, 9000])   # run serially with the sums added up / in parallel
@pytest.mark.parametrize("need", [(True, True, True), (False, True, False), (True, False, True),
                                  (False, False, True)])
def test_layer_norm_gradient_with_its_column_sums(monkeypatch, dtype, rows, need):
    """The input's, weight's and bias's gradients at once: the weight's and bias's
    summed row by row inside the kernel below the parallel size, by numpy above it;
    against float64, the same on one thread and two, and None where not asked for."""
    rng = np.random.default_rng(8)
    c = 128
    x = (rng.standard_normal((rows, c)) * 3 + 1).astype(dtype)
    g = rng.standard_normal((rows, c)).astype(dtype)
    w = rng.standard_normal(c).astype(dtype)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    xc = x64 - x64.mean(1, keepdims=True)
    rstd = 1 / np.sqrt((xc ** 2).mean(1, keepdims=True) + 1e-5)
    xhat, gw = xc * rstd, g64 * w
    ref = (rstd * (gw - gw.mean(1, keepdims=True) - xhat * (gw * xhat).mean(1, keepdims=True)),
           (g64 * xhat).sum(0), g64.sum(0))
    tol = 2e-4 if dtype == np.float32 else 1e-10
    results = []
    for threads in (1, 2):
        monkeypatch.setattr(cpu_kernels, "_default_threads", threads)
        got = cpu_kernels.layer_norm_grad_sums(x, g, c, w, 1e-5, *need)
        for a, r, n in zip(got, ref, need):
            if not n:
                assert a is None
                continue
            assert a.dtype == dtype and a.shape == r.shape
            np.testing.assert_allclose(a, r, rtol=tol, atol=tol * np.sqrt(rows))
        results.append(got)
    for a, b in zip(*results):
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_gelu_under_autograd_keeps_no_cdf_with_the_compiled_kernels():
    """The compiled gradient recomputes Phi(x): nothing beyond x is kept, as in PyTorch."""
    import distgrad as dg
    import distgrad.nn.functional as F
    t = dg.tensor(np.linspace(-5, 5, 1000, dtype=np.float32), requires_grad=True)
    y = F.gelu(t)
    assert y.grad_fn.args == "none"  # the approximate flag alone: no Phi(x) array kept
    y.backward(dg.ones_like(y))
    x64 = np.linspace(-5, 5, 1000, dtype=np.float32).astype(np.float64)
    ref = 0.5 * (1 + np.vectorize(math.erf)(x64 / math.sqrt(2))) + x64 * np.exp(-x64 ** 2 / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(t.grad.numpy(), ref, rtol=2e-6, atol=2e-6)


def test_a_bad_distgrad_numba_value_is_refused(monkeypatch):
    monkeypatch.setattr(_jit_kernels, "_kernels", None)
    monkeypatch.setattr(_jit_kernels, "_failed", False)
    monkeypatch.setenv("DISTGRAD_NUMBA", "yes")
    with pytest.raises(ValueError, match=r"DISTGRAD_NUMBA='yes'.*expected 1 .* or 0"):
        cpu_kernels.gelu(np.ones(3, np.float32))


def run_python(code, env_extra=None, pre_path=None):
    env = dict(os.environ, **(env_extra or {}))
    if pre_path:
        env["PYTHONPATH"] = pre_path + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)


CHECK = """
    import warnings, numpy as np
    warnings.simplefilter("always")
    from distgrad.ops import cpu_kernels
    import distgrad as dg, distgrad.nn.functional as F
    x = dg.tensor(np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4), requires_grad=True)
    F.layer_norm(F.gelu(x), (4,)).softmax(-1).sum().backward()
    print("compiled", cpu_kernels.compiled(), "finite", bool(np.isfinite(x.grad.numpy()).all()))
"""


def test_distgrad_numba_0_keeps_the_numpy_bodies():
    r = run_python(CHECK, {"DISTGRAD_NUMBA": "0"})
    assert r.returncode == 0, r.stderr
    assert "compiled False finite True" in r.stdout
    assert "numba" not in r.stderr


def test_without_numba_the_numpy_bodies_run_silently(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['numba'] = None\n")
    r = run_python(CHECK, pre_path=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "compiled False finite True" in r.stdout
    assert "Warning" not in r.stderr


def test_a_broken_numba_falls_back_with_a_warning(tmp_path):
    (tmp_path / "numba").mkdir()
    (tmp_path / "numba" / "__init__.py").write_text("raise OSError('libllvmlite.so: cannot open')\n")
    r = run_python(CHECK, pre_path=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "compiled False finite True" in r.stdout
    assert "numba failed to import (OSError: libllvmlite.so: cannot open)" in r.stderr
    assert "DISTGRAD_NUMBA=0" in r.stderr


def test_the_compiled_kernels_run_in_a_fresh_process():
    r = run_python(CHECK)
    assert r.returncode == 0, r.stderr
    assert "compiled True finite True" in r.stdout


@pytest.mark.parametrize("opt, kwargs", [
    ("AdamW", {}),
    ("AdamW", {"weight_decay": 0.1, "lr": 3e-2, "betas": (0.8, 0.95)}),
    ("Adam", {}),
    ("Adam", {"weight_decay": 0.05}),                  # coupled: the gradient gets wd x first
    ("Adam", {"maximize": True, "eps": 1e-3}),
    ("AdamW", {"amsgrad": True}),                      # the numpy body in both (no compiled amsgrad)
])
def test_compiled_adam_step_gives_the_numpy_bodys_bits(monkeypatch, opt, kwargs):
    import distgrad as dg

    def run():
        rng = np.random.default_rng(3)
        params = [dg.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
                  for s in [(33, 7), (5,), (), (4, 3, 2)]]
        o = getattr(dg.optim, opt)(params, **kwargs)
        for _ in range(4):
            for p in params:
                # gradients with zeros, tiny and large values
                p.grad = dg.tensor((rng.standard_normal(p.shape) * rng.choice([0, 1e-20, 1, 1e3], p.shape))
                                   .astype(np.float32))
            o.step()
        return [p.detach().numpy().copy() for p in params] + [
            o.state[p][k].numpy().copy() for p in params for k in ("exp_avg", "exp_avg_sq")]

    compiled, numpy_ = compiled_then_numpy(monkeypatch, run)
    for a, b in zip(compiled, numpy_):
        np.testing.assert_array_equal(a, b)


def test_compiled_adam_leaves_non_contiguous_and_float64_to_numpy():
    import distgrad as dg
    from distgrad.optim.optimizer import compiled_step_applies

    a32 = np.ones((4, 4), np.float32)
    assert compiled_step_applies(a32, a32, a32, a32)
    assert not compiled_step_applies(a32, a32.T.copy().T[:, ::2], a32, a32)
    assert not compiled_step_applies(a32.astype(np.float64), a32, a32, a32)
    # a float64 parameter still steps (numpy body) and moves against its gradient
    p = dg.tensor(np.ones(3), requires_grad=True)
    p.grad = dg.tensor(np.ones(3))
    dg.optim.AdamW([p], lr=0.1).step()
    assert (p.detach().numpy() < 1).all()


@pytest.mark.parametrize("kwargs", [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 1e-2},
    {"lr": 0.05, "momentum": 0.8, "nesterov": True, "maximize": True},
])
def test_compiled_sgd_step_gives_the_numpy_bodys_bits(monkeypatch, kwargs):
    import distgrad as dg

    def run():
        rng = np.random.default_rng(4)
        params = [dg.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
                  for s in [(33, 7), (5,), (), (4, 3, 2)]]
        o = dg.optim.SGD(params, **kwargs)
        for _ in range(4):
            for p in params:
                p.grad = dg.tensor((rng.standard_normal(p.shape) * rng.choice([0, 1e-20, 1, 1e3], p.shape))
                                   .astype(np.float32))
            o.step()
        out = [p.detach().numpy().copy() for p in params]
        if kwargs.get("momentum"):
            out += [o.state[p]["momentum_buffer"].numpy().copy() for p in params]
        return out

    compiled, numpy_ = compiled_then_numpy(monkeypatch, run)
    assert len(compiled) == len(numpy_)
    for a, b in zip(compiled, numpy_):
        np.testing.assert_array_equal(a, b)


def test_row_max_is_numpys_max_for_every_row_length():
    from distgrad.ops import _jit_bodies

    rng = np.random.default_rng(1)
    for c in (1, 2, 7, 8, 9, 15, 16, 17, 64, 127, 128, 1000):
        x = (rng.standard_normal((20, c)) * 10).astype(np.float32)
        x[3] = -np.inf                    # a fully masked row
        x[4, c // 2] = np.inf
        x[5, -1] = 1e30                   # the largest value in the tail past the eight lanes
        x[6, 0] = 1e30                    # ... and in the first element
        for row in x:
            assert _jit_bodies.row_max(row) == row.max(), (c, row)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (7, 5), (7, 3, 4)])
def test_index_add_along_dim_0_gives_add_at_bits(monkeypatch, dtype, shape):
    """index_add's compiled loop adds in add.at's order: the same bits, duplicates
    included; embedding's gradient goes through it."""
    import distgrad as dg

    rng = np.random.default_rng(3)
    base = rng.standard_normal(shape).astype(dtype)
    index = rng.integers(0, shape[0], 40)
    index[:6] = 2                                        # many repeats of one row
    src = (rng.standard_normal((40,) + shape[1:]) * 1e3).astype(dtype)

    def run():
        return dg.tensor(base).index_add(0, dg.tensor(index), dg.tensor(src), alpha=0.5).numpy()

    ours, theirs = compiled_then_numpy(monkeypatch, run)
    expect = base.copy()
    np.add.at(expect, index, src * dtype(0.5))
    np.testing.assert_array_equal(ours, expect)
    np.testing.assert_array_equal(theirs, expect)


@pytest.mark.parametrize("bad", [-1, 4])
def test_index_add_rejects_indices_out_of_range_as_pytorch_does(bad):
    import distgrad as dg

    base = dg.zeros(4, 2)
    with pytest.raises(IndexError, match=f"index {bad} is out of bounds for dimension 0 with size 4"):
        base.index_add(0, dg.tensor([0, bad]), dg.ones(2, 2))
    with pytest.raises(IndexError, match=f"index {bad} is out of bounds for dimension 1 with size 4"):
        dg.zeros(2, 4).index_add(1, dg.tensor([bad, 0]), dg.ones(2, 2))
    np.testing.assert_array_equal(base.numpy(), 0)   # nothing written


def test_embedding_gradient_sums_repeated_tokens():
    import distgrad as dg

    weight = dg.randn(10, 3, requires_grad=True)
    idx = dg.tensor([[1, 2, 1], [9, 1, 0]])
    g = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    dg.nn.functional.embedding(idx, weight).backward(dg.tensor(g))
    expect = np.zeros((10, 3), np.float32)
    np.add.at(expect, idx.numpy().reshape(-1), g.reshape(6, 3))
    np.testing.assert_array_equal(weight.grad.numpy(), expect)


def test_softmax_in_place_gives_the_same_bits():
    """The compiled softmax reads its own output in place (so that LLVM vectorizes the
    first pass): the same bits as into a new array."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((3, 5, 37)) * 3).astype(np.float32)
    bias = np.where(np.tril(np.ones((5, 37), bool)), 0, -np.inf).astype(np.float32)
    fresh = cpu_kernels.softmax(x, 0.25, bias)
    inplace = x.copy()
    assert cpu_kernels.softmax(inplace, 0.25, bias, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, fresh)
    assert (fresh[:, np.isinf(bias)] == 0).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # numpy's inf - inf in the reference
def test_compiled_log_softmax_and_its_gradient_agree_with_numpy(monkeypatch):
    """log_softmax (cross_entropy's) over the last dim by the compiled row kernels: to a
    few roundings of the numpy path, -inf logits stay -inf, a row of -inf or with +inf
    or NaN comes out NaN as in numpy; its gradient with autograd the same to rounding,
    and a double backward still differentiates through it."""
    import distgrad as dg

    rng = np.random.default_rng(4)
    x = (rng.standard_normal((300, 1000)) * 5).astype(np.float32)   # parallel: 300K values
    x[0, :5] = -np.inf
    x[1] = -np.inf
    x[2, 3] = np.inf
    x[3, 7] = np.nan
    g = rng.standard_normal(x.shape).astype(np.float32)

    def run():
        t = dg.tensor(x, requires_grad=True)
        y = dg.nn.functional.log_softmax(t, -1)
        (y * dg.tensor(g)).sum().backward()
        return y.detach().numpy(), t.grad.numpy()

    (y, gx), (y_np, gx_np) = compiled_then_numpy(monkeypatch, run)
    for a, b in ((y, y_np), (gx, gx_np)):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isinf(a) & (a < 0), np.isinf(b) & (b < 0))
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all() and np.isnan(y[3]).all()
    assert (y[0, :5] == -np.inf).all() and np.isfinite(y[0, 5:]).all()
    ok = np.isfinite(y_np)
    np.testing.assert_allclose(y[ok], y_np[ok], rtol=2e-6, atol=4e-6)
    ok = np.isfinite(gx_np)
    np.testing.assert_allclose(gx[ok], gx_np[ok], rtol=1e-5, atol=1e-4)

    t = dg.tensor(x[4:6].copy(), requires_grad=True)
    (gg,) = dg.autograd.grad(dg.nn.functional.log_softmax(t, -1)[:, 0].sum(), t, create_graph=True)
    gg.sum().backward()   # through the tensor formula, not the kernel
    assert t.grad is not None and np.isfinite(t.grad.numpy()).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 5), (7, 3), (300, 129)])
def test_column_sums_give_numpy_bits(dtype, shape):
    """The compiled column sums (a Linear's bias gradient) add the rows in numpy's order:
    the same bits, -0.0 and infinities included."""
    a = (np.random.default_rng(6).standard_normal(shape) * 1e4).astype(dtype)
    a[:, 0] = -0.0
    a[0, -1] = np.inf
    got = cpu_kernels.column_sums(a)
    np.testing.assert_array_equal(got, a.sum(axis=0))
    assert np.signbit(got[0])
    assert cpu_kernels.column_sums(a[:, ::2]) is None   # not C-contiguous: numpy's


def test_linear_bias_gradient_is_the_column_sum():
    import distgrad as dg

    rng = np.random.default_rng(1)
    lin = dg.nn.Linear(6, 5)
    x = dg.tensor(rng.standard_normal((4, 3, 6)).astype(np.float32))
    g = rng.standard_normal((4, 3, 5)).astype(np.float32)
    lin(x).backward(dg.tensor(g))
    np.testing.assert_array_equal(lin.bias.grad.numpy(), g.reshape(-1, 5).sum(axis=0))


def test_nll_loss_gradient_written_directly_matches_the_scatter_add():
    """nll_loss's 2-D gradient is written into zeros (one target per row); with
    create_graph it goes through scatter_add: the same values, ignored targets and
    class weights included."""
    import distgrad as dg

    rng = np.random.default_rng(12)
    x = dg.tensor(rng.standard_normal((9, 5)).astype(np.float32), requires_grad=True)
    t = dg.tensor(np.array([0, 4, -100, 2, 2, 1, -100, 3, 0]))
    w = dg.tensor(rng.random(5).astype(np.float32) + 0.5)
    for reduction in ("mean", "sum", "none"):
        loss = dg.nn.functional.cross_entropy(x, t, weight=w, ignore_index=-100, reduction=reduction)
        (fast,) = dg.autograd.grad(loss.sum(), x)
        loss = dg.nn.functional.cross_entropy(x, t, weight=w, ignore_index=-100, reduction=reduction)
        (graph,) = dg.autograd.grad(loss.sum(), x, create_graph=True)
        np.testing.assert_allclose(fast.numpy(), graph.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(fast.numpy()[[2, 6]], 0)   # ignored rows


def _row_kernel_calls(dtype):
    """Each row kernel as ``cpu_kernels`` calls it: (what, arrays, call, indices of the
    outputs among the arrays), the outputs not needed as the 1x1 or 1-element
    stand-ins it passes."""
    jit = _jit_kernels.get()
    rng = np.random.default_rng(12)
    n, c = 24, 37
    x, g = (rng.standard_normal((n, c)) * 2 + 0.5).astype(dtype), rng.standard_normal((n, c)).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    k = np.array([1.0, 1e-5, 1.0 / c], dtype)
    full, row, none, no = np.empty((n, c), dtype), np.zeros(c, dtype), np.empty((1, 1), dtype), np.empty(1, dtype)
    calls = [("ln_fwd", [x, w, b, k, full], jit["ln_fwd"], [4])]
    for flags in ((True, False, False), (False, True, False), (True, True, False), (True, False, True),
                  (False, False, True)):
        need_gx, need_gxh, sums = flags
        arrays = [x, g, w, k, full if need_gx else none, full if need_gxh else none,
                  row if sums else no, row if sums else no]
        outs = [i for i, f in ((4, need_gx), (5, need_gxh), (6, sums), (7, sums)) if f]
        calls.append((f"ln_bwd{flags}", arrays, lambda *a, f=flags: jit["ln_bwd"](*a, *f), outs))
    calls.append(("softmax_grad", [x, g, k[:1], full], jit["softmax_grad"], [3]))
    if dtype == np.float32:
        bias = np.where(np.tril(np.ones((4, c), bool)), 0, -np.inf).astype(dtype)
        calls += [("softmax_f32", [x, bias, full],
                   lambda x, bias, out: jit["softmax_f32"](x, bias, dtype(0.3), out, False), [2]),
                  ("log_softmax_f32", [x, full, row], jit["log_softmax_f32"], [1]),
                  ("log_softmax_grad_f32", [x * -0.1, g, full], jit["log_softmax_grad_f32"], [2])]
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_kernel_bits_do_not_depend_on_where_the_arrays_lie(dtype):
    """Each row kernel with its arrays laid end to end in one buffer, every array right
    before every other (as the heap may place small ones), gives the bits it gives with
    the arrays apart. LLVM vectorizes a loop that stores behind a runtime check that
    its stores overlap none of its loads, taking each array's range from its indexing;
    a 1x1 stand-in indexed [i, j] runs past its end into its neighbour, the check then
    fails and the scalar loop sums a row in another order. A LayerNorm gradient that
    stored inside its row sums' loop gave other bits so in one process out of six."""
    for what, arrays, kernel, outs in _row_kernel_calls(dtype):
        apart = [a.copy() for a in arrays]   # each its own allocation
        kernel(*apart)
        for first in range(len(arrays)):
            for second in range(len(arrays)):
                if first == second:
                    continue
                order = [first, second] + [i for i in range(len(arrays)) if i not in (first, second)]
                buf = np.zeros(sum(a.size for a in arrays), dtype)
                placed, at = [None] * len(arrays), 0
                for i in order:
                    placed[i] = buf[at:at + arrays[i].size].reshape(arrays[i].shape)
                    placed[i][...] = arrays[i]
                    at += arrays[i].size
                kernel(*placed)
                for i in outs:
                    assert np.array_equal(placed[i], apart[i], equal_nan=True), \
                        f"{what}: output {i} changed with array {first} right before array {second}"
