"""The launcher's life cycle with real 2-rank jobs on this host: how it ends on each
signal (its own, or one of its ranks killed), what it leaves running (nothing), what
it says and records; the start-up handshake run through mpiexec directly; the
command a dry run prints; where ranks are placed; how many threads each rank gets.

Jobs run in sessions of their own and are torn down with every process they started
if a test fails; bounds are liveness bounds, never durations to meet."""
import contextlib
import itertools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from jobs import (
    LAUNCHER_VARS,
    PROMPT,
    REPO,
    TIMEOUT,
    Job,
    alive,
    kill_tree,
    metrics,
    needs_mpi,
    ok,
    run,
    start,
    summary,
    tree,
    wait_for,
)

from distgrad import _threads
from distgrad.train import checkpoint as ckpt

HOST = socket.gethostname()
# Long enough to be still training when signalled; a checkpoint every 20 steps.
LONG = ["train.steps=5000", "train.checkpoint_interval=20", "train.log_interval=1"]
MARK = "DISTGRAD_TEST_LIFECYCLE_MARK"  # in the environment of every process a job starts
NOISE = ("Traceback", "assert", "BAD TERMINATION")


# ------------------------------------------------------------------ helpers
def read_proc(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def comm_of(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def argv_of(pid):
    return [a.decode(errors="replace") for a in read_proc(pid, "cmdline").split(b"\0") if a]


def environ_of(pid):
    env = {}
    for item in read_proc(pid, "environ").split(b"\0"):
        k, eq, v = item.decode(errors="replace").partition("=")
        if eq:
            env[k] = v
    return env


def is_rank(argv):
    return any(a == "-m" and b == "distgrad.train" for a, b in itertools.pairwise(argv))


def ranks_in(procs):
    """{rank: (pid, start time)} of the processes of ``procs`` that run distgrad.train."""
    found = {}
    for pid, st in procs:
        if is_rank(argv_of(pid)):
            rank = environ_of(pid).get("PMI_RANK")
            if rank is not None and rank.isdigit():
                found[int(rank)] = (pid, st)
    return found


def marked(mark):
    """Live processes (not zombies) whose environment carries ``mark``."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        if environ_of(p).get(MARK) != mark:
            continue
        state = read_proc(p, "stat").decode(errors="replace").rsplit(")", 1)[-1].split()
        if state and state[0] != "Z":
            out.append(int(p))
    return out


def describe_pids(pids):
    return "\n".join(f"  {p}: {' '.join(argv_of(p))[:200]}" for p in pids)


def kill_marked(mark):
    for pid in marked(mark):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def gone_within(procs, seconds, since, job, what="processes of the job"):
    """Assert that every process of ``procs`` has ended ``seconds`` after ``since``."""
    deadline = since + seconds
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = alive(procs)
    assert not left, (f"{what} still running {time.monotonic() - since:.1f} s after the signal (bound "
                      f"{seconds} s):\n{describe_pids(left)}\n{job.describe()}")


def nothing_left(mark, job, seconds=10):
    deadline = time.monotonic() + seconds
    while marked(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = marked(mark)
    assert not left, f"processes of the job still running {seconds} s after it ended:\n" \
                     f"{describe_pids(left)}\n{job.describe()}"


def run_dir_of(job):
    """The job's run directory once the launcher made it, else None."""
    if not os.path.isdir(job.out_dir):
        return None
    dirs = [d for d in os.listdir(job.out_dir) if os.path.isdir(os.path.join(job.out_dir, d))]
    return os.path.join(job.out_dir, dirs[0]) if len(dirs) == 1 else None


def has_checkpoint(job):
    d = run_dir_of(job)
    return d is not None and bool(ckpt.complete_steps(d))


def has_metrics_line(job):
    d = run_dir_of(job)
    if d is None:
        return False
    try:
        return any("loss" in m for m in metrics(d))
    except (OSError, ValueError):  # not there yet, or a line being written
        return False


def has_config(job):
    d = run_dir_of(job)
    return d is not None and os.path.exists(os.path.join(d, "config.toml"))


def has_ranks(job):
    return len(ranks_in(tree(job.proc.pid))) == 2


def long_job(tmp_path, *args, env=None):
    mark = uuid.uuid4().hex
    job = start(str(tmp_path / "runs"), *LONG, *args, env={MARK: mark, **(env or {})})
    return job, mark


def clean_env(**extra):
    """This environment without another launcher's variables (as jobs.start does)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(LAUNCHER_VARS) and k not in ("DISTGRAD_TEST_PAUSE_IN_SAVE", "DISTGRAD_TEST_FAULT")}
    env["PYTHONPATH"] = os.pathsep.join([REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# ------------------------------------------------- the launcher is signalled
@needs_mpi
@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_a_signalled_launcher_stops_the_job_and_names_the_last_checkpoint(tmp_path, sig, status):
    job, mark = long_job(tmp_path)
    try:
        wait_for(lambda: has_checkpoint(job), job, timeout=TIMEOUT, what="the first checkpoint")
        procs = tree(job.proc.pid)
        assert len(ranks_in(procs)) == 2, f"the tree lacks the ranks:\n{describe_pids([p for p, _ in procs])}"
        seen = ckpt.complete_steps(job.run_dir)[-1]
        sent = time.monotonic()
        os.kill(job.proc.pid, sig)  # the launcher alone, as `kill PID` does
        job.wait(timeout=PROMPT)
        assert job.rc == status, job.describe()
        gone_within(procs, 10, sent, job)
        run_dir = job.run_dir
        assert summary(run_dir)["status"] == "interrupted", (summary(run_dir), job.describe())
        step, damaged = ckpt.find_resumable(run_dir)
        assert step is not None and step >= seen and not damaged, (step, damaged, job.describe())
        assert f"stopped by {signal.Signals(sig).name}" in job.err, job.describe()
        assert f"the last checkpoint is of step {step} in {run_dir}" in job.err, job.describe()
        assert f"distgrad-launch --resume {run_dir}" in job.err, job.describe()
        assert ckpt.verify(run_dir, step) is None
        for word in NOISE:
            assert word not in job.output, (word, job.describe())
        nothing_left(mark, job)
    finally:
        kill_tree(job.proc)
        kill_marked(mark)


MOMENTS = {
    "0.05 s": lambda job: time.monotonic() - job.start >= 0.05,
    "0.3 s": lambda job: time.monotonic() - job.start >= 0.3,
    "config written": has_config,               # the launcher is about to start mpiexec
    "ranks started": has_ranks,                 # the ranks import, start MPI, meet
    "first metrics line": has_metrics_line,
    "first checkpoint": has_checkpoint,
}


@needs_mpi
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_at_any_moment_ends_the_launcher_quietly(tmp_path, moment):
    job, mark = long_job(tmp_path)
    try:
        ready = MOMENTS[moment]
        deadline = time.monotonic() + TIMEOUT
        while not ready(job):
            assert job.proc.poll() is None, f"the job ended before {moment}\n{job.wait().describe()}"
            assert time.monotonic() < deadline, f"{moment} did not come within {TIMEOUT} s"
            time.sleep(0.005)
        os.killpg(job.proc.pid, signal.SIGINT)  # Ctrl-C in the launcher's terminal
        job.wait(timeout=PROMPT)
        # 130; or killed by SIGINT itself, before the interpreter could set any handler,
        # which a shell reports as 130 too
        assert job.rc in (130, -signal.SIGINT), job.describe()
        for word in NOISE:
            assert word not in job.output, (f"{word!r} in the output after Ctrl-C at {moment}",
                                            job.describe())
        d = run_dir_of(job)
        if d is not None and os.path.exists(os.path.join(d, "summary.json")):
            assert summary(d)["status"] == "interrupted", (summary(d), job.describe())
        nothing_left(mark, job)
    finally:
        kill_tree(job.proc)
        kill_marked(mark)


@needs_mpi
def test_a_killed_launcher_is_followed_by_its_guard_stopping_the_job(tmp_path):
    job, mark = long_job(tmp_path)
    try:
        wait_for(lambda: has_metrics_line(job), job, timeout=TIMEOUT, what="the first metrics line")
        procs = tree(job.proc.pid)
        names = [" ".join(argv_of(p)) for p, _ in procs]
        assert len(ranks_in(procs)) == 2 and any(comm_of(p) == "distgrad-guard" for p, _ in procs), \
            "\n".join(names)
        sent = time.monotonic()
        os.kill(job.proc.pid, signal.SIGKILL)
        gone_within(procs, 15, sent, job)
        job.wait(timeout=PROMPT)
        assert job.rc == -signal.SIGKILL, job.describe()
        assert "the launcher is gone and its job" in job.err, job.describe()
        nothing_left(mark, job)
    finally:
        kill_tree(job.proc)
        kill_marked(mark)


# ------------------------------------------------------------ a rank is killed
@needs_mpi
@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_killed_by_sigkill_is_named_with_its_host_and_signal(tmp_path, rank):
    job, mark = long_job(tmp_path)
    try:
        wait_for(lambda: has_metrics_line(job), job, timeout=TIMEOUT, what="the first metrics line")
        procs = tree(job.proc.pid)
        ranks = ranks_in(procs)
        assert sorted(ranks) == [0, 1], f"ranks found: {ranks}\n{describe_pids([p for p, _ in procs])}"
        victim = ranks[rank][0]
        os.kill(victim, signal.SIGKILL)
        job.wait(timeout=PROMPT)
        assert job.rc == 1 and job.elapsed < TIMEOUT, job.describe()
        line = next((ln for ln in job.err.splitlines() if f"rank {rank} (" in ln), None)
        assert line is not None, job.describe()
        assert HOST in line and f"pid {victim}" in line and "signal 9" in line, (line, job.describe())
        s = summary(job.run_dir)
        assert s["status"] == "failed" and s["failed_rank"] == rank and s["failed_host"] == HOST, s
        assert "signal 9" in s["error"], s
        for word in ("Traceback", "BAD TERMINATION"):
            assert word not in job.err, (word, job.describe())
        gone_within(procs, 10, time.monotonic(), job)
        nothing_left(mark, job)
    finally:
        kill_tree(job.proc)
        kill_marked(mark)


# -------------------------------------------- the start-up handshake, directly
def prepare(tmp_path, *overrides):
    """Run ``distgrad-launch ... --dry-run``: (the printed command, the run directory)."""
    job = ok(run(str(tmp_path / "runs"), *overrides, "--dry-run"))
    lines = job.out.strip().splitlines()
    assert len(lines) == 1, job.describe()  # the command alone on stdout
    return shlex.split(lines[0]), job.run_dir


def split_command(cmd):
    """(mpiexec and its global options, the program) of a printed Hydra command."""
    at = next(i for i in range(len(cmd) - 2) if cmd[i + 1] == "-m" and cmd[i + 2] == "distgrad.train")
    head, program = cmd[:at], cmd[at:]
    n = head.index("-n")
    return head[:n] + head[n + 2:], program


def with_flag(program, flag, value):
    program = list(program)
    program[program.index(flag) + 1] = value
    return program


def mpmd(cmd, rank0, rank1):
    launcher, _ = split_command(cmd)
    return launcher + ["-n", "1", *rank0, ":", "-n", "1", *rank1]


def start_direct(cmd, cwd, mark):
    proc = subprocess.Popen(cmd, cwd=cwd, env=clean_env(**{MARK: mark}), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return Job(proc, cmd, None)


def mounts_allowed():
    if os.geteuid() != 0:
        return "needs root (mount)"
    if shutil.which("unshare") is None:
        return "needs unshare"
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True,
                           text=True, timeout=30, check=False)
    return None if probe.returncode == 0 else f"unshare --mount fails here: {probe.stderr.strip()}"


@needs_mpi
def test_a_rank_that_cannot_see_the_run_directory_is_named_at_start(tmp_path):
    why = mounts_allowed()
    if why:
        pytest.skip(why)
    cmd, run_dir = prepare(tmp_path)
    _, program = split_command(cmd)
    out_dir = os.path.dirname(run_dir)
    hidden = ["unshare", "--mount", "sh", "-c",
              f"mount -t tmpfs none {shlex.quote(out_dir)} && exec {shlex.join(program)}"]
    mark = uuid.uuid4().hex
    job = start_direct(mpmd(cmd, program, hidden), tmp_path, mark)
    try:
        job.wait(timeout=60)
        assert job.rc == 2 and job.elapsed < 20, job.describe()
        line = next((ln for ln in job.err.splitlines() if "rank 1 (" in ln), None)
        assert line is not None, job.describe()
        assert "does not exist on this host" in line and run_dir in line and HOST in line, (line, job.describe())
        assert "Traceback" not in job.output, job.describe()
        s = summary(run_dir)
        assert s["status"] == "failed" and s["failed_phase"] == "startup" and s["failed_rank"] == 1, s
        nothing_left(mark, job)
    finally:
        kill_tree(job.proc)
        kill_marked(mark)


@needs_mpi
def test_ranks_reading_another_config_are_refused_at_start(tmp_path):
    cmd, run_dir = prepare(tmp_path)
    _, program = split_command(cmd)
    wrong = with_flag(program, "--config-digest", "0123456789abcdef")
    mark = uuid.uuid4().hex
    job = start_direct(mpmd(cmd, wrong, wrong), tmp_path, mark)
    try:
        job.wait(timeout=60)
        assert job.rc == 2 and job.elapsed < PROMPT, job.describe()
        for rank in (0, 1):
            line = next((ln for ln in job.err.splitlines() if f"rank {rank} (" in ln), None)
            assert line is not None, job.describe()
            assert "not the config the launcher wrote" in line and "0123456789abcdef" in line, \
                (line, job.describe())
        assert "Traceback" not in job.output, job.describe()
        s = summary(run_dir)
        assert s["status"] == "failed" and s["failed_phase"] == "startup", s
        assert not os.path.exists(os.path.join(run_dir, "metrics.rank0.jsonl"))  # nothing trained
        nothing_left(mark, job)
    finally:
        kill_tree(job.proc)
        kill_marked(mark)


@needs_mpi
def test_a_rank_that_never_starts_does_not_hang_the_job(tmp_path):
    cmd, run_dir = prepare(tmp_path)
    _, program = split_command(cmd)
    program = with_flag(program, "--startup-timeout", "3")
    late = ["sh", "-c", f"sleep 60; exec {shlex.join(program)}"]
    mark = uuid.uuid4().hex
    job = start_direct(mpmd(cmd, program, late), tmp_path, mark)
    try:
        try:  # rank 1 would join after 60 s: a job still running at 40 s waits for it
            job.out, job.err = job.proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            kill_tree(job.proc)
            job.out, job.err = job.proc.communicate()
            pytest.fail("the job still waited for rank 1 40 s after it started (rank 0 has "
                        f"--startup-timeout 3); killed it\n{job.describe()}", pytrace=False)
        job.rc, job.elapsed = job.proc.returncode, time.monotonic() - job.start
        assert job.rc != 0 and job.elapsed < 25, job.describe()
        line = next((ln for ln in job.err.splitlines() if "rank 0 (" in ln), None)
        assert line is not None and "the job did not start within" in line, job.describe()
        s = summary(run_dir)
        assert s["status"] == "failed" and s["failed_phase"] == "startup", s
        nothing_left(mark, job)
    finally:
        kill_tree(job.proc)
        kill_marked(mark)


# ------------------------------------------------------------------ dry run
@needs_mpi
def test_the_command_a_dry_run_prints_runs_the_job(tmp_path):
    cmd, run_dir = prepare(tmp_path)
    assert os.listdir(run_dir) == ["config.toml"]
    mark = uuid.uuid4().hex
    job = start_direct(cmd, tmp_path, mark)
    try:
        job.wait(timeout=TIMEOUT)
        assert job.rc == 0, job.describe()
        s = summary(run_dir)
        assert s["status"] == "completed" and s["steps"] == 6, s
        for rank in (0, 1):
            steps = [m["step"] for m in metrics(run_dir, rank) if "loss" in m]
            assert steps == [1, 2, 3, 4, 5, 6], (rank, steps)
        assert ckpt.find_resumable(run_dir) == (6, [])
        nothing_left(mark, job)
    finally:
        kill_tree(job.proc)
        kill_marked(mark)


def test_placement_names_the_host_that_gets_no_rank(tmp_path):
    if shutil.which("mpiexec") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable),
                                                                           "mpiexec")):
        pytest.skip("needs an mpiexec for the dry run")
    job = ok(run(str(tmp_path / "runs"), "--hosts", f"{HOST}:2,otherhost:2", "--np", "2", "--dry-run"))
    assert f"filling each host in order: {HOST}: ranks 0-1; otherhost: none" in job.err, job.describe()
    assert "otherhost gets no rank" in job.err and "2 ranks use 2 of 4 slots" in job.err, job.describe()
    assert f"-hosts {HOST}:2,otherhost:2" in job.out, job.describe()


def test_version(tmp_path):
    from importlib import metadata

    proc = subprocess.run([sys.executable, "-m", "launch.cli", "--version"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"distgrad-launch (distgrad {metadata.version('distgrad')})", proc.stdout
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------ threads
@pytest.mark.parametrize("env, expected", [
    ({"MPI_LOCALNRANKS": "3"}, 3),                                       # MPICH's Hydra
    ({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, 4),                            # Open MPI
    ({"PMIX_LOCAL_SIZE": "5"}, 5),
    ({"SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "0"}, 2),   # Slurm
    ({"SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "2"}, 2),
    ({"SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "3"}, 1),
    ({"SLURM_STEP_TASKS_PER_NODE": "4,3(x2)", "SLURM_NODEID": "2"}, 3),
    ({"SLURM_TASKS_PER_NODE": "6", "SLURM_NODEID": "0"}, 6),
    ({"SLURM_STEP_TASKS_PER_NODE": "3", "SLURM_TASKS_PER_NODE": "8"}, 3),  # the step's, not the job's
    ({"MPI_LOCALNRANKS": "2", "SLURM_STEP_TASKS_PER_NODE": "8"}, 2),     # the MPI launcher knows best
    ({"SLURM_STEP_TASKS_PER_NODE": "garbage"}, 1),
    ({}, 1),
])
def test_local_ranks(env, expected):
    assert _threads.local_ranks(env) == expected


@pytest.mark.parametrize("cores, ranks, expected", [(2, 2, 1), (16, 3, 5), (1, 4, 1), (8, 0, 8), (64, 1, 64)])
def test_per_rank(cores, ranks, expected):
    assert _threads.per_rank(cores, ranks) == expected


def test_apply_keeps_the_users_thread_variable(monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 16)
    env = {"DISTGRAD_THREADS": "auto", "OMP_NUM_THREADS": "5", "MPI_LOCALNRANKS": "4"}
    assert _threads.apply(env) == 4
    assert env["OMP_NUM_THREADS"] == "5"
    assert env["OPENBLAS_NUM_THREADS"] == "4" and env["MKL_NUM_THREADS"] == "4", env


def test_apply_honors_distgrad_threads(monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 16)
    env = {"DISTGRAD_THREADS": "3", "MPI_LOCALNRANKS": "2"}
    assert _threads.apply(env) == 3
    assert all(env[v] == "3" for v in _threads.THREAD_VARS), env


def test_apply_does_nothing_without_distgrad_threads():
    env = {"MPI_LOCALNRANKS": "2"}
    assert _threads.apply(env) is None and env == {"MPI_LOCALNRANKS": "2"}


RECORDER = """
    import os
    import sys

    from distgrad.nn import functional as F


    def loss(output, target):
        # cross-entropy, noting once the thread settings this rank was given
        if not getattr(loss, "noted", False):
            loss.noted = True
            rank = os.environ.get("PMI_RANK", "x")
            names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            with open(os.path.join(sys.argv[1], f"threads.rank{rank}"), "w") as f:
                f.write(" ".join(f"{n}={os.environ.get(n, '-')}" for n in names) + "\\n")
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
"""


@needs_mpi
@pytest.mark.parametrize("setting", [None, ("OMP_NUM_THREADS", "1"), ("OMP_NUM_THREADS", "7"),
                                     ("DISTGRAD_THREADS", "3"), ("DISTGRAD_THREADS", "auto")],
                         ids=["auto", "OMP_NUM_THREADS=1", "OMP_NUM_THREADS=7", "DISTGRAD_THREADS=3",
                              "DISTGRAD_THREADS=auto"])
def test_each_rank_gets_its_share_of_the_cores(tmp_path, monkeypatch, setting):
    for var in ("DISTGRAD_THREADS", *_threads.THREAD_VARS):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "recorder.py").write_text(textwrap.dedent(RECORDER))
    mark = uuid.uuid4().hex
    env = {MARK: mark, **(dict([setting]) if setting else {})}
    job = start(str(tmp_path / "runs"), "train.steps=2", "train.loss=recorder:loss", env=env,
                pythonpath=[tmp_path])
    try:
        ok(job.wait())
        cores = len(os.sched_getaffinity(0))
        auto = max(1, cores // 2)  # 2 ranks on this host
        if setting is None or setting == ("DISTGRAD_THREADS", "auto"):
            want = {v: auto for v in _threads.THREAD_VARS}
            said = f"threads per rank: set on each host to its cores / its ranks (here: {cores} cores / " \
                   f"2 ranks = {auto})"
        elif setting[0] == "OMP_NUM_THREADS":
            want = {"OMP_NUM_THREADS": int(setting[1]), "OPENBLAS_NUM_THREADS": auto, "MKL_NUM_THREADS": auto}
            said = f"threads per rank: OMP_NUM_THREADS={setting[1]} (set here, forwarded)"
        else:
            want = {v: 3 for v in _threads.THREAD_VARS}
            said = "threads per rank: 3 (DISTGRAD_THREADS)"
        for rank in (0, 1):
            with open(os.path.join(job.run_dir, f"threads.rank{rank}")) as f:
                got = dict(item.split("=") for item in f.read().split())
            assert got == {k: str(v) for k, v in want.items()}, \
                f"rank {rank} ran with {got}, not {want} ({cores} cores here)\n{job.describe()}"
        assert said in job.err, f"the launcher does not say {said!r}\n{job.describe()}"
        nothing_left(mark, job)
    finally:
        kill_tree(job.proc)
        kill_marked(mark)
