"""Timelines of training steps: ``train.trace_steps`` / ``distgrad-launch --trace``
write one merged Chrome trace per run, with every rank, both threads and every
gradient bucket of the traced steps; the overlap of communication with backward is
in the metrics and the summary, per rank."""
import json
import os

import jobs
import pytest

from distgrad.train.tracing import TRACE_FILE, parse_steps

needs_mpi = pytest.mark.skipif(not jobs.have_mpi(), reason="needs mpi4py and mpiexec")
# Small buckets, so that a step has several (the first bucket is capped at this size too).
BUCKETS = ["dist.bucket_cap_mb=0.004"]


def load_trace(run_dir):
    with open(os.path.join(run_dir, TRACE_FILE)) as f:
        return json.load(f)


def names(events, pid, ph=None):
    return [e["name"] for e in events if e["pid"] == pid and (ph is None or e["ph"] == ph)]


def thread_names(events, pid):
    return {e["tid"]: e["args"]["name"] for e in events
            if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == pid}


def step_window(events, pid, step):
    (r,) = [e for e in events if e["pid"] == pid and e["name"] == f"ProfilerStep#{step}"]
    return r["ts"], r["ts"] + r["dur"]


def test_parse_steps():
    assert parse_steps("5") == [5]
    assert parse_steps("5-7") == [5, 6, 7]
    assert parse_steps("3, 8-9,3") == [3, 8, 9]
    for bad in ("x", "0", "7-5", "3-", ""):
        with pytest.raises(ValueError, match="step"):
            parse_steps(bad)


@needs_mpi
def test_two_rank_trace_has_every_rank_thread_and_bucket(tmp_path):
    job = jobs.ok(jobs.run(tmp_path / "runs", "--np", "2", "--trace-steps", "3-4", *BUCKETS,
                           "train.eval_interval=4"))
    run_dir = job.run_dir
    assert "timeline of steps 3-4" in job.out, job.describe()
    trace = load_trace(run_dir)
    events = trace["traceEvents"]
    other = trace["otherData"]
    assert other["steps"] == [[3, 4]]
    assert len(other["clock_offsets_us"]) == 2 and other["clock_offsets_us"][0] == 0.0
    assert abs(other["clock_offsets_us"][1]) < 50_000   # one host: the clocks agree
    assert {e["pid"] for e in events} == {0, 1}
    procs = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert procs[0].startswith("rank 0 (") and procs[1].startswith("rank 1 (")

    # The buckets, as DDP built them, from the run's own record of their sizes.
    n_buckets = None
    for rank in (0, 1):
        threads = thread_names(events, rank)
        assert "main thread" in threads.values()
        assert "communication (distgrad-reducer)" in threads.values()
        main = next(t for t, n in threads.items() if n == "main thread")
        comm = next(t for t, n in threads.items() if n.startswith("communication"))
        for step in (3, 4):
            lo, hi = step_window(events, rank, step)
            inside = [e for e in events if e["pid"] == rank and e["ph"] in ("X", "i") and lo <= e["ts"] <= hi]
            ready = [e for e in inside if e["name"].endswith(" ready") and e["tid"] == main]
            reduce = [e for e in inside if e["name"].startswith("DDP: all-reduce bucket") and e["tid"] == comm]
            assert len(ready) == len(reduce) > 1, (rank, step, [e["name"] for e in inside])
            n_buckets = n_buckets or len(ready)
            assert len(ready) == n_buckets
            assert sorted(e["args"]["bucket"] for e in reduce) == list(range(n_buckets))
            # Each bucket's all-reduce starts once it is ready and says how many bytes it moved.
            ready_at = {e["args"]["bucket"]: e["ts"] for e in ready}
            for e in reduce:
                assert e["args"]["bytes"] > 0
                assert e["ts"] >= ready_at[e["args"]["bucket"]] - 1.0
            phases = {e["name"] for e in inside if e["tid"] == main and e["ph"] == "X"}
            assert {"data", "forward", "backward", "optimizer", "autograd::backward",
                    "DDP: wait for the buckets"} <= phases
            assert any(n.startswith("nn.Module: ") for n in phases)
        later = {e["name"] for e in events if e["pid"] == rank and e["ph"] == "X"}
        assert {"evaluation", "checkpoint save"} & later   # step 4 evaluates
        assert "ProfilerStep#2" not in later and "ProfilerStep#5" not in later
    # The bytes of a bucket are the same on both ranks.
    size = {}
    for e in events:
        if e["name"].startswith("DDP: all-reduce bucket"):
            assert size.setdefault(e["args"]["bucket"], e["args"]["bytes"]) == e["args"]["bytes"]

    # Overlap in numbers: per rank in the trace, each training row and the summary.
    assert set(other["overlap"]) == {"3", "4"}
    for per_rank in other["overlap"].values():
        assert set(per_rank) == {"0", "1"}
        for fig in per_rank.values():
            assert 0.0 <= fig["hidden_share"] <= 1.0 and fig["comm_s"] > 0 and fig["wait_s"] >= 0
    for rank in (0, 1):
        rows = [m for m in jobs.metrics(run_dir, rank) if "loss" in m]
        assert all(0.0 <= m["comm_hidden_share"] <= 1.0 and m["comm_ms"] > 0 for m in rows)
    # The picture of the trace: every phase and all-reduce of the steps drawn, at the size asked.
    mpl = pytest.importorskip("matplotlib.image")
    from launch.runs_cli import main as runs_main

    out = os.path.join(run_dir, "timeline.png")
    assert runs_main(["timeline", run_dir, "-o", out, "--step", "4", "--width", "900", "--height", "300"]) == 0
    assert mpl.imread(out).shape[:2] == (300, 900)
    from distgrad.train.timeline import PHASES, plot_trace

    lo = min(step_window(events, r, 4)[0] for r in (0, 1))
    hi = max(step_window(events, r, 4)[1] for r in (0, 1))
    expected = sum(1 for e in events if e["ph"] == "X" and lo <= e["ts"] <= hi
                   and (e["name"].startswith("DDP: all-reduce") or e["name"] in PHASES))
    drawn = plot_trace(run_dir, out, steps=[4])
    assert drawn["bars"] == expected and drawn["ticks"] == 2 * n_buckets and drawn["ranks"] == [0, 1]
    summary = jobs.summary(run_dir)
    ov = summary["overlap"]
    assert len(ov["hidden_share"]) == len(ov["wait_ms"]) == len(ov["comm_ms"]) == 2
    assert ov["steps"] == 5      # every step after the first
    assert summary["trace"] == os.path.join(run_dir, TRACE_FILE)


@needs_mpi
def test_tracing_changes_no_result_and_rewrites_the_file_per_window(tmp_path):
    plain = jobs.ok(jobs.run(tmp_path / "a", "--np", "2", *BUCKETS)).run_dir
    traced = jobs.ok(jobs.run(tmp_path / "b", "--np", "2", *BUCKETS, "train.trace_steps=[2, 5, 6, 99]")).run_dir
    assert jobs.step_losses(plain) == jobs.step_losses(traced)
    assert not os.path.exists(os.path.join(plain, TRACE_FILE))
    trace = load_trace(traced)
    assert trace["otherData"]["steps"] == [[2, 2], [5, 6]]
    steps = sorted(e["name"] for e in trace["traceEvents"] if e["name"].startswith("ProfilerStep#"))
    assert steps == sorted(["ProfilerStep#2", "ProfilerStep#5", "ProfilerStep#6"] * 2)
    # process and thread names once per rank and thread, though two windows were written
    meta = [(e["name"], e["pid"], e["tid"]) for e in trace["traceEvents"] if e["ph"] == "M"]
    assert len(meta) == len(set(meta))
    with open(os.path.join(traced, "rank0.log")) as f:
        assert "99 beyond the run's 6 steps" in f.read()


def test_debug_run_trace_and_launcher_flag(tmp_path):
    job = jobs.ok(jobs.run(tmp_path / "runs", "--trace", debug=True))
    trace = load_trace(job.run_dir)
    assert trace["otherData"]["steps"] == [[3, 4]]
    events = trace["traceEvents"]
    assert {e["pid"] for e in events} == {0}
    assert set(thread_names(events, 0).values()) == {"main thread"}
    assert not any(e["name"].startswith("DDP") for e in events)
    assert not any(e["name"].startswith("autograd::engine::evaluate_function") for e in events)
    with open(os.path.join(job.run_dir, "config.toml")) as f:
        assert "trace_steps = [3, 4]" in f.read()
    assert "overlap" not in jobs.summary(job.run_dir)   # one process: nothing to overlap


def test_trace_of_a_short_run_and_bad_steps(tmp_path):
    job = jobs.ok(jobs.run(tmp_path / "runs", "--trace", "train.steps=2", debug=True))
    assert load_trace(job.run_dir)["otherData"]["steps"] == [[1, 2]]
    bad = jobs.run(tmp_path / "bad", "--trace-steps", "4-2", debug=True)
    assert bad.rc == 2 and "--trace-steps 4-2" in bad.err, bad.describe()
    assert not os.listdir(tmp_path / "bad")
    bad = jobs.run(tmp_path / "bad2", "train.trace_steps=[0]", debug=True)
    assert bad.rc == 2 and "train.trace_steps" in bad.err, bad.describe()


def test_trace_of_each_autograd_node(tmp_path):
    job = jobs.ok(jobs.run(tmp_path / "runs", "--trace-steps", "2", "train.trace_autograd_nodes=true", debug=True))
    events = load_trace(job.run_dir)["traceEvents"]
    nodes = [e for e in events if e["name"].startswith("autograd::engine::evaluate_function: ")]
    kinds = {e["name"].rsplit(" ", 1)[1] for e in nodes}
    assert {"EmbeddingBackward0", "NativeLayerNormBackward0"} & kinds and len(kinds) > 5, kinds
    # each node runs inside a backward pass
    passes = [e for e in events if e["name"] == "autograd::backward"]
    assert all(any(p["ts"] <= n["ts"] and n["ts"] + n["dur"] <= p["ts"] + p["dur"] + 1 for p in passes)
               for n in nodes)


def test_timeline_of_a_run_without_a_trace(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from launch.runs_cli import main as runs_main

    job = jobs.ok(jobs.run(tmp_path / "runs", "train.steps=2", debug=True))
    assert runs_main(["timeline", job.run_dir, "-o", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err
    assert "no trace.json" in err and "--trace" in err and not (tmp_path / "t.png").exists()
