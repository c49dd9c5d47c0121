"""Bringing the whole job down when one rank fails.

An uncaught exception on one rank would otherwise leave the other ranks waiting
in a collective forever. ``install`` replaces the exception hooks so that such an
exception prints a message naming the rank, then aborts the MPI job, which makes
``mpiexec`` end every rank within seconds.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback

_state = {"installed": False, "comm": None}


def _report_and_abort(exc_type, exc, tb, where: str) -> None:
    comm = _state["comm"]
    rank = comm.rank if comm is not None else 0
    size = comm.size if comm is not None else 1
    lines = traceback.format_exception(exc_type, exc, tb)
    msg = "".join(f"[rank {rank}] {line}" for text in lines for line in text.splitlines(True))
    sys.stderr.write(
        f"[rank {rank}] distgrad: uncaught {exc_type.__name__} {where} on rank {rank} of {size}: "
        f"{exc}\n{msg}"
    )
    if size > 1:
        sys.stderr.write(f"[rank {rank}] distgrad: aborting the job so the other ranks do not wait forever\n")
    sys.stderr.flush()
    sys.stdout.flush()
    if comm is not None and size > 1:
        # A moment for mpiexec to relay the message: aborting tears down its output
        # forwarding, which could otherwise drop it.
        time.sleep(0.3)
        comm.abort(1)


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
