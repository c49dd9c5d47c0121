"""Running real jobs in tests: ``distgrad-launch`` in a new session with a timeout, the
process tree it leaves (read from /proc, so a job that overruns is torn down with all
its processes: Hydra's proxies and ranks run in sessions of their own, which the
process group alone would miss), and readers for what a run directory holds."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from distgrad.train import checkpoint as ckpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "configs", "quickstart.toml")
SMALL = ["train.steps=6", "train.log_interval=1", "train.checkpoint_interval=3", "model.width=32",
         "data.max_bytes=20000", "train.progress=false"]
TIMEOUT = 120   # backstop for any one job
PROMPT = 30     # a failing or interrupted job must end within this (liveness, not a benchmark)
LAUNCHER_VARS = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCAL", "SLURM_")


def find_mpiexec():
    """The mpiexec next to this Python (the ``mpich`` wheel's, matching mpi4py) first,
    then the one on PATH (which may be another MPI's: a system Open MPI refuses root
    without a flag), or None."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    return shutil.which("mpiexec")


def have_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return find_mpiexec() is not None


needs_mpi = pytest.mark.skipif(not have_mpi(), reason="2-rank runs need mpi4py and mpiexec "
                                                       "(pip install -e '.[dev]')")


# ------------------------------------------------------------ processes
def process_table():
    """{pid: (ppid, start time)} from /proc."""
    table = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(p)] = (int(fields[1]), fields[19])
    return table


def tree(pid):
    """[(pid, start time)] of ``pid`` and all its descendants."""
    table = process_table()
    children = {}
    for p, (pp, _) in table.items():
        children.setdefault(pp, []).append(p)
    out = [(pid, table[pid][1])] if pid in table else []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append((c, table[c][1]))
            todo.append(c)
    return out


def alive(procs):
    table = process_table()
    alive = []
    for pid, start in procs:
        if pid in table and table[pid][1] == start:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
    return alive


def kill_tree(proc, procs=None):
    """SIGKILL every process of the launcher's tree, the deepest first (the ranks
    before mpiexec, the launcher and its guard last: so the guard, which would
    interrupt a job that outlives its launcher, finds nothing left to interrupt),
    then the launcher's process group."""
    procs = procs if procs is not None else tree(proc.pid)
    for pid in reversed(alive(procs)):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):  # the group may be gone already
        os.killpg(proc.pid, signal.SIGKILL)


class Job:
    def __init__(self, proc, args, out_dir):
        self.proc, self.args, self.out_dir = proc, args, out_dir
        self.start = time.monotonic()
        self.rc = self.out = self.err = None
        self.elapsed = None

    def wait(self, timeout=TIMEOUT):
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc)
            self.out, self.err = self.proc.communicate()
            pytest.fail(f"did not finish within {timeout} s (a hang?); killed it\n{self.describe()}",
                        pytrace=False)
        self.rc = self.proc.returncode
        self.elapsed = time.monotonic() - self.start
        return self

    @property
    def output(self):
        return (self.out or "") + (self.err or "")

    @property
    def run_dir(self):
        dirs = [d for d in os.listdir(self.out_dir) if os.path.isdir(os.path.join(self.out_dir, d))]
        assert len(dirs) == 1, (dirs, self.describe())
        return os.path.join(self.out_dir, dirs[0])

    def describe(self, limit=5000):
        return (f"$ {' '.join(map(str, self.args))}\nexit status {self.rc}\n"
                f"--- stdout\n{(self.out or '')[-limit:]}\n--- stderr\n{(self.err or '')[-limit:]}")


def start(out_dir, *args, debug=False, env=None, pythonpath=(), config=None):
    """Start ``distgrad-launch quickstart.toml SMALL ARGS run.output_dir=OUT_DIR`` (or
    ``CONFIG ARGS ...``) in a new session, in OUT_DIR's parent (a temporary directory)."""
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "launch", *([config] if config else [QUICKSTART, *SMALL]), *args,
           f'run.output_dir="{out_dir}"'] + (["--debug"] if debug else [])
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(LAUNCHER_VARS) and k not in ("DISTGRAD_TEST_PAUSE_IN_SAVE", "DISTGRAD_TEST_FAULT")}
    e["PYTHONPATH"] = os.pathsep.join([REPO, *map(str, pythonpath)]
                                      + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e["PYTHONUNBUFFERED"] = "1"
    e.update(env or {})
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(out_dir), env=e, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return Job(proc, cmd, out_dir)


def run(out_dir, *args, **kw):
    return start(out_dir, *args, **kw).wait()


def ok(job):
    assert job.rc == 0, job.describe()
    return job


def metrics(run_dir, rank=0):
    with open(os.path.join(run_dir, f"metrics.rank{rank}.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def step_losses(run_dir, rank=0):
    """{step: loss} of the training steps (a resumed run's later lines win)."""
    return {m["step"]: m["loss"] for m in metrics(run_dir, rank) if "loss" in m}


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def tensors(run_dir, step):
    from safetensors.numpy import load_file

    return load_file(ckpt.paths(run_dir, step)[0])


def ckpt_meta(run_dir, step):
    with open(ckpt.paths(run_dir, step)[1]) as f:
        return json.load(f)


def assert_same_tensors(a, b):
    assert sorted(a) == sorted(b)
    assert any(k.startswith("model.") for k in a) and any(k.startswith("optim.") for k in a)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), f"{k} differs"


def wait_for(predicate, job, timeout=60, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if job.proc.poll() is not None:
            job.wait()
            pytest.fail(f"the job ended before {what}\n{job.describe()}", pytrace=False)
        time.sleep(0.05)
    kill_tree(job.proc)
    job.wait()
    pytest.fail(f"{what} did not happen within {timeout} s\n{job.describe()}", pytrace=False)


def fresh_resume_dir(src_run_dir, dest, step=3):
    """A run directory with only config.toml and the checkpoint of ``step``."""
    os.makedirs(dest)
    shutil.copy2(os.path.join(src_run_dir, "config.toml"), dest)
    for p in ckpt.paths(src_run_dir, step):
        shutil.copy2(p, dest)
    return str(dest)
