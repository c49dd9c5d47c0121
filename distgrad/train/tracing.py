"""Timelines of chosen training steps (``train.trace_steps``, ``distgrad-launch
--trace``): every rank records its steps with ``distgrad.profiler``, and at the end of
each traced window rank 0 gathers the events, puts every rank's clock onto its own
time axis and writes ``trace.json`` into the run directory (Chrome trace-event JSON,
which Perfetto and chrome://tracing open): one process per rank, a track for the main
thread (data, forward, backward, optimizer step, evaluation, checkpoint save, module
forwards) and one for the communication thread (each gradient bucket's all-reduce,
with its bytes), with each bucket's "ready" instant on the main thread.

A later window rewrites the file with every traced step so far, so ``trace.json``
is always complete. Untraced steps pay one attribute test per hook point.
"""
from __future__ import annotations

import json
import os
import socket
import time

from .. import profiler
from ..distributed.group import default_comm, run_with_timeout
from . import records

TRACE_FILE = "trace.json"
_TAG = 7301            # point-to-point tag of the clock exchange
_ROUNDS = 8


def clock_offsets(comm, rounds: int = _ROUNDS) -> list:
    """Each rank's wall clock minus rank 0's, in microseconds (0.0 for rank 0), from
    ``rounds`` ping-pongs between rank 0 and every other rank, taking the round with
    the shortest round trip (its error is at most half that trip). Every rank
    calls it; all of them get the list. Without point-to-point messages (a
    communicator that is not MPI's) every offset is taken as 0."""
    mpi = getattr(comm, "comm", None)
    size = getattr(comm, "size", 1)
    if size == 1 or mpi is None or not hasattr(mpi, "send"):
        return [0.0] * size
    now = profiler._now_us
    offsets = [0.0] * size
    if comm.rank == 0:
        for r in range(1, size):
            best = None
            for _ in range(rounds):
                t0 = now()
                mpi.send(None, dest=r, tag=_TAG)
                theirs = mpi.recv(source=r, tag=_TAG)
                t1 = now()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, theirs - (t0 + t1) / 2)
            offsets[r] = best[1]
    else:
        for _ in range(rounds):
            mpi.recv(source=0, tag=_TAG)
            mpi.send(now(), dest=0, tag=_TAG)
    return mpi.bcast(offsets, root=0)


def parse_steps(text: str) -> list:
    """'5', '5-7', '3,8-9' as a sorted list of steps (ValueError naming the part)."""
    steps = set()
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise ValueError(f"{part!r} is not a step or a range of steps (e.g. 5, 5-7, 3,8-9)") from None
        if a < 1 or b < a:
            raise ValueError(f"{part!r}: steps count from 1 and a range goes upwards (e.g. 5-7)")
        steps.update(range(a, b + 1))
    return sorted(steps)


class StepTracer:
    """Records the steps in ``steps`` (the same list on every rank: ending a window is
    a collective) and writes the merged trace."""

    def __init__(self, run_dir: str, rank: int, world: int, steps, total_steps: int, nodes: bool = False):
        self.run_dir, self.rank, self.world, self.nodes = run_dir, rank, world, nodes
        self.steps = {s for s in steps if 1 <= s <= total_steps}
        self.prof = None
        self.step_range = None
        self.offsets = None
        self.overlap = {}      # step -> this rank's overlap figures
        self.windows = []      # (first, last) step of each written window
        self.first = None
        self.gathered = []     # rank 0: every rank's events of the windows so far

    def path(self) -> str:
        return os.path.join(self.run_dir, TRACE_FILE)

    def before(self, step: int) -> None:
        """Called before ``step``'s data is loaded: start recording if it is traced."""
        if step not in self.steps:
            return
        if self.prof is None:
            self.prof = profiler.profile(record_autograd_nodes=self.nodes)
            self.prof.start()
            self.first = step
        self.step_range = profiler._Range(self.prof, f"ProfilerStep#{step}", "step", {"step": step})
        self.step_range.__enter__()

    def after(self, step: int, overlap: dict | None) -> None:
        """Called when ``step`` (with its evaluation and checkpoint) is over."""
        if self.step_range is None:
            return
        self.step_range.__exit__(None, None, None)
        self.step_range = None
        if overlap is not None:
            self.overlap[step] = overlap
        if step + 1 not in self.steps:
            self._end_window(step)

    def close(self) -> None:
        """Stop recording without writing (a failed run: the others may not take part
        in a collective any more)."""
        if self.prof is not None:
            self.prof.stop()
            self.prof = None

    def _end_window(self, last: int) -> None:
        prof, self.prof = self.prof, None
        prof.stop()
        comm = default_comm() if self.world > 1 else None
        if self.offsets is None:
            self.offsets = ([0.0] if comm is None else
                            run_with_timeout(lambda: clock_offsets(comm), "the clock alignment of the trace"))
        mine = {"rank": self.rank, "host": socket.gethostname(), "events": prof.trace_events(),
                "overlap": {str(s): v for s, v in self.overlap.items() if self.first <= s <= last}}
        every = ([mine] if comm is None else
                 run_with_timeout(lambda: comm.allgather_object(mine), f"the trace gather after step {last}"))
        self.windows.append((self.first, last))
        if self.rank != 0:
            return
        self.gathered.append(every)
        records.atomic_write(self.path(), json.dumps(self._merged()))

    def _merged(self) -> dict:
        events, overlap, hosts, seen = [], {}, {}, set()
        for every in self.gathered:
            for part in every:
                r = part["rank"]
                shift = -self.offsets[r] if r < len(self.offsets) else 0.0
                hosts[r] = part["host"]
                for e in part["events"]:
                    e = dict(e)
                    if e["ph"] == "M":
                        if e["name"] == "process_name":
                            e["args"] = {"name": f"rank {r} ({part['host']})"}
                        elif e["name"] == "thread_name" and e["args"]["name"] == "distgrad-reducer":
                            e["args"] = {"name": "communication (distgrad-reducer)"}
                        key = (e["name"], e["pid"], e["tid"])
                        if key in seen:
                            continue  # the same metadata from an earlier window
                        seen.add(key)
                    else:
                        e["ts"] = round(e["ts"] + shift, 3)
                    events.append(e)
                for s, v in part["overlap"].items():
                    overlap.setdefault(s, {})[str(r)] = v
        for r in hosts:
            events.append({"ph": "M", "name": "process_sort_index", "pid": r, "tid": 0, "args": {"sort_index": r}})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"producer": "distgrad", "run_dir": self.run_dir, "created": time.time(),
                              "steps": [list(w) for w in self.windows],
                              "clock_offsets_us": [round(o, 3) for o in self.offsets],
                              "hosts": {str(r): h for r, h in sorted(hosts.items())},
                              "overlap": overlap}}
