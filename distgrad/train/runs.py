"""Reading finished (and running) run directories back: find the runs under an output
directory, tell which config keys set them apart, and show their final metrics as a
table or their curves as a picture. The ``distgrad-runs`` command is built on it.

A run directory is one that holds ``config.toml`` or ``summary.json``; rank 0's
``metrics.rank0.jsonl`` gives the curves (its loss is already the mean over the
ranks). ``OUTPUT_DIR/index.jsonl``, where present, gives each run's overrides.
A damaged run (no summary, a torn last metrics line) is read as far as it goes, with
what was wrong in ``Run.problems``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field

from . import records

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# Keys that say where a run was written, not what it trained: never a difference.
IGNORED_KEYS = ("run.output_dir",)
# Final metrics, in the order a comparison shows them (after the differing keys).
METRICS = ("status", "steps", "loss", "eval_loss", "eval_accuracy", "wall_time_s", "tokens_per_s")
OPTIONAL_METRICS = ("eval_loss", "eval_accuracy")  # a column only when some run has them
X_AXES = {"step": "step", "tokens": "tokens", "time": "wall time (s)"}
_MISSING = object()
INSTALL_HINT = 'plotting needs matplotlib: pip install "distgrad[plot]"'


class RunsError(ValueError):
    """A path, a column or an option that cannot be read or shown; the message says
    which and what to do."""


@dataclass
class Run:
    """One run directory as read from disk."""

    dir: str
    name: str
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    train: list = field(default_factory=list)  # rank 0's training rows (they have "loss")
    evals: list = field(default_factory=list)  # rank 0's evaluation rows ("eval_loss")
    overrides: list = field(default_factory=list)
    started: float | None = None
    problems: list = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.summary.get("status") or "unknown"

    def final(self, key: str):
        """The run's last value of ``key``: from the summary of an ended run, else from
        the newest metrics row that has it."""
        if key in self.summary:
            return self.summary[key]
        rows = self.evals if key.startswith("eval_") else self.train
        return next((r[key] for r in reversed(rows) if key in r), None)

    @property
    def steps(self):
        return self.summary.get("steps", self.train[-1]["step"] if self.train else None)

    @property
    def total_steps(self):
        return self.summary.get("total_steps", self.config.get("train", {}).get("steps"))

    @property
    def wall_time_s(self):
        return self.summary.get("wall_time_s", self.train[-1].get("time") if self.train else None)


# ------------------------------------------------------------------ reading
def is_run_dir(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, f)) for f in ("config.toml", "summary.json"))


def _read_index(output_dir: str) -> dict:
    """index.jsonl of an output directory as {run directory name: entry} (a later
    entry of the same run wins)."""
    return {e.get("name") or os.path.basename(os.path.normpath(e["run_dir"])): e
            for e in records.read_index(output_dir)}


def _read_metrics(path: str, problems: list) -> tuple[list, list]:
    train, evals = [], []
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError:
        problems.append(f"{os.path.basename(path)} missing")
        return train, evals
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            what = "torn last line" if n == len(lines) else f"unreadable line {n}"
            problems.append(f"{os.path.basename(path)}: {what} skipped")
            continue
        if not isinstance(row, dict) or "step" not in row:
            continue
        if "eval_loss" in row:
            evals.append(row)
        elif "loss" in row:
            train.append(row)
    return train, evals


def _read_config(path: str, problems: list) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        problems.append("config.toml missing")
    except (OSError, tomllib.TOMLDecodeError) as e:
        problems.append(f"config.toml unreadable ({e})")
    return {}


def read_run(run_dir: str, index_entry: dict | None = None) -> Run:
    """The run in ``run_dir``, however much of it is there."""
    run_dir = os.path.abspath(run_dir)
    problems = []
    summary = records.read_summary(run_dir)
    if not summary:
        there = os.path.exists(records.summary_path(run_dir))
        problems.append("summary.json unreadable" if there else "summary.json missing")
    config = _read_config(os.path.join(run_dir, "config.toml"), problems)
    train, evals = _read_metrics(records.metrics_path(run_dir, 0), problems)
    entry = index_entry or {}
    started = summary.get("started") or entry.get("started")
    if started is None:
        started = os.path.getmtime(run_dir)
    return Run(dir=run_dir, name=os.path.basename(run_dir), config=config, summary=summary,
               train=train, evals=evals, overrides=list(entry.get("overrides") or []),
               started=started, problems=problems)


def _runs_in(path: str) -> list:
    if not os.path.isdir(path):
        raise RunsError(f"{path}: no such directory (give a run directory or an output directory "
                        "holding run directories)")
    if is_run_dir(path):
        parent = _read_index(os.path.dirname(os.path.abspath(path)))
        return [read_run(path, parent.get(os.path.basename(os.path.abspath(path))))]
    subdirs = sorted(d for d in os.listdir(path) if is_run_dir(os.path.join(path, d)))
    if not subdirs:
        raise RunsError(f"{path}: not a run directory (it has no config.toml or summary.json) and "
                        "holds no run directories; give a run directory or the output directory "
                        "the runs were written to (run.output_dir)")
    index = _read_index(path)
    return [read_run(os.path.join(path, d), index.get(d)) for d in subdirs]


def find_runs(paths) -> list:
    """Every run in ``paths`` (run directories, output directories holding them, or
    ``Run`` objects), each once, ordered by start time."""
    if isinstance(paths, (str, os.PathLike, Run)):
        paths = [paths]
    found = {}
    for p in paths:
        for run in [p] if isinstance(p, Run) else _runs_in(os.fspath(p)):
            found.setdefault(os.path.realpath(run.dir), run)
    return sorted(found.values(), key=lambda r: (r.started, r.name))


# ------------------------------------------------------------ comparing
def flatten(table: dict, prefix: str = "") -> dict:
    """{"optim.lr": 0.001, "model.kwargs.hidden": 128, ...} of a nested config."""
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(runs) -> list:
    """The dotted config keys whose values are not the same in every run, in config
    order. Runs whose config.toml cannot be read, and where the runs were written
    (``run.output_dir``), are left out."""
    flats = [flatten(r.config) for r in find_runs(runs) if r.config]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if k not in IGNORED_KEYS
            and any(f.get(k, _MISSING) != flats[0].get(k, _MISSING) for f in flats)]


def run_labels(runs) -> list:
    """A legend label per run: the differing keys as ``key=value, ...``, or the run's
    name where that does not tell the runs apart."""
    runs = find_runs(runs)
    keys = config_differences(runs)
    out = [", ".join(f"{k}={format_value(flatten(r.config).get(k))}" for k in keys) or r.name
           for r in runs]
    return [f"{lab} ({r.name})" if out.count(lab) > 1 and lab != r.name else lab for lab, r in zip(out, runs)]


def compare_rows(runs, keys=None) -> list:
    """A dict per run: ``run`` (its name), the config ``keys`` (default: those that
    differ) and the final metrics."""
    runs = find_runs(runs)
    keys = config_differences(runs) if keys is None else keys
    metrics = [m for m in METRICS
               if m not in OPTIONAL_METRICS or any(r.final(m) is not None for r in runs)]
    rows = []
    for r in runs:
        flat = flatten(r.config)
        own = {"status": r.status, "steps": r.steps, "wall_time_s": r.wall_time_s}
        rows.append({"run": r.name, **{k: flat.get(k) for k in keys},
                     **{m: own[m] if m in own else r.final(m) for m in metrics}})
    return rows


def sort_rows(rows: list, key: str, descending: bool = False) -> list:
    """``rows`` ordered by the column ``key``, missing values last either way."""
    if rows and key not in rows[0]:
        raise RunsError(f"cannot sort by {key!r}: no such column; the columns are "
                        + ", ".join(rows[0]))
    present = [r for r in rows if r.get(key) is not None]
    # numbers before text, so that a column of mixed values still sorts
    present.sort(key=lambda r: (0, r[key], "") if _is_number(r[key]) else (1, 0, str(r[key])),
                 reverse=descending)
    return present + [r for r in rows if r.get(key) is None]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (
        isinstance(v, float) and math.isnan(v))


# ------------------------------------------------------------ formatting
# How a table shows each final metric (config values and other numbers: shortest form).
FORMATS = {"loss": "{:.4f}", "eval_loss": "{:.4f}", "eval_accuracy": "{:.4f}",
           "wall_time_s": "{:.1f}", "tokens_per_s": "{:,.0f}"}


def format_value(v, column: str | None = None) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and column in FORMATS:
        return FORMATS[column].format(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def format_table(rows: list, columns=None) -> str:
    """``rows`` as an aligned plain-text table with a header line: numbers to the right,
    text to the left."""
    columns = list(columns or (rows[0] if rows else []))
    cells = [[format_value(r.get(c), c) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    numeric = [all(_is_number(r.get(c)) or r.get(c) is None for r in rows) for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns)] + [line(c) for c in cells])


def format_csv(rows: list) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
                     for r in rows)
    return out.getvalue()


def compare_text(run_dirs, sort: str | None = None) -> str:
    """The comparison table of the runs in ``run_dirs``; ``sort``: a column, with a
    leading '-' for descending order."""
    rows = compare_rows(run_dirs)
    if sort:
        rows = sort_rows(rows, sort.lstrip("-"), descending=sort.startswith("-"))
    return format_table(rows)


def list_rows(runs) -> list:
    """A dict per run for ``distgrad-runs list``."""
    return [{"run": r.name, "status": r.status,
             "steps": f"{format_value(r.steps)}/{format_value(r.total_steps)}",
             "loss": r.final("loss"), "eval_loss": r.final("eval_loss"),
             "world": r.summary.get("world_size"), "wall_time_s": r.wall_time_s,
             "overrides": " ".join(r.overrides)} for r in find_runs(runs)]


# ------------------------------------------------------------------ plotting
def plot_runs(runs, out_path: str, x: str = "step", metrics=("loss", "eval_loss"),
              width: int = 960, height: int = 600, dpi: int = 100, title: str | None = None) -> dict:
    """Draw ``metrics`` of every run against ``x`` ("step", "tokens", "time", or "all"
    for one panel of each) into the PNG ``out_path``, ``width`` x ``height`` pixels.
    One colour per run, one line style per metric (the first solid, the next dashed);
    runs are labelled by the config keys that set them apart. Returns what was drawn:
    ``{"path", "panels", "curves", "labels"}`` (``curves`` counts lines in every panel)."""
    axes_x = list(X_AXES) if x == "all" else [x]
    if any(a not in X_AXES for a in axes_x):
        raise RunsError(f"cannot plot against {x!r}: choose one of {', '.join(X_AXES)} or all")
    try:
        import matplotlib  # noqa: F401  (fails here, with the hint, when it is not installed)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RunsError(INSTALL_HINT) from None
    runs = find_runs(runs)
    names = run_labels(runs)
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display needed
    panels = fig.subplots(1, len(axes_x), sharey=True, squeeze=False)[0]
    curves, drawn = 0, []
    for ax, xkey in zip(panels, axes_x):
        for i, (run, name) in enumerate(zip(runs, names)):
            for j, metric in enumerate(metrics):
                rows = run.evals if metric.startswith("eval_") else run.train
                pts = [(r[xkey], math.nan if r[metric] is None else r[metric])  # None: a diverged step
                       for r in rows if r.get(xkey) is not None and metric in r]
                if not pts:
                    continue
                label = name if len(metrics) == 1 else f"{name}: {metric}"
                ax.plot(*zip(*pts), color=f"C{i % 10}", linestyle=_STYLES[j % len(_STYLES)],
                        marker="o" if len(pts) == 1 else None, label=label)
                curves += 1
                if ax is panels[0]:
                    drawn.append(label)
        ax.set_xlabel(X_AXES[xkey])
        ax.grid(alpha=0.3)
    panels[0].set_ylabel(" / ".join(metrics))
    if drawn:  # below the panels, where long labels hide no curve
        fig.legend(loc="outside lower center", ncols=2 if len(drawn) > 4 else 1, fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(out_path, dpi=dpi)
    return {"path": os.path.abspath(out_path), "panels": axes_x, "curves": curves, "labels": drawn}


_STYLES = ("-", "--", ":", "-.")
