"""nn.SyncBatchNorm and convert_sync_batchnorm.

Without a process group it must be exactly BatchNorm (forward, backward, running
statistics, eval); convert_sync_batchnorm must keep every parameter, buffer, flag and
state-dict key, as PyTorch's does. Across real ranks (``mpiexec -n 2|3`` running
tests/mpi/scripts/sync_bn.py in a subprocess with a timeout) ranks with different
batch sizes must get what single-process BatchNorm gives on the concatenated batch,
inside DistributedDataParallel, and a rank that does not join a SyncBatchNorm
collective must make the others fail within the process group's timeout, naming it.
"""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn
from jobs import find_mpiexec, have_mpi

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "mpi", "scripts", "sync_bn.py")
TIMEOUT = 60        # seconds for any one job: a backstop against hangs
PROMPT = 30         # a failing job must end well within this
LAUNCHER_VARS = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL", "SLURM_")


def arr(t):
    return t.detach().numpy()


def same(a, b, tol=1e-12):
    a = a if isinstance(a, np.ndarray) else arr(a)
    b = b if isinstance(b, np.ndarray) else b.detach().numpy()
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


# ------------------------------------------------- without a process group
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False},
                                    {"track_running_stats": False}, {"bias": False}],
                         ids=["default", "cumulative", "no-affine", "no-stats", "no-bias"])
def test_equals_batchnorm2d_without_a_process_group(kwargs):
    dg.manual_seed(0)
    ref = nn.BatchNorm2d(3, dtype=dg.float64, **kwargs)
    sync = nn.SyncBatchNorm(3, dtype=dg.float64, **kwargs)
    sync.load_state_dict(ref.state_dict())
    if ref.weight is not None:
        with dg.no_grad():
            for m in (ref, sync):
                m.weight.copy_(dg.tensor([0.5, 1.0, 2.0]))
                if m.bias is not None:
                    m.bias.copy_(dg.tensor([0.1, -0.2, 0.3]))
    rng = np.random.default_rng(0)
    for step in range(3):
        X = rng.standard_normal((4, 3, 5, 2)) * 2 + 7
        G = rng.standard_normal(X.shape)
        x, xr = dg.tensor(X, requires_grad=True), dg.tensor(X, requires_grad=True)
        y, yr = sync(x), ref(xr)
        same(y, yr)
        y.backward(dg.tensor(G))
        yr.backward(dg.tensor(G))
        same(x.grad, xr.grad)
        for (n, p), (_, pr) in zip(sync.named_parameters(), ref.named_parameters()):
            same(p.grad, pr.grad)
        for (n, b), (_, br) in zip(sync.named_buffers(), ref.named_buffers()):
            same(b, br)
    sync.eval()
    ref.eval()
    X = rng.standard_normal((2, 3, 5, 2))
    same(sync(dg.tensor(X)), ref(dg.tensor(X)))


@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 4), (2, 3, 4, 5), (2, 3, 2, 2, 3)], ids=["2d", "3d", "4d", "5d"])
def test_any_input_of_at_least_two_dims(shape):
    sync = nn.SyncBatchNorm(3, dtype=dg.float64)
    X = np.random.default_rng(1).standard_normal(shape)
    x = dg.tensor(X, requires_grad=True)
    y = sync(x)
    axes = (0,) + tuple(range(2, len(shape)))
    want = (X - X.mean(axes, keepdims=True)) / np.sqrt(X.var(axes, keepdims=True) + 1e-5)
    same(y, want, 1e-10)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_errors():
    sync = nn.SyncBatchNorm(3)
    with pytest.raises(ValueError, match=r"expected at least 2D input \(got 1D input\)"):
        sync(dg.randn(3))
    with pytest.raises(ValueError, match="number of input channels should be non-zero"):
        nn.SyncBatchNorm(0)(dg.randn(2, 0))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        sync(dg.randn(1, 3))
    with pytest.raises(RuntimeError, match="running_mean should contain 3 elements not 4"):
        nn.SyncBatchNorm(4)(dg.randn(2, 3))
    sync.eval()
    assert sync(dg.randn(1, 3)).shape == (1, 3)  # eval: the running statistics, any batch


def test_torch_parity_without_a_process_group(torch):
    rng = np.random.default_rng(7)
    ours = nn.SyncBatchNorm(4, momentum=0.3).double()
    theirs = torch.nn.SyncBatchNorm(4, momentum=0.3).double()
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for _ in range(2):
        X = rng.standard_normal((5, 4, 3))
        G = rng.standard_normal(X.shape)
        x, xt = dg.tensor(X, requires_grad=True), torch.tensor(X, requires_grad=True)
        y, yt = ours(x), theirs(xt)
        same(y, yt.detach().numpy())
        y.backward(dg.tensor(G))
        yt.backward(torch.tensor(G))
        same(x.grad, xt.grad.numpy())
        same(ours.weight.grad, theirs.weight.grad.numpy())
        same(ours.running_var, theirs.running_var.numpy())
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 2


def test_exported():
    assert dg.nn.SyncBatchNorm is nn.modules.SyncBatchNorm
    assert issubclass(nn.SyncBatchNorm, nn.modules.batchnorm._BatchNorm)


# ----------------------------------------------------- convert_sync_batchnorm
def _model(lib):
    """BatchNorm1d/2d layers nested in Sequentials, in distgrad or in torch."""
    L = lib.nn
    return L.Sequential(
        L.Sequential(L.Conv2d(2, 4, 3), L.BatchNorm2d(4), L.ReLU(), L.AdaptiveAvgPool2d(1), L.Flatten()),
        L.Sequential(L.Linear(4, 6), L.BatchNorm1d(6, momentum=None)),
        L.BatchNorm1d(6, affine=False, eps=1e-3),
        L.Sequential(L.BatchNorm1d(6, track_running_stats=False), L.Tanh()),
        L.Linear(6, 2),
    )


def test_convert_keeps_every_parameter_buffer_and_flag():
    dg.manual_seed(0)
    model = _model(dg).double()
    rng = np.random.default_rng(3)
    for _ in range(2):  # non-trivial running statistics
        model(dg.tensor(rng.standard_normal((5, 2, 6, 6)))).sum().backward()
    model[1][1].weight.requires_grad_(False)
    model[2].eval()
    before = {n: arr(t).copy() for n, t in model.state_dict().items()}
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    modules = dict(model.named_modules())
    keys = list(model.state_dict())
    X = rng.standard_normal((5, 2, 6, 6))
    model.eval()
    want = arr(model(dg.tensor(X))).copy()
    model.train()
    model[2].eval()

    out = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert out is model
    converted = dict(out.named_modules())
    assert list(converted) == list(modules)
    for name, m in converted.items():
        old = modules[name]
        if isinstance(old, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert type(m) is nn.SyncBatchNorm, name
            for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
                assert getattr(m, attr) == getattr(old, attr), (name, attr)
            assert m.training == old.training, name
            assert m.process_group is None
        else:
            assert m is old, name  # everything else is left as it was
    assert list(out.state_dict()) == keys
    for n, t in out.named_parameters():
        assert t is params[n], n  # the same Parameter objects (so optimizers still hold them)
    assert dict(out.named_parameters()).keys() == params.keys()
    for n, b in out.named_buffers():
        assert b is buffers[n], n
    for n, t in out.state_dict().items():
        np.testing.assert_array_equal(arr(t), before[n])
    assert out[1][1].weight.requires_grad is False
    assert out[2].training is False and out[0][1].training is True
    out.eval()
    same(out(dg.tensor(X)), want)


def test_convert_a_batchnorm_itself_returns_a_new_layer():
    bn = nn.BatchNorm2d(3, bias=False).double()
    bn.running_mean.fill_(2.0)
    bn.eval()
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    assert type(sync) is nn.SyncBatchNorm and sync is not bn
    assert sync.weight is bn.weight and sync.bias is None and sync.running_mean is bn.running_mean
    assert sync.training is False and sync.weight.dtype == dg.float64
    again = nn.SyncBatchNorm.convert_sync_batchnorm(sync, process_group="group")
    assert type(again) is nn.SyncBatchNorm and again is not sync and again.process_group == "group"
    lin = nn.Linear(2, 2)
    assert nn.SyncBatchNorm.convert_sync_batchnorm(lin) is lin


def test_convert_matches_torch(torch):
    ours = nn.SyncBatchNorm.convert_sync_batchnorm(_model(dg))
    theirs = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model(torch))
    assert [(n, type(m).__name__) for n, m in ours.named_modules()] == \
        [(n, type(m).__name__) for n, m in theirs.named_modules()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (n, m), (_, tm) in zip(ours.named_modules(), theirs.named_modules()):
        if type(tm).__name__ == "SyncBatchNorm":
            assert repr(m) == repr(tm), n


# ------------------------------------------------------------ real ranks
MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(not have_mpi(),
                               reason='multi-rank tests need mpiexec and mpi4py (pip install -e ".[dev]")')


def _run(args):
    """Run a job in a subprocess with a timeout; a job that overruns is torn down
    with every process it started. Returns (status, stdout, stderr, seconds)."""
    from jobs import kill_tree

    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARS)}
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    start = time.monotonic()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        proc.communicate()
        pytest.fail(f"{' '.join(args)} did not finish within {TIMEOUT} s (a hang?); killed it", pytrace=False)
    return proc.returncode, out, err, time.monotonic() - start


def _describe(args, rc, out, err):
    return f"$ {' '.join(args)}\nexit status {rc}\n--- stdout\n{out[-6000:]}\n--- stderr\n{err[-6000:]}"


@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_ranks_with_different_batch_sizes_match_the_concatenated_batch(n):
    """Output, input gradient, DDP-averaged parameter gradients, running statistics and
    num_batches_tracked over several training steps, to 1e-10 (see the script)."""
    args = [MPIEXEC, "-n", str(n), sys.executable, SCRIPT, "check"]
    rc, out, err, _ = _run(args)
    assert rc == 0, _describe(args, rc, out, err)
    for r in range(n):
        assert re.search(rf"rank {r}: sync_bn OK \({n} ranks", out), _describe(args, rc, out, err)


@needs_mpi
def test_world_of_one_rank_is_plain_batchnorm():
    args = [sys.executable, SCRIPT, "single"]
    rc, out, err, _ = _run(args)
    assert rc == 0 and "rank 0: sync_bn single OK" in out, _describe(args, rc, out, err)


@needs_mpi
@pytest.mark.parametrize("phase, what", [
    ("forward", "SyncBatchNorm(3): the all-gather of per-rank batch statistics in forward"),
    ("backward", "SyncBatchNorm(3): the all-reduce of the gradient sums in backward"),
], ids=["forward", "backward"])
def test_a_rank_that_does_not_join_fails_the_wait_after_the_timeout(phase, what):
    args = [MPIEXEC, "-n", "2", sys.executable, SCRIPT, f"stall-{phase}"]
    rc, out, err, elapsed = _run(args)
    text = _describe(args, rc, out, err)
    assert rc != 0 and elapsed < PROMPT, text
    assert "rank 1: stalling" in out and "rank 0: second step finished" not in out, text
    assert re.search(r"\[rank 0 .*CollectiveTimeout.*" + re.escape(what) + r".*within 2 s", err), text
    assert re.search(r"had not joined it:\n\s+rank 1 \(", err), text
