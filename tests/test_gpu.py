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
def _on(tensors, device):
    out = []
    for t in tensors:
        if isinstance(t, dg.Tensor):
            c = t.detach().to(device)
            out.append(c.requires_grad_(t.requires_grad) if t.is_floating_point() else c)
        else:
            out.append(t)
    return out


def _op_cases():
    from op_table import OPS

    for op in OPS:
        for i, (args, kwargs) in enumerate(op.samples(np.random.default_rng(0))):
            yield pytest.param(op, args, kwargs, id=f"{op.name}-{op.variant}-{i}")


@gpu
@pytest.mark.parametrize("op,args,kwargs", list(_op_cases()) if HAS_CUDA else [])
def test_every_op_on_gpu_matches_cpu(op, args, kwargs):
    cpu_args = list(args)
    gpu_args = _on(args, "cuda")
    out_c = op.fn(dg, *cpu_args, **kwargs)
    out_g = op.fn(dg, *gpu_args, **kwargs)
    outs_c = out_c if isinstance(out_c, (tuple, list)) else (out_c,)
    outs_g = out_g if isinstance(out_g, (tuple, list)) else (out_g,)
    for c, g in zip(outs_c, outs_g):
        assert g.device.type == "cuda"
        np.testing.assert_allclose(g.cpu().detach().numpy(), c.detach().numpy(), rtol=1e-10, atol=1e-12)
    diff = [a for a in cpu_args if isinstance(a, dg.Tensor) and a.requires_grad]
    if not diff or not outs_c[0].requires_grad:
        return
    gc = dg.autograd.grad(sum(o.sum() for o in outs_c if o.requires_grad), diff, allow_unused=True)
    gdiff = [a for a in gpu_args if isinstance(a, dg.Tensor) and a.requires_grad]
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
    finals = []
    for device in ("cpu", "cuda"):
        p = dg.nn.Parameter(dg.tensor(w0, device=device))
        opt = dg.optim.AdamW([p], lr=1e-2, weight_decay=0.1)
        for g in grads:
            p.grad = dg.tensor(g, device=device)
            opt.step()
        finals.append(p.detach().cpu().numpy())
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
