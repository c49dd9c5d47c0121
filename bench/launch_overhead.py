"""Time from ``distgrad-launch`` to the first training step, against a bare
``mpiexec -n 2 python -c pass`` (the floor: starting two Python processes).

The trainer prints a timestamp just before its first step when
DISTGRAD_MARK_FIRST_STEP is set; rounds alternate between the two commands and
each keeps its best time.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpiexec() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else "mpiexec"


def bare() -> float:
    t0 = time.time()
    subprocess.run([mpiexec(), "-n", "2", sys.executable, "-c", "pass"], check=True)
    return time.time() - t0


def launch(out_dir: str) -> float:
    env = dict(os.environ, DISTGRAD_MARK_FIRST_STEP="1")
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "launch.cli", os.path.join(ROOT, "configs", "quickstart.toml"),
         "train.steps=1", "train.progress=false", f"run.output_dir={out_dir!r}".replace("'", '"')],
        check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("DISTGRAD_FIRST_STEP"):
            return float(line.split()[1]) - t0
    raise RuntimeError("the trainer printed no first-step mark:\n" + proc.stdout + proc.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    best = {"bare mpiexec": float("inf"), "distgrad-launch": float("inf")}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            best["bare mpiexec"] = min(best["bare mpiexec"], bare())
            best["distgrad-launch"] = min(best["distgrad-launch"], launch(out))
    print(f"2 ranks on {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}")
    print(f"  mpiexec -n 2 python -c pass          {best['bare mpiexec']:6.2f} s")
    print(f"  distgrad-launch to the first step    {best['distgrad-launch']:6.2f} s")
    print(f"  ratio                                {best['distgrad-launch'] / best['bare mpiexec']:6.2f} x")


if __name__ == "__main__":
    main()
