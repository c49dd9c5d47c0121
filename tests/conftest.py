"""Session-wide test settings: say how many PyTorch parity checks did not run, and
why, in one line (they skip one by one where PyTorch is not installed); with
``DISTGRAD_REQUIRE_TORCH=1`` (CI sets it) a missing PyTorch is an error instead.
Also the reference runs that several test files compare against (run once)."""
import importlib.util
import os

import pytest

from jobs import have_mpi, ok, run


def _torch_installed() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def pytest_configure(config):
    if os.environ.get("DISTGRAD_REQUIRE_TORCH") == "1" and not _torch_installed():
        raise pytest.UsageError("DISTGRAD_REQUIRE_TORCH=1 but PyTorch is not installed: the parity "
                                "checks against PyTorch would all be skipped (pip install torch)")


def _reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    parity = [r for r in skipped if "torch" in _reason(r)]
    if parity:
        terminalreporter.write_line(
            f"distgrad: {len(parity)} parity checks against PyTorch were skipped: PyTorch is not "
            "installed (pip install torch; a CPU build is enough)")


@pytest.fixture(scope="session")
def ref2(tmp_path_factory):
    """The uninterrupted 2-rank run of the small quickstart config: 6 steps, checkpoints
    at 3 and 6. Tests copy it before changing anything."""
    if not have_mpi():
        pytest.skip("needs mpi4py and mpiexec")
    return ok(run(str(tmp_path_factory.mktemp("ref2") / "runs"))).run_dir


@pytest.fixture(scope="session")
def ref_debug(tmp_path_factory):
    """The same config run in-process (--debug, world size 1)."""
    return ok(run(str(tmp_path_factory.mktemp("refdebug") / "runs"), debug=True)).run_dir
