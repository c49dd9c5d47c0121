"""bench/_isolated.py, the harness that times each library of a CPU step benchmark in
processes of its own: what each child process is started with, what comes back, and
a child's failure reaching the parent with its stderr."""
import os
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
import _isolated  # noqa: E402

CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {bench!r})
    import _isolated
    lib = sys.argv[sys.argv.index("--child") + 1]
    steps = int(sys.argv[sys.argv.index("--steps") + 1])
    if os.environ.get("FAIL_IN") == lib:
        sys.exit("broken on purpose")
    torch = _isolated.import_torch()
    # seconds per step that say what this process saw
    _isolated.report({{"model": (2.0 if lib == "torch" else 1.0) * steps,
                      "malloc off": float(os.environ.get("DISTGRAD_MALLOC") == "0"),
                      "torch loaded": float(torch is not None or "torch" in sys.modules),
                      "numba off": float(os.environ.get("DISTGRAD_NUMBA") == "0")}})
""")


@pytest.fixture
def script(tmp_path):
    p = tmp_path / "fake_bench.py"
    p.write_text(CHILD.format(bench=os.path.join(REPO, "bench")))
    return str(p)


def test_each_contender_runs_alone_with_its_settings(script):
    entrants = _isolated.contenders(with_torch=True, numpy_bodies=True)
    assert [e[0] for e in entrants] == ["distgrad", "numpy bodies", "torch"]
    rounds = _isolated.run_rounds(script, entrants, 3, ["--steps", "2"])
    assert rounds["distgrad"]["model"] == [2.0] * 3 and rounds["torch"]["model"] == [4.0] * 3
    # PyTorch's process runs with glibc's own allocator settings, as a torch-only program
    assert rounds["torch"]["malloc off"] == [1.0] * 3 and rounds["distgrad"]["malloc off"] == [0.0] * 3
    # distgrad's processes never load PyTorch
    assert rounds["distgrad"]["torch loaded"] == [0.0] * 3 == rounds["numpy bodies"]["torch loaded"]
    assert rounds["numpy bodies"]["numba off"] == [1.0] * 3 and rounds["distgrad"]["numba off"] == [0.0] * 3
    line = _isolated.line("model", rounds, 1.2)
    assert "distgrad 2000.00 ms/step" in line and "torch 4000.00 ms/step" in line
    assert "distgrad / torch 0.50 x (median over rounds 0.50; goal <= 1.2)" in line
    assert "numpy bodies / torch 0.50 x" in line


def test_without_torch_only_distgrad_is_timed(script):
    rounds = _isolated.run_rounds(script, _isolated.contenders(with_torch=False), 1, ["--steps", "1"])
    assert list(rounds) == ["distgrad"]
    assert _isolated.line("model", rounds, 1.2) == "model: distgrad 1000.00 ms/step"


def test_a_failing_child_stops_the_benchmark_with_its_message(script, monkeypatch):
    monkeypatch.setenv("FAIL_IN", "torch")
    with pytest.raises(SystemExit, match=r"fake_bench.py: the torch process failed \(status 1\):\nbroken on purpose"):
        _isolated.run_rounds(script, _isolated.contenders(with_torch=True), 2, ["--steps", "1"])
