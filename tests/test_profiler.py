"""distgrad.profiler: what a profile records (module forwards, backward, optimizer
steps, record_function ranges, DDP buckets on their own thread), the Chrome trace it
writes, the table of sums, and that nothing is recorded outside a region. The 2-rank
trace runs under a real mpiexec."""
import json
import os
import subprocess
import sys

import pytest

import distgrad as dg
from distgrad import profiler
from jobs import find_mpiexec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(model, opt, n=2, prof=None):
    for _ in range(n):
        with profiler.record_function("my step"):
            loss = model(dg.randn(3, 4)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if prof is not None:
            prof.step()


def test_profile_records_forward_backward_and_optimizer(tmp_path):
    m = dg.nn.Sequential(dg.nn.Linear(4, 8), dg.nn.ReLU(), dg.nn.Linear(8, 2))
    opt = dg.optim.AdamW(m.parameters())
    _train(m, opt)                                     # outside: nothing recorded anywhere
    seen = []
    with profiler.profile(activities=[profiler.ProfilerActivity.CPU], on_trace_ready=seen.append) as prof:
        _train(m, opt, prof=prof)
    assert seen == [prof] and profiler.current() is None
    counts = {r["name"]: r["count"] for r in prof.key_averages()}
    node = "autograd::engine::evaluate_function: "
    assert counts == {"my step": 2, "nn.Module: Sequential": 2, "nn.Module: Linear": 4, "nn.Module: ReLU": 2,
                      "autograd::backward": 2, "Optimizer.step#AdamW.step": 2,
                      # each node of the graph, as PyTorch's profiler names them
                      node + "SumBackward0": 2, node + "AddmmBackward0": 4, node + "ReluBackward0": 2}
    with profiler.profile(record_autograd_nodes=False) as quiet:
        _train(m, opt, n=1)
    assert not any(r["name"].startswith(node) for r in quiet.key_averages())
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=3)
    assert table.splitlines()[2].startswith("my step") and len(table.splitlines()) == 5
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    steps = sorted((e for e in spans if e["name"] == "my step"), key=lambda e: e["ts"])
    inner = [e for e in spans if e["name"] == "autograd::backward"]
    # every backward lies inside one of the steps
    assert all(any(s["ts"] <= b["ts"] and b["ts"] + b["dur"] <= s["ts"] + s["dur"] + 1e-3 for s in steps)
               for b in inner)
    assert [e["name"] for e in events if e["ph"] == "i"] == ["ProfilerStep", "ProfilerStep"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert "main thread" in names and not list(tmp_path.glob("*.tmp*"))


def test_record_function_as_decorator_and_nested_regions():
    @profiler.record_function("helper")
    def helper(x):
        return x * 2

    with profiler.profile() as outer:
        helper(dg.ones(2))
        with profiler.profile() as inner:
            helper(dg.ones(2))
        helper(dg.ones(2))
    assert [r["count"] for r in outer.key_averages()] == [2]
    assert [r["count"] for r in inner.key_averages()] == [1]
    assert helper(dg.ones(1)).item() == 2.0


@pytest.mark.skipif(find_mpiexec() is None, reason="needs mpiexec")
def test_two_rank_ddp_trace(tmp_path):
    script = os.path.join(REPO, "tests", "mpi", "scripts", "profile_ddp.py")
    proc = subprocess.run([find_mpiexec(), "-n", "2", sys.executable, script, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    buckets = int(proc.stdout.split("buckets ")[1].split()[0])
    assert buckets >= 2
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    threads = {(e["pid"], e["args"]["name"]): e["tid"] for e in events if e["name"] == "thread_name"}
    assert {p for p, _ in threads} == {0, 1}
    for rank in (0, 1):
        main, comm = threads[(rank, "main thread")], threads[(rank, "distgrad-reducer")]
        mine = [e for e in events if e["pid"] == rank and e["ph"] != "M"]
        for b in range(buckets):
            ready = sorted(e["ts"] for e in mine if e["name"] == f"DDP: bucket {b} ready")
            reduce = sorted((e for e in mine if e["name"] == f"DDP: all-reduce bucket {b}"), key=lambda e: e["ts"])
            assert len(ready) == len(reduce) == 2, (rank, b)
            assert all(e["tid"] == comm and e["args"]["bytes"] > 0 for e in reduce)
            assert all(r <= e["ts"] + 1e-3 for r, e in zip(ready, reduce))     # reduced after it was ready
        assert all(e["tid"] == main for e in mine if e["name"] in ("autograd::backward", "train step"))
        assert sum(e["name"] == "Optimizer.step#SGD.step" for e in mine) == 2
