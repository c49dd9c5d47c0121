"""Communicators built from transports, in one process: which transport an array takes,
that a CPU job never creates a device transport (nor touches CUDA), futures, and DDP
communication hooks in a world of one. The multi-rank behaviour is in
tests/mpi/test_ddp_mpi.py (run under mpiexec by test_distributed.py)."""
import sys

import numpy as np
import pytest

import distgrad as dg
from distgrad.distributed import comm as C
from distgrad.futures import Future, collect_all, wait_all

mpi4py = pytest.importorskip("mpi4py")


def test_host_arrays_never_create_a_device_transport():
    c = C.MPICommunicator(device="auto")
    a = np.arange(4.0)
    c.allreduce_(a)
    c.iallreduce_(a).wait()
    c.broadcast_(a)
    assert c.allgather(a)[0].tolist() == a.tolist()
    assert c._device is None and c.device_kind == "auto" and c.name == "mpi"
    assert isinstance(c._transport(a), C.MPITransport)


def test_device_choice_and_errors():
    assert C.MPICommunicator(device="staged").name == "mpi"
    assert C.NCCLCommunicator.__mro__[1] is C.MPICommunicator
    with pytest.raises(ValueError, match="device transport 'gloo'"):
        C.MPICommunicator(device="gloo")
    c = C.MPICommunicator(device="auto")
    assert c.resolve_device() == "staged"            # a world of one never needs NCCL
    if not C.gpu_per_rank(1):
        c = C.MPICommunicator(device="nccl")
        with pytest.raises(RuntimeError, match="NCCL needs one GPU per rank"):
            c.resolve_device()
    dup = C.MPICommunicator(device="staged").dup()
    assert dup.device_kind == "staged" and dup._device is None


def test_half_arrays_use_distgrads_own_mpi_op():
    buf, op = C._half_buffer(mpi4py.MPI, np.ones(3, np.float16), C.SUM)
    assert buf[0].dtype == np.uint16 and op is C._half_buffer(mpi4py.MPI, np.ones(2, np.float16), C.SUM)[1]
    assert C._is_half(np.dtype(np.float16)) and not C._is_half(np.dtype(np.int16))


def test_a_cpu_job_with_backend_auto_does_not_import_cupy():
    import subprocess

    code = ("import sys, distgrad as dg, distgrad.distributed as dist; dist.init_process_group('auto');"
            "m = dist.DistributedDataParallel(dg.nn.Linear(3, 2)); m(dg.ones(2, 3)).sum().backward();"
            "print('cupy' in sys.modules, dist.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "mpi"], out.stdout


def test_future_semantics():
    f = Future()
    assert not f.done()
    with pytest.raises(RuntimeError, match="not completed"):
        f.value()
    chained = f.then(lambda fut: fut.value() * 2)
    f.set_result(21)
    assert f.wait() == 21 and chained.wait() == 42
    with pytest.raises(RuntimeError, match="only be marked completed once"):
        f.set_result(1)
    bad = Future()
    after = bad.then(lambda fut: fut.value())
    bad.set_exception(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        after.wait()
    a, b = Future(), Future()
    both = collect_all([a, b])
    a.set_result(1)
    assert not both.done()
    b.set_result(2)
    assert wait_all(both.wait()) == [1, 2]


def test_hooks_run_in_a_world_of_one():
    """With one rank there is nothing to reduce, but a registered hook still runs (a
    compression hook rounds the gradients to float16, as it does on many ranks)."""
    import distgrad.distributed as dist
    from distgrad.distributed.algorithms.ddp_comm_hooks import default_hooks

    mine = not dist.is_initialized()
    if mine:
        dist.init_process_group("mpi")
    try:
        _hook_in_one_process(dist, default_hooks)
    finally:
        if mine:
            dist.destroy_process_group()


def _hook_in_one_process(dist, default_hooks):
    dg.manual_seed(0)
    model = dg.nn.Linear(5, 3, dtype=dg.float64)
    plain = dg.nn.Linear(5, 3, dtype=dg.float64)
    plain.load_state_dict(model.state_dict())
    ddp = dist.DistributedDataParallel(model)
    calls = []

    def counting(state, bucket):
        state.append(bucket.index())
        return default_hooks.fp16_compress_hook(None, bucket)

    ddp.register_comm_hook(calls, counting)
    x = dg.randn(4, 5, dtype=dg.float64)
    ddp(x).sum().backward()
    plain(x).sum().backward()
    assert calls == [0]
    for p, q in zip(model.parameters(), plain.parameters()):
        want = q.grad.numpy().astype(np.float16).astype(np.float64)
        np.testing.assert_array_equal(p.grad.numpy(), want)


def test_the_communication_threads_sleep_adapts_to_each_bucket(monkeypatch):
    """Between bursts of progress calls the reducer's thread sleeps a bucket's last
    collective time / WAKEUPS_PER_BUCKET, within [POLL_MIN_S, POLL_MAX_S];
    DISTGRAD_COMM_POLL_US fixes it (0: blocking collectives) and bad values are refused."""
    import types

    from distgrad.distributed import reducer as R

    monkeypatch.delenv("DISTGRAD_COMM_POLL_US", raising=False)
    thread = R._CommThread(C.SingleProcessCommunicator())
    try:
        big, small = types.SimpleNamespace(index=1, nbytes=4 << 20), types.SimpleNamespace(index=0, nbytes=40 << 10)
        assert thread.poll_for(big) == R.FIRST_POLL_S              # no history yet
        thread.took[(1, 4 << 20)] = 0.036                          # 4 MiB in 36 ms: a 1 Gbit/s link
        thread.took[(0, 40 << 10)] = 0.0009
        assert thread.poll_for(big) == pytest.approx(0.036 / R.WAKEUPS_PER_BUCKET)
        assert thread.poll_for(small) == pytest.approx(0.0009 / R.WAKEUPS_PER_BUCKET)
        assert thread.poll_for(big) > 10 * thread.poll_for(small)
        thread.took[(1, 4 << 20)] = 5.0
        assert thread.poll_for(big) == R.POLL_MAX_S
        thread.took[(1, 4 << 20)] = 1e-6
        assert thread.poll_for(big) == R.POLL_MIN_S
        rebuilt = types.SimpleNamespace(index=1, nbytes=1 << 20)   # same index, other contents
        assert thread.poll_for(rebuilt) == R.FIRST_POLL_S
    finally:
        thread.close()
    assert R.poll_setting(None) is None and R.poll_setting("auto") is None and R.poll_setting(" AUTO ") is None
    assert R.poll_setting("250") == pytest.approx(250e-6) and R.poll_setting("0") == 0.0
    for bad in ("-5", "fast", "nan"):
        with pytest.raises(ValueError, match=f"DISTGRAD_COMM_POLL_US='{bad}'.*'auto', 0"):
            R.poll_setting(bad)
    monkeypatch.setenv("DISTGRAD_COMM_POLL_US", "300")
    fixed = R._CommThread(C.SingleProcessCommunicator())
    try:
        fixed.took[(1, 4 << 20)] = 0.036
        assert fixed.poll_for(big) == pytest.approx(300e-6)
    finally:
        fixed.close()
