"""``distgrad.profiler``: where a step's time goes, as ``torch.profiler``.

``with profile() as prof:`` records, per thread, what the program does: module
forwards (``nn.Module: Linear``), backward passes, optimizer steps
(``Optimizer.step#AdamW.step``), ``record_function`` ranges of one's own, and, under
``DistributedDataParallel``, each gradient bucket's life: when backward made it
ready (an instant on the main thread) and its all-reduce on the communication thread
(start, end, bytes). ``prof.export_chrome_trace(path)`` writes the Chrome trace-event
JSON that Perfetto and chrome://tracing open (one process per rank, one track per
thread, timestamps in microseconds of the wall clock, so the files of several ranks
line up); ``prof.key_averages().table()`` sums the events by name.

Nothing is recorded outside a ``profile`` region: each hook point checks one
attribute.
"""
from __future__ import annotations

import contextlib
import enum
import functools
import json
import os
import threading
import time

__all__ = ["ProfilerActivity", "profile", "record_function", "current", "merge_chrome_traces"]


class ProfilerActivity(enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"


class _State:
    profiler = None       # the active ``profile``, or None


_state = _State()
# The wall clock at the perf-counter's zero: timestamps are wall-clock microseconds,
# comparable between processes (and ranks) on hosts whose clocks agree.
_EPOCH_US = time.time() * 1e6 - time.perf_counter() * 1e6


def _now_us() -> float:
    return _EPOCH_US + time.perf_counter() * 1e6


def current():
    """The active profiler, or None (what hook points test)."""
    return _state.profiler


class _Event:
    __slots__ = ("name", "cat", "ts", "dur", "tid", "args", "ph")

    def __init__(self, name, cat, ts, dur, tid, args=None, ph="X"):
        self.name, self.cat, self.ts, self.dur, self.tid, self.args, self.ph = name, cat, ts, dur, tid, args, ph


class _Range:
    """A timed range recorded into the active profiler when it ends."""

    __slots__ = ("prof", "name", "cat", "args", "t0")

    def __init__(self, prof, name, cat, args=None):
        self.prof, self.name, self.cat, self.args = prof, name, cat, args

    def __enter__(self):
        self.t0 = _now_us()
        return self

    def __exit__(self, *exc):
        t1 = _now_us()
        self.prof._add(_Event(self.name, self.cat, self.t0, t1 - self.t0, threading.get_ident(), self.args))
        return False


def span(name: str, cat: str = "cpu_op", **args):
    """A context manager timing ``name`` into the active profiler (nothing when none is)."""
    prof = _state.profiler
    if prof is None:
        return contextlib.nullcontext()
    return _Range(prof, name, cat, args or None)


def instant(name: str, cat: str = "cpu_instant_event", **args) -> None:
    """A point in time on this thread's track (nothing when no profiler is active)."""
    prof = _state.profiler
    if prof is not None:
        prof._add(_Event(name, cat, _now_us(), 0.0, threading.get_ident(), args or None, ph="i"))


class record_function(contextlib.ContextDecorator):
    """A named range of one's own code in the trace (context manager or decorator), as
    ``torch.profiler.record_function``."""

    def __init__(self, name: str, args: str | None = None):
        self.name = name
        self.args = args
        self._range = None

    def __enter__(self):
        prof = _state.profiler
        if prof is not None:
            self._range = _Range(prof, self.name, "user_annotation", {"args": self.args} if self.args else None)
            self._range.__enter__()
        return self

    def __exit__(self, *exc):
        if self._range is not None:
            self._range.__exit__(*exc)
            self._range = None
        return False


class _Averages(list):
    """Events summed by name (``key_averages()``), with ``table()``."""

    def table(self, sort_by: str = "cpu_time_total", row_limit: int = 100, **_ignored) -> str:
        key = {"cpu_time_total": lambda r: -r["total_us"], "count": lambda r: -r["count"]}.get(
            sort_by.replace("self_", ""), lambda r: -r["total_us"])
        rows = sorted(self, key=key)[:row_limit]
        width = max([len("Name")] + [len(r["name"]) for r in rows])
        lines = [f"{'Name':<{width}}  {'Calls':>7}  {'Total (ms)':>11}  {'Avg (us)':>10}", "-" * (width + 34)]
        for r in rows:
            lines.append(f"{r['name']:<{width}}  {r['count']:>7}  {r['total_us'] / 1e3:>11.3f}  "
                         f"{r['total_us'] / r['count']:>10.1f}")
        return "\n".join(lines)


class profile:
    """Record what the program does inside the region (see the module's text). The
    arguments are PyTorch's; ``activities``, ``record_shapes``, ``profile_memory`` and
    ``with_stack`` are accepted, and CPU activity is what distgrad records.
    ``on_trace_ready(prof)`` is called when the region ends. As PyTorch's, it records
    each autograd node's backward (``autograd::engine::evaluate_function: MmBackward0``);
    ``record_autograd_nodes=False`` leaves them out (a shorter trace)."""

    def __init__(self, *, activities=None, schedule=None, on_trace_ready=None, record_shapes=False,
                 profile_memory=False, with_stack=False, with_flops=False, with_modules=False,
                 experimental_config=None, use_cuda=None, record_autograd_nodes=True):
        self.activities = set(activities or [ProfilerActivity.CPU])
        self.record_autograd_nodes = record_autograd_nodes
        self.on_trace_ready = on_trace_ready
        self.events = []
        self._lock = threading.Lock()
        self._threads = {}
        self._previous = None
        self.rank = _rank()

    # ---------------------------------------------------------------- recording
    def _add(self, event: _Event) -> None:
        with self._lock:
            self.events.append(event)
            if event.tid not in self._threads:
                self._threads[event.tid] = _thread_name(event.tid)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self) -> None:
        self._previous = _state.profiler
        _state.profiler = self

    def stop(self) -> None:
        _state.profiler = self._previous
        if self.on_trace_ready is not None:
            self.on_trace_ready(self)

    def step(self) -> None:
        """Mark the end of a training step (an instant on the main thread)."""
        instant("ProfilerStep")

    # ----------------------------------------------------------------- results
    def key_averages(self, group_by_input_shape: bool = False) -> _Averages:
        sums = {}
        for e in self.events:
            if e.ph != "X":
                continue
            r = sums.setdefault(e.name, {"name": e.name, "count": 0, "total_us": 0.0})
            r["count"] += 1
            r["total_us"] += e.dur
        return _Averages(sums.values())

    def trace_events(self) -> list:
        """This profiler's events in Chrome's trace-event format (a list of dicts)."""
        pid = self.rank
        out = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                "args": {"name": f"rank {pid}" if pid is not None else f"pid {os.getpid()}"}}]
        pid = pid if pid is not None else os.getpid()
        out[0]["pid"] = pid
        for tid, name in self._threads.items():
            out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
        for e in self.events:
            d = {"name": e.name, "cat": e.cat, "ph": e.ph, "ts": round(e.ts, 3), "pid": pid, "tid": e.tid}
            if e.ph == "X":
                d["dur"] = round(e.dur, 3)
            else:
                d["s"] = "t"
            if e.args:
                d["args"] = e.args
            out.append(d)
        return out

    def export_chrome_trace(self, path: str) -> None:
        """Write the trace as Chrome trace-event JSON (complete and then renamed into
        place, so a reader never sees half a file)."""
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"traceEvents": self.trace_events(), "displayTimeUnit": "ms"}, f)
        os.replace(tmp, path)


def _rank():
    try:
        from ..distributed import group

        return group.get_rank() if group.is_initialized() else None
    except Exception:  # no process group machinery: a plain process
        return None


def _thread_name(tid: int) -> str:
    for t in threading.enumerate():
        if t.ident == tid:
            return "main thread" if t is threading.main_thread() else t.name
    return f"thread {tid}"


def timed_method(name_of):
    """Decorate a method so that, under a profiler, each call is a range named
    ``name_of(self)`` (how optimizer steps are recorded)."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args, **kwargs):
            if _state.profiler is None:
                return fn(self, *args, **kwargs)
            with _Range(_state.profiler, name_of(self), "cpu_op"):
                return fn(self, *args, **kwargs)
        return inner
    return wrap


def merge_chrome_traces(paths, out_path: str) -> None:
    """Merge the Chrome traces of several ranks (each its own process in the trace)
    into one file, written completely before it takes ``out_path``'s name."""
    events = []
    for p in paths:
        with open(p) as f:
            events.extend(json.load(f)["traceEvents"])
    tmp = f"{out_path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    os.replace(tmp, out_path)
