"""A picture of a run's trace (``trace.json``): for each rank, its main thread's
phases (data, forward, backward, optimizer, evaluation, checkpoint save, the wait
for the gradient buckets) with each bucket's "ready" tick, and below it the
communication thread's all-reduce of each bucket, on the time axis of the traced
steps. ``distgrad-runs timeline RUN -o timeline.png`` draws it; Perfetto shows the
same file interactively."""
from __future__ import annotations

import json
import os

from .runs import INSTALL_HINT, RunsError
from .tracing import TRACE_FILE

# Main-thread phases drawn, with their colours (matplotlib's tab10 names).
PHASES = {"data": "tab:gray", "forward": "tab:blue", "backward": "tab:orange", "optimizer": "tab:green",
          "evaluation": "tab:purple", "checkpoint save": "tab:brown", "DDP: wait for the buckets": "tab:red"}
ALLREDUCE = "DDP: all-reduce bucket"


def load_trace(path: str) -> dict:
    """A trace file, or a run directory's ``trace.json``; RunsError naming what is
    missing or damaged."""
    if os.path.isdir(path):
        path = os.path.join(path, TRACE_FILE)
        if not os.path.exists(path):
            raise RunsError(f"{os.path.dirname(path)} has no {TRACE_FILE}: run with train.trace_steps "
                            "(or distgrad-launch --trace) to record one")
    try:
        with open(path) as f:
            data = json.load(f)
        data["traceEvents"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunsError(f"{path} is not a readable Chrome trace ({type(e).__name__}: {e})") from None
    return data


def _window(events: list, steps) -> tuple:
    """(start, end) in microseconds covering the ProfilerStep ranges of ``steps`` (all
    traced steps when None) on every rank, and those steps in order."""
    ranges = [e for e in events if e.get("ph") == "X" and e["name"].startswith("ProfilerStep#")
              and (steps is None or int(e["name"].split("#")[1]) in steps)]
    if not ranges:
        raise RunsError("the trace holds no step " + ("" if steps is None else ", ".join(map(str, steps))))
    found = sorted({int(e["name"].split("#")[1]) for e in ranges})
    return min(e["ts"] for e in ranges), max(e["ts"] + e["dur"] for e in ranges), found


def plot_trace(path: str, out_path: str, steps=None, width: int = 1200, height: int | None = None,
               dpi: int = 100, title: str | None = None) -> dict:
    """Draw the trace at ``path`` (a run directory or a trace file) into the PNG
    ``out_path``. ``steps``: which traced steps (default: all). Returns what was drawn:
    ``{"path", "ranks", "steps", "bars", "ticks"}`` (bars: phases and all-reduces)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise RunsError(INSTALL_HINT) from None
    data = load_trace(path)
    events = data["traceEvents"]
    steps = None if steps is None else set(steps)
    lo, hi, drawn = _window(events, steps)
    ranks = sorted({e["pid"] for e in events if e.get("ph") == "X"})
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e["name"] == "thread_name"}
    height = height or 140 + 90 * len(ranks)
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bars = ticks = 0
    labels, yticks = [], []
    for i, pid in enumerate(ranks):
        y_main, y_comm = -2 * i, -2 * i - 0.9
        yticks += [y_main, y_comm]
        labels += [names.get(pid, f"rank {pid}"), "communication"]
        for e in events:
            if e.get("pid") != pid or e.get("ts") is None or not lo <= e["ts"] <= hi:
                continue
            x0 = (e["ts"] - lo) / 1e3
            if e.get("ph") == "X" and e["name"] in PHASES and threads.get((pid, e["tid"])) == "main thread":
                # the wait lies inside backward: drawn over it
                ax.broken_barh([(x0, e["dur"] / 1e3)], (y_main - 0.35, 0.7), color=PHASES[e["name"]],
                               zorder=3 if e["name"].startswith("DDP") else 2)
                bars += 1
            elif e.get("ph") == "X" and e["name"].startswith(ALLREDUCE):
                b = e.get("args", {}).get("bucket", 0)
                ax.broken_barh([(x0, e["dur"] / 1e3)], (y_comm - 0.3, 0.6),
                               color="tab:cyan" if b % 2 else "tab:olive", edgecolor="black", linewidth=0.3)
                bars += 1
            elif e.get("ph") == "i" and e["name"].endswith(" ready") and e["name"].startswith("DDP: bucket"):
                ax.plot([x0, x0], [y_main + 0.35, y_main + 0.55], color="black", linewidth=0.8)
                ticks += 1
    ax.set_yticks(yticks, labels)
    ax.set_xlim(0, (hi - lo) / 1e3)
    ax.set_xlabel("ms from the start of the first step drawn")
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=c, label=n if not n.startswith("DDP") else "wait for buckets") for n, c in PHASES.items()]
    handles += [Patch(facecolor="tab:olive", edgecolor="black", label="all-reduce (bucket 0, 2, ...)"),
                Patch(facecolor="tab:cyan", edgecolor="black", label="all-reduce (bucket 1, 3, ...)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize="small")
    overlap = data.get("otherData", {}).get("overlap", {})
    shares = {}
    for s in drawn:
        for r, fig_ in overlap.get(str(s), {}).items():
            shares.setdefault(int(r), []).append(fig_["hidden_share"])
    sub = ("; hidden communication " + ", ".join(f"rank {r} {sum(v) / len(v):.0%}" for r, v in sorted(shares.items()))
           if shares else "")
    what = f"step {drawn[0]}" if len(drawn) == 1 else f"steps {', '.join(map(str, drawn))}"
    ax.set_title(title or f"{what}{sub}", fontsize="medium")
    fig.savefig(out_path, dpi=dpi)
    return {"path": os.path.abspath(out_path), "ranks": ranks, "steps": drawn, "bars": bars, "ticks": ticks}
