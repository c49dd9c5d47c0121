"""Run names that show their overrides, the output directory's index.jsonl, and
``distgrad-launch --sweep``: the grid run one job after another, a failed point
reported without stopping the others, and the comparison and plot at the end."""
import json
import os

import jobs
import pytest

from distgrad.train import records
from launch import sweep

TINY = ["train.steps=3", "model.width=16", "train.progress=false"]


def index(out_dir):
    with open(os.path.join(out_dir, "index.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_override_slug():
    assert records.override_slug(["optim.lr=1e-3", "model.width=128"]) == "lr=1e-3_width=128"
    # two keys ending alike keep their full names; where a run goes is not in its name
    assert records.override_slug(["optim.lr=1", "other.lr=2", 'run.output_dir="/x"']) == "optim.lr=1_other.lr=2"
    assert records.override_slug(["optim.betas=[0.9, 0.99]", "optim.lr=1", "optim.lr=2"]) == "betas=0.9-0.99_lr=2"
    assert records.override_slug(['dist.env.X="a b/c"']) == "X=a-b-c" or "/" not in records.override_slug(
        ['dist.env.X="a b/c"'])
    many = [f"model.kwargs.k{i}={i}" for i in range(40)]
    long = records.override_slug(many)
    assert len(long) <= 80 and long.endswith("_k38=38_k39=39")   # the last ones kept: a sweep's
    assert long != records.override_slug(many[:1] + ["model.kwargs.k0=other"] + many[1:])
    assert records.override_slug([]) == "" and records.override_slug(["train.progress=false"]) == ""


def test_split_values_and_grid():
    assert sweep.split_values("1e-3,3e-3") == ["1e-3", "3e-3"]
    assert sweep.split_values('[0.9, 0.95],[0.8, 0.9], "a,b"') == ["[0.9, 0.95]", "[0.8, 0.9]", '"a,b"']
    axes, problems = sweep.parse(["optim.lr=1,2", "model.width=8,16,32"])
    assert not problems
    grid = sweep.points(axes)
    assert len(grid) == 6 and grid[0] == ["optim.lr=1", "model.width=8"] and grid[-1] == ["optim.lr=2", "model.width=32"]
    for bad, what in (("optim.lr", "KEY=VALUE1"), ("optim.lr=1,,2", "empty value")):
        assert what in sweep.parse([bad])[1][0]
    assert "swept twice" in sweep.parse(["a.b=1", "a.b=2"])[1][0]


def test_run_names_and_index(tmp_path):
    out = tmp_path / "runs"
    job = jobs.ok(jobs.run(out, "optim.lr=2e-3", debug=True))
    name = os.path.basename(job.run_dir)
    # jobs.run's own overrides are part of the name too (train.progress is not)
    assert name.startswith("quickstart-steps=6_log_interval=1_checkpoint_interval=3_width=32"), name
    assert "lr=2e-3-2026" in name or "lr=2e-3-20" in name
    (entry,) = index(out)
    assert entry["run_dir"] == job.run_dir and entry["name"] == name and entry["config"] == "quickstart"
    assert "optim.lr=2e-3" in entry["overrides"] and entry["sweep"] is None and entry["mode"] == "debug"
    assert not any(o.startswith("run.output_dir") for o in entry["overrides"])


def test_sweep_runs_the_grid_and_goes_past_a_failed_point(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "runs"
    job = jobs.run(out, "--sweep", "optim.lr=1e30,1e-3", "--sweep", "model.width=8,16", *TINY,
                   debug=True, config=jobs.QUICKSTART)
    assert job.rc == 1, job.describe()             # a point failed
    entries = index(out)
    assert len(entries) == 4 and len({e["sweep"] for e in entries}) == 1 and entries[0]["sweep"]
    points = [(o[-2], o[-1]) for o in (e["overrides"] for e in entries)]
    assert points == [("optim.lr=1e30", "model.width=8"), ("optim.lr=1e30", "model.width=16"),
                      ("optim.lr=1e-3", "model.width=8"), ("optim.lr=1e-3", "model.width=16")]
    status = {}
    for e in entries:
        assert "lr=" in e["name"] and "width=" in e["name"]
        status[e["overrides"][-2:][0], e["overrides"][-1]] = jobs.summary(e["run_dir"])["status"]
    assert [status[p] for p in points] == ["failed", "failed", "completed", "completed"]
    assert "2 of 4 runs completed, 2 failed" in job.err
    # the comparison table on stdout: the swept keys as columns, one row per run
    lines = job.out.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.split()[:1] == ["run"] and "status" in ln)
    table = lines[start:start + 5]
    header = table[0].split()
    assert "optim.lr" in header and "model.width" in header and "model.context" not in header
    assert all(ln.startswith("quickstart-") for ln in table[1:]) and len(lines) == start + 5
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    assert pngs == [f"{entries[0]['sweep']}.png"]
    with open(out / pngs[0], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_with_a_bad_value_starts_nothing(tmp_path):
    out = tmp_path / "runs"
    job = jobs.run(out, "--sweep", "optim.lr=1e-3,fast", "--sweep", "model.width=8", *TINY,
                   debug=True, config=jobs.QUICKSTART)
    assert job.rc == 2, job.describe()
    assert "[optim.lr=fast model.width=8]" in job.err and "optim.lr" in job.err and "nothing was started" in job.err
    assert not os.listdir(out)
    job = jobs.run(tmp_path / "r2", "--sweep", "optim.lr=1,2", "--resume", str(tmp_path), debug=True,
                   config=jobs.QUICKSTART)
    assert job.rc == 2 and "--resume" in job.err
