"""Bringing the whole job down when one rank fails.

An uncaught exception on one rank would otherwise leave the other ranks waiting
in a collective forever. ``install`` replaces the exception hooks so that such an
exception prints a message naming the rank, its host and what it was doing (from
``monitor``), lets the callbacks registered with ``on_fatal`` record it (the
trainer writes it into the run's summary), then aborts the MPI job, which makes
``mpiexec`` end every rank within seconds.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback

from . import monitor

_state = {"installed": False, "comm": None, "callbacks": []}


def on_fatal(callback) -> None:
    """``callback(exc_type, exc, where)`` runs when this rank is about to abort the job."""
    _state["callbacks"].append(callback)


def clear_callbacks() -> None:
    _state["callbacks"].clear()


def _report_and_abort(exc_type, exc, tb, where: str) -> None:
    comm = _state["comm"]
    rank = comm.rank if comm is not None else 0
    size = comm.size if comm is not None else 1
    me = f"rank {rank} ({monitor.HOST})"
    lines = traceback.format_exception(exc_type, exc, tb)
    msg = "".join(f"[{me}] {line}" for text in lines for line in text.splitlines(True))
    sys.stderr.write(
        f"[{me}] distgrad: uncaught {exc_type.__name__} {where} on rank {rank} of {size} "
        f"(host {monitor.HOST}) at {monitor.describe()}: {exc}\n{msg}"
    )
    for callback in list(_state["callbacks"]):
        try:
            callback(exc_type, exc, where)
        except Exception as e:  # recording must not stop the abort
            sys.stderr.write(f"[{me}] distgrad: could not record the failure: {e}\n")
    if size > 1:
        sys.stderr.write(f"[{me}] distgrad: aborting the job so the other ranks do not wait forever\n")
    sys.stderr.flush()
    sys.stdout.flush()
    if comm is not None and size > 1:
        # A moment for mpiexec to relay the message: aborting tears down its output
        # forwarding, which could otherwise drop it.
        time.sleep(0.3)
        comm.abort(1)


def abort_job(message: str) -> None:
    """Report ``message`` as this rank's failure and bring the whole job down (for an
    exit that is not an exception, such as ``sys.exit`` in the middle of training)."""
    _report_and_abort(SystemExit, SystemExit(message), None, "in the main thread")


def install(comm) -> None:
    """Abort the whole job on an uncaught exception in any thread of this rank."""
    _state["comm"] = comm
    if _state["installed"]:
        return
    _state["installed"] = True
    previous_hook = sys.excepthook
    previous_thread_hook = threading.excepthook

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt) or _state["comm"] is None:
            return previous_hook(exc_type, exc, tb)
        _report_and_abort(exc_type, exc, tb, "in the main thread")

    def thread_hook(args):
        if _state["comm"] is None or args.exc_type is SystemExit:
            return previous_thread_hook(args)
        _report_and_abort(args.exc_type, args.exc_value, args.exc_traceback,
                          f"in thread {args.thread.name if args.thread else '?'}")

    sys.excepthook = hook
    threading.excepthook = thread_hook


def uninstall() -> None:
    _state["comm"] = None
