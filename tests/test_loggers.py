"""The loggers users already read: ``metrics.csv`` in every run, and TensorBoard event
files with ``train.tensorboard = true``; both agree with the JSON-lines metrics, and a
resumed run does not repeat the steps after its checkpoint."""
import csv
import os
import shutil
import struct

import jobs
import pytest

from distgrad.train import checkpoint as ckpt
from distgrad.train import records


def read_csv(run_dir):
    with open(os.path.join(run_dir, records.CSV_FILE), newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def read_events(run_dir):
    """Every scalar in the run's TensorBoard files as {tag: {step: value}}, read from
    the TFRecord framing (length, its CRC, the Event protobuf, its CRC)."""
    from tensorboardX.proto import event_pb2

    out = {}
    tb = os.path.join(run_dir, "tensorboard")
    for name in sorted(os.listdir(tb)):
        with open(os.path.join(tb, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_csv_and_tensorboard_agree_with_the_metrics(tmp_path):
    pytest.importorskip("tensorboardX")
    job = jobs.ok(jobs.run(tmp_path / "runs", "train.eval_interval=3", "train.tensorboard=true", debug=True))
    header, rows = read_csv(job.run_dir)
    assert tuple(header) == records.CSV_COLUMNS
    metrics = jobs.metrics(job.run_dir)
    assert len(rows) == len(metrics)
    for row, m in zip(rows, metrics):
        assert int(row["step"]) == m["step"]
        for key in ("loss", "grad_norm", "lr", "eval_loss", "eval_accuracy", "tokens"):
            if key in m:
                assert float(row[key]) == m[key], (key, row, m)
            else:
                assert row[key] == ""
    train = {m["step"]: m for m in metrics if "loss" in m}
    evals = {m["step"]: m for m in metrics if "eval_loss" in m}
    assert sorted(evals) == [3, 6]
    events = read_events(job.run_dir)
    assert events["train/loss"] == pytest.approx({s: m["loss"] for s, m in train.items()}, rel=1e-6)
    assert events["train/lr"] == pytest.approx({s: m["lr"] for s, m in train.items()}, rel=1e-6)
    assert events["eval/loss"] == pytest.approx({s: m["eval_loss"] for s, m in evals.items()}, rel=1e-6)
    assert "train/step" not in events and "train/timestamp" not in events


def test_a_resumed_run_logs_each_step_once(tmp_path):
    pytest.importorskip("tensorboardX")
    first = jobs.ok(jobs.run(tmp_path / "a", "train.tensorboard=true", debug=True)).run_dir
    # Back to the checkpoint of step 3 with everything else the run wrote: steps 4-6
    # are in the CSV (and TensorBoard) and must not appear twice after the resume.
    resumed = str(tmp_path / "b")
    shutil.copytree(first, resumed)
    for p in ckpt.paths(resumed, 6):
        os.remove(p)
    job = jobs.run(tmp_path / "unused", "--resume", resumed, debug=True, config=os.path.join(resumed, "config.toml"))
    assert job.rc == 0, job.describe()
    _, rows = read_csv(resumed)
    steps = [int(r["step"]) for r in rows if r["loss"]]
    assert steps == [1, 2, 3, 4, 5, 6]
    _, before = read_csv(first)
    # the same trajectory: the losses after the resume equal the first run's
    assert [r["loss"] for r in rows if r["loss"]] == [r["loss"] for r in before if r["loss"]]
    events = read_events(resumed)
    assert sorted(events["train/loss"]) == [1, 2, 3, 4, 5, 6]


def test_tensorboard_without_the_package_is_refused_before_the_start(tmp_path):
    # A directory shadowing both packages with modules that fail to import.
    fake = tmp_path / "fake"
    for pkg in ("tensorboardX", "torch"):
        (fake / pkg).mkdir(parents=True)
        (fake / pkg / "__init__.py").write_text("raise ImportError('not installed here')\n")
    job = jobs.run(tmp_path / "runs", "train.tensorboard=true", debug=True, pythonpath=[fake])
    assert job.rc == 2, job.describe()
    assert "train.tensorboard = true" in job.err and "pip install" in job.err
    assert not os.listdir(tmp_path / "runs")


def test_csv_cells(tmp_path):
    log = records.CsvLog(str(tmp_path))
    log.write({"step": 1, "loss": float("nan"), "lr": 1e-3, "skipped": True, "grad_norm": None})
    log.close()
    _, rows = read_csv(str(tmp_path))
    assert rows == [dict({c: "" for c in records.CSV_COLUMNS}, step="1", lr="0.001", skipped="1")]
