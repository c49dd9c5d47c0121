"""Process trees from Linux's /proc (the launcher's own cleanup, without psutil)."""
from __future__ import annotations

import os
import signal


def _stat(pid: int):
    """(ppid, start time) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[19]
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int):
    st = _stat(pid)
    return st[1] if st else None


def tree(pid: int) -> list:
    """[(pid, start time)] of ``pid`` and every process below it ([(pid, None)] where
    /proc cannot be read)."""
    try:
        entries = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return [(pid, None)]
    children, starts = {}, {}
    for p in entries:
        st = _stat(p)
        if st is not None:
            children.setdefault(st[0], []).append(p)
            starts[p] = st[1]
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append((p, starts.get(p)))
        todo.extend(children.get(p, []))
    return out


def kill_all(procs: list, sig=signal.SIGKILL) -> None:
    """Signal each (pid, start time) that is still the same process (deepest first)."""
    for pid, start in reversed(procs):
        if start is not None and start_time(pid) != start:
            continue  # gone, and the number taken by another process
        try:
            os.kill(pid, sig)
        except OSError:  # already gone
            continue
