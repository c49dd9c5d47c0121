"""PyTorch's names around the engine: ``backends``, ``compile``, ``accelerator``, the
``cuda`` functions without a GPU, ``amp`` (``GradScaler``, ``autocast``), the Adagrad,
Adadelta and RMSprop optimizers, the learning-rate schedulers, ``ConcatDataset`` /
``random_split`` / ``RandomSampler`` and ``Flatten`` / ``Unflatten``, each compared with
PyTorch (on its CPU build) where PyTorch is installed."""
import copy
import pickle
import warnings

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn, optim
from distgrad.data import (ConcatDataset, DataLoader, Dataset, RandomSampler, Subset, TensorDataset,
                           random_split)
from distgrad.optim import lr_scheduler

HAS_CUDA = dg.cuda.is_available()
pytestmark = pytest.mark.filterwarnings("ignore:distgrad's ops do not cast:UserWarning")
no_gpu = pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour without a GPU")


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def torch_cpu(torch):
    if torch.cuda.is_available():
        pytest.skip("compares with PyTorch's behaviour without CUDA")
    return torch


@pytest.fixture(autouse=True)
def _restore_settings():
    yield
    dg.set_float32_matmul_precision("highest")
    dg.use_deterministic_algorithms(False)
    dg.backends.cudnn.benchmark = False
    dg.backends.cudnn.deterministic = False


# ------------------------------------------------------------------ backends
def test_backends_defaults_match_torch(torch):
    b, tb = dg.backends, torch.backends
    assert b.cuda.matmul.allow_tf32 is tb.cuda.matmul.allow_tf32 is False
    assert (b.cuda.matmul.allow_fp16_reduced_precision_reduction
            is tb.cuda.matmul.allow_fp16_reduced_precision_reduction)
    assert b.cudnn.allow_tf32 is tb.cudnn.allow_tf32
    assert b.cudnn.benchmark is tb.cudnn.benchmark
    assert b.cudnn.deterministic is tb.cudnn.deterministic
    assert b.cudnn.enabled is tb.cudnn.enabled
    assert b.mps.is_available() is b.mps.is_built() is False
    assert b.cudnn.is_available() is False
    assert dg.get_float32_matmul_precision() == torch.get_float32_matmul_precision() == "highest"
    assert dg.are_deterministic_algorithms_enabled() is torch.are_deterministic_algorithms_enabled()
    assert isinstance(b.cpu.get_cpu_capability(), str)


def test_allow_tf32_and_matmul_precision_move_together(torch):
    seqs = []
    for lib in (dg, torch):
        m = lib.backends.cuda.matmul
        seq = []
        try:
            m.allow_tf32 = True
            seq.append((lib.get_float32_matmul_precision(), m.allow_tf32))
            m.allow_tf32 = False
            seq.append((lib.get_float32_matmul_precision(), m.allow_tf32))
            lib.set_float32_matmul_precision("medium")
            seq.append((lib.get_float32_matmul_precision(), m.allow_tf32))
            lib.set_float32_matmul_precision("highest")
            seq.append((lib.get_float32_matmul_precision(), m.allow_tf32))
        finally:
            lib.set_float32_matmul_precision("highest")
        seqs.append(seq)
    assert seqs[0] == seqs[1] == [("high", True), ("highest", False), ("medium", True), ("highest", False)]


def test_matmul_precision_rejects_unknown_values_as_torch(torch):
    for lib in (dg, torch):
        lib.set_float32_matmul_precision("high")
        with pytest.warns(UserWarning, match="is not one of 'highest', 'high', or 'medium'"):
            lib.set_float32_matmul_precision("fastest")
        assert lib.get_float32_matmul_precision() == "high"
        lib.set_float32_matmul_precision("highest")


def test_matmul_flags_validate_like_torch(torch):
    for lib in (dg, torch):
        with pytest.raises(AttributeError, match="Unknown attribute"):
            lib.backends.cuda.matmul.allow_tf33 = True
        with pytest.raises(RuntimeError, match="expects a bool"):
            lib.backends.cuda.matmul.allow_tf32 = "yes"
    m = dg.backends.cuda.matmul
    m.allow_fp16_reduced_precision_reduction = False
    assert m.allow_fp16_reduced_precision_reduction is False
    m.allow_fp16_reduced_precision_reduction = True


def test_cudnn_flags_are_settable():
    import distgrad.backends.cudnn as cudnn

    cudnn.benchmark = True
    cudnn.deterministic = True
    assert dg.backends.cudnn.benchmark and dg.backends.cudnn.deterministic


def test_deterministic_algorithms(torch):
    for lib in (dg, torch):
        lib.use_deterministic_algorithms(True)
        assert lib.are_deterministic_algorithms_enabled()
        assert not lib.is_deterministic_algorithms_warn_only_enabled()
        lib.use_deterministic_algorithms(True, warn_only=True)
        assert lib.is_deterministic_algorithms_warn_only_enabled()
        lib.use_deterministic_algorithms(False)
        assert not lib.are_deterministic_algorithms_enabled()
        assert not lib.is_deterministic_algorithms_warn_only_enabled()


# ------------------------------------------------------------------- compile
def test_compile_returns_the_model_unchanged():
    model = nn.Linear(3, 2)
    assert dg.compile(model) is model
    assert dg.compile(model, mode="max-autotune", fullgraph=True, dynamic=True) is model

    @dg.compile
    def f(x):
        return x * 2

    @dg.compile(mode="reduce-overhead")
    def g(x):
        return x + 1

    assert f(dg.tensor(3.0)).item() == 6.0 and g(dg.tensor(3.0)).item() == 4.0
    assert f.__name__ == "f"
    assert dg.compile(backend="eager", disable=True)(len) is len


@pytest.mark.parametrize("kw, err", [
    (dict(mode="fastest"), "Unrecognized mode=fastest, should be one of: default, lite, reduce-overhead, "
                           "max-autotune-no-cudagraphs, max-autotune"),
    (dict(mode="max-autotune", options={"a": 1}), "Either mode or options can be specified"),
    (dict(mode="fastest", disable=True), "Unrecognized mode"),
])
def test_compile_validates_like_torch(torch, kw, err):
    for lib in (dg, torch):
        with pytest.raises(RuntimeError, match=err):
            lib.compile(lambda x: x, **kw)
    dg.compile(lambda x: x, mode="fastest", backend="eager")  # mode belongs to inductor
    torch.compile(lambda x: x, mode="fastest", backend="eager")


def test_compile_rejects_unknown_backends_and_non_callables(torch):
    with pytest.raises(RuntimeError, match="Invalid backend: 'nosuch'"):
        dg.compile(lambda x: x, backend="nosuch")
    for lib in (dg, torch):
        with pytest.raises(AssertionError, match="A callable function is expected"):
            lib.compile(5)
    assert not dg.compiler.is_compiling()
    assert dg.compiler.disable(len) is len


# ------------------------------------------------------- accelerator and cuda
@no_gpu
def test_accelerator_without_gpu_matches_torch(torch_cpu):
    assert dg.accelerator.is_available() is torch_cpu.accelerator.is_available() is False
    assert dg.accelerator.current_accelerator() is torch_cpu.accelerator.current_accelerator() is None
    assert dg.accelerator.device_count() == torch_cpu.accelerator.device_count() == 0
    with pytest.raises(RuntimeError):
        dg.accelerator.current_device_index()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
def test_accelerator_with_gpu():
    assert dg.accelerator.is_available()
    assert dg.accelerator.current_accelerator() == dg.device("cuda")
    assert dg.accelerator.device_count() == dg.cuda.device_count() >= 1


@no_gpu
def test_cuda_functions_without_gpu_match_torch(torch_cpu):
    tc = torch_cpu.cuda
    for name in ("is_bf16_supported", "memory_allocated", "memory_reserved", "memory_stats",
                 "empty_cache", "seed", "seed_all", "is_initialized", "device_count", "is_available"):
        assert getattr(dg.cuda, name)() == getattr(tc, name)(), name
    for name in ("manual_seed", "manual_seed_all"):
        assert getattr(dg.cuda, name)(3) is getattr(tc, name)(3) is None
    for name in ("synchronize", "current_device", "initial_seed", "get_device_name", "get_device_capability"):
        with pytest.raises(RuntimeError):
            getattr(dg.cuda, name)()
    assert dg.cuda.is_bf16_supported() is False


def test_cuda_seeding_keeps_the_cpu_generator():
    dg.manual_seed(5)
    a = dg.rand(3)
    dg.manual_seed(5)
    dg.cuda.manual_seed_all(123)
    dg.cuda.seed()
    np.testing.assert_array_equal(dg.rand(3).numpy(), a.numpy())


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
def test_cuda_manual_seed_seeds_the_gpu_generator():
    dg.cuda.manual_seed(7)
    a = dg.rand(4, device="cuda").cpu().numpy()
    dg.cuda.manual_seed_all(7)
    np.testing.assert_array_equal(dg.rand(4, device="cuda").cpu().numpy(), a)
    assert dg.cuda.initial_seed() == 7


def test_cpu_module():
    assert dg.cpu.is_available() and dg.cpu.device_count() == 1 and dg.cpu.current_device() == "cpu"
    dg.cpu.synchronize()


@no_gpu
def test_pin_memory_without_gpu_raises_as_torch(torch_cpu):
    from distgrad.cuda import _is_pinned, _pin_memory

    x = dg.ones(2)
    assert _is_pinned(x) is torch_cpu.ones(2).is_pinned() is False
    with pytest.raises(RuntimeError, match="Cannot access accelerator device when none is available"):
        _pin_memory(x)
    with pytest.raises(RuntimeError, match="Cannot access accelerator device when none is available"):
        torch_cpu.ones(2).pin_memory()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
def test_pin_memory_with_gpu():
    from distgrad.cuda import _is_pinned, _pin_memory

    x = dg.arange(6.0, requires_grad=True)
    p = _pin_memory(x)
    assert _is_pinned(p) and not _is_pinned(x) and _pin_memory(p) is p
    np.testing.assert_array_equal(p.detach().numpy(), x.detach().numpy())
    (p * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full(6, 2.0))
    np.testing.assert_array_equal(p.to("cuda").cpu().detach().numpy(), x.detach().numpy())


# ----------------------------------------------------------------- GradScaler
@no_gpu
def test_grad_scaler_cuda_without_gpu_disables_itself_as_torch(torch_cpu):
    scalers = []
    for lib in (dg, torch_cpu):
        with pytest.warns(UserWarning, match="CUDA is not available.  Disabling"):
            s = lib.amp.GradScaler("cuda")
        scalers.append(s)
        with pytest.warns(FutureWarning, match="is deprecated"):
            with pytest.warns(UserWarning, match="Disabling"):
                old = lib.cuda.amp.GradScaler()
        assert isinstance(old, lib.amp.GradScaler) and not old.is_enabled()
    s, t = scalers
    assert s.is_enabled() is t.is_enabled() is False
    assert s.get_scale() == t.get_scale() == 1.0
    assert s.state_dict() == t.state_dict() == {}
    x = dg.ones(2)
    assert s.scale(x) is x
    p = nn.Parameter(dg.ones(2))
    opt = optim.SGD([p], lr=0.5)
    p.grad = dg.tensor([float("inf"), 1.0])
    s.unscale_(opt)
    s.step(opt)  # just steps: a disabled scaler does not look at the gradients
    s.update()
    assert p.detach().numpy()[1] == 0.5 and np.isinf(p.detach().numpy()[0])


def test_grad_scaler_cpu_defaults_match_torch(torch):
    s, t = dg.amp.GradScaler("cpu"), torch.amp.GradScaler("cpu")
    assert s.is_enabled() and t.is_enabled()
    assert s.state_dict() == t.state_dict()
    assert (s.get_scale(), s.get_growth_factor(), s.get_backoff_factor(), s.get_growth_interval()) == \
        (t.get_scale(), t.get_growth_factor(), t.get_backoff_factor(), t.get_growth_interval())
    y = s.scale(dg.ones(2))
    np.testing.assert_array_equal(y.numpy(), t.scale(torch.ones(2)).numpy())
    assert s.state_dict() == t.state_dict()
    a = s.scale([dg.ones(1), (dg.ones(1), dg.ones(1))])
    assert isinstance(a, list) and isinstance(a[1], tuple) and a[1][0].item() == 65536.0
    assert s.get_scale() == 65536.0 and dg.amp.GradScaler("cpu", enabled=False).state_dict() == {}


def _scaler_run(lib, mod, optim_mod, sched, kw, opt_kw, steps=24, unscale=False, seed=0):
    """A small model trained with GradScaler('cpu'); at the steps in ``sched`` a gradient
    is made inf or NaN. Returns the scales, the skipped steps and the final parameters."""
    rng = np.random.default_rng(seed)
    w0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(3)
    xs = [rng.standard_normal((5, 4)) for _ in range(steps)]
    ys = [rng.standard_normal((5, 3)) for _ in range(steps)]
    w, b = mod.Parameter(lib.tensor(w0)), mod.Parameter(lib.tensor(b0))
    opt = optim_mod.SGD([w, b], **opt_kw)
    scaler = lib.amp.GradScaler("cpu", **kw)
    scales, skipped, tracker = [], [], []
    for i in range(steps):
        opt.zero_grad()
        out = lib.tensor(xs[i]) @ w.T + b
        loss = ((out - lib.tensor(ys[i])) ** 2).mean()
        scaler.scale(loss).backward()
        if i in sched:
            b.grad[sched[i][0]] = sched[i][1]
        if unscale:
            scaler.unscale_(opt)
            lib.nn.utils.clip_grad_norm_([w, b], 1.0)
        before = w.detach().numpy().copy()
        ret = scaler.step(opt)
        assert ret is None
        skipped.append(bool(np.array_equal(before, w.detach().numpy())))
        scaler.update()
        scales.append(scaler.get_scale())
        tracker.append(scaler._get_growth_tracker())
    return scales, skipped, tracker, w.detach().numpy().copy(), b.detach().numpy().copy(), scaler.state_dict()


@pytest.mark.parametrize("kw", [
    dict(init_scale=2.0 ** 10, growth_interval=3),
    dict(init_scale=1000.0, growth_factor=3.0, backoff_factor=0.3, growth_interval=2),
    dict(init_scale=3.0e38, growth_interval=1),  # growth past float32's range is skipped
])
@pytest.mark.parametrize("unscale", [False, True])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # clipping inf grads
def test_grad_scaler_cpu_matches_torch(torch, kw, unscale):
    inf, nan = float("inf"), float("nan")
    sched = {2: (0, inf), 3: (1, -inf), 9: (2, nan), 10: (0, inf), 17: (1, nan)}
    a = _scaler_run(dg, nn, optim, sched, kw, dict(lr=0.05, momentum=0.9), unscale=unscale)
    b = _scaler_run(torch, torch.nn, torch.optim, sched, kw, dict(lr=0.05, momentum=0.9), unscale=unscale)
    assert a[0] == b[0]  # scales, exactly (float32 arithmetic as PyTorch)
    assert a[1] == b[1]  # skipped steps
    assert a[2] == b[2]
    assert any(a[1]) and not all(a[1])
    np.testing.assert_allclose(a[3], b[3], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a[4], b[4], rtol=1e-12, atol=1e-12)
    assert a[5] == b[5]


def test_grad_scaler_stage_errors_match_torch(torch):
    for lib, mod, om in ((dg, nn, optim), (torch, torch.nn, torch.optim)):
        p = mod.Parameter(lib.ones(2, dtype=lib.float64))
        opt = om.SGD([p], lr=0.1)
        s = lib.amp.GradScaler("cpu")
        with pytest.raises(AssertionError, match="Attempted step but _scale is None"):
            s.step(opt)
        s.scale(p.sum()).backward()
        s.unscale_(opt)
        with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
            s.unscale_(opt)
        s.step(opt)
        with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step\\(\\)"):
            s.unscale_(opt)
        with pytest.raises(RuntimeError, match="step\\(\\) has already been called since the last update"):
            s.step(opt)
        with pytest.raises(RuntimeError, match="Closure use is not currently supported"):
            s.step(opt, closure=lambda: 0)
        s.update()
        with pytest.raises(AssertionError, match="No inf checks were recorded prior to update"):
            s.update()
        s.update(1024.0)
        assert s.get_scale() == 1024.0
        s.update(lib.tensor(8.0))
        assert s.get_scale() == 8.0
        q = mod.Parameter(lib.ones(2))
        empty = om.SGD([q], lr=0.1)
        with pytest.raises(AssertionError, match="No inf checks were recorded for this optimizer"):
            s.step(empty)


def test_grad_scaler_rejects_fp16_grads_and_bad_factors():
    p = nn.Parameter(dg.ones(2, dtype=dg.float16))
    opt = optim.SGD([p], lr=0.1)
    s = dg.amp.GradScaler("cpu")
    s.scale(dg.ones(1))
    p.grad = dg.ones(2, dtype=dg.float16)
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        s.unscale_(opt)
    with pytest.raises(AssertionError):
        dg.amp.GradScaler("cpu", growth_factor=1.0)
    with pytest.raises(AssertionError):
        dg.amp.GradScaler("cpu", backoff_factor=1.0)


def test_grad_scaler_state_dict_round_trip_and_pickle(torch):
    s = dg.amp.GradScaler("cpu", init_scale=256.0, growth_interval=5)
    s.scale(dg.ones(1))
    p = nn.Parameter(dg.ones(2, dtype=dg.float64))
    opt = optim.SGD([p], lr=0.1)
    p.grad = dg.ones(2, dtype=dg.float64)
    s.step(opt)
    s.update()
    sd = s.state_dict()
    assert sd == {"scale": 256.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 5,
                  "_growth_tracker": 1}
    t = torch.amp.GradScaler("cpu")
    t.load_state_dict(sd)
    assert t.state_dict() == sd
    s2 = dg.amp.GradScaler("cpu")
    s2.load_state_dict(t.state_dict())
    assert s2.state_dict() == sd
    s3 = pickle.loads(pickle.dumps(s))
    assert s3.state_dict() == sd
    with pytest.raises(RuntimeError, match="The source state dict is empty"):
        dg.amp.GradScaler("cpu").load_state_dict({})


# -------------------------------------------------------------------- autocast
@no_gpu
def test_autocast_state_matches_torch(torch_cpu):
    for lib in (dg, torch_cpu):
        assert not lib.is_autocast_enabled() and not lib.is_autocast_enabled("cpu")
        with lib.autocast("cpu", dtype=lib.float16):
            assert lib.is_autocast_enabled("cpu") and not lib.is_autocast_enabled()
            assert lib.get_autocast_dtype("cpu") is lib.float16
            with lib.autocast("cpu", enabled=False):
                assert not lib.is_autocast_enabled("cpu")
            assert lib.is_autocast_enabled("cpu")
        assert not lib.is_autocast_enabled("cpu")
        with lib.autocast("cpu", enabled=False):
            assert not lib.is_autocast_enabled("cpu")
        with pytest.warns(UserWarning, match="Disabling autocast"):
            with lib.autocast("cuda"):
                assert not lib.is_autocast_enabled("cuda")
        with pytest.warns(UserWarning, match="target dtype is not supported"):
            with lib.autocast("cpu", dtype=lib.float32):
                assert not lib.is_autocast_enabled("cpu")
        with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
            lib.autocast("xyz")

        @lib.autocast("cpu", dtype=lib.float16)
        def f():
            return lib.is_autocast_enabled("cpu")
        assert f() and not lib.is_autocast_enabled("cpu")


def test_autocast_deprecated_spellings():
    with pytest.warns(FutureWarning, match="distgrad.amp.autocast\\('cpu'"):
        ctx = dg.cpu.amp.autocast(dtype=dg.float16)
    with ctx:
        assert dg.is_autocast_enabled("cpu")
    assert isinstance(ctx, dg.amp.autocast) and dg.amp.autocast is dg.autocast
    with pytest.warns(FutureWarning):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dg.cuda.amp.autocast(enabled=False)


def test_autocast_region_casts_products_and_a_disabled_one_does_not():
    x = dg.randn(3, 4)
    with dg.autocast("cpu", dtype=dg.float16):
        y = x @ x.T
    assert y.dtype == dg.float16
    with dg.autocast("cpu", enabled=False):
        z = x @ x.T
    assert z.dtype == dg.float32
    np.testing.assert_array_equal(y.numpy(), (x.half().float() @ x.half().float().T).half().numpy())


def test_custom_fwd_casts_inputs_inside_autocast():
    @dg.amp.custom_fwd(device_type="cpu", cast_inputs=dg.float64)
    def fwd(a, b):
        return a.dtype, b, dg.is_autocast_enabled("cpu")

    assert fwd(dg.ones(1), 3) == (dg.float32, 3, False)
    with dg.autocast("cpu", dtype=dg.float16):
        assert fwd(dg.ones(1), 3) == (dg.float64, 3, False)


# ----------------------------------------------------------------- optimizers
OPT_SHAPES = [(3, 4), (5,), ()]


def _opt_run(lib, mod, cls, kw, steps=10, seed=0, sd_at=None):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in OPT_SHAPES]
    grads = [[rng.standard_normal(s) for s in OPT_SHAPES] for _ in range(steps)]
    params = [mod.Parameter(lib.tensor(a.copy())) for a in init]
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.003}], **kw)
    hist, sd = [], None
    for i, gs in enumerate(grads):
        for p, g in zip(params, gs):
            p.grad = lib.tensor(g)
        opt.step()
        hist.append([p.detach().numpy().copy() for p in params])
        if i == sd_at:
            sd = copy.deepcopy(opt.state_dict())
    return hist, opt, params, sd


OPTIMIZER_CASES = [
    ("Adagrad", {}),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.3, eps=1e-6)),
    ("Adagrad", dict(lr=0.1, maximize=True, foreach=False)),
    ("Adadelta", {}),
    ("Adadelta", dict(lr=0.5, rho=0.7, eps=1e-4, weight_decay=0.2)),
    ("Adadelta", dict(maximize=True, foreach=False)),
    ("RMSprop", {}),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.1, momentum=0.8)),
    ("RMSprop", dict(centered=True)),
    ("RMSprop", dict(centered=True, momentum=0.5, maximize=True, alpha=0.3)),
    ("RMSprop", dict(alpha=0.2, centered=True)),  # lerp weight >= 0.5
]


@pytest.mark.parametrize("name, kw", OPTIMIZER_CASES)
def test_optimizer_matches_torch(torch, name, kw):
    a, opt, _, _ = _opt_run(dg, nn, getattr(optim, name), kw)
    b, topt, _, _ = _opt_run(torch, torch.nn, getattr(torch.optim, name), kw)
    for sa, sb in zip(a, b):
        for x, y in zip(sa, sb):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert ours["state"].keys() == theirs["state"].keys()
    for k in ours["state"]:
        assert ours["state"][k].keys() == theirs["state"][k].keys()
        for name_, v in ours["state"][k].items():
            np.testing.assert_allclose(v.numpy(), theirs["state"][k][name_].numpy(), rtol=1e-12, atol=1e-12)
    for ga, gb in zip(ours["param_groups"], theirs["param_groups"]):
        for key in ga:
            assert ga[key] == gb[key], key


@pytest.mark.parametrize("name, kw", OPTIMIZER_CASES[::2])
def test_optimizer_state_dict_resumes_exactly(name, kw):
    cls = getattr(optim, name)
    full, _, _, sd = _opt_run(dg, nn, cls, kw, sd_at=4)
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in OPT_SHAPES]
    grads = [[rng.standard_normal(s) for s in OPT_SHAPES] for _ in range(10)]
    params = [nn.Parameter(dg.tensor(x.copy())) for x in full[4]]
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.003}], **kw)
    opt.load_state_dict(sd)
    for i in range(5, 10):
        for p, g in zip(params, grads[i]):
            p.grad = dg.tensor(g)
        opt.step()
        for x, y in zip(params, full[i]):
            np.testing.assert_array_equal(x.detach().numpy(), y)
    assert init  # the same draws as _opt_run


def test_optimizer_state_dict_loads_into_torch(torch):
    _, opt, _, _ = _opt_run(dg, nn, optim.RMSprop, dict(momentum=0.5, centered=True), steps=3)
    sd = opt.state_dict()
    tsd = {"state": {k: {n: torch.tensor(v.numpy()) for n, v in s.items()} for k, s in sd["state"].items()},
           "param_groups": copy.deepcopy(sd["param_groups"])}
    _, topt, _, _ = _opt_run(torch, torch.nn, torch.optim.RMSprop, dict(momentum=0.5, centered=True), steps=1)
    topt.load_state_dict(tsd)
    assert topt.state_dict()["param_groups"] == sd["param_groups"]


@pytest.mark.parametrize("name, kw, msg", [
    ("Adagrad", dict(lr=-1), "Invalid learning rate"),
    ("Adagrad", dict(lr_decay=-1), "Invalid lr_decay value"),
    ("Adagrad", dict(initial_accumulator_value=-1), "Invalid initial_accumulator_value value"),
    ("Adagrad", dict(eps=-1), "Invalid epsilon value"),
    ("Adadelta", dict(rho=1.5), "Invalid rho value"),
    ("Adadelta", dict(weight_decay=-1), "Invalid weight_decay value"),
    ("RMSprop", dict(alpha=-1), "Invalid alpha value"),
    ("RMSprop", dict(momentum=-1), "Invalid momentum value"),
])
def test_optimizer_argument_errors_match_torch(torch, name, kw, msg):
    for lib, mod, om in ((dg, nn, optim), (torch, torch.nn, torch.optim)):
        with pytest.raises(ValueError, match=msg):
            getattr(om, name)([mod.Parameter(lib.ones(1))], **kw)


def test_adagrad_makes_its_state_up_front(torch):
    p = nn.Parameter(dg.ones(2))
    opt = optim.Adagrad([p], initial_accumulator_value=0.5)
    tp = torch.nn.Parameter(torch.ones(2))
    topt = torch.optim.Adagrad([tp], initial_accumulator_value=0.5)
    assert opt.state_dict()["state"].keys() == topt.state_dict()["state"].keys() == {0}
    np.testing.assert_array_equal(opt.state[p]["sum"].numpy(), topt.state[tp]["sum"].numpy())


# ----------------------------------------------------------------- schedulers
def _sched_opt(lib, mod, om, kind):
    params = [mod.Parameter(lib.zeros(1)), mod.Parameter(lib.zeros(1))]
    groups = [{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.02}]
    if kind == "adam":
        return om.Adam(groups, lr=0.1)
    return om.SGD(groups, lr=0.1, momentum=0.9)


SCHEDULERS = {
    "multistep": ("sgd", lambda s, o: s.MultiStepLR(o, milestones=[30, 5, 12, 12], gamma=0.5)),
    "exponential": ("sgd", lambda s, o: s.ExponentialLR(o, gamma=0.93)),
    "constant": ("sgd", lambda s, o: s.ConstantLR(o, factor=0.25, total_iters=7)),
    "polynomial": ("sgd", lambda s, o: s.PolynomialLR(o, total_iters=30, power=2.0)),
    "cosine": ("sgd", lambda s, o: s.CosineAnnealingLR(o, T_max=17, eta_min=0.001)),
    "linear": ("sgd", lambda s, o: s.LinearLR(o, start_factor=0.1, end_factor=0.8, total_iters=20)),
    "warm_restarts": ("sgd", lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=7, eta_min=1e-3)),
    "warm_restarts_mult": ("sgd", lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2)),
    "onecycle": ("sgd", lambda s, o: s.OneCycleLR(o, max_lr=[0.5, 0.05], total_steps=50)),
    "onecycle_linear": ("sgd", lambda s, o: s.OneCycleLR(
        o, max_lr=0.3, epochs=5, steps_per_epoch=10, pct_start=0.25, anneal_strategy="linear",
        div_factor=10.0, final_div_factor=100.0)),
    "onecycle_three_phase_adam": ("adam", lambda s, o: s.OneCycleLR(
        o, max_lr=0.2, total_steps=50, three_phase=True, base_momentum=[0.8, 0.7], max_momentum=0.9)),
    "onecycle_no_momentum": ("adam", lambda s, o: s.OneCycleLR(o, max_lr=0.2, total_steps=50,
                                                               cycle_momentum=False)),
    "sequential": ("sgd", lambda s, o: s.SequentialLR(
        o, [s.ConstantLR(o, factor=0.5, total_iters=4), s.ExponentialLR(o, gamma=0.9)], milestones=[6])),
}


def _sched_seq(lib, mod, om, sched_mod, kind, steps=50):
    opt_kind, make = SCHEDULERS[kind]
    opt = _sched_opt(lib, mod, om, opt_kind)
    s = make(sched_mod, opt)
    seq = []
    for _ in range(steps):
        g = opt.param_groups
        seq.append([x["lr"] for x in g] + [x.get("momentum", 0.0) for x in g] +
                   [x["betas"][0] if "betas" in x else 0.0 for x in g] + list(s.get_last_lr()))
        opt.step()
        s.step()
    return np.array(seq), s


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
def test_scheduler_matches_torch_over_50_steps(torch, kind):
    import torch.optim.lr_scheduler as tsched

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "step() before optimizer.step()" and the like
        a, s = _sched_seq(dg, nn, optim, lr_scheduler, kind)
        b, t = _sched_seq(torch, torch.nn, torch.optim, tsched, kind)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert s.last_epoch == t.last_epoch


@pytest.mark.parametrize("kind", ["onecycle_three_phase_adam", "warm_restarts_mult", "multistep"])
def test_scheduler_state_dict_round_trip_new(kind):
    _a, s = _sched_seq(dg, nn, optim, lr_scheduler, kind, steps=20)
    sd = copy.deepcopy(s.state_dict())
    opt2 = _sched_opt(dg, nn, optim, SCHEDULERS[kind][0])
    s2 = SCHEDULERS[kind][1](lr_scheduler, opt2)
    s2.load_state_dict(sd)
    opt2.load_state_dict(copy.deepcopy(s.optimizer.state_dict()))
    assert s2.get_last_lr() == s.get_last_lr()
    for _ in range(10):
        s.optimizer.step()
        s.step()
        opt2.step()
        s2.step()
        assert s2.get_last_lr() == s.get_last_lr()


def test_warm_restarts_fractional_epochs_match_torch(torch):
    import torch.optim.lr_scheduler as tsched

    out = []
    for lib, mod, om, sm in ((dg, nn, optim, lr_scheduler), (torch, torch.nn, torch.optim, tsched)):
        for T_mult in (1, 2):
            opt = _sched_opt(lib, mod, om, "sgd")
            s = sm.CosineAnnealingWarmRestarts(opt, T_0=4, T_mult=T_mult, eta_min=0.01)
            seq = []
            for epoch in range(12):
                for i in range(5):
                    s.step(epoch + i / 5)
                    seq.append(list(s.get_last_lr()) + [s.last_epoch, s.T_i, s.T_cur])
            out.append(np.array(seq, dtype=float))
    np.testing.assert_allclose(out[0], out[2], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out[1], out[3], rtol=1e-12, atol=1e-15)


def test_onecycle_errors_match_torch(torch):
    import torch.optim.lr_scheduler as tsched

    for lib, mod, om, sm in ((dg, nn, optim, lr_scheduler), (torch, torch.nn, torch.optim, tsched)):
        opt = _sched_opt(lib, mod, om, "sgd")
        with pytest.raises(ValueError, match="You must define either total_steps OR"):
            sm.OneCycleLR(opt, max_lr=0.1)
        with pytest.raises(ValueError, match="Expected positive integer total_steps"):
            sm.OneCycleLR(opt, max_lr=0.1, total_steps=0)
        with pytest.raises(ValueError, match="anneal_strategy must be one of"):
            sm.OneCycleLR(opt, max_lr=0.1, total_steps=5, anneal_strategy="exp")
        with pytest.raises(ValueError, match="pct_start"):
            sm.OneCycleLR(opt, max_lr=0.1, total_steps=5, pct_start=1.5)
        with pytest.raises(ValueError, match="max_lr must have the same length"):
            sm.OneCycleLR(opt, max_lr=[0.1], total_steps=5)
        plain = om.Adagrad([mod.Parameter(lib.zeros(1))])
        with pytest.raises(ValueError, match="optimizer must support momentum"):
            sm.OneCycleLR(plain, max_lr=0.1, total_steps=5)
        s = sm.OneCycleLR(opt, max_lr=0.1, total_steps=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ValueError, match="Tried to step 4 times"):
                for _ in range(4):
                    s.step()


PLATEAU_CASES = [
    dict(),
    dict(mode="max", factor=0.5, patience=2, threshold=0.05, threshold_mode="abs", cooldown=2),
    dict(mode="min", factor=0.3, patience=1, threshold=0.01, threshold_mode="rel", cooldown=1,
         min_lr=[0.005, 0.0015], eps=1e-3),
    dict(mode="min", patience=0, threshold_mode="abs", threshold=0.0, min_lr=0.01),
]


@pytest.mark.parametrize("kw", PLATEAU_CASES)
def test_reduce_lr_on_plateau_matches_torch(torch, kw):
    import torch.optim.lr_scheduler as tsched

    rng = np.random.default_rng(3)
    metrics = np.concatenate([np.linspace(1, 0.5, 10), 0.5 + 0.02 * rng.standard_normal(40)])
    seqs = []
    for lib, mod, om, sm in ((dg, nn, optim, lr_scheduler), (torch, torch.nn, torch.optim, tsched)):
        opt = _sched_opt(lib, mod, om, "sgd")
        s = sm.ReduceLROnPlateau(opt, **kw)
        seq = []
        for m in metrics:
            opt.step()
            s.step(m if lib is torch else dg.tensor(m))
            seq.append([g["lr"] for g in opt.param_groups] + list(s.get_last_lr()) +
                       [s.num_bad_epochs, s.cooldown_counter, s.best, s.last_epoch])
        seqs.append(np.array(seq))
    np.testing.assert_allclose(seqs[0], seqs[1], rtol=1e-12, atol=1e-15)
    assert seqs[0][-1, 0] < 0.1


def test_reduce_lr_on_plateau_errors_and_state_dict(torch):
    import torch.optim.lr_scheduler as tsched

    for lib, mod, om, sm in ((dg, nn, optim, lr_scheduler), (torch, torch.nn, torch.optim, tsched)):
        opt = _sched_opt(lib, mod, om, "sgd")
        with pytest.raises(ValueError, match="Factor should be < 1.0"):
            sm.ReduceLROnPlateau(opt, factor=1.0)
        with pytest.raises(ValueError, match="mode avg is unknown"):
            sm.ReduceLROnPlateau(opt, mode="avg")
        with pytest.raises(ValueError, match="threshold mode x is unknown"):
            sm.ReduceLROnPlateau(opt, threshold_mode="x")
        with pytest.raises(ValueError, match="expected 2 min_lrs, got 1"):
            sm.ReduceLROnPlateau(opt, min_lr=[0.1])
    opt = _sched_opt(dg, nn, optim, "sgd")
    s = lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    for m in (1.0, 1.0, 1.0, 1.0):
        s.step(m)
    sd = s.state_dict()
    assert "optimizer" not in sd and sd["best"] == 1.0
    s2 = lr_scheduler.ReduceLROnPlateau(_sched_opt(dg, nn, optim, "sgd"), patience=1)
    s2.load_state_dict(sd)
    assert s2.num_bad_epochs == s.num_bad_epochs and s2.best == s.best


# ----------------------------------------------------------------------- data
class Range(Dataset):
    def __init__(self, n, offset=0):
        self.n, self.offset = n, offset

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.offset + i

    def __len__(self):
        return self.n


def test_concat_dataset_matches_torch(torch):
    from torch.utils.data import ConcatDataset as TConcat

    parts = [Range(3), Range(0, 100), Range(4, 10), Range(2, 20)]
    ours, theirs = ConcatDataset(parts), TConcat(parts)
    assert len(ours) == len(theirs) == 9
    assert ours.cumulative_sizes == theirs.cumulative_sizes
    assert [ours[i] for i in range(-9, 9)] == [theirs[i] for i in range(-9, 9)]
    for ds in (ours, theirs):
        with pytest.raises(ValueError, match="absolute value of index should not exceed dataset length"):
            ds[-10]
    with pytest.raises(IndexError):
        ours[9]
    with pytest.raises(AssertionError, match="datasets should not be an empty iterable"):
        ConcatDataset([])
    both = Range(2) + Range(2, 10)
    assert isinstance(both, ConcatDataset) and [both[i] for i in range(4)] == [0, 1, 10, 11]
    batches = [b.tolist() for b in DataLoader(ConcatDataset([Range(3), Range(3, 10)]), batch_size=4)]
    assert batches == [[0, 1, 2, 10], [11, 12]]


@pytest.mark.parametrize("n, lengths", [
    (10, [0.3, 0.7]), (10, [0.33, 0.33, 0.34]), (7, [0.5, 0.5]), (11, [0.1, 0.2, 0.3, 0.4]),
    (5, [1.0]), (3, [0.1, 0.1, 0.8]), (10, [3, 7]), (1, [1]),
])
def test_random_split_lengths_match_torch(torch, n, lengths):
    from torch.utils.data import random_split as trs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = random_split(Range(n), lengths, generator=dg.Generator().manual_seed(0))
        theirs = trs(Range(n), lengths, generator=torch.Generator().manual_seed(0))
    assert [len(p) for p in ours] == [len(p) for p in theirs]
    assert sorted(i for p in ours for i in p.indices) == list(range(n))


def test_random_split_errors_and_reproducibility(torch):
    from torch.utils.data import random_split as trs

    for split in (random_split, trs):
        with pytest.raises(ValueError, match="Sum of input lengths does not equal"):
            split(Range(10), [3, 3])
        with pytest.raises(ValueError, match="Fraction at index 1 is not between 0 and 1"):
            split(Range(10), [0.5, 1.2, -0.7])
        with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
            split(Range(2), [0.9, 0.1])
    a = random_split(Range(20), [0.5, 0.5], generator=dg.Generator().manual_seed(4))
    b = random_split(Range(20), [0.5, 0.5], generator=dg.Generator().manual_seed(4))
    assert a[0].indices == b[0].indices and a[1].indices == b[1].indices
    dg.manual_seed(9)
    c = random_split(Range(20), [10, 10])
    dg.manual_seed(9)
    assert random_split(Range(20), [10, 10])[0].indices == c[0].indices


def test_subset_getitems_goes_through_the_dataset():
    ds = TensorDataset(dg.arange(10), dg.arange(10) * 2)
    sub = Subset(ds, [9, 1, 4])
    got = sub.__getitems__([0, 2])
    assert [tuple(int(v) for v in s) for s in got] == [(9, 18), (4, 8)]
    batches = list(DataLoader(sub, batch_size=2))
    assert batches[0][0].tolist() == [9, 1] and batches[1][1].tolist() == [8]


def test_random_sampler_with_replacement_draws_lazily():
    s = RandomSampler(Range(5), replacement=True, num_samples=10 ** 10,
                      generator=dg.Generator().manual_seed(0))
    assert len(s) == 10 ** 10
    it = iter(s)
    first = [next(it) for _ in range(100)]
    assert all(0 <= i < 5 for i in first) and len(set(first)) == 5
    again = iter(RandomSampler(Range(5), replacement=True, num_samples=10 ** 10,
                               generator=dg.Generator().manual_seed(0)))
    assert [next(again) for _ in range(100)] == first


@pytest.mark.parametrize("num_samples", [1, 31, 32, 33, 70])
def test_random_sampler_lengths_match_torch(torch, num_samples):
    from torch.utils.data import RandomSampler as TRS

    for replacement in (True, False):
        ours = list(RandomSampler(Range(7), replacement=replacement, num_samples=num_samples))
        theirs = list(TRS(Range(7), replacement=replacement, num_samples=num_samples))
        assert len(ours) == len(theirs) == num_samples
        if not replacement and num_samples >= 7:
            assert sorted(ours[:7]) == list(range(7))


def test_random_sampler_argument_errors_match_torch(torch):
    from torch.utils.data import RandomSampler as TRS

    for cls in (RandomSampler, TRS):
        with pytest.raises(TypeError, match="replacement should be a boolean value"):
            cls(Range(3), replacement=1)
        with pytest.raises(ValueError, match="num_samples should be a positive integer value"):
            cls(Range(3), num_samples=0)
        with pytest.raises(ValueError, match="num_samples should be a positive integer value"):
            cls(Range(0))


# -------------------------------------------------------------- Flatten/Unflatten
@pytest.mark.parametrize("args", [(), (0,), (1, 2), (2, -1), (-3, -2), (0, -1)])
def test_flatten_matches_torch(torch, args):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    ours, theirs = nn.Flatten(*args), torch.nn.Flatten(*args)
    assert repr(ours) == repr(theirs)
    xt = dg.tensor(x, requires_grad=True)
    y = ours(xt)
    ty = theirs(torch.tensor(x))
    assert tuple(y.shape) == tuple(ty.shape)
    np.testing.assert_array_equal(y.detach().numpy(), ty.numpy())
    y.sum().backward()
    np.testing.assert_array_equal(xt.grad.numpy(), np.ones_like(x))


@pytest.mark.parametrize("dim, size", [(1, (2, 6)), (1, [3, -1]), (-1, (5, 1)), (0, (1, 2))])
def test_unflatten_matches_torch(torch, dim, size):
    x = np.arange(2 * 12 * 5, dtype=np.float64).reshape(2, 12, 5)
    ours, theirs = nn.Unflatten(dim, size), torch.nn.Unflatten(dim, size)
    assert repr(ours) == repr(theirs)
    y, ty = ours(dg.tensor(x)), theirs(torch.tensor(x))
    assert tuple(y.shape) == tuple(ty.shape)
    np.testing.assert_array_equal(y.numpy(), ty.numpy())


def test_unflatten_argument_errors_match_torch(torch):
    for mod in (nn, torch.nn):
        with pytest.raises(TypeError, match="unflattened_size must be tuple of ints, but found element of type float at pos 1"):
            mod.Unflatten(1, (2, 3.0))
        with pytest.raises(TypeError, match="unflattened_size must be a tuple of ints, but found type int"):
            mod.Unflatten(1, 6)


def test_flatten_in_a_sequential_and_state_dict():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2), nn.Unflatten(1, (1, 2)))
    out = model(dg.randn(4, 3, 4))
    assert tuple(out.shape) == (4, 1, 2)
    assert list(model.state_dict()) == ["1.weight", "1.bias"]


def test_pin_memory_without_a_gpu_behaves_as_torch():
    x = dg.ones(3)
    assert x.is_pinned() is False
    if dg.cuda.is_available():
        p = x.pin_memory()
        assert p.is_pinned() and dg.equal(p, x)
    else:
        with pytest.raises(RuntimeError, match="Cannot access accelerator device"):
            x.pin_memory()


def test_device_kind_properties_as_torch():
    x = dg.ones(2)
    assert (x.is_cuda, x.is_xpu, x.is_mps) == (False, False, False)
    try:
        import torch
    except ImportError:
        return
    t = torch.ones(2)
    assert (t.is_cuda, t.is_xpu, t.is_mps) == (x.is_cuda, x.is_xpu, x.is_mps)
