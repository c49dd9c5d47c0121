"""The launch paths other than MPICH's mpiexec, run for real: Open MPI's mpirun, and
srun inside a Slurm allocation (with MPICH's mpi4py and with Open MPI's).

``.ci/other-launchers`` sets them up: Debian's Open MPI with a virtual environment
of its own (mpi4py compiled against Open MPI, distgrad installed editable, the main
environment's numpy), and a one-machine Slurm cluster. It writes what it could set up,
and why not the rest, to ``.ci-launchers/launchers.env``; a test whose part is missing
skips with that reason.

Every run is the small quickstart config of the shared reference run ``ref2`` (2 ranks
under MPICH's Hydra, main environment) and must reproduce it bit for bit: every
rank's logged numbers (loss, its own loss, gradient norm, learning rate, eval) and the
final checkpoint's tensors. Exact equality is the right test: the data order, seeds
and numpy build are the same, each rank's BLAS gets the same thread count, and an
all-reduce over 2 ranks adds exactly two numbers per element, and a + b == b + a in
IEEE arithmetic, so no MPI library or reduction algorithm can change a bit. (With
more ranks the order of the additions may differ between MPI libraries, and only
agreement to float rounding could be asked for.)

Every job has a timeout, after which its whole process tree is killed; the Slurm jobs
are cancelled by name whatever happens, and no process of a run may outlive its
launcher."""
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from jobs import (LAUNCHER_VARS, QUICKSTART, REPO, SMALL, TIMEOUT, Job, assert_same_tensors, metrics,
                  summary, tensors)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SETUP = ".ci/other-launchers"
ENV_FILE = os.path.join(REPO, ".ci-launchers", "launchers.env")
NUMBERS = ("loss", "local_loss", "grad_norm", "lr", "eval_loss", "eval_accuracy")
QUICK = 30  # seconds, for Slurm's own commands
PARTS = {"OPENMPI": "Open MPI", "SLURM": "Slurm"}


def _setup_info():
    """launchers.env as a dict, or None when the setup script has not run."""
    try:
        with open(ENV_FILE) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    return dict(line.partition("=")[::2] for line in lines if "=" in line and not line.startswith("#"))


def _need(part):
    info = _setup_info()
    if info is None:
        pytest.skip(f"{SETUP} has not run here ({os.path.relpath(ENV_FILE, REPO)} is missing); it sets "
                    "up Open MPI and a one-machine Slurm cluster (Debian, root or password-less sudo)")
    why = info.get(f"{part}_UNAVAILABLE")
    if why:
        pytest.skip(f"{SETUP} could not set up {PARTS[part]}: {why}")
    return info


_LIBRARY = ("import mpi4py; mpi4py.rc.initialize = False; "
            "from mpi4py import MPI; print(MPI.Get_library_version())")
_VERSIONS = "import numpy, safetensors; print(numpy.__version__, safetensors.__version__)"


def _library(python):
    """The MPI library the mpi4py of ``python`` is built against (MPI not initialized)."""
    out = subprocess.run([python, "-c", _LIBRARY], capture_output=True, text=True, timeout=QUICK, check=False)
    return out.stdout.strip() or out.stderr.strip()


def _versions(python):
    out = subprocess.run([python, "-c", _VERSIONS], capture_output=True, text=True, timeout=QUICK, check=False)
    return out.stdout.strip() or out.stderr.strip()


@pytest.fixture(scope="module")
def openmpi():
    info = _need("OPENMPI")
    python, launch, mpirun = info["OPENMPI_PYTHON"], info["OPENMPI_LAUNCH"], info["OPENMPI_MPIRUN"]
    for path in (python, launch, mpirun):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} (from {SETUP}) is gone; run {SETUP} again")
    library = _library(python)
    assert "Open MPI" in library, f"the Open MPI venv's mpi4py is not Open MPI's: {library}"
    mine, theirs = _versions(sys.executable), _versions(python)
    if mine != theirs:
        pytest.skip(f"the Open MPI venv has numpy, safetensors {theirs}, this environment {mine}: the "
                    f"numbers could differ for that alone; run {SETUP} again from this environment")
    return info


@pytest.fixture(scope="module")
def slurm():
    info = _need("SLURM")
    conf = info["SLURM_CONF"]
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env={**os.environ, "SLURM_CONF": conf},
                             capture_output=True, text=True, timeout=QUICK, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"Slurm was set up by {SETUP} but sinfo does not answer now: {e}")
    states = out.stdout.split()
    if out.returncode != 0 or not any(s in ("idle", "mixed", "allocated") for s in states[1::2]):
        pytest.skip(f"Slurm was set up by {SETUP} but has no usable node now (sinfo: "
                    f"{(out.stdout + out.stderr).strip()!r}); run {SETUP} again")
    return info


# ------------------------------------------------------------ running jobs
def _env(venv_python=None, **extra):
    """This environment without any launcher's variables; with ``venv_python``, that
    virtual environment's in place of this one's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(LAUNCHER_VARS) and k not in ("DISTGRAD_TEST_PAUSE_IN_SAVE", "DISTGRAD_TEST_FAULT")}
    if venv_python:
        here = os.path.dirname(sys.executable)
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != here]
        env["PATH"] = os.pathsep.join([os.path.dirname(venv_python), *path])
        env["VIRTUAL_ENV"] = os.path.dirname(os.path.dirname(venv_python))
    env["PYTHONPATH"] = os.pathsep.join([REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _launch_args(out_dir, *args):
    return [QUICKSTART, *SMALL, f'run.output_dir="{out_dir}"', *args]


def _processes_of(run_dir):
    """Processes (other than this one) whose command line names ``run_dir``."""
    needle = os.fsencode(run_dir)
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(p))
        except OSError:
            continue
    return found


def _run(cmd, out_dir, env, timeout=TIMEOUT):
    os.makedirs(out_dir, exist_ok=True)
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(out_dir), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return Job(proc, cmd, out_dir).wait(timeout)   # on a timeout: kills its process tree, fails


def _no_rank_left(job, grace=15):
    """No rank of the run outlives the launcher (srun's ranks are slurmstepd's
    children, which may take a moment to go). Leftovers are killed, then reported."""
    deadline = time.monotonic() + grace
    while (left := _processes_of(job.out_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the run still alive {grace} s after the launcher ended: {left}\n" \
                     f"{job.describe()}"


def _in_allocation(slurm_info, cmd, out_dir, env):
    """``cmd`` under ``salloc -N1 -n2``; the Slurm job is cancelled whatever happens."""
    name = f"distgrad-test-{uuid.uuid4().hex[:10]}"
    env = {**env, "SLURM_CONF": slurm_info["SLURM_CONF"]}
    salloc = ["salloc", "-N1", "-n2", "--time=5", f"--job-name={name}", "--immediate=60"]
    try:
        return _run(salloc + cmd, out_dir, env, timeout=TIMEOUT + 60)
    finally:
        subprocess.run(["scancel", f"--name={name}"], env=env, capture_output=True, timeout=QUICK, check=False)


# ------------------------------------------------------------ comparing runs
def _numbers(run_dir, rank):
    return [{k: m[k] for k in ("step", *NUMBERS) if k in m} for m in metrics(run_dir, rank)]


def _what_decides_the_numbers(run_dir):
    """The resolved config without where the run went and how its ranks were started."""
    with open(os.path.join(run_dir, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    cfg["run"].pop("output_dir", None)
    cfg["dist"] = {"np": cfg["dist"]["np"]}
    return cfg


def assert_reproduces(job, ref, hint=""):
    assert job.rc == 0, f"{hint}{job.describe()}"
    run_dir = job.run_dir
    s, r = summary(run_dir), summary(ref)
    assert s["status"] == "completed" and s["world_size"] == 2, (s, job.describe())
    assert _what_decides_the_numbers(run_dir) == _what_decides_the_numbers(ref), \
        "the reference run ref2 was made with another config; compare like with like"
    for rank in (0, 1):
        a, b = _numbers(run_dir, rank), _numbers(ref, rank)
        assert [m["step"] for m in a] == [m["step"] for m in b], (rank, a, b)
        for x, y in zip(a, b):
            assert x == y, f"rank {rank}, step {x['step']}: {x} here, {y} under MPICH's mpiexec"
    losses = [m["loss"] for m in _numbers(ref, 0) if "loss" in m]
    assert abs(losses[-1] - losses[0]) > 1e-3, "the loss must move, or agreeing on it says little"
    assert_same_tensors(tensors(run_dir, r["step"]), tensors(ref, r["step"]))


# ------------------------------------------------------------ the tests
def test_openmpi_mpirun_reproduces_the_mpich_run(openmpi, ref2, tmp_path):
    """distgrad-launch from the Open MPI venv with --mpiexec Open MPI's mpirun (it
    recognizes Open MPI, forwards the environment with -x, and adds
    --allow-run-as-root when run as root)."""
    python = openmpi["OPENMPI_PYTHON"]
    job = _run([openmpi["OPENMPI_LAUNCH"], *_launch_args(tmp_path / "runs", "--mpiexec", openmpi["OPENMPI_MPIRUN"])],
               str(tmp_path / "runs"), _env(python))
    try:
        assert_reproduces(job, ref2)
    finally:
        _no_rank_left(job)


def test_openmpi_runs_more_ranks_than_cores(openmpi, ref2, tmp_path):
    """4 ranks, as MPICH's mpiexec runs them on any machine: Open MPI refuses more
    ranks than the machine has cores ("not enough slots") unless told to
    oversubscribe, which a run on this machine alone (no hosts given) should be. The
    numbers agree with the 2-rank run to float rounding only: 4 ranks' gradients may
    be summed in another order."""
    cores = os.cpu_count() or 1
    python = openmpi["OPENMPI_PYTHON"]
    out = str(tmp_path / "runs")
    job = _run([openmpi["OPENMPI_LAUNCH"], *_launch_args(out, "--np", "4", "--mpiexec", openmpi["OPENMPI_MPIRUN"])],
               out, _env(python))
    try:
        assert job.rc == 0, (f"(4 ranks on {cores} cores: Open MPI needs --oversubscribe when they are more)\n"
                             f"{job.describe()}")
        s = summary(job.run_dir)
        assert s["status"] == "completed" and s["world_size"] == 4, (s, job.describe())
        a, b = _numbers(job.run_dir, 0), _numbers(ref2, 0)
        assert [m["step"] for m in a] == [m["step"] for m in b]
        for x, y in zip(a, b):
            assert sorted(x) == sorted(y)
            for k in x:
                if k not in ("step", "local_loss"):   # a rank's own loss is over other samples
                    assert x[k] == pytest.approx(y[k], rel=1e-5), (k, x, y)
    finally:
        _no_rank_left(job)


def _srun_hint(library, slurm_info):
    pmi = "pmix" if "Open MPI" in library else "pmi2"
    return (f"(srun must give the ranks a PMI their MPI speaks: {library.splitlines()[0] if library else '?'} "
            f"needs srun --mpi={pmi} where Slurm's MpiDefault is none, as here and in Slurm's own default; "
            f"this Slurm offers: {slurm_info.get('SLURM_MPI_TYPES', '?')})\n")


def test_srun_reproduces_the_mpich_run(slurm, ref2, tmp_path):
    """--launcher srun in an allocation, this environment's mpi4py (MPICH's wheel)."""
    library = _library(sys.executable)
    if not library.startswith(("MPICH", "Intel(R) MPI", "MVAPICH")):
        pytest.skip(f"this environment's mpi4py is not MPICH's: {library.splitlines()[0] if library else '?'}")
    out = str(tmp_path / "runs")
    job = _in_allocation(slurm, [sys.executable, "-m", "launch.cli", *_launch_args(out, "--launcher", "srun")],
                         out, _env())
    try:
        assert_reproduces(job, ref2, _srun_hint(library, slurm))
    finally:
        _no_rank_left(job)


def test_srun_with_openmpi_reproduces_the_mpich_run(openmpi, slurm, ref2, tmp_path):
    """--launcher srun in an allocation, from the Open MPI venv (Open MPI under Slurm
    talks PMIx)."""
    python = openmpi["OPENMPI_PYTHON"]
    out = str(tmp_path / "runs")
    job = _in_allocation(slurm, [openmpi["OPENMPI_LAUNCH"], *_launch_args(out, "--launcher", "srun")],
                         out, _env(python))
    try:
        assert_reproduces(job, ref2, _srun_hint(_library(python), slurm))
    finally:
        _no_rank_left(job)
