"""The launcher's watchdog: ``python -m launch.guard PID START GRACE``.

``distgrad-launch`` starts it in a session of its own, holding a pipe to its
standard input. When the launcher ends in a way it could not handle (SIGKILL, the
out-of-memory killer), the pipe closes: if the job's mpiexec (PID, with start time
START) is still running, the guard interrupts it as Ctrl-C would (mpiexec passes
that to every rank on every host) and, after GRACE seconds, kills it and every
process below it (which also takes down its proxies on the other hosts, and with
them their ranks). When the launcher ends normally the job is already over, and
the guard leaves without a word.
"""
import os
import signal
import socket
import sys
import time

from .procs import kill_all, start_time, tree


def main(argv=None) -> int:
    pid, start, grace = (argv or sys.argv[1:])[:3]
    pid, grace = int(pid), float(grace)
    while os.read(0, 4096):  # the launcher never writes: this returns at its end
        pass
    if start_time(pid) != start:
        return 0
    sys.stderr.write(f"distgrad-launch (guard on {socket.gethostname()}): the launcher is gone and its job "
                     f"(mpiexec pid {pid}) is still running; stopping every rank\n")
    sys.stderr.flush()
    try:
        os.kill(pid, signal.SIGINT)
    except OSError:
        return 0
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if start_time(pid) != start:
            return 0
        time.sleep(0.1)
    procs = tree(pid)
    if start_time(pid) == start:
        sys.stderr.write(f"distgrad-launch (guard): the job did not stop within {grace:g} s; killing "
                         f"mpiexec and the {len(procs) - 1} processes below it\n")
        kill_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
