"""Distributed tests, run from a normal ``python -m pytest``.

The multi-rank tests (tests/mpi/test_ddp_mpi.py) need several processes, so this file
starts a REAL ``mpiexec`` in a subprocess: ``mpiexec -n 2|3 python -m pytest --with-mpi
tests/mpi``, and the failure scripts in tests/mpi/scripts, which must bring the job down
(they cannot run inside pytest). Every subprocess has a timeout, and a job that overruns
is torn down with all its ranks, so nothing here can hang CI. World size 1 is tested in
a plain subprocess, without mpiexec.

Skipped, with the reason, where no ``mpiexec`` or no mpi4py is installed
(``pip install -e ".[dev]"`` provides both: mpi4py and the ``mpich`` wheel).
"""
import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET

import pytest

from jobs import alive, find_mpiexec, tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "tests", "mpi", "scripts")
TIMEOUT = 120       # seconds for any one subprocess: a backstop against hangs
PROMPT = 30         # a failing job must end well within this (a liveness bound, not a benchmark)
LAUNCHER_VARS = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL", "SLURM_")


MPIEXEC = find_mpiexec()


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


HAVE_MPI4PY = _installed("mpi4py")
HAVE_PYTEST_MPI = _installed("pytest_mpi")

needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or not HAVE_MPI4PY,
    reason=("multi-rank tests need mpiexec and mpi4py: " + ", ".join(
        what for what, ok in (("no mpiexec next to the Python or on PATH", MPIEXEC is not None),
                              ("mpi4py is not installed", HAVE_MPI4PY)) if not ok)
            + ' (pip install -e ".[dev]")'),
)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARS)}
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# ------------------------------------------------------- running a job safely
def _kill_job(proc):
    """Tear down mpiexec and every process it started (hydra's proxies and the ranks
    run in sessions of their own, so killing a process group would miss them)."""
    kids = tree(proc.pid)[1:]
    try:
        proc.send_signal(signal.SIGTERM)  # mpiexec forwards it and cleans up its ranks
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    for pid in alive(kids):  # whatever survived, checked against pid reuse
        with contextlib.suppress(OSError):  # it may have exited meanwhile
            os.kill(pid, signal.SIGKILL)


class Job:
    def __init__(self, args, rc, out, err, elapsed):
        self.args, self.rc, self.out, self.err, self.elapsed = args, rc, out, err, elapsed

    @property
    def output(self):
        return self.out + self.err

    def describe(self, limit=6000):
        text = f"$ {' '.join(self.args)}\nexit status {self.rc} after {self.elapsed:.1f} s\n"
        text += f"--- stdout (tail)\n{self.out[-limit:]}\n--- stderr (tail)\n{self.err[-limit:]}"
        return text


def run(args, timeout=TIMEOUT, env=None):
    start = time.monotonic()
    proc = subprocess.Popen(args, cwd=REPO, env=env or _env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_job(proc)
        pytest.fail(f"{' '.join(args)} did not finish within {timeout} s (a hang?); killed it",
                    pytrace=False)
    return Job(args, proc.returncode, out, err, time.monotonic() - start)


def mpiexec(n, *args, timeout=TIMEOUT):
    return run([MPIEXEC, "-n", str(n), sys.executable, *args], timeout=timeout)


# ------------------------------------------------------ the multi-rank suite
def _junit_outcomes(path):
    """{test id: outcome} from a junit XML report: passed, failed, error, skipped, xfailed."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = {"failure": "failed", "error": "error"}[child.tag]
                break
            if child.tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        outcomes[name] = outcome
    return outcomes


@needs_mpi
@pytest.mark.skipif(not HAVE_PYTEST_MPI,
                    reason="the multi-rank suite needs the pytest-mpi plugin (pip install pytest-mpi)")
@pytest.mark.parametrize("n", [2, 3])
def test_multi_rank_suite(n, tmp_path):
    """``mpiexec -n N python -m pytest --with-mpi tests/mpi``, one junit report per rank
    (MPMD syntax, so that each rank gets its own file: the ranks' console output interleaves)."""
    args = []
    for r in range(n):
        args += [":"] if r else []
        args += ["-n", "1", sys.executable, "-m", "pytest", "--with-mpi", "tests/mpi", "-q",
                 "-p", "no:cacheprovider", "-rfEX", f"--junitxml={tmp_path / f'rank{r}.xml'}"]
    job = run([MPIEXEC, *args])
    assert job.rc == 0, job.describe()
    per_rank = [_junit_outcomes(tmp_path / f"rank{r}.xml") for r in range(n)]
    # every rank ran the same tests, in a world of n ranks: nothing skipped (a launcher that
    # does not match mpi4py's MPI would start n worlds of size 1, where they would be skipped)
    for r, outcomes in enumerate(per_rank):
        assert list(outcomes) == list(per_rank[0]), f"rank {r} ran other tests\n{job.describe()}"
        bad = {t: o for t, o in outcomes.items() if o not in ("passed", "xfailed")}
        assert not bad, f"rank {r}: {bad}\n{job.describe()}"
    assert sum(o == "passed" for o in per_rank[0].values()) >= 20, job.describe()


# ------------------------------------------------------------ failure scripts
def script(name):
    return os.path.join(SCRIPTS, name)


@needs_mpi
@pytest.mark.parametrize("mode, where", [
    pytest.param("allreduce", "before all_reduce", id="allreduce"),
    pytest.param("backward", "inside backward", id="backward"),
    pytest.param("thread", "data-loader", id="thread"),
])
def test_failing_rank_brings_the_job_down(mode, where):
    """One rank raises while the other waits in all_reduce / in a DDP backward."""
    job = mpiexec(2, script("rank_raises.py"), mode)
    assert job.rc != 0, job.describe()
    assert job.elapsed < PROMPT, job.describe()
    assert "UNEXPECTEDLY FINISHED" not in job.output, job.describe()
    # stderr names the failing rank, the exception, and where it was raised
    assert re.search(r"rank 1\b.*ValueError|ValueError.*rank 1\b", job.err), job.describe()
    assert "ValueError: intentional failure" in job.err, job.describe()
    assert where in job.err, job.describe()


@needs_mpi
def test_stalled_rank_fails_the_ddp_backward_after_the_timeout():
    job = mpiexec(2, script("rank_stalls.py"), "backward")
    assert job.rc != 0, job.describe()
    assert job.elapsed < PROMPT, job.describe()
    assert "rank 1: stalling" in job.out, job.describe()
    assert "rank 0: step 1 finished" not in job.out, job.describe()
    # rank 0 reports the timeout, naming the backward pass and the bucket it waited for, and
    # the rank that did not join it
    lines = [ln for ln in job.err.splitlines() if ln.startswith("[rank 0 ") and "Timeout" in ln]
    assert any(re.search(r"\bbucket \d+", ln) and "backward #2" in ln and "2 s" in ln
               for ln in lines), job.describe()
    assert re.search(r"had not joined it:\n\s+rank 1 \(", job.err), job.describe()


@needs_mpi
def test_stalled_rank_fails_the_buffer_broadcast_after_the_timeout():
    job = mpiexec(2, script("rank_stalls.py"), "buffers")
    assert job.elapsed < PROMPT, job.describe()
    assert "rank 1: step 1 finished" not in job.out, job.describe()
    assert job.rc != 0, job.describe()
    assert re.search(r"\[rank 1 .*within 2 s", job.err), job.describe()


@needs_mpi
def test_a_rank_that_leaves_early_fails_the_others_at_once():
    job = mpiexec(2, script("rank_leaves.py"))
    assert job.rc != 0 and job.elapsed < PROMPT, job.describe()  # not the 10-minute timeout
    assert "rank 1: leaving after one step" in job.out, job.describe()
    assert "rank 0: the second step finished" not in job.out, job.describe()
    assert re.search(r"\[rank 0 .*PeerLeft.*can never finish: rank 1 \(.*\) has left the job "
                     r"\(its process exited", job.err), job.describe()


@needs_mpi
def test_all_frozen_rank_is_a_mismatch_on_every_rank():
    job = mpiexec(2, script("frozen_rank.py"))
    assert job.elapsed < PROMPT, job.describe()
    for r in range(2):
        line = re.search(rf"rank {r} caught: (.*?)(?=rank \d caught:|$)", job.out, re.M)
        assert line, job.describe()
        assert "rank 1 does not hold the same model as rank 0" in line.group(1), job.describe()


# ------------------------------------------------------------- world size 1
WORLD_OF_ONE = textwrap.dedent("""
    import contextlib
    import sys
    if sys.argv[1] == "no-mpi4py":
        sys.modules["mpi4py"] = None  # as if it were not installed
    import numpy as np
    import distgrad as dg
    import distgrad.distributed as dist
    import distgrad.nn.functional as F
    from distgrad import nn

    assert not dist.is_initialized()
    dist.init_process_group()
    assert dist.is_initialized()
    assert (dist.get_rank(), dist.get_world_size()) == (0, 1)
    assert (dist.get_local_rank(), dist.get_local_world_size()) == (0, 1)

    for op in (dist.ReduceOp.SUM, dist.ReduceOp.AVG, dist.ReduceOp.MAX, dist.ReduceOp.MIN,
               dist.ReduceOp.PRODUCT):
        t = dg.tensor([1.5, -2.0, 3.0])
        dist.all_reduce(t, op=op)
        assert t.tolist() == [1.5, -2.0, 3.0], (op, t)
    t = dg.tensor([4.0, 5.0])
    dist.broadcast(t, src=0)
    assert t.tolist() == [4.0, 5.0]
    try:
        dist.broadcast(t, src=1)
        raise AssertionError("broadcast from rank 1 of 1 did not raise")
    except ValueError as e:
        assert "src=1" in str(e), e
    out = [dg.zeros(2)]
    dist.all_gather(out, dg.tensor([1.0, 2.0]))
    assert out[0].tolist() == [1.0, 2.0]
    part = dg.zeros(2)
    dist.reduce_scatter_tensor(part, dg.tensor([3.0, 4.0]))
    assert part.tolist() == [3.0, 4.0]
    objs = []
    dist.all_gather_object(objs, {"a": 1})
    assert objs == [{"a": 1}]
    dist.barrier()

    # DDP on one process is plain training: the same parameters, bit for bit
    def build():
        dg.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 16, dtype=dg.float64), nn.Tanh(), nn.Linear(16, 3, dtype=dg.float64))
    plain, wrapped = build(), build()
    ddp = dist.DistributedDataParallel(wrapped, bucket_cap_mb=0.0004, first_bucket_cap_mb=0.0002)
    assert len(ddp.bucket_names()) >= 3
    opt_p = dg.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    opt_w = dg.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    for step in range(3):
        x = dg.tensor(rng.standard_normal((8, 5)))
        y = dg.tensor(rng.integers(0, 3, 8))
        for model, opt, net, first in ((plain, opt_p, plain, contextlib.nullcontext),
                                       (wrapped, opt_w, ddp, ddp.no_sync)):
            model.zero_grad()
            for i in range(2):
                with first() if i == 0 else contextlib.nullcontext():
                    (F.cross_entropy(net(x[4 * i:4 * i + 4]), y[4 * i:4 * i + 4]) / 2).backward()
            opt.step()
        for (name, p), q in zip(plain.named_parameters(), wrapped.parameters()):
            assert np.array_equal(p.grad.numpy(), q.grad.numpy()), (step, name)
            assert np.array_equal(p.detach().numpy(), q.detach().numpy()), (step, name)
    print("OK backend", dist.get_backend())
""")


@pytest.mark.parametrize("variant, backend", [
    pytest.param("mpi4py", "mpi", marks=pytest.mark.skipif(not HAVE_MPI4PY, reason="mpi4py is not installed")),
    pytest.param("no-mpi4py", "single"),
])
def test_world_of_one_without_mpiexec(variant, backend):
    job = run([sys.executable, "-c", WORLD_OF_ONE, variant], timeout=TIMEOUT)
    assert job.rc == 0, job.describe()
    assert f"OK backend {backend}" in job.out, job.describe()


def test_launched_without_mpi4py_is_a_clear_error():
    """Started by a launcher with 2 ranks but no mpi4py: an error, not 2 worlds of one."""
    code = textwrap.dedent("""
        import sys
        sys.modules["mpi4py"] = None
        import distgrad.distributed as dist
        try:
            dist.init_process_group()
        except RuntimeError as e:
            print("ERROR", e)
        else:
            print("NO ERROR", dist.get_world_size())
    """)
    job = run([sys.executable, "-c", code], env=_env(PMI_SIZE="2", PMI_RANK="1"))
    assert job.rc == 0, job.describe()
    assert "ERROR" in job.out and "NO ERROR" not in job.out, job.describe()
    assert "mpi4py" in job.out and "2 ranks" in job.out, job.describe()
