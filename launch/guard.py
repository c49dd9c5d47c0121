"""The launcher's watchdog.

``distgrad-launch`` forks it into a session of its own, holding the write end of a
pipe it reads. When the launcher ends in a way it could not handle (SIGKILL, the
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


def watch(pid: int, start: str, grace: float, fd: int) -> None:
    """Wait for the end of the pipe ``fd``; then stop the job of mpiexec ``pid`` (with
    start time ``start``) if it is still running."""
    while os.read(fd, 4096):  # the launcher never writes: this returns at its end
        pass
    if start_time(pid) != start:
        return
    sys.stderr.write(f"distgrad-launch (guard on {socket.gethostname()}): the launcher is gone and its job "
                     f"(mpiexec pid {pid}) is still running; stopping every rank\n")
    sys.stderr.flush()
    try:
        os.kill(pid, signal.SIGINT)
    except OSError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if start_time(pid) != start:
            return
        time.sleep(0.1)
    procs = tree(pid)
    if start_time(pid) == start:
        sys.stderr.write(f"distgrad-launch (guard): the job did not stop within {grace:g} s; killing "
                         f"mpiexec and the {len(procs) - 1} processes below it\n")
        kill_all(procs)


def _name_me(name: bytes) -> None:
    """The process name ``ps`` and ``top`` show (Linux; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name, 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def start_guard(pid: int, grace: float, keep=()) -> tuple:
    """Fork the guard for mpiexec ``pid``: (the guard's pid, the file descriptor whose
    closing, at the launcher's end however it ends, sets it off). ``keep``: the
    descriptors that stay the launcher's alone (the job's output pipes)."""
    start = start_time(pid)
    read, write = os.pipe()
    # The signals stay blocked across the fork: the child runs Python's after-fork
    # code with the launcher's handlers still installed, and a Ctrl-C landing there
    # would raise inside it. The parent gets a blocked signal the moment it unblocks.
    stops = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        child = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if child == 0:
        try:
            # A Ctrl-C or hang-up meant for the launcher's group while the guard was
            # still in it is dropped; after setsid none reaches it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.setsid()  # no Ctrl-C from the terminal, no hang-up with the launcher's group
            _name_me(b"distgrad-guard")
            os.close(write)
            for fd in keep:
                os.close(fd)
            watch(pid, start, grace, read)
        finally:
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(read)
    return child, write


def stop_guard(guard: tuple) -> None:
    """The job is over: the guard leaves at once."""
    child, write = guard
    os.close(write)
    try:
        os.waitpid(child, 0)
    except ChildProcessError:
        pass
