"""Where each rank is, and the stall report.

One place records what this rank is doing: the step, the phase (startup, data,
forward, backward, optimizer, eval, save, ...), a detail (which bucket, which
batch) and the collective it is waiting in, if any. Every failure message reads
it, and so does the stall report.

With several ranks, a watcher thread on every rank sends its whereabouts to rank 0
when they change (at most every ``PERIOD`` seconds) and as a heartbeat; rank 0
sends its own to every rank. A rank waiting in a collective therefore knows which
ranks have not joined it and where each of them last was, which is what the stall
report prints (rank 0 prints the whole table; another rank speaks only when rank 0
itself has not joined). A rank that leaves the job (finished, stopped, or exiting
early) says so, and a rank waiting for it fails at once instead of waiting out
its timeout. The watcher has its own communicator and only ever probes, receives
and sends small messages without blocking, so it never pairs with a collective.
"""
from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time

PERIOD = 0.05         # seconds between the watcher's rounds
HEARTBEAT = 1.0       # seconds between messages when nothing changed
_LEFT_GRACE = 1.0     # seconds a departed rank must stay missing before a wait gives up
_SPINS = 2000         # tests of a collective, with a yield between, before a wait sleeps
# Phases told to the others at once, from the thread that enters them (once a step or
# less, so cheap); the rest are sent by the watcher, at most every PERIOD. A rank
# entering a wait tells at once too: it has nothing better to do.
_TELL_AT_ONCE = {"data", "optimizer", "eval", "save", "resume", "done"}
_TAG = 7301
HOST = socket.gethostname()


class _State:
    """This rank's whereabouts. Written by the main thread (plain attribute stores,
    cheap enough for a few per step), read by the watcher."""

    def __init__(self):
        self.rank = 0
        self.size = 1
        self.step = 0
        self.phase = "startup"
        self.detail = ""
        self.since = time.time()
        self.wait = None        # (key, what, start time) while in a bounded wait
        self.left = None        # why this rank left the job: 'finished', 'stopped: ...', 'exited: ...'
        self.version = 0        # bumped on every change, so the watcher knows when to send

    def snapshot(self) -> tuple:
        return self.step, self.phase, self.detail, self.since, self.wait, self.left


state = _State()


def at(phase: str, step: int | None = None, detail: str | None = None) -> None:
    """Record that this rank is now in ``phase`` (of ``step``); without ``detail``,
    a phase that does not change keeps its detail."""
    s = state
    if step is not None:
        s.step = step
    if detail is None:
        if phase == s.phase:
            return
        detail = ""
    told = phase in _TELL_AT_ONCE and phase != s.phase
    s.phase, s.detail, s.since = phase, detail, time.time()
    s.version += 1
    if told and _watcher is not None:
        _watcher.send(force=True)


def _inject_faults(spec: str) -> None:
    """``DISTGRAD_TEST_FAULT=KIND@RANK:PHASE:STEP[,...]``: when rank RANK enters PHASE of
    STEP, it stops itself (SIGSTOP), is killed (SIGKILL), exits (``sys.exit(0)``),
    raises, or sleeps N seconds (``sleep5``). The fault suite uses this to put a
    fault exactly where it wants; without the variable ``at`` is not wrapped."""
    import signal

    faults = {}
    for item in spec.split(","):
        kind, _, where = item.partition("@")
        rank, phase, step = where.split(":")
        faults[(int(rank), phase, int(step))] = kind
    plain = at

    def at_with_faults(phase, step=None, detail=None):
        plain(phase, step, detail)
        kind = faults.pop((state.rank, phase, state.step), None)
        if kind is None:
            return
        sys.stderr.write(f"[{whoami()}] test fault: {kind} at step {state.step}, {phase}\n")
        sys.stderr.flush()
        if kind == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "exit":
            sys.exit(0)
        elif kind == "raise":
            raise RuntimeError(f"test fault at step {state.step}, {phase}")
        elif kind.startswith("sleep"):
            time.sleep(float(kind[5:]))

    globals()["at"] = at_with_faults


def describe(snap=None, now: float | None = None) -> str:
    """'step 12, eval (batch 3), for 4.1 s' for this rank (or a peer's snapshot)."""
    step, phase, detail, since, wait, left = snap if snap is not None else state.snapshot()
    now = time.time() if now is None else now
    text = f"step {step}, {phase}" + (f" ({detail})" if detail else "")
    if wait is not None:
        text += f", waiting in {wait[1]}"
    if left:
        text += f"; left the job ({left})"
    return text + f", for {max(0.0, now - since):.1f} s"


def whoami() -> str:
    return f"rank {state.rank} ({HOST}, pid {os.getpid()})"


class PeerLeft(RuntimeError):
    """A rank this one waits for has left the job: the collective can never finish."""


class CollectiveTimeout(RuntimeError):
    """A collective waited longer than the job's timeout."""


class _Watcher:
    def __init__(self, mpi_comm, report_after: float):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = mpi_comm
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        self.report_after = report_after
        self.peers = {}           # rank -> (host, pid, snapshot, received at)
        self.pending = []         # send requests not yet complete
        self.sent_version = -1
        self.sent_at = 0.0
        self.reported = {}        # wait key -> time of the last report
        self.zero_missing = None  # what rank 0 last said had not joined its wait
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="distgrad-monitor", daemon=True)
        self.thread.start()

    # --------------------------------------------------------------- messages
    def send(self, force: bool = False) -> None:
        """Send this rank's whereabouts if they changed (or a heartbeat is due)."""
        with self.send_lock:
            now = time.time()
            if not force and state.version == self.sent_version and now - self.sent_at < HEARTBEAT:
                return
            self.pending = [r for r in self.pending if not r.Test()]
            if len(self.pending) > 64:  # a peer is not draining: do not pile up
                return
            self.sent_version, self.sent_at = state.version, now
            msg = (self.rank, HOST, os.getpid(), state.snapshot(), self._missing_for_others())
            targets = range(1, self.size) if self.rank == 0 else (0,)
            for dest in targets:
                self.pending.append(self.comm.isend(msg, dest=dest, tag=_TAG))

    def _receive(self) -> None:
        status = self.MPI.Status()
        while self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=_TAG, status=status):
            rank, host, pid, snap, missing = self.comm.recv(source=status.Get_source(), tag=_TAG)
            with self.lock:
                self.peers[rank] = (host, pid, snap, time.time())
                if rank == 0:
                    self.zero_missing = missing

    def _missing_for_others(self):
        """Rank 0 tells the others which ranks have not joined its current wait, so
        that any rank can name them."""
        wait = state.wait
        if self.rank != 0 or wait is None:
            return None
        return [(r, host, pid, snap) for r, host, pid, snap, _ in self.not_joined(wait[0])]

    def _run(self) -> None:
        while not self.stop.wait(PERIOD):
            try:
                self.send()
                self._receive()
                self._check_stall()
            except Exception as e:  # the watcher must never take the rank down
                sys.stderr.write(f"[{whoami()}] distgrad: the stall monitor stopped: {e}\n")
                return

    def close(self, timeout: float = 1.0, together: bool = False) -> None:
        """Tell the others this rank's final whereabouts, then stop. ``together``: every
        rank is leaving now (the run ended): they meet, and each takes the messages
        still addressed to it, so that none is left unreceived when MPI finalizes
        (network transports warn of those)."""
        self.stop.set()
        self.thread.join(timeout)
        try:
            self.send(force=True)
            deadline = time.monotonic() + timeout
            if together:
                met = self.comm.Ibarrier()
                while not met.Test() and time.monotonic() < deadline:
                    self._receive()
                    time.sleep(0.002)
                quiet = time.monotonic() + 0.02
                while time.monotonic() < min(quiet, deadline):
                    if self.comm.iprobe(source=self.MPI.ANY_SOURCE, tag=_TAG):
                        self._receive()
                        quiet = time.monotonic() + 0.02
                    else:
                        time.sleep(0.002)
            while self.pending and time.monotonic() < deadline:
                self.pending = [r for r in self.pending if not r.Test()]
                time.sleep(0.005)
            for r in self.pending:  # a peer that is gone will never take them
                r.Cancel()
        except Exception:  # leaving anyway; nothing more to tell
            return

    # ------------------------------------------------------------- the table
    def not_joined(self, key) -> list:
        """[(rank, host, pid, snapshot, heard at)] of the peers this rank knows of that
        are not waiting in the collective ``key``. Rank 0 knows every rank; another
        rank knows only rank 0."""
        with self.lock:
            known = dict(self.peers)
        ranks = range(self.size) if self.rank == 0 else (0,)
        out = []
        for r in ranks:
            if r == self.rank:
                continue
            host, pid, snap, heard = known.get(r, ("?", "?", None, None))
            if snap is None or snap[4] is None or snap[4][0] != key:
                out.append((r, host, pid, snap, heard))
        return out

    def departed(self) -> list:
        with self.lock:
            return [(r, p[0], p[2][5]) for r, p in self.peers.items() if p[2][5]]

    def table(self, key, now: float) -> str:
        lines = []
        rows = self.not_joined(key)
        if self.rank != 0 and not rows and self.zero_missing:
            # Rank 0 is in this wait too; it has said who is missing.
            rows = [(r, host, pid, snap, None) for r, host, pid, snap in self.zero_missing if r != self.rank]
        for r, host, pid, snap, heard in rows:
            if snap is None:
                lines.append(f"  rank {r}: never heard from (it may not have started, or be stopped)")
                continue
            heard_text = "as rank 0 last heard" if heard is None else f"last heard {now - heard:.1f} s ago"
            lines.append(f"  rank {r} ({host}, pid {pid}): {describe(snap, now)}; {heard_text}")
        return "\n".join(lines)

    def _check_stall(self) -> None:
        wait = state.wait
        if wait is None or self.report_after <= 0:
            return
        key, what, start = wait
        now = time.time()
        waited = now - start
        if waited < self.report_after or now - self.reported.get(key, 0.0) < self.report_after:
            return
        missing = self.not_joined(key)
        if self.rank != 0 and not any(r == 0 for r, *_ in missing):
            return  # rank 0 is waiting too: it prints the report
        self.reported[key] = now
        if len(self.reported) > 256:
            self.reported = {key: now}
        who = "these ranks have" if self.rank == 0 else "rank 0 has"
        sys.stderr.write(
            f"[{whoami()}] distgrad: stall: waiting {waited:.1f} s in {what}; {who} not joined "
            f"it:\n{self.table(key, now) or '  (none known: waiting for the transfer itself)'}\n")
        sys.stderr.flush()


_watcher: _Watcher | None = None


def start(comm, report_after: float) -> None:
    """Begin watching (called by ``init_process_group`` on every rank)."""
    global _watcher
    state.rank, state.size = comm.rank, comm.size
    state.left = None
    mpi_comm = getattr(comm, "comm", None)
    if comm.size > 1 and mpi_comm is not None and _watcher is None:
        _watcher = _Watcher(mpi_comm.Dup(), report_after)


@atexit.register
def _on_exit() -> None:
    # A rank whose process ends while the others may still need it (sys.exit in the
    # middle of training, a script that ends early) says so, so nobody waits for it.
    # Then it meets the others as destroy_process_group does (for at most the close's
    # second), taking the messages still addressed to it: a script that ends without
    # destroy_process_group, as PyTorch scripts often do, has every rank here at about
    # the same time, and over a network UCX would warn at MPI_Finalize of each message
    # left unreceived. A rank that leaves early waits that second for nothing.
    if _watcher is not None:
        leave(f"its process exited at step {state.step} during {state.phase}", together=True)


def leave(why: str, together: bool = False) -> None:
    """This rank leaves the job (``finished``, ``stopped: ...``, ``exited: ...``): tell
    the others, so none of them waits for it. ``together``: every rank leaves now."""
    global _watcher
    state.left = why
    state.version += 1
    if _watcher is not None:
        _watcher.close(together=together)
        _watcher = None


def wait(done, what: str, key, timeout: float | None) -> None:
    """Wait until ``done()`` is true, for at most ``timeout`` seconds. While waiting
    this rank shows as being in ``what`` (the collective ``key``); the wait fails at
    once if a rank it needs has left the job, and after ``timeout`` with the ranks
    that have not joined and where they were. ``done`` is polled with short sleeps
    (polling drives MPI's progress); given a ``threading.Event`` instead, the wait
    sleeps on it."""
    event = done if isinstance(done, threading.Event) else None
    if event is not None:
        done = event.is_set
    if done():
        return
    start_time = time.time()
    state.wait = (key, what, start_time)
    state.version += 1
    if _watcher is not None and state.rank != 0:  # rank 0 tells every rank: at its own pace
        _watcher.send(force=True)
    try:
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        next_check, spins, pause = now + PERIOD, 0, 50e-6
        gone_since = None
        while not done():
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise CollectiveTimeout(_timeout_message(what, key, timeout))
            if now >= next_check:
                next_check = now + PERIOD
                gone = _blocking_departures(key)
                # A rank that joined, then left, may only seem missing until this rank's
                # side of the collective completes: give it a moment.
                gone_since = (gone_since or now) if gone else None
                if gone and now - gone_since > _LEFT_GRACE:
                    raise PeerLeft(f"{whoami()}: {what} can never finish: {gone}")
            if event is not None:
                event.wait(PERIOD)
            elif spins < _SPINS:  # most waits end within a few ms: test often at first
                spins += 1
                time.sleep(0)
            else:
                time.sleep(pause)
                pause = min(pause * 2, 2e-3)
    finally:
        state.wait = None
        state.version += 1


def _blocking_departures(key) -> str:
    w = _watcher
    if w is None:
        return ""
    missing = {r for r, *_ in w.not_joined(key)}
    gone = [(r, host, why) for r, host, why in w.departed() if r in missing]
    return "; ".join(f"rank {r} ({host}) has left the job ({why})" for r, host, why in gone)


def _timeout_message(what: str, key, timeout: float) -> str:
    msg = (f"{whoami()}: {what} did not complete within {timeout:g} s (the collective timeout); "
           "another rank may have failed, be stopped or be stuck")
    if _watcher is None:
        return msg
    table = _watcher.table(key, time.time())
    if table:
        return f"{msg}. These ranks had not joined it:\n{table}"
    return f"{msg}. Every rank this one knows of had joined it (a slow or broken link?)"


if os.environ.get("DISTGRAD_TEST_FAULT"):
    _inject_faults(os.environ["DISTGRAD_TEST_FAULT"])
