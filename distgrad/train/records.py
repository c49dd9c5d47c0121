"""What a run leaves in its directory, besides checkpoints: the run directory
itself (created atomically, so simultaneous launches never share one), each rank's
metrics as JSON lines, each rank's console output (``rankN.log``) and
``summary.json`` with the run's status (running, completed, failed, interrupted),
its error and the failing rank.

Every JSON file is strict (no bare ``NaN``: a non-finite number is written as
``null``) and every file that is rewritten is replaced atomically.
"""
from __future__ import annotations

import io
import json
import math
import numbers
import os
import re
import socket
import sys
import time


def _map_floats(obj, fn, path: str = ""):
    """``obj`` with every non-finite float replaced by ``fn(path, value)``, through
    dicts, lists and tuples (tuples come back as lists, as JSON would make them)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return fn(path, obj)
    if isinstance(obj, dict):
        return {k: _map_floats(v, fn, f"{path}.{k}" if path else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_map_floats(v, fn, f"{path}[{i}]") for i, v in enumerate(obj)]
    return obj


def non_finite_paths(obj) -> list:
    """'key.path=value' of every non-finite float in ``obj``."""
    bad = []
    _map_floats(obj, lambda path, v: bad.append(f"{path}={v}"))
    return bad


def dumps_strict(obj, **kw) -> str:
    """``json.dumps`` that writes standard JSON only: NaN and +-Inf become ``null``
    (for metrics rows, where a diverged loss must not make the file unreadable)."""
    return json.dumps(_map_floats(obj, lambda path, v: None), allow_nan=False, **kw)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data) -> None:
    """Write ``data`` (bytes or text) through a temporary file beside ``path``, fsync,
    rename, fsync the directory. On any failure the temporary file is removed and
    ``path`` is as it was."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path) or ".")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ------------------------------------------------------------ run directory
# Overrides that say where a run goes, not what it is: left out of its directory name.
_UNNAMED = ("run.output_dir", "run.name", "train.progress", "train.trace_steps", "train.tensorboard")
_SLUG_MAX = 80


def override_slug(overrides) -> str:
    """The part of a run directory's name that shows its command-line overrides:
    'lr=0.001_width=128' for ``optim.lr=0.001 model.width=128`` (the last part of each
    key, unless two overrides share it; characters other than letters, digits and
    ``._=+-`` become '-'; a long one keeps its last overrides after a digest of all)."""
    pairs = []
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.strip()
        if key in _UNNAMED:
            continue
        pairs = [(k, v) for k, v in pairs if k != key]     # the last one of a key counts
        pairs.append((key, re.sub(r"[\[\]{}\"' ]", "", value)))
    if not pairs:
        return ""
    tails = [k.rsplit(".", 1)[-1] for k, _ in pairs]
    parts = [f"{t if tails.count(t) == 1 else k}={v}" for (k, v), t in zip(pairs, tails)]
    parts = [re.sub(r"[^A-Za-z0-9._=+-]+", "-", p) for p in parts]
    slug = "_".join(parts)
    if len(slug) > _SLUG_MAX:
        # The last overrides are kept (a sweep's values come last), after a digest of all.
        import hashlib

        kept = []
        while parts and len("_".join([parts[-1]] + kept)) <= _SLUG_MAX - 9:
            kept.insert(0, parts.pop())
        slug = hashlib.sha1(slug.encode()).hexdigest()[:8] + ("-" + "_".join(kept) if kept else "")
    return slug


def create_run_dir(output_dir: str, name: str, overrides=()) -> str:
    """A new run directory ``output_dir/name[-OVERRIDES]-YYYYmmdd-HHMMSS[-n]`` (see
    ``override_slug``), created with an atomic mkdir: two launches in the same second
    get two directories."""
    os.makedirs(output_dir, exist_ok=True)
    slug = override_slug(overrides)
    base = os.path.join(output_dir, f"{name}{'-' + slug if slug else ''}-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while True:
        try:
            os.mkdir(path)
            return os.path.abspath(path)
        except FileExistsError:
            n += 1
            path = f"{base}-{n}"


INDEX_FILE = "index.jsonl"


def append_index(output_dir: str, run_dir: str, /, **fields) -> dict:
    """Add a line for ``run_dir`` to ``output_dir/index.jsonl`` (one JSON object per
    run: run_dir, name, config, overrides, started, sweep, ...), in one write on a file
    opened for appending, so runs started together do not interleave their lines."""
    entry = {"run_dir": os.path.abspath(run_dir), "name": os.path.basename(run_dir), **fields}
    line = (dumps_strict(entry) + "\n").encode()
    fd = os.open(os.path.join(output_dir, INDEX_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return entry


def read_index(output_dir: str) -> list:
    """The entries of ``output_dir/index.jsonl`` (a damaged line is skipped)."""
    try:
        with open(os.path.join(output_dir, INDEX_FILE)) as f:
            lines = f.readlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "run_dir" in entry:
            out.append(entry)
    return out


# ------------------------------------------------------------------ summary
def summary_path(run_dir: str) -> str:
    return os.path.join(run_dir, "summary.json")


def read_summary(run_dir: str) -> dict:
    try:
        with open(summary_path(run_dir)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_summary(run_dir: str, data: dict) -> dict:
    data["updated"] = time.time()
    atomic_write(summary_path(run_dir), dumps_strict(data, indent=1) + "\n")
    return data


def write_summary(run_dir: str, /, **fields) -> dict:
    """Merge ``fields`` into summary.json (created if missing) and rewrite it."""
    return _write_summary(run_dir, {**read_summary(run_dir), **fields})


FAILURE_KEYS = ("error", "failed_rank", "failed_host", "failed_step", "failed_phase", "where")


def begin_run(run_dir: str, /, **fields) -> dict:
    """Mark the run running (a resumed run forgets the failure it resumes from)."""
    data = {k: v for k, v in read_summary(run_dir).items() if k not in FAILURE_KEYS}
    return _write_summary(run_dir, {**data, **fields, "status": "running"})


def record_failure(run_dir: str, rank: int, error: str, /, **fields) -> None:
    """Mark the run failed, unless a failure is already recorded (the first one is
    the cause; later ones are its consequences)."""
    if read_summary(run_dir).get("status") == "failed":
        return
    fields.update(status="failed", error=error, failed_rank=rank, failed_host=socket.gethostname())
    write_summary(run_dir, **fields)


# ------------------------------------------------------------------ metrics
def metrics_path(run_dir: str, rank: int) -> str:
    return os.path.join(run_dir, f"metrics.rank{rank}.jsonl")


def truncate_metrics(run_dir: str, after_step: int, ranks=None) -> None:
    """Drop the rows of steps after ``after_step`` (a resumed run logs them again).
    ``ranks``: which ranks' files (default: every metrics file in the directory)."""
    pattern = re.compile(r"^metrics\.rank(\d+)\.jsonl$")
    for name in sorted(os.listdir(run_dir)):
        m = pattern.match(name)
        if not m or (ranks is not None and int(m.group(1)) not in ranks):
            continue
        path = os.path.join(run_dir, name)
        with open(path) as f:
            lines = f.readlines()
        kept = [ln for ln in lines if _step_of(ln) <= after_step]
        if len(kept) != len(lines):
            atomic_write(path, "".join(ln if ln.endswith("\n") else ln + "\n" for ln in kept))


def _step_of(line: str) -> float:
    try:
        row = json.loads(line)
        return row.get("step", 0) if isinstance(row, dict) else math.inf
    except ValueError:
        return math.inf  # a torn last line of a killed run


class MetricsLog:
    """One rank's metrics, a JSON object per line, written through at once (the
    rows of the steps a failed job did finish are on disk); each row also goes to
    the ``sinks`` (``CsvLog``, ``TensorBoardLog``)."""

    def __init__(self, run_dir: str, rank: int, sinks=()):
        self.file = open(metrics_path(run_dir, rank), "a", buffering=1)
        self.sinks = list(sinks)

    def write(self, row: dict) -> None:
        self.file.write(dumps_strict(row) + "\n")
        for sink in self.sinks:
            sink.write(row)

    def close(self) -> None:
        self.file.close()
        for sink in self.sinks:
            sink.close()


# The columns of metrics.csv: a training row fills the first ones, an evaluation row
# step, samples, tokens, time and the eval_ ones.
CSV_COLUMNS = ("step", "samples", "tokens", "time", "loss", "grad_norm", "lr", "samples_per_s", "tokens_per_s",
               "eval_loss", "eval_accuracy", "loss_scale", "skipped", "comm_hidden_share", "comm_wait_ms",
               "comm_ms")
CSV_FILE = "metrics.csv"


class CsvLog:
    """The run's metrics as ``metrics.csv`` (rank 0's rows: the loss is every rank's
    mean), for spreadsheets and pandas: fixed columns (``CSV_COLUMNS``), empty where
    a row has no value or a non-finite one, written through. A resumed run drops the
    rows after its checkpoint's step first."""

    def __init__(self, run_dir: str, after_step: int | None = None):
        import csv

        path = os.path.join(run_dir, CSV_FILE)
        if after_step is not None and os.path.exists(path):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            kept = [r for r in rows[1:] if r and _csv_step(r) <= after_step]
            if rows and len(kept) != len(rows) - 1:
                out = io.StringIO()
                csv.writer(out, lineterminator="\n").writerows(rows[:1] + kept)
                atomic_write(path, out.getvalue())
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        self.file = open(path, "a", newline="", buffering=1)
        self.writer = csv.writer(self.file, lineterminator="\n")
        if new:
            self.writer.writerow(CSV_COLUMNS)

    def write(self, row: dict) -> None:
        def cell(v):
            if isinstance(v, bool):
                return int(v)
            if isinstance(v, numbers.Integral):
                return int(v)
            if isinstance(v, numbers.Real):
                return repr(float(v)) if math.isfinite(v) else ""
            return "" if v is None else v
        self.writer.writerow([cell(row.get(c)) for c in CSV_COLUMNS])

    def close(self) -> None:
        self.file.close()


def _csv_step(cells: list) -> float:
    try:
        return int(cells[0])
    except ValueError:
        return math.inf


def tensorboard_writer_class():
    """TensorBoard's ``SummaryWriter``: tensorboardX's, else PyTorch's (which needs
    the tensorboard package); ImportError saying what to install."""
    try:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    except ImportError:
        pass
    try:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter
    except ImportError:
        raise ImportError('TensorBoard logging needs tensorboardX: pip install "distgrad[tensorboard]" '
                          "(or pip install tensorboardX), or set train.tensorboard = false") from None


class TensorBoardLog:
    """The run's metrics as TensorBoard event files in ``RUN/tensorboard``: training
    values as ``train/NAME``, evaluation ones as ``eval/NAME``, against the step. A
    resumed run purges the events after its checkpoint's step (TensorBoard's
    ``purge_step``), so the curve does not double back."""

    SKIP = ("step", "timestamp", "time", "skipped", "stopped")

    def __init__(self, run_dir: str, after_step: int | None = None):
        writer = tensorboard_writer_class()
        self.writer = writer(os.path.join(run_dir, "tensorboard"),
                             purge_step=None if after_step is None else after_step + 1, flush_secs=10)

    def write(self, row: dict) -> None:
        step, when = row.get("step"), row.get("timestamp")
        for key, v in row.items():
            if key in self.SKIP or isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                continue
            tag = f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"
            self.writer.add_scalar(tag, float(v), global_step=step, walltime=when)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


# ------------------------------------------------------------- console log
class _Tee(io.TextIOBase):
    """Writes to the stream it replaces and to the rank's log file."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        n = self.stream.write(text)
        try:
            self.log.write(text)
        except ValueError:  # the log was closed at exit; the terminal still gets it
            pass
        return n

    def flush(self):
        self.stream.flush()
        if not self.log.closed:
            self.log.flush()

    def isatty(self):
        return self.stream.isatty()

    def fileno(self):
        return self.stream.fileno()

    @property
    def encoding(self):
        return self.stream.encoding


class ConsoleLog:
    """Copy everything this process prints (stdout and stderr, tracebacks included)
    into ``rankN.log`` in the run directory, line-buffered. Until ``keep()`` the copy
    is held in memory, so a run that turns out to have nothing to do leaves no trace."""

    def __init__(self, run_dir: str, rank: int):
        self.path = os.path.join(run_dir, f"rank{rank}.log")
        self.file = io.StringIO()
        self.saved = sys.stdout, sys.stderr
        self.terminal = sys.stdout  # progress bars go here only: they are not log lines
        self.out, self.err = _Tee(sys.stdout, self.file), _Tee(sys.stderr, self.file)
        sys.stdout, sys.stderr = self.out, self.err

    def keep(self) -> None:
        """From now on, write the log file (with what was held so far)."""
        if not isinstance(self.file, io.StringIO):
            return
        held = self.file.getvalue()
        self.file = open(self.path, "a", buffering=1)
        self.file.write(held)
        self.out.log = self.err.log = self.file

    def close(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if sys.stdout is self.out:
            sys.stdout, sys.stderr = self.saved
        self.file.close()
