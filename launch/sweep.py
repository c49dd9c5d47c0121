"""Sweeps: ``distgrad-launch CONFIG --sweep optim.lr=1e-3,3e-3 --sweep model.width=64,128``
runs every point of the grid, one job after another, each as its own run named by its
overrides; a failed point is reported and the sweep goes on; at the end it prints the
comparison of the runs and draws their curves."""
from __future__ import annotations

import copy
import itertools
import os
import sys
import time


def split_values(text: str) -> list:
    """``text`` split at the commas outside brackets and quotes: 'a,[1, 2],"x,y"' gives
    ['a', '[1, 2]', '"x,y"']."""
    out, cur, depth, quote = [], [], 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse(specs: list) -> tuple:
    """([(key, [value, ...]), ...], problems) from the ``--sweep KEY=V1,V2`` options."""
    axes, problems, seen = [], [], set()
    for spec in specs:
        key, eq, values = spec.partition("=")
        key = key.strip()
        if not eq or not key:
            problems.append(f"--sweep {spec!r}: give KEY=VALUE1,VALUE2,... e.g. --sweep optim.lr=1e-3,3e-3")
            continue
        if key in seen:
            problems.append(f"--sweep {spec!r}: {key} is swept twice; give all its values in one --sweep")
            continue
        seen.add(key)
        vals = split_values(values)
        if any(v == "" for v in vals):
            problems.append(f"--sweep {spec!r}: an empty value (two commas, or one at the end)")
            continue
        axes.append((key, vals))
    return axes, problems


def points(axes: list) -> list:
    """Every combination of the axes' values, as lists of 'key=value' overrides (the
    first axis varies slowest)."""
    return [[f"{k}={v}" for (k, _), v in zip(axes, combo)] for combo in itertools.product(*(v for _, v in axes))]


def run(args, axes: list, validate, launch_one, refused) -> int:
    """Validate every point, then run them in turn. ``validate(point_args)`` raises
    ``refused`` with the point's problems; ``launch_one(point_args)`` runs one point and
    returns its exit status, leaving its run directory in ``point_args.created_run_dir``."""
    grid = points(axes)
    sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
    problems, output_dir = [], None
    for point in grid:
        a = _point_args(args, point, sweep_id)
        try:
            cfg = validate(a)
            output_dir = output_dir or cfg["run"]["output_dir"]
        except refused as e:
            problems += [f"[{' '.join(point)}] {p}" for p in e.problems]
    if problems:
        head = "error: " if len(problems) == 1 else f"error: {len(problems)} problems:\n  "
        print(f"distgrad-launch: --sweep: {head}" + "\n  ".join(problems) + "\nnothing was started",
              file=sys.stderr)
        return 2
    print(f"distgrad-launch: sweep {sweep_id}: {len(grid)} runs over "
          + " x ".join(f"{k} ({len(v)})" for k, v in axes), file=sys.stderr, flush=True)
    results = []
    for i, point in enumerate(grid, 1):
        a = _point_args(args, point, sweep_id)
        print(f"\ndistgrad-launch: sweep {sweep_id}: run {i} of {len(grid)}: {' '.join(point)}",
              file=sys.stderr, flush=True)
        try:
            status = launch_one(a)
        except KeyboardInterrupt as stop:
            status = 128 + getattr(stop, "signum", 2)
        results.append((point, getattr(a, "created_run_dir", None), status))
        if status >= 128:
            print(f"distgrad-launch: sweep {sweep_id} stopped by a signal at run {i} of {len(grid)}; "
                  f"{len(grid) - i} runs were not started", file=sys.stderr)
            break
    return _report(sweep_id, output_dir, results, len(grid), dry_run=args.dry_run)


def _point_args(args, point: list, sweep_id: str):
    a = copy.copy(args)
    a.overrides = list(args.overrides) + point
    a.sweep = []
    a.sweep_id = sweep_id
    a.created_run_dir = None
    return a


def _report(sweep_id: str, output_dir: str, results: list, total: int, dry_run: bool = False) -> int:
    failed = [(p, d, s) for p, d, s in results if s != 0]
    print(f"\ndistgrad-launch: sweep {sweep_id}: {len(results) - len(failed)} of {total} runs completed"
          + (f", {len(failed)} failed" if failed else ""), file=sys.stderr)
    for point, run_dir, status in results:
        what = "ok" if status == 0 else "refused" if status == 2 else f"failed (exit status {status})"
        print(f"  {' '.join(point):<40} {what:<24} {run_dir or '(no run directory)'}", file=sys.stderr)
    dirs = [d for _, d, _ in results if d and os.path.isfile(os.path.join(d, "summary.json"))]
    if dirs and not dry_run:
        from distgrad.train import runs

        print(runs.compare_text(dirs), flush=True)
        out = os.path.join(output_dir, f"{sweep_id}.png")
        try:
            runs.plot_runs(dirs, out)
        except ImportError as e:
            print(f"distgrad-launch: no plot of the sweep: {e}", file=sys.stderr)
        else:
            print(f"distgrad-launch: curves of the sweep: {out}", file=sys.stderr)
    if len(results) < total:
        return 130
    return 1 if failed else 0
