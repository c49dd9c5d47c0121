"""The CuPy backend: every op of the op table on the GPU against the CPU result,
the fused kernels against the unfused code, modules, optimizers, checkpointing,
checkpoint files and the trainer on ``device="cuda"``. Everything that needs a GPU
skips cleanly without one; the device semantics that need none run everywhere."""
import os
import subprocess
import sys

import numpy as np
import pytest

import distgrad as dg
from distgrad import backend

HAS_CUDA = dg.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA (CuPy and an NVIDIA GPU)")


# ------------------------------------------------------------ without a GPU
def test_device_strings():
    assert dg.device("cuda:1") == dg.device("cuda", 1)
    assert str(dg.device("cuda:1")) == "cuda:1"
    assert repr(dg.device("cuda", 0)) == "device(type='cuda', index=0)"
    assert dg.device("cpu") == "cpu"
    assert dg.zeros(2).device == dg.device("cpu")
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
        dg.device("tpu")
    with pytest.raises(RuntimeError, match="Invalid device string"):
        dg.device("cuda:x")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message shown where there is no GPU")
def test_cuda_unavailable_is_a_clear_error():
    assert not dg.cuda.is_available() and dg.cuda.device_count() == 0
    for make in (lambda: dg.zeros(2, device="cuda"), lambda: dg.ones(2).cuda(),
                 lambda: dg.nn.Linear(2, 2).to("cuda")):
        with pytest.raises(RuntimeError, match="CUDA is not available.*cuda12"):
            make()


def test_to_same_device_is_a_no_op_and_cpu_round_trip():
    x = dg.randn(3, requires_grad=True)
    assert x.to("cpu") is x and x.cpu() is x
    assert x.to("cpu", copy=True) is not x


def test_cpu_never_imports_cupy():
    code = ("import sys, distgrad as dg; x = dg.randn(4, requires_grad=True); "
            "(x * 2).sum().backward(); dg.nn.Linear(2, 2)(dg.randn(1, 2)); "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------- with a GPU
def _on(value, device):
    """``value`` (a tensor, or a list, tuple or dict holding tensors) with fresh copies
    of its tensors on ``device``, as leaves that require grad where the originals do."""
    if isinstance(value, dg.Tensor):
        c = value.detach().to(device)
        return c.requires_grad_(value.requires_grad) if value.is_floating_point() else c
    if isinstance(value, (list, tuple)):
        return type(value)(_on(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _on(v, device) for k, v in value.items()}
    return value


def _leaves(value):
    """The tensors that require grad in ``value`` (nested as in ``_on``), in order."""
    if isinstance(value, dg.Tensor):
        return [value] if value.requires_grad else []
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _leaves(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaves(v)]
    return []


def _op_cases():
    from op_table import OPS

    for op in OPS:
        for i, (args, kwargs) in enumerate(op.samples(np.random.default_rng(0))):
            yield pytest.param(op, args, kwargs, id=f"{op.name}-{op.variant}-{i}")


@gpu
@pytest.mark.parametrize("op,args,kwargs", list(_op_cases()) if HAS_CUDA else [])
def test_every_op_on_gpu_matches_cpu(op, args, kwargs):
    cpu_args = list(args)
    gpu_args, gpu_kwargs = _on(list(args), "cuda"), _on(kwargs, "cuda")
    out_c = op.fn(dg, *cpu_args, **kwargs)
    out_g = op.fn(dg, *gpu_args, **gpu_kwargs)
    outs_c = out_c if isinstance(out_c, (tuple, list)) else (out_c,)
    outs_g = out_g if isinstance(out_g, (tuple, list)) else (out_g,)
    for c, g in zip(outs_c, outs_g):
        assert g.device.type == "cuda"
        np.testing.assert_allclose(g.cpu().detach().numpy(), c.detach().numpy(), rtol=1e-10, atol=1e-12)
    diff = _leaves([cpu_args, kwargs])
    if not diff or not outs_c[0].requires_grad:
        return
    gc = dg.autograd.grad(sum(o.sum() for o in outs_c if o.requires_grad), diff, allow_unused=True)
    gdiff = _leaves([gpu_args, gpu_kwargs])
    assert len(gdiff) == len(diff)
    gg = dg.autograd.grad(sum(o.sum() for o in outs_g if o.requires_grad), gdiff, allow_unused=True)
    for a, b in zip(gc, gg):
        if a is None:
            assert b is None
            continue
        np.testing.assert_allclose(b.cpu().numpy(), a.numpy(), rtol=1e-9, atol=1e-11)


@gpu
def test_tensors_on_two_devices_raise_naming_both():
    a, b = dg.ones(2), dg.ones(2, device="cuda")
    for f in (lambda: a + b, lambda: a * b, lambda: a @ b, lambda: dg.cat([a, b])):
        with pytest.raises(RuntimeError, match="cuda:0 and cpu|cpu and cuda:0"):
            f()


@gpu
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fused_gelu_matches_the_array_code(approximate):
    from distgrad.ops import cuda_kernels, pointwise

    x = np.linspace(-6, 6, 1001)
    g = np.random.default_rng(0).standard_normal(1001)
    cp = backend.cupy()
    np.testing.assert_allclose(cuda_kernels.gelu(cp.asarray(x), approximate).get(),
                               pointwise._gelu_value(x, approximate), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cuda_kernels.gelu_grad(cp.asarray(x), cp.asarray(g), approximate).get(),
                               pointwise._gelu_derivative(x, approximate) * g, rtol=1e-12, atol=1e-14)


@gpu
def test_fused_adamw_matches_cpu():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((5, 7))
    grads = [rng.standard_normal((5, 7)) for _ in range(4)]
    _same_steps_on_cpu_and_gpu(lambda ps: dg.optim.AdamW(ps, lr=1e-2, weight_decay=0.1), w0, grads)


def _same_steps_on_cpu_and_gpu(make_optimizer, w0, grads):
    """The parameter after the optimizer's steps with ``grads``, on the CPU and on
    the GPU (the fused update there), agree."""
    finals = []
    for device in ("cpu", "cuda"):
        p = dg.nn.Parameter(dg.tensor(w0, device=device))
        opt = make_optimizer([p])
        for g in grads:
            p.grad = dg.tensor(g, device=device)
            opt.step()
        finals.append(p.detach().cpu().numpy())
    assert not np.array_equal(finals[0], w0)
    np.testing.assert_allclose(finals[1], finals[0], rtol=1e-12, atol=1e-14)


@gpu
def test_module_training_on_gpu_matches_cpu_with_checkpointing():
    from distgrad.train.models import GPT

    losses = {}
    for device in ("cpu", "cuda"):
        dg.manual_seed(0)
        model = GPT(vocab=50, width=32, heads=4, layers=2, context=16, checkpoint_blocks=True).double().to(device)
        opt = dg.optim.AdamW(model.parameters(), lr=1e-3)
        idx = dg.tensor(np.random.default_rng(1).integers(0, 50, (4, 16)), device=device)
        out = []
        for _ in range(3):
            logits = model(idx)
            loss = dg.nn.functional.cross_entropy(logits.view(-1, 50), idx.view(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[device] = out
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-9)


@gpu
def test_checkpoint_files_hold_device_tensors(tmp_path):
    from distgrad.train import checkpoint as ckpt

    dg.manual_seed(0)
    model = dg.nn.Linear(3, 2).to("cuda")
    opt = dg.optim.AdamW(model.parameters())
    model(dg.randn(4, 3, device="cuda")).sum().backward()
    opt.step()
    ckpt.save(str(tmp_path), 1, model, opt, None, {"config_hash": "x"}, keep=1)
    fresh = dg.nn.Linear(3, 2).to("cuda")
    opt2 = dg.optim.AdamW(fresh.parameters())
    ckpt.load(str(tmp_path), 1, fresh, opt2, None)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert b.device.type == "cuda"
        np.testing.assert_array_equal(a.detach().cpu().numpy(), b.detach().cpu().numpy())


@gpu
def test_trainer_debug_run_on_gpu(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "launch.cli", os.path.join(root, "configs", "debug.toml"), "--debug",
         "run.device=cuda", f'run.output_dir="{tmp_path}"'],
        capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "done: 10 steps" in out.stdout


# ------------------------------------------------------------- fused row kernels
@pytest.fixture
def unfused():
    """Run the block with the fused GPU kernels turned off (the array code instead)."""
    from distgrad.ops import cuda_kernels

    def call(fn):
        cuda_kernels.enabled = False
        try:
            return fn()
        finally:
            cuda_kernels.enabled = True
    return call


def _value_and_grads(fn, tensors):
    out = fn()
    grads = dg.autograd.grad(out.sum() if out.ndim else out, tensors, allow_unused=True)
    return out.detach().cpu().numpy(), [None if g is None else g.cpu().numpy() for g in grads]


@gpu
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_cross_entropy_matches_unfused(unfused, dtype, tol, reduction, weighted):
    rng = np.random.default_rng(0)
    n, c = 37, 1000
    x = dg.tensor((rng.standard_normal((n, c)) * 4).astype(dtype), device="cuda", requires_grad=True)
    t_host = rng.integers(0, c, n)
    t_host[[3, 10]] = -100                      # ignored rows
    t = dg.tensor(t_host, device="cuda")
    w = dg.tensor(rng.uniform(0.5, 2, c).astype(dtype), device="cuda") if weighted else None
    F = dg.nn.functional

    def f():
        return F.cross_entropy(x, t, weight=w, reduction=reduction)

    assert f().grad_fn.name() == "CrossEntropyLossBackward0"       # the fused path ran
    assert unfused(f).grad_fn.name() != "CrossEntropyLossBackward0"
    v1, g1 = _value_and_grads(f, [x])
    v0, g0 = unfused(lambda: _value_and_grads(f, [x]))
    np.testing.assert_allclose(v1, v0, rtol=tol, atol=tol)
    np.testing.assert_allclose(g1[0], g0[0], rtol=tol, atol=tol)
    assert np.all(g1[0][[3, 10]] == 0)


@gpu
def test_fused_cross_entropy_extremes_and_double_backward(unfused):
    F = dg.nn.functional
    x_host = np.array([[1000.0, 0.0, -1000.0], [-np.inf, 0.0, 1.0], [5.0, 5.0, 5.0]])
    x = dg.tensor(x_host, device="cuda", requires_grad=True)
    t = dg.tensor([0, 2, 1], device="cuda")
    loss = F.cross_entropy(x, t)
    ref = unfused(lambda: F.cross_entropy(x, t))
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-12)
    assert np.isfinite(loss.item())
    # create_graph: the gradient is itself differentiable, as with the unfused ops
    xs = dg.tensor(np.random.default_rng(1).standard_normal((4, 6)), device="cuda", requires_grad=True)
    ts = dg.tensor([1, 0, 5, 3], device="cuda")

    def gg():
        (g,) = dg.autograd.grad(F.cross_entropy(xs, ts), xs, create_graph=True)
        (h,) = dg.autograd.grad((g * g).sum(), xs)
        return g.detach().cpu().numpy(), h.cpu().numpy()

    (g1, h1), (g0, h0) = gg(), unfused(gg)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h1, h0, rtol=1e-10, atol=1e-12)


@gpu
def test_fused_cross_entropy_bad_target_raises_at_the_next_read():
    x = dg.randn(4, 5, device="cuda", requires_grad=True)
    loss = dg.nn.functional.cross_entropy(x, dg.tensor([0, 1, 7, 2], device="cuda"))
    with pytest.raises(IndexError, match="Target 7 is out of bounds for 5 classes"):
        loss.item()


@gpu
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-11), (np.float32, 1e-4)])
@pytest.mark.parametrize("shape,normalized", [((6, 9, 512), (512,)), ((5, 3, 7), (3, 7)), ((2, 1), (1,))])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_layer_norm_matches_unfused(unfused, dtype, tol, shape, normalized, affine):
    rng = np.random.default_rng(2)
    x = dg.tensor((rng.standard_normal(shape) * 3 + 1).astype(dtype), device="cuda", requires_grad=True)
    tensors = [x]
    w = b = None
    if affine:
        w = dg.tensor(rng.standard_normal(normalized).astype(dtype), device="cuda", requires_grad=True)
        b = dg.tensor(rng.standard_normal(normalized).astype(dtype), device="cuda", requires_grad=True)
        tensors += [w, b]
    gy = dg.tensor(rng.standard_normal(shape).astype(dtype), device="cuda")

    def f():
        return dg.nn.functional.layer_norm(x, normalized, w, b, eps=1e-5) * gy

    v1, g1 = _value_and_grads(f, tensors)
    v0, g0 = unfused(lambda: _value_and_grads(f, tensors))
    np.testing.assert_allclose(v1, v0, rtol=tol, atol=tol)
    for a, c in zip(g1, g0):
        np.testing.assert_allclose(a, c, rtol=tol, atol=tol * 10)


@gpu
def test_fused_layer_norm_double_backward_matches_unfused(unfused):
    rng = np.random.default_rng(3)
    x = dg.tensor(rng.standard_normal((3, 8)), device="cuda", requires_grad=True)
    w = dg.tensor(rng.standard_normal(8), device="cuda", requires_grad=True)

    def gg():
        y = dg.nn.functional.layer_norm(x, (8,), w, None)
        (g,) = dg.autograd.grad((y ** 3).sum(), x, create_graph=True)
        return [t.cpu().numpy() for t in dg.autograd.grad(g.sum(), [x, w])]

    for a, b in zip(gg(), unfused(gg)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


# ------------------------------------------------------- deferred range checks
@gpu
def test_bad_embedding_index_raises_at_the_next_read_not_before():
    emb = dg.nn.Embedding(10, 4).to("cuda")
    out = emb(dg.tensor([1, 12], device="cuda"))      # no host read here: the GPU need not wait
    assert out.shape == (2, 4)
    with pytest.raises(IndexError, match="embedding: index out of range.*got values from 1 to 12"):
        out.sum().item()
    assert emb(dg.tensor([1, 2], device="cuda")).sum().item() == pytest.approx(
        emb.weight[1:3].sum().item(), rel=1e-6)        # the failed check was cleared


@gpu
def test_bad_gather_index_raises_at_synchronize():
    x = dg.randn(3, 4, device="cuda")
    x.gather(1, dg.tensor([[0], [4], [1]], device="cuda"))
    with pytest.raises(IndexError, match=r"gather\(\): index 4 is out of bounds for dimension 1 with size 4"):
        dg.cuda.synchronize()


# ------------------------------------------------------------ multi-rank GPU
@gpu
def test_two_rank_gpu_run_equals_the_one_process_gpu_run(tmp_path):
    """Two ranks on the GPUs there are (staged through host memory when they share
    one, NCCL when each has its own) give the losses of the one-process run."""
    import json
    import shutil

    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpiexec = None
    if mpiexec is None:
        pytest.skip("needs mpiexec and mpi4py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    losses = {}
    for name, extra in (("debug", ["--debug"]), ("np2", [])):
        out_dir = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "launch.cli", os.path.join(root, "configs", "debug.toml"), *extra,
             "run.device=cuda", f'run.output_dir="{out_dir}"'],
            capture_output=True, text=True, timeout=300, cwd=root)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (run_dir,) = [p for p in out_dir.iterdir() if p.is_dir()]
        with open(run_dir / "metrics.rank0.jsonl") as f:
            losses[name] = [m["loss"] for m in map(json.loads, f) if "loss" in m]
    assert len(losses["debug"]) == 10 and losses["debug"][0] != losses["debug"][-1]
    np.testing.assert_allclose(losses["np2"], losses["debug"], rtol=1e-5)


@gpu
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_fused_softmax_matches_unfused(unfused, dtype, tol):
    rng = np.random.default_rng(4)
    x = dg.tensor((rng.standard_normal((3, 5, 77)) * 5).astype(dtype), device="cuda", requires_grad=True)
    gy = dg.tensor(rng.standard_normal((3, 5, 77)).astype(dtype), device="cuda")

    def f():
        return dg.softmax(x, -1) * gy

    assert f().grad_fn.next_functions[0][0].name() == "SoftmaxBackward0"
    v1, g1 = _value_and_grads(f, [x])
    v0, g0 = unfused(lambda: _value_and_grads(f, [x]))
    np.testing.assert_allclose(v1, v0, rtol=tol, atol=tol)
    np.testing.assert_allclose(g1[0], g0[0], rtol=tol, atol=tol)


@gpu
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L,S", [(7, 7), (5, 9), (9, 5)])
@pytest.mark.parametrize("kv_batch,node", [(2, "ScaledDotProductAttentionBackward0"),
                                           (1, "ScaledSoftmaxBackward0")])
def test_fused_attention_softmax_matches_unfused(unfused, causal, L, S, kv_batch, node):
    """Same batch dims: the one-node attention; broadcast k and v: the scaled causal
    softmax kernel between matmuls."""
    rng = np.random.default_rng(5)
    q, k, v = (dg.tensor(rng.standard_normal(s), device="cuda", requires_grad=True)
               for s in ((2, 3, L, 8), (kv_batch, 3, S, 8), (kv_batch, 3, S, 8)))
    gy = dg.tensor(rng.standard_normal((2, 3, L, 8)), device="cuda")

    def f():
        return dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.3) * gy

    top = f().grad_fn.next_functions[0][0]
    assert top.name() == node or node in str(top.next_functions)
    v1, g1 = _value_and_grads(f, [q, k, v])
    v0, g0 = unfused(lambda: _value_and_grads(f, [q, k, v]))
    np.testing.assert_allclose(v1, v0, rtol=1e-11, atol=1e-12)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11)
    # create_graph through the fused node: double backward as with the unfused ops
    def gg():
        (gq,) = dg.autograd.grad(f().sum(), q, create_graph=True)
        return dg.autograd.grad((gq * gq).sum(), [q, k, v])[1].cpu().numpy()
    np.testing.assert_allclose(gg(), unfused(gg), rtol=1e-9, atol=1e-10)


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sums_over_leading_axes_match_the_cpu(dtype):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((16, 33, 7)).astype(dtype)
    x = dg.tensor(a, device="cuda", requires_grad=True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for dims, keep in (((0,), False), ((0, 1), False), ((0,), True), ((0, 1), True)):
        got = x.sum(dims, keepdim=keep).detach().cpu().numpy()
        np.testing.assert_allclose(got, a.sum(axis=dims, keepdims=keep), rtol=tol, atol=tol * 10)
    b = dg.nn.Linear(7, 3).to("cuda").to(x.dtype)
    b(x).sum().backward()
    np.testing.assert_allclose(b.bias.grad.cpu().numpy(), np.full(3, 16 * 33), rtol=1e-6)


@gpu
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("causal", [True, False])
def test_fused_attention_node_matches_unfused(unfused, dtype, tol, causal):
    """The one-node GPU attention (batched products reading transposed operands in
    place) on q, k, v that are strided views, as a GPT block makes them."""
    rng = np.random.default_rng(7)
    B, T, H, D = 2, 9, 3, 4
    qkv = dg.tensor(rng.standard_normal((B, T, 3 * H * D)).astype(dtype), device="cuda", requires_grad=True)
    gy = dg.tensor(rng.standard_normal((B, H, T, D)).astype(dtype), device="cuda")

    def f():
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2))
        # the batched-product node (float32 takes the flash kernel unless it is switched off)
        with dg.backends.cuda.sdp_kernel(enable_flash=False):
            return dg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal) * gy

    assert f().grad_fn.next_functions[0][0].name() == "ScaledDotProductAttentionBackward0"
    v1, g1 = _value_and_grads(f, [qkv])
    v0, g0 = unfused(lambda: _value_and_grads(f, [qkv]))
    np.testing.assert_allclose(v1, v0, rtol=tol, atol=tol)
    np.testing.assert_allclose(g1[0], g0[0], rtol=tol, atol=tol)

    def gg():
        (g,) = dg.autograd.grad(f().sum(), qkv, create_graph=True)
        return dg.autograd.grad((g * g).sum(), qkv)[0].cpu().numpy()
    if dtype == np.float64:
        np.testing.assert_allclose(gg(), unfused(gg), rtol=1e-9, atol=1e-10)


@gpu
@pytest.mark.parametrize("transa", [False, True])
@pytest.mark.parametrize("transb", [False, True])
def test_batched_products_with_transposed_operands(transa, transb):
    from distgrad.ops import cuda_kernels

    cp = backend.cupy()
    rng = np.random.default_rng(8)
    a = rng.standard_normal((3, 4, 5) if not transa else (3, 5, 4))
    b = rng.standard_normal((3, 5, 6) if not transb else (3, 6, 5))
    want = (a.transpose(0, 2, 1) if transa else a) @ (b.transpose(0, 2, 1) if transb else b)
    for dt, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        got = cuda_kernels.bmm(cp.asarray(a, dt), cp.asarray(b, dt), transa, transb).get()
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@gpu
def test_fused_sgd_matches_cpu():
    rng = np.random.default_rng(9)
    w0 = rng.standard_normal((4, 6))
    grads = [rng.standard_normal((4, 6)) for _ in range(3)]
    for kw in ({}, {"momentum": 0.9, "weight_decay": 0.01}, {"momentum": 0.9, "nesterov": True}):
        _same_steps_on_cpu_and_gpu(lambda ps, kw=kw: dg.optim.SGD(ps, lr=0.1, **kw), w0, grads)


@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_bias_kernel_matches_cpu(dtype):
    rng = np.random.default_rng(10)
    lin = dg.nn.Linear(300, 70).to(dtype=dg.float32 if dtype == np.float32 else dg.float64)
    x = dg.tensor(rng.standard_normal((5, 3, 300)).astype(dtype))
    want = lin(x).detach().numpy()
    got = lin.to("cuda")(x.to("cuda")).detach().cpu().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@gpu
def test_disabling_the_kernels_switches_every_one_off(monkeypatch):
    """``cuda_kernels.enabled = False``: no fused kernel runs (each would raise here),
    and GELU, softmax, LayerNorm, cross-entropy, SGD and Adam still work on the GPU."""
    from distgrad.ops import cuda_kernels

    def refuse(*a, **k):
        raise AssertionError("a fused kernel ran with cuda_kernels.enabled = False")

    for name in ("gelu", "gelu_grad", "sgd_update", "adam_update", "softmax_forward", "softmax_backward",
                 "layer_norm_forward", "layer_norm_backward", "cross_entropy_forward", "cross_entropy_backward",
                 "add_bias_", "bmm"):
        if hasattr(cuda_kernels, name):
            monkeypatch.setattr(cuda_kernels, name, refuse)
    monkeypatch.setattr(cuda_kernels, "enabled", False)
    lin = dg.nn.Linear(8, 8).cuda()
    ln = dg.nn.LayerNorm(8).cuda()
    x = dg.randn(4, 8, device="cuda", requires_grad=True)
    for opt in (dg.optim.SGD(lin.parameters(), lr=0.1), dg.optim.AdamW(lin.parameters(), lr=0.1)):
        y = dg.nn.functional.gelu(ln(lin(x)))
        loss = dg.nn.functional.cross_entropy(y, dg.tensor([0, 1, 2, 3], device="cuda")) + y.softmax(-1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(lin.weight.detach().cpu().numpy()).all()


def _gpu_ddp_job(backend, hook):
    import shutil

    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    if mpiexec is None:
        pytest.skip("needs mpiexec")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "tests", "mpi", "scripts", "gpu_ddp.py")
    args = [mpiexec, "-n", "2"]
    if "Open MPI" in subprocess.run([mpiexec, "--version"], capture_output=True, text=True).stdout:
        args += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    proc = subprocess.run(args + [sys.executable, script, backend, hook], capture_output=True, text=True,
                          timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("gpu_ddp OK") == 2, proc.stdout


@gpu
@pytest.mark.parametrize("hook", ["none", "allreduce", "fp16"])
def test_two_ranks_staged_on_the_gpu_with_hooks(hook):
    """Two ranks sharing the GPUs there are, gradients staged through host memory."""
    _gpu_ddp_job("mpi", hook)


@gpu
@pytest.mark.parametrize("hook", ["none", "fp16"])
def test_two_ranks_over_nccl(hook):
    if dg.cuda.device_count() < 2:
        pytest.skip(f"NCCL needs one GPU per rank: 2 ranks, {dg.cuda.device_count()} GPU(s) here")
    _gpu_ddp_job("nccl", hook)
