"""run.precision in real training runs (the quickstart config through the launcher):
bf16-mixed and fp16-mixed train close to the float32 run, fp16 keeps its loss scale in
the checkpoint, a resumed mixed-precision run equals the uninterrupted one, the
2-rank run equals the debug run, and a float64 run cannot be mixed."""
import numpy as np
import pytest

import distgrad as dg
from jobs import ckpt_meta, fresh_resume_dir, metrics, needs_mpi, ok, run, step_losses, summary

PRECISIONS = ["fp16-mixed", pytest.param("bf16-mixed", marks=pytest.mark.skipif(
    not hasattr(dg, "bfloat16"), reason="needs ml_dtypes"))]


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory):
    out = {}
    for p in ("fp16-mixed", "bf16-mixed"):
        if p == "bf16-mixed" and not hasattr(dg, "bfloat16"):
            continue
        out[p] = ok(run(str(tmp_path_factory.mktemp(p) / "runs"), f"run.precision={p}", debug=True)).run_dir
    return out


@pytest.mark.parametrize("precision", PRECISIONS)
def test_mixed_precision_trains_close_to_float32(precision, mixed_runs, ref_debug):
    run_dir = mixed_runs[precision]
    got, want = step_losses(run_dir), step_losses(ref_debug)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
    tol = 3e-2 if precision == "bf16-mixed" else 5e-3
    np.testing.assert_allclose([got[s] for s in range(1, 7)], [want[s] for s in range(1, 7)], rtol=tol)
    assert any(got[s] != want[s] for s in got)          # it did run in low precision
    assert np.isfinite(summary(run_dir)["eval_loss"])
    rows = [m for m in metrics(run_dir) if "loss" in m]
    meta = ckpt_meta(run_dir, 6)
    if precision == "fp16-mixed":
        assert all(m["loss_scale"] > 0 for m in rows)
        assert meta["scaler"]["scale"] == rows[-1]["loss_scale"] or meta["scaler"]["scale"] > 0
    else:
        assert "loss_scale" not in rows[0] and "scaler" not in meta


@pytest.mark.parametrize("precision", PRECISIONS)
def test_mixed_precision_resume_equals_the_uninterrupted_run(precision, mixed_runs, tmp_path):
    ref = mixed_runs[precision]
    run_dir = fresh_resume_dir(ref, tmp_path / "resumed")
    job = ok(run(str(tmp_path / "runs"), f"run.precision={precision}", "--resume", run_dir, debug=True))
    assert "resuming at step 3" in job.output, job.describe()
    resumed, original = step_losses(run_dir), step_losses(ref)
    for s in (4, 5, 6):
        assert resumed[s] == original[s], f"step {s}: {resumed[s]!r} != {original[s]!r}"


@needs_mpi
def test_two_ranks_in_bf16_mixed_equal_the_debug_run(mixed_runs, tmp_path):
    if "bf16-mixed" not in mixed_runs:
        pytest.skip("needs ml_dtypes")
    two = ok(run(str(tmp_path / "runs"), "run.precision=bf16-mixed")).run_dir
    a, b = step_losses(mixed_runs["bf16-mixed"]), step_losses(two)
    np.testing.assert_allclose([a[s] for s in range(1, 7)], [b[s] for s in range(1, 7)], rtol=2e-2)


def test_resume_cannot_change_the_precision(mixed_runs, tmp_path):
    run_dir = fresh_resume_dir(mixed_runs["fp16-mixed"], tmp_path / "resumed")
    job = run(str(tmp_path / "runs"), "--resume", run_dir, debug=True)
    assert job.rc == 2, job.describe()
    assert "run.precision = 'fp16-mixed' in the run, '32' now" in job.output


def test_float64_cannot_be_mixed(tmp_path):
    job = run(str(tmp_path / "runs"), "run.precision=bf16-mixed", "run.dtype=float64", debug=True)
    assert job.rc == 2, job.describe()
    assert "run.precision = 'bf16-mixed' keeps float32 weights and needs run.dtype = 'float32'" in job.output
