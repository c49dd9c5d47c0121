"""Real training runs through ``distgrad-launch`` (small: a 32-wide GPT for 6 steps on
20 kB of text): the debug run equals the 2-rank run, resuming equals not stopping,
a job killed in the middle of a save resumes from the previous checkpoint, failures
end the job with a non-zero status, Ctrl-C stops every rank, and the run directory
holds what it should.

Every job runs in a new session with a timeout; a job that overruns is torn down with
all its processes (Hydra's proxies and ranks run in sessions of their own, so the
process group alone would miss them)."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from distgrad.train import checkpoint as ckpt
from jobs import (PROMPT, REPO, TIMEOUT, alive, assert_same_tensors, ckpt_meta, fresh_resume_dir,
                  have_mpi, kill_tree, metrics, needs_mpi, ok, run, start, step_losses, summary, tensors,
                  tree, wait_for)



# ------------------------------------------------------- debug == 2 ranks
@needs_mpi
def test_debug_run_equals_the_two_rank_run(ref2, ref_debug):
    a, b = step_losses(ref_debug), step_losses(ref2)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([a[s] for s in range(1, 7)], [b[s] for s in range(1, 7)], rtol=1e-5)
    # the loss must actually move, or the comparison says little
    assert abs(a[6] - a[1]) > 1e-3
    sa, sb = summary(ref_debug), summary(ref2)
    assert sa["world_size"] == 1 and sb["world_size"] == 2
    np.testing.assert_allclose(sa["eval_loss"], sb["eval_loss"], rtol=1e-5)
    np.testing.assert_allclose(sa["eval_accuracy"], sb["eval_accuracy"], rtol=1e-5)
    # learning rates are the same schedule
    la = [m["lr"] for m in metrics(ref_debug) if "loss" in m]
    lb = [m["lr"] for m in metrics(ref2) if "loss" in m]
    np.testing.assert_allclose(la, lb, rtol=1e-12)


@needs_mpi
def test_both_ranks_log_the_same_global_loss(ref2):
    r0, r1 = metrics(ref2, 0), metrics(ref2, 1)
    s0 = {m["step"]: m for m in r0 if "loss" in m}
    s1 = {m["step"]: m for m in r1 if "loss" in m}
    assert sorted(s0) == sorted(s1) == [1, 2, 3, 4, 5, 6]
    for s in s0:
        assert s0[s]["loss"] == s1[s]["loss"]
        # ...which is the mean of the two ranks' local losses
        np.testing.assert_allclose(s0[s]["loss"], (s0[s]["local_loss"] + s1[s]["local_loss"]) / 2,
                                   rtol=1e-12)
    assert any(s0[s]["local_loss"] != s1[s]["local_loss"] for s in s0)  # the ranks saw other data


# ---------------------------------------------------------- run directory
@needs_mpi
def test_run_directory_contents(ref2):
    names = set(os.listdir(ref2))
    expected = {"config.toml", "metrics.rank0.jsonl", "metrics.rank1.jsonl", "summary.json",
                "rank0.log", "rank1.log", "ckpt-00000003.safetensors", "ckpt-00000003.json",
                "ckpt-00000006.safetensors", "ckpt-00000006.json", "ranks.json", "metrics.csv"}
    assert names == expected, names ^ expected
    assert ckpt.complete_steps(ref2) == [3, 6] and ckpt.latest(ref2) == 6
    s = summary(ref2)
    assert s["steps"] == 6 and s["step"] == 6 and s["world_size"] == 2
    assert os.path.samefile(s["run_dir"], ref2)
    assert np.isfinite(s["loss"]) and np.isfinite(s["eval_loss"]) and 0 <= s["eval_accuracy"] <= 1
    # config.toml is the resolved config, readable by the ranks, for 2 ranks
    from distgrad.train.config import load

    cfg = load(os.path.join(ref2, "config.toml"))
    assert cfg["dist"]["np"] == 2 and cfg["train"]["accum_steps"] == 2
    assert cfg["train"]["steps"] == 6 and cfg["model"]["width"] == 32
    meta = ckpt_meta(ref2, 6)
    assert meta["step"] == 6 and meta["world_size"] == 2 and meta["epoch"] == 0 and meta["batch"] == 6
    # one evaluation at the end, logged by every rank
    for rank in (0, 1):
        evals = [m for m in metrics(ref2, rank) if "eval_loss" in m]
        assert len(evals) == 1 and evals[0]["step"] == 6
        assert evals[0]["eval_loss"] == s["eval_loss"]


@needs_mpi
def test_checkpoint_hash_is_the_hash_of_the_run_config(ref2):
    from distgrad.train.config import config_hash, load

    cfg = load(os.path.join(ref2, "config.toml"))
    assert ckpt_meta(ref2, 6)["config_hash"] == config_hash(cfg)


def test_debug_run_directory(ref_debug):
    names = set(os.listdir(ref_debug))
    assert {"config.toml", "metrics.rank0.jsonl", "summary.json"} <= names
    assert "metrics.rank1.jsonl" not in names
    assert ckpt.complete_steps(ref_debug) == [3, 6]
    assert summary(ref_debug)["world_size"] == 1


@needs_mpi
def test_keep_checkpoints_keeps_the_last_two(tmp_path):
    job = ok(run(str(tmp_path / "runs"), "train.checkpoint_interval=1", "train.keep_checkpoints=2"))
    names = sorted(n for n in os.listdir(job.run_dir) if n.startswith("ckpt-"))
    assert names == ["ckpt-00000005.json", "ckpt-00000005.safetensors",
                     "ckpt-00000006.json", "ckpt-00000006.safetensors"]
    assert ckpt.complete_steps(job.run_dir) == [5, 6]


# ----------------------------------------------------------------- resume
@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_checkpoint_round_trip_continues_the_optimizer(tmp_path, opt):
    """save -> load into a fresh model and optimizer -> one more step equals a step of the
    original (in process, no launcher)."""
    import distgrad as dg
    from distgrad import nn, optim

    def make():
        dg.manual_seed(0)
        model = nn.Linear(4, 3)
        o = optim.AdamW(model.parameters(), lr=0.1) if opt == "adamw" else \
            optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, o, optim.lr_scheduler.LambdaLR(o, lambda s: 1.0)

    x = dg.tensor(np.arange(8, dtype=np.float32).reshape(2, 4) / 8)

    def step(model, o, sched):
        o.zero_grad()
        model(x).pow(2).sum().backward()
        o.step()
        sched.step()

    model, o, sched = make()
    step(model, o, sched)
    ckpt.save(str(tmp_path), 1, model, o, sched, {"config_hash": "x"}, keep=2)
    step(model, o, sched)
    model2, o2, sched2 = make()
    assert ckpt.load(str(tmp_path), 1, model2, o2, sched2)["step"] == 1
    saved = tensors(str(tmp_path), 1)
    for k, v in o.state_dict()["state"][0].items():
        if hasattr(v, "shape"):
            assert tuple(saved[f"optim.0.{k}"].shape) == tuple(v.shape), k
    step(model2, o2, sched2)
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), k



@pytest.mark.parametrize("mode", ["debug", pytest.param("2 ranks", marks=needs_mpi)])
def test_resume_equals_the_uninterrupted_run(mode, request, tmp_path):
    debug = mode == "debug"
    ref = request.getfixturevalue("ref_debug" if debug else "ref2")
    run_dir = fresh_resume_dir(ref, tmp_path / "resumed")
    job = ok(run(str(tmp_path / "runs"), "--resume", run_dir, debug=debug))
    assert "resuming at step 3" in job.output, job.describe()
    assert not os.path.exists(tmp_path / "runs") or not os.listdir(tmp_path / "runs")  # no new run dir
    resumed, original = step_losses(run_dir), step_losses(ref)
    assert sorted(resumed) == [4, 5, 6], job.describe()
    for s in (4, 5, 6):
        assert resumed[s] == original[s], f"step {s}: {resumed[s]!r} != {original[s]!r}"
    assert ckpt.complete_steps(run_dir) == [3, 6]
    assert_same_tensors(tensors(run_dir, 6), tensors(ref, 6))
    a, b = ckpt_meta(run_dir, 6), ckpt_meta(ref, 6)
    for key in ("config_hash", "epoch", "batch", "rng", "optimizer", "scheduler", "step"):
        assert a[key] == b[key], key
    assert summary(run_dir)["eval_loss"] == summary(ref)["eval_loss"]
    assert summary(run_dir)["steps"] == 6


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A 2-rank run SIGKILLed (the launcher's whole process tree) while rank 0 is between the
    two files of the step-6 checkpoint."""
    if not have_mpi():
        pytest.skip("needs mpi4py and mpiexec")
    base = tmp_path_factory.mktemp("killed")
    flag = base / "saving.flag"
    job = start(str(base / "runs"), env={"DISTGRAD_TEST_PAUSE_IN_SAVE": f"{flag}@6"})
    wait_for(flag.exists, job, what="the save of step 6")
    procs = tree(job.proc.pid)
    kill_tree(job.proc, procs)
    job.wait(timeout=PROMPT)
    deadline = time.monotonic() + PROMPT
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return job, procs


@needs_mpi
def test_kill_in_the_middle_of_a_save_leaves_the_previous_checkpoint(killed):
    job, procs = killed
    assert len(procs) >= 4, procs  # launcher, mpiexec, (proxy,) two ranks
    assert job.rc != 0
    assert not alive(procs), "processes of the killed job survived"
    run_dir = job.run_dir
    assert os.path.exists(ckpt.paths(run_dir, 6)[0])  # the tensors of step 6 were written...
    assert not os.path.exists(ckpt.paths(run_dir, 6)[1])  # ...but not its JSON: incomplete
    assert ckpt.latest(run_dir) == 3
    assert ckpt.complete_steps(run_dir) == [3]
    assert ckpt_meta(run_dir, 3)["step"] == 3


@needs_mpi
def test_resume_after_a_kill_in_the_middle_of_a_save(killed, ref2, tmp_path):
    job, _ = killed
    run_dir = str(tmp_path / "killed-run")
    shutil.copytree(job.run_dir, run_dir)
    resumed = ok(run(str(tmp_path / "runs"), "--resume", run_dir))
    assert "resuming at step 3" in resumed.output, resumed.describe()
    assert ckpt.complete_steps(run_dir) == [3, 6]
    assert_same_tensors(tensors(run_dir, 6), tensors(ref2, 6))
    lines = [m for m in metrics(run_dir) if "loss" in m]
    assert [m["step"] for m in lines[-3:]] == [4, 5, 6]
    original = step_losses(ref2)
    assert [m["loss"] for m in lines[-3:]] == [original[s] for s in (4, 5, 6)]


# --------------------------------------------------------------- failures
@needs_mpi
def test_model_import_path_that_does_not_exist(tmp_path):
    job = run(str(tmp_path / "runs"), "model.name=no_such_package_xyz.models:Net")
    assert job.rc != 0, job.describe()
    assert job.elapsed < PROMPT, job.describe()
    assert "model.name" in job.err and "no_such_package_xyz.models:Net" in job.err, job.describe()
    assert "cannot be imported" in job.err, job.describe()
    # refused by the launcher before anything started: one message, no rank, no run directory
    assert job.rc == 2, job.describe()
    assert job.err.count("distgrad-launch: error") == 1 and "Traceback" not in job.err, job.describe()
    assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs"), job.describe()


def test_model_import_path_that_does_not_exist_debug(tmp_path):
    job = run(str(tmp_path / "runs"), "model.name=no_such_package_xyz.models:Net", debug=True)
    assert job.rc != 0, job.describe()
    assert "no_such_package_xyz.models:Net" in job.err and "cannot be imported" in job.err, job.describe()


FAILING_MODEL = textwrap.dedent("""\
    import os

    from distgrad import nn


    class FailsOnRank1(nn.Module):
        \"\"\"A tiny byte-level model whose third forward raises on rank 1 only.\"\"\"

        def __init__(self, vocab=256, width=8):
            super().__init__()
            self.emb = nn.Embedding(vocab, width)
            self.head = nn.Linear(width, vocab)
            self.calls = 0

        def forward(self, idx):
            self.calls += 1
            rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
            if rank == "1" and self.calls == 3:
                raise RuntimeError("intentional failure in forward on this rank")
            return self.head(self.emb(idx))
""")


@pytest.fixture(scope="module")
def rank1_fails(tmp_path_factory):
    """A 2-rank run whose model raises in forward on rank 1 at step 2."""
    if not have_mpi():
        pytest.skip("needs mpi4py and mpiexec")
    base = tmp_path_factory.mktemp("rank1fails")
    (base / "failing_model_mod.py").write_text(FAILING_MODEL)
    return run(str(base / "runs"), "model.name=failing_model_mod:FailsOnRank1",
               "train.checkpoint_interval=0", pythonpath=[base])


@needs_mpi
def test_one_rank_raising_ends_the_job_naming_the_rank(rank1_fails):
    job = rank1_fails
    assert job.rc != 0, job.describe()
    assert job.elapsed < PROMPT, job.describe()
    assert "intentional failure in forward" in job.err, job.describe()
    assert any("rank 1" in ln and "RuntimeError" in ln for ln in job.err.splitlines()), job.describe()
    assert "done:" not in job.out
    assert ckpt.latest(job.run_dir) is None


@needs_mpi
def test_metrics_of_finished_steps_survive_a_failure(rank1_fails):
    # the failure came at step 2 on rank 1: step 1 was done and logged on both ranks
    for rank in (0, 1):
        assert sorted(step_losses(rank1_fails.run_dir, rank)) == [1], rank1_fails.describe()


@pytest.fixture(scope="module")
def refused(ref2, tmp_path_factory):
    """A copy of the reference run, then a --resume of it with another learning rate."""
    base = tmp_path_factory.mktemp("refused")
    run_dir = str(base / "copy")
    shutil.copytree(ref2, run_dir)
    with open(os.path.join(run_dir, "config.toml"), "rb") as f:
        config_before = f.read()
    job = run(str(base / "runs"), "optim.lr=1e-3", "--resume", run_dir)
    return job, run_dir, config_before


@needs_mpi
def test_resume_with_another_config_is_refused(refused, ref2):
    job, run_dir, _ = refused
    assert job.rc != 0, job.describe()
    assert job.elapsed < PROMPT, job.describe()
    assert "different config" in job.err, job.describe()
    assert "done:" not in job.out
    # nothing was trained or written over
    assert ckpt.complete_steps(run_dir) == [3, 6]
    assert_same_tensors(tensors(run_dir, 6), tensors(ref2, 6))
    assert step_losses(run_dir) == step_losses(ref2)


@needs_mpi
def test_refused_resume_leaves_the_run_config_alone(refused):
    job, run_dir, config_before = refused
    assert job.rc != 0
    with open(os.path.join(run_dir, "config.toml"), "rb") as f:
        assert f.read() == config_before


@needs_mpi
def test_ctrl_c_stops_every_rank_and_keeps_the_last_checkpoint(tmp_path):
    out_dir = str(tmp_path / "runs")
    job = start(out_dir, "train.steps=3000", "train.checkpoint_interval=2", "train.log_interval=1000")

    def has_checkpoint():
        dirs = [d for d in os.listdir(out_dir) if os.path.isdir(os.path.join(out_dir, d))]
        return len(dirs) == 1 and ckpt.latest(os.path.join(out_dir, dirs[0])) is not None

    wait_for(has_checkpoint, job, what="the first checkpoint")
    procs = tree(job.proc.pid)
    ranks = [pid for pid, _ in procs if " -m distgrad.train " in _cmdline(pid)
             and "python" in os.path.basename(_cmdline(pid).split()[0])]
    assert len(ranks) == 2, [(_cmdline(p), p) for p, _ in procs]
    os.killpg(job.proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    try:
        job.wait(timeout=PROMPT)
    finally:
        kill_tree(job.proc, procs)
    assert job.rc != 0, job.describe()
    deadline = time.monotonic() + 10
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(procs), "ranks survived Ctrl-C"
    assert "done:" not in job.out, job.describe()

    run_dir = job.run_dir
    last = ckpt.latest(run_dir)
    assert last is not None and last % 2 == 0 and last < 3000
    if "interrupted at step" in job.out:
        assert f"the last checkpoint is step {last} " in job.out, job.describe()
    # the checkpoint loads: model, optimizer, schedule and data position, in a fresh process
    check = textwrap.dedent(f"""\
        from distgrad.train.config import load
        from distgrad.train.trainer import Trainer
        cfg = load({os.path.join(run_dir, "config.toml")!r}, ["dist.np=1", "train.accum_steps=4"])
        t = Trainer(cfg, {run_dir!r}, resume=True)
        t._join()
        t._setup()
        pos = t._restore(t._choose_checkpoint())
        print("restored", pos.step, t.scheduler.last_epoch)
    """)
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT, env=dict(os.environ, PYTHONPATH=REPO, DISTGRAD_NO_RANK_LOG="1"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:] == ["restored", str(last), str(last)], proc.stdout


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
