"""The fault suite: real 2-rank jobs (and debug runs) put into the situations that used to
end in a silent wrong result, a hang, or a damaged checkpoint taken for a good one, with
the outcome each must have now. Faults are put exactly where wanted with
``DISTGRAD_TEST_FAULT=KIND@RANK:PHASE:STEP`` (a rank stops itself with SIGSTOP, is
SIGKILLed, calls sys.exit(0) or raises when it enters that phase of that step).

Every job has a timeout and is torn down with all its processes if it overruns; a
liveness bound (PROMPT) is asserted, never a duration."""
import errno
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from distgrad.train import checkpoint as ckpt
from distgrad.train import records
from jobs import (PROMPT, QUICKSTART, REPO, SMALL, alive, assert_same_tensors, metrics,
                  needs_mpi, ok, run, start, step_losses, summary, tensors, tree, wait_for)


def strict_rows(path):
    """The JSON lines of ``path``, parsed strictly (a bare NaN or Infinity fails)."""
    def refuse(name):
        raise AssertionError(f"{path} holds the non-standard JSON constant {name}")

    with open(path) as f:
        return [json.loads(line, parse_constant=refuse) for line in f if line.strip()]


def strict_json(path):
    with open(path) as f:
        return json.loads(f.read(), parse_constant=lambda name: pytest.fail(f"{path}: {name}"))


def write_module(directory, name, text):
    (directory / f"{name}.py").write_text(textwrap.dedent(text))
    return directory


def fault(spec):
    return {"DISTGRAD_TEST_FAULT": spec}


# ------------------------------------------------------------------ modules
REGRESSION = """
    import numpy as np
    import distgrad as dg
    from distgrad import nn
    from distgrad.data import TensorDataset


    class Reg(nn.Module):
        def __init__(self, width=16):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 1))

        def forward(self, x):
            return self.net(x)


    class RegWithBlocks(Reg):
        def __init__(self, width=16, checkpoint_blocks=False):
            super().__init__(width)
            print(f"RegWithBlocks built with checkpoint_blocks={checkpoint_blocks}", flush=True)


    def data(n=512, extra_on_rank1=0):
        import os
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, 4)).astype(np.float32)
        y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32))[:, None]
        rank1 = os.environ.get("PMI_RANK") == "1"
        cut = 448 + (extra_on_rank1 if rank1 else 0)
        return (TensorDataset(dg.tensor(x[:cut]), dg.tensor(y[:cut])),
                TensorDataset(dg.tensor(x[448:]), dg.tensor(y[448:])))


    def nan_loss_at(output, target):
        # mse, but NaN in the calls listed in NAN_CALLS on the rank in NAN_RANK
        import os
        nan_loss_at.calls = getattr(nan_loss_at, "calls", 0) + 1
        loss = ((output - target) ** 2).mean()
        bad = {int(c) for c in os.environ.get("NAN_CALLS", "").split(",") if c}
        if os.environ.get("PMI_RANK", "0") == os.environ.get("NAN_RANK", "0") and nan_loss_at.calls in bad:
            return loss * float("nan")
        return loss
"""

REG_CONFIG = """
    [model]
    name = "regmod:Reg"
    [data]
    name = "regmod:data"
    [optim]
    name = "sgd"
    lr = 0.02
    [train]
    global_batch = 32
    micro_batch = 8
    log_interval = 10
    progress = false
    [dist]
    np = 2
"""


@pytest.fixture(scope="module")
def regmod(tmp_path_factory):
    where = write_module(tmp_path_factory.mktemp("regmod"), "regmod", REGRESSION)
    (where / "reg.toml").write_text(textwrap.dedent(REG_CONFIG))
    return where


def reg(out_dir, regmod, *args, steps="train.steps=6", **kw):
    """A job of the regression config (``steps`` may be replaced, e.g. by epochs)."""
    return run(out_dir, *([steps] if steps else []), *args, config=str(regmod / "reg.toml"),
               pythonpath=[regmod], **kw)


# ------------------------------------------------------- wrong objective
@needs_mpi
def test_a_regression_model_is_not_trained_with_cross_entropy(tmp_path, regmod):
    job = reg(str(tmp_path / "runs"), regmod)
    assert job.rc != 0 and job.elapsed < PROMPT, job.describe()
    assert "train.loss = 'cross_entropy'" in job.err and "[8, 1]" in job.err, job.describe()
    assert "train.loss = 'mse'" in job.err, job.describe()  # the fix is named
    s = summary(job.run_dir)
    assert s["status"] == "failed" and "LossMismatch" in s["error"], s
    assert ckpt.latest(job.run_dir) is None


@needs_mpi
@pytest.mark.parametrize("loss", ["mse", "l1", "smooth_l1"])
def test_a_regression_model_trains_with_a_regression_loss(tmp_path, regmod, loss):
    job = ok(reg(str(tmp_path / "runs"), regmod, f"train.loss={loss}", steps="train.steps=30"))
    s = summary(job.run_dir)
    assert s["status"] == "completed" and "eval_loss" in s
    assert "eval_accuracy" not in s and "eval accuracy" not in job.out  # means nothing here
    losses = step_losses(job.run_dir)
    assert np.mean([losses[s] for s in range(26, 31)]) < np.mean([losses[s] for s in range(1, 6)])


def test_a_loss_by_import_path_is_used(tmp_path, regmod):
    job = ok(reg(str(tmp_path / "runs"), regmod, "train.loss=regmod:nan_loss_at", steps="train.steps=4",
                 debug=True))
    assert summary(job.run_dir)["status"] == "completed"
    assert sorted(step_losses(job.run_dir)) == [1, 2, 3, 4]


@needs_mpi
def test_checkpoint_activations_is_refused_for_a_model_without_blocks(tmp_path, regmod):
    job = reg(str(tmp_path / "runs"), regmod, "train.loss=mse", "train.checkpoint_activations=true")
    assert job.rc != 0 and job.elapsed < PROMPT, job.describe()
    assert "train.checkpoint_activations" in job.err and "checkpoint_blocks" in job.err, job.describe()


def test_checkpoint_activations_is_passed_to_a_model_that_takes_it(tmp_path, regmod):
    job = ok(reg(str(tmp_path / "runs"), regmod, "model.name=regmod:RegWithBlocks", "train.loss=mse",
                 "train.checkpoint_activations=true", steps="train.steps=2", debug=True))
    assert "RegWithBlocks built with checkpoint_blocks=True" in job.out, job.describe()


# -------------------------------------------------------- non-finite values
@needs_mpi
def test_a_diverging_run_stops_naming_the_step_and_ranks(tmp_path):
    job = run(str(tmp_path / "runs"), "optim.lr=1e4", "optim.name=sgd", "optim.grad_clip=0",
              "train.steps=30", "train.checkpoint_interval=1")
    assert job.rc == 1 and job.elapsed < PROMPT, job.describe()
    assert "distgrad: stopping: non-finite values at step" in job.err, job.describe()
    # Which value overflows first depends on float rounding: the loss (named on each
    # rank) or the gradients (their norm, the same on every rank after averaging).
    by_loss = "the loss is" in job.err
    if by_loss:
        assert "on rank 0 (" in job.err and "on rank 1 (" in job.err, job.describe()
    else:
        assert "the gradient norm (after averaging over the ranks) is" in job.err, job.describe()
    run_dir = job.run_dir
    s = summary(run_dir)
    assert s["status"] == "failed" and s["error"].startswith("NonFiniteStop"), s
    bad_step = s["failed_step"]
    assert f"at step {bad_step}" in job.err and f"failed on rank {s['failed_rank']} (" in job.err, job.describe()
    rows = strict_rows(os.path.join(run_dir, "metrics.rank0.jsonl"))
    assert rows[-1]["step"] == bad_step and rows[-1]["stopped"]
    assert rows[-1]["loss" if by_loss else "grad_norm"] is None
    # no checkpoint of a non-finite state: every one left verifies and holds finite tensors
    steps = ckpt.complete_steps(run_dir)
    assert steps and max(steps) < bad_step
    for step in steps:
        assert ckpt.verify(run_dir, step) is None
        assert all(np.isfinite(a).all() for a in tensors(run_dir, step).values())
    strict_json(os.path.join(run_dir, "summary.json"))
    for step in steps:
        strict_json(ckpt.paths(run_dir, step)[1])


@pytest.mark.parametrize("override", ["optim.lr=nan", "optim.lr=inf", "optim.eps=-inf", "dist.timeout_s=nan",
                                      "optim.betas=[0.9,nan]"])
def test_non_finite_config_values_are_rejected(tmp_path, override):
    job = run(str(tmp_path / "runs"), override)
    assert job.rc == 2, job.describe()
    assert override.split("=")[0] in job.err and "Traceback" not in job.err, job.describe()
    assert not os.path.exists(tmp_path / "runs") or not os.listdir(tmp_path / "runs")


@needs_mpi
def test_skip_step_skips_a_non_finite_step_on_one_rank_and_goes_on(tmp_path, regmod):
    # rank 1's loss is NaN in its 5th and 6th microbatch: step 3 (2 microbatches a step)
    job = ok(reg(str(tmp_path / "runs"), regmod, "train.loss=regmod:nan_loss_at", "train.on_nonfinite=skip_step",
                 "train.log_interval=1", env={"NAN_RANK": "1", "NAN_CALLS": "5,6"}))
    assert "step      3  skipped: non-finite values at step 3: the loss is nan on rank 1" in job.out, \
        job.describe()
    rows = {r["step"]: r for r in strict_rows(os.path.join(job.run_dir, "metrics.rank0.jsonl")) if "lr" in r}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert rows[3]["skipped"] and "rank 1" in rows[3]["reason"] and rows[3]["loss"] is None
    assert not any(rows[s].get("skipped") for s in (1, 2, 4, 5, 6))
    s = summary(job.run_dir)
    assert s["status"] == "completed" and s["skipped_steps"] == 1


def test_a_skipped_step_leaves_the_parameters_as_they_were(tmp_path, regmod):
    """Step 2 is skipped in a debug run: the checkpoint after it equals the one before."""
    # a debug run has 4 microbatches a step: calls 5-8 are step 2
    job = ok(reg(str(tmp_path / "runs"), regmod, "train.loss=regmod:nan_loss_at", "train.checkpoint_interval=1",
                 "train.keep_checkpoints=5", "train.on_nonfinite=skip_step", steps="train.steps=2",
                 debug=True, env={"NAN_RANK": "0", "NAN_CALLS": "6"}))
    a, b = tensors(job.run_dir, 1), tensors(job.run_dir, 2)
    for k in a:
        if k.startswith("model."):
            assert np.array_equal(a[k], b[k]), k


def test_too_many_skipped_steps_in_a_row_stop_the_run(tmp_path, regmod):
    job = reg(str(tmp_path / "runs"), regmod, "train.loss=regmod:nan_loss_at", "train.on_nonfinite=skip_step",
              "train.max_skipped_steps=3", steps="train.steps=20", debug=True,
              env={"NAN_RANK": "0", "NAN_CALLS": ",".join(map(str, range(1, 200)))})
    assert job.rc == 1, job.describe()
    assert "3 steps in a row were skipped" in job.err and "train.max_skipped_steps = 3" in job.err, job.describe()
    assert summary(job.run_dir)["status"] == "failed"


# ----------------------------------------------------- checkpoint damage
def _flip_weight_bytes(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    key = next(k for k in header if k.startswith("model.") and k.endswith("weight"))
    lo, hi = header[key]["data_offsets"]
    start = 8 + n + lo + (hi - lo) // 2
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)


def _nan_tensor(path):
    from safetensors.numpy import load_file, save_file

    arrays = load_file(path)
    key = next(k for k in arrays if k.startswith("model."))
    arrays[key] = np.full_like(arrays[key], np.nan)
    save_file(arrays, path)


def _edit_json(path, change):
    with open(path) as f:
        meta = json.load(f)
    change(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "flipped bytes in a weight": (0, _flip_weight_bytes, "SHA-256"),
    "a tensor filled with NaN": (0, _nan_tensor, "SHA-256"),
    "truncated tensors": (0, _truncate, "truncated"),
    "empty tensors": (0, lambda p: open(p, "wb").close(), "holds 0 bytes"),
    "tensors deleted": (0, os.remove, "safetensors"),
    "data position off by 7": (1, lambda p: _edit_json(p, lambda m: m.update(batch=m["batch"] + 7)), "SHA-256"),
    "learning rate 123": (1, lambda p: _edit_json(
        p, lambda m: m["optimizer"]["param_groups"][0].update(lr=123.0)), "SHA-256"),
    "JSON is []": (1, lambda p: open(p, "w").write("[]"), "not a JSON object"),
    "JSON is {}": (1, lambda p: open(p, "w").write("{}"), "lacks the key"),
    "JSON is not JSON": (1, lambda p: open(p, "w").write('{"step": 6,'), "JSON"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_reported_and_the_run_resumes_from_the_one_before(damage, ref_debug, tmp_path):
    which, hurt, reason = DAMAGE[damage]
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_debug, run_dir)
    hurt(ckpt.paths(run_dir, 6)[which])
    job = ok(run(str(tmp_path / "runs"), "--resume", run_dir, debug=True))
    name = os.path.basename(ckpt.paths(run_dir, 6)[which])
    lines = [ln for ln in job.err.splitlines() if "the checkpoint of step 6 is not usable" in ln]
    assert lines and name in lines[0] and reason in lines[0], job.describe()
    assert "falling back to the checkpoint of step 3" in job.err, job.describe()
    assert "resuming at step 3" in job.out, job.describe()
    # the damaged files are kept aside, not taken, and the run continued from step 3 exactly
    assert any(n.endswith(".damaged") for n in os.listdir(run_dir))
    assert ckpt.complete_steps(run_dir) == [3, 6]
    assert_same_tensors(tensors(run_dir, 6), tensors(ref_debug, 6))
    assert step_losses(run_dir)[6] == step_losses(ref_debug)[6]


def test_with_no_good_checkpoint_left_resume_is_refused_naming_each(ref_debug, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_debug, run_dir)
    _flip_weight_bytes(ckpt.paths(run_dir, 6)[0])
    with open(ckpt.paths(run_dir, 3)[1], "w") as f:
        f.write("[]")
    before = sorted(os.listdir(run_dir))
    job = run(str(tmp_path / "runs"), "--resume", run_dir, debug=True)
    assert job.rc == 2, job.describe()
    assert "no usable checkpoint" in job.err and "step 6" in job.err and "step 3" in job.err, job.describe()
    assert "ckpt-00000006.safetensors" in job.err and "ckpt-00000003.json" in job.err, job.describe()
    assert sorted(os.listdir(run_dir)) == before  # nothing touched


@needs_mpi
def test_a_damaged_checkpoint_is_skipped_by_a_two_rank_resume(ref2, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref2, run_dir)
    _nan_tensor(ckpt.paths(run_dir, 6)[0])
    job = ok(run(str(tmp_path / "runs"), "--resume", run_dir))
    assert "falling back to the checkpoint of step 3" in job.err, job.describe()
    assert_same_tensors(tensors(run_dir, 6), tensors(ref2, 6))


# --------------------------------------------------------------- disk full
@pytest.fixture
def small_disk(tmp_path, ref_debug):
    """A tmpfs with room for one checkpoint and a half (the tests run as root; skipped
    where mounting is not allowed)."""
    size = os.path.getsize(ckpt.paths(ref_debug, 6)[0])
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size * 1.5) + 64 * 1024}", "tmpfs",
                           str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_fails_the_save_cleanly_and_keeps_the_last_checkpoint(small_disk):
    job = run(str(small_disk / "runs"), "train.keep_checkpoints=5", debug=True)
    assert job.rc != 0, job.describe()
    assert "No space left on device" in job.err and "ckpt-00000006" in job.err, job.describe()
    run_dir = job.run_dir
    assert not [n for n in os.listdir(run_dir) if ".tmp" in n], os.listdir(run_dir)
    assert ckpt.complete_steps(run_dir) == [3] and ckpt.verify(run_dir, 3) is None
    assert not os.path.exists(ckpt.paths(run_dir, 6)[0])
    s = summary(run_dir)
    assert s["status"] == "failed" and "No space left" in s["error"], s


# -------------------------------------------------------------------- hangs
def _no_survivors(job, procs):
    deadline = time.monotonic() + 10
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(procs), f"processes of the job survived\n{job.describe()}"


def _start_and_watch(out_dir, *args, env):
    job = start(out_dir, *args, env=env)
    procs = []

    def collect():  # the tree as it grows, to check later that none of it survived
        while job.proc.poll() is None:
            procs.extend(p for p in tree(job.proc.pid) if p not in procs)
            time.sleep(0.2)

    threading.Thread(target=collect, daemon=True).start()
    return job, procs


@needs_mpi
@pytest.mark.parametrize("phase, step, what", [
    ("eval", 6, "the evaluation all-reduce of step 6"),
    ("optimizer", 4, "the loss all-gather of step 4"),
    ("backward", 3, "all-reduce of gradient bucket"),
    ("save", 3, "the barrier after the checkpoint of step 3"),
], ids=["eval", "logging all-gather", "backward", "save"])
def test_a_stopped_rank_ends_the_job_after_the_timeout_with_a_stall_report(tmp_path, phase, step, what):
    stopped = 0 if phase == "save" else 1  # rank 0 saves; the others wait for it
    waiting = 1 - stopped
    job, procs = _start_and_watch(str(tmp_path / "runs"), "dist.timeout_s=4", "dist.stall_report_s=1.5",
                                  env=fault(f"stop@{stopped}:{phase}:{step}"))
    job.wait(timeout=PROMPT + 30)
    assert job.rc != 0 and job.elapsed < PROMPT, job.describe()
    assert f"test fault: stop at step {step}, {phase}" in job.err, job.describe()
    # the stall report, before the timeout, names the missing rank and where it is
    # (on a loaded machine an earlier collective may have been reported too: take the right one)
    starts = [i for i in range(len(job.err)) if job.err.startswith("distgrad: stall:", i)]
    reports = [job.err[i:] for i in starts if what in job.err[i:].splitlines()[0]]
    assert reports, job.describe()
    report = reports[0]
    assert f"rank {stopped} (" in report and f"step {step}, {phase}" in report, job.describe()
    # the timeout names the collective and the rank that did not join
    assert "did not complete within 4 s" in job.err and what in job.err, job.describe()
    s = summary(job.run_dir)
    assert s["status"] == "failed" and s["failed_rank"] == waiting and "CollectiveTimeout" in s["error"]
    assert f"rank {stopped} (" in s["error"]
    _no_survivors(job, procs)


@needs_mpi
@pytest.mark.parametrize("stopped", [[1], [0, 1]], ids=["one rank stopped", "every rank stopped"])
def test_ctrl_c_with_stopped_ranks_ends_the_job(tmp_path, stopped):
    """With one rank stopped, the others leave on Ctrl-C and mpiexec ends the job; with
    every rank stopped nothing would ever leave, so the launcher forces the job down."""
    faults = ",".join(f"stop@{r}:forward:3" for r in stopped)
    job, procs = _start_and_watch(str(tmp_path / "runs"), "train.steps=3000", "train.log_interval=1000",
                                  env=dict(fault(faults), DISTGRAD_INTERRUPT_GRACE_S="2"))

    def all_stopped():
        if not os.path.isdir(job.out_dir) or not os.listdir(job.out_dir):
            return False
        logs = [os.path.join(job.run_dir, f"rank{r}.log") for r in stopped]
        return all(os.path.exists(p) and "test fault: stop" in open(p).read() for p in logs)

    wait_for(all_stopped, job, what="the ranks stopping")
    os.killpg(job.proc.pid, signal.SIGINT)  # Ctrl-C in the launcher's terminal
    job.wait(timeout=PROMPT)
    assert job.rc == 130, job.describe()
    assert "Press Ctrl-C again" not in job.output, job.describe()
    if stopped == [0, 1]:
        assert "killing mpiexec and every process it started" in job.err, job.describe()
    assert summary(job.run_dir)["status"] == "interrupted"
    _no_survivors(job, procs)


@needs_mpi
@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_calling_sys_exit_ends_the_job_at_once(tmp_path, rank):
    # no dist.timeout_s: the default (10 minutes) must not be what ends it
    job, procs = _start_and_watch(str(tmp_path / "runs"), env=fault(f"exit@{rank}:forward:3"))
    job.wait(timeout=PROMPT + 30)
    assert job.rc != 0 and job.elapsed < PROMPT, job.describe()
    assert "sys.exit(0) was called at step 3, forward" in job.err, job.describe()
    s = summary(job.run_dir)
    assert s["status"] == "failed" and s["failed_rank"] == rank, s
    _no_survivors(job, procs)


@needs_mpi
def test_a_killed_rank_ends_the_job_and_the_summary_says_so(tmp_path):
    job, procs = _start_and_watch(str(tmp_path / "runs"), env=fault("kill@1:backward:3"))
    job.wait(timeout=PROMPT + 30)
    assert job.rc != 0 and job.elapsed < PROMPT, job.describe()
    # mpiexec saw it die; the launcher names it from the start-up record of every rank
    assert job.rc == 1, job.describe()
    assert "rank 1 (" in job.err and "was killed by signal 9 (SIGKILL)" in job.err, job.describe()
    s = summary(job.run_dir)
    assert s["status"] == "failed" and s["failed_rank"] == 1 and "killed by signal 9" in s["error"], s
    _no_survivors(job, procs)


@needs_mpi
def test_rank_0_killed_while_saving_leaves_a_run_that_resumes(ref2, tmp_path):
    job, procs = _start_and_watch(str(tmp_path / "runs"), env=fault("kill@0:save:6"))
    job.wait(timeout=PROMPT + 30)
    assert job.rc != 0 and job.elapsed < PROMPT, job.describe()
    _no_survivors(job, procs)
    run_dir = job.run_dir
    assert ckpt.find_resumable(run_dir) == (3, [])
    assert summary(run_dir)["status"] == "failed"
    resumed = ok(run(str(tmp_path / "again"), "--resume", run_dir))
    assert "resuming at step 3" in resumed.out, resumed.describe()
    assert_same_tensors(tensors(run_dir, 6), tensors(ref2, 6))


@needs_mpi
def test_a_rank_that_would_run_one_step_more_is_refused_at_start(tmp_path, regmod):
    # rank 1's training set has one global batch more: with train.epochs it would run one
    # step more than rank 0 and wait for it forever
    job = reg(str(tmp_path / "runs"), regmod, "train.loss=mse", "data.kwargs={extra_on_rank1=32}",
              steps="train.epochs=1")
    assert job.rc != 0 and job.elapsed < PROMPT, job.describe()
    assert "rank 1 (" in job.err and "disagree on the run" in job.err and "steps" in job.err, job.describe()


# ------------------------------------------------------------ run directories
def test_simultaneous_launches_get_their_own_run_directories(tmp_path):
    out = str(tmp_path / "runs")
    made = []
    threads = [threading.Thread(target=lambda: made.append(records.create_run_dir(out, "same")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(os.path.isdir(d) for d in made)


def test_two_jobs_started_together_write_into_two_directories(tmp_path):
    out = str(tmp_path / "runs")
    jobs = [start(out, "run.name=same", f"optim.lr={lr}", debug=True) for lr in (1e-3, 2e-3)]
    for job in jobs:
        ok(job.wait())
    dirs = sorted(d for d in os.listdir(out) if os.path.isdir(os.path.join(out, d)))
    assert len(dirs) == 2, dirs
    lrs = set()
    for d in dirs:
        from distgrad.train.config import load

        lrs.add(load(os.path.join(out, d, "config.toml"))["optim"]["lr"])
        steps = [m["step"] for m in metrics(os.path.join(out, d)) if "loss" in m]
        assert steps == [1, 2, 3, 4, 5, 6]  # one job's rows each, no duplicates
    assert lrs == {1e-3, 2e-3}


# ----------------------------------------------------------------- resume
def test_extending_a_finished_run(ref_debug, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_debug, run_dir)
    job = ok(run(str(tmp_path / "runs"), "train.steps=9", "--resume", run_dir, debug=True))
    assert "resuming at step 6" in job.out and "train.steps changes from 6 to 9" in job.err, job.describe()
    rows = [m for m in metrics(run_dir) if "loss" in m]
    assert [m["step"] for m in rows] == list(range(1, 10))
    times = [m["time"] for m in rows]
    assert times == sorted(times) and times[6] > times[5]  # the clock goes on
    assert all(m["timestamp"] > 1e9 for m in rows)
    assert summary(run_dir)["status"] == "completed" and summary(run_dir)["steps"] == 9


def test_resume_with_no_config_argument_uses_the_run_config(ref_debug, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_debug, run_dir)
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "--resume", run_dir, "train.steps=7",
                           "--debug"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    assert sorted(step_losses(run_dir)) == list(range(1, 8))


@pytest.mark.parametrize("overrides, named", [
    (["optim.lr=1e-3"], ["optim.lr = 0.003 in the run, 0.001 now"]),
    (["optim.lr=1e-3", "model.dropout=0.1"], ["optim.lr", "model.dropout = 0.0 in the run, 0.1 now"]),
])
def test_resume_with_another_config_names_every_differing_key(ref_debug, tmp_path, overrides, named):
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_debug, run_dir)
    job = run(str(tmp_path / "runs"), *overrides, "--resume", run_dir, debug=True)
    assert job.rc == 2, job.describe()
    for text in named:
        assert text in job.err, job.describe()


def test_resuming_a_finished_run_says_so_and_changes_nothing(ref_debug, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_debug, run_dir)
    before = {n: open(os.path.join(run_dir, n), "rb").read() for n in os.listdir(run_dir)}
    job = run(str(tmp_path / "runs"), "--resume", run_dir, debug=True)
    assert job.rc == 0, job.describe()
    assert "the run has finished" in job.output and "nothing to do" in job.output, job.describe()
    assert "final loss nan" not in job.output
    after = {n: open(os.path.join(run_dir, n), "rb").read() for n in os.listdir(run_dir)}
    assert after == before


def test_a_run_resumed_after_a_failure_ends_completed_without_the_old_error(ref_debug, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref_debug, run_dir)
    for p in ckpt.paths(run_dir, 6):
        os.remove(p)
    records.write_summary(run_dir, status="failed", error="RuntimeError: boom", failed_rank=0,
                          failed_host="h", failed_step=5, failed_phase="forward")
    ok(run(str(tmp_path / "runs"), "--resume", run_dir, debug=True))
    s = summary(run_dir)
    assert s["status"] == "completed" and s["resumed_from"] == 3 and s["steps"] == 6
    assert not any(k in s for k in records.FAILURE_KEYS), s


@needs_mpi
def test_a_resumed_run_logs_each_step_once(ref2, tmp_path):
    """The run was interrupted after step 5 (its last checkpoint is step 3): the rows of
    steps 4 and 5 are logged again by the resumed run, not twice."""
    run_dir = str(tmp_path / "run")
    shutil.copytree(ref2, run_dir)
    for p in ckpt.paths(run_dir, 6):
        os.remove(p)
    for rank in (0, 1):
        path = records.metrics_path(run_dir, rank)
        rows = [r for r in strict_rows(path) if r.get("step", 0) <= 5]
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
            f.write('{"step": 6, "loss": 1.0, "tor')  # a line torn by the kill
    job = ok(run(str(tmp_path / "runs"), "--resume", run_dir))
    assert "resuming at step 3" in job.out, job.describe()
    for rank in (0, 1):
        rows = [r for r in strict_rows(records.metrics_path(run_dir, rank)) if "loss" in r]
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
        assert [r["loss"] for r in rows] == [step_losses(ref2, rank)[s] for s in range(1, 7)]


# ------------------------------------------------------------------ records
@needs_mpi
def test_a_failed_run_leaves_its_story_in_the_run_directory(tmp_path):
    job, procs = _start_and_watch(str(tmp_path / "runs"), env=fault("raise@1:backward:2"))
    job.wait(timeout=PROMPT + 30)
    assert job.rc != 0, job.describe()
    run_dir = job.run_dir
    s = summary(run_dir)
    assert s["status"] == "failed" and s["failed_rank"] == 1 and s["failed_step"] == 2
    assert s["failed_phase"] == "backward" and "test fault at step 2, backward" in s["error"]
    log = open(os.path.join(run_dir, "rank1.log")).read()
    assert "Traceback" in log and "RuntimeError: test fault at step 2, backward" in log
    assert "distgrad: 2 rank(s)" in open(os.path.join(run_dir, "rank0.log")).read()
    assert f"see {os.path.join(run_dir, 'rank1.log')}" in job.err, job.describe()
    rows = [r for r in strict_rows(records.metrics_path(run_dir, 0)) if "loss" in r]
    assert [r["step"] for r in rows] == [1]
    for key in ("time", "timestamp", "grad_norm", "tokens_per_s", "samples_per_s", "lr", "local_loss"):
        assert isinstance(rows[0][key], float), key
    _no_survivors(job, procs)


# ---------------------------------------------------------------- progress
@needs_mpi
def test_the_progress_bar_shows_when_the_launcher_has_a_terminal(tmp_path):
    """mpiexec gives rank 0 a pipe, but the launcher's own stdout is a terminal."""
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "launch.cli", QUICKSTART, *SMALL, "train.progress=true",
           f'run.output_dir="{tmp_path / "runs"}"']
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "OMPI_"))}
    env["PYTHONPATH"] = REPO
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE, start_new_session=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError as e:  # EIO: the terminal's other end is closed
                assert e.errno == errno.EIO
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    assert proc.returncode == 0, proc.stderr.read()
    text = shown.decode(errors="replace")
    assert "6/6" in text and ("step/s" in text or "s/step" in text), text  # tqdm's bar
    # the bar is drawn for the terminal, not written into the log
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    log = (run_dir / "rank0.log").read_text()
    assert "6/6" not in log and "step      6  loss" in log


# ------------------------------------------------------------------- debug
MY_MODEL = """
    from distgrad import nn


    class MyModel(nn.Module):
        def __init__(self, vocab=256, width=8, pause=False):
            super().__init__()
            self.emb = nn.Embedding(vocab, width)
            self.head = nn.Linear(width, vocab)
            self.pause = pause

        def forward(self, idx):
            if self.pause:
                breakpoint()
            return self.head(self.emb(idx))
"""


def test_debug_imports_a_model_from_the_current_directory(tmp_path):
    write_module(tmp_path, "mymod", MY_MODEL)
    cmd = [sys.executable, "-m", "launch.cli", QUICKSTART, *SMALL, "model.name=mymod:MyModel",
           f'run.output_dir="{tmp_path / "runs"}"', "--debug"]
    env = dict(os.environ, PYTHONPATH=REPO)  # the current directory is not on it
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "done: 6 steps" in proc.stdout


def test_quitting_pdb_in_a_debug_run_ends_quietly(tmp_path):
    write_module(tmp_path, "mymod", MY_MODEL)
    cmd = [sys.executable, "-m", "launch.cli", QUICKSTART, *SMALL, "model.name=mymod:MyModel",
           "model.kwargs={pause=true}", f'run.output_dir="{tmp_path / "runs"}"', "--debug"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO), input="q\n",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert "(Pdb)" in proc.stdout
    assert "Traceback" not in proc.stderr and "BdbQuit" not in proc.stderr, proc.stderr
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert summary(str(run_dir))["status"] == "interrupted"
