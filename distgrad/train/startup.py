"""The start-up handshake: before anything else, every rank tells rank 0 whether it
can read the run directory and whether its ``config.toml`` is the one the launcher
wrote, and rank 0 answers for all. A rank on a host that does not see the run
directory (no shared filesystem, a path that differs between hosts) is named with
its host and the path, and every rank stops; a rank that never reports is named
when the start-up timeout runs out. Nobody waits forever.

Rank 0 also writes ``ranks.json`` (rank, host, pid of every rank) into the run
directory, so that the launcher can name a rank that a signal killed.
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import sys
import time

HOST = socket.gethostname()
_TAG_HELLO, _TAG_VERDICT = 7301, 7302
POLL = 0.005


class StartupFailed(RuntimeError):
    """The ranks could not all start the run; the message says which and why."""


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def launched_rank() -> int:
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def launched_size() -> int:
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def check_run_dir(run_dir: str, expected_digest: str | None) -> str | None:
    """What stops this rank from reading the run, or None."""
    path = os.path.join(run_dir, "config.toml")
    if not os.path.isdir(run_dir):
        return f"the run directory {run_dir} does not exist on this host"
    try:
        mine = digest(path)
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    if expected_digest and mine != expected_digest:
        return (f"{path} on this host is not the config the launcher wrote (digest {mine}, expected "
                f"{expected_digest}): this host sees another folder at that path")
    return None


def handshake(run_dir: str, problem: str | None, timeout: float) -> list:
    """Meet every rank; [(host, pid)] by rank. Raises StartupFailed (on every rank
    that can hear rank 0) naming each rank that cannot run or did not report."""
    watchdog = _Watchdog(run_dir, timeout + 5)
    try:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD.Dup()
        try:
            return _meet(comm, MPI, run_dir, problem, timeout)
        finally:
            comm.Free()
    finally:
        watchdog.cancel()


class _Watchdog:
    """What Python cannot bound from inside: MPI_Init waits for every rank of the job
    while holding the interpreter, so a rank that never starts (an unreachable host, a
    process stuck before it joined) would keep the others in it forever. A forked
    process waits on a pipe; if this rank has not met the others in time, it says so,
    records it (rank 0) and kills this rank, which makes mpiexec end the whole job
    (on an ordinary exit it would wait for the rank that never started)."""

    def __init__(self, run_dir: str, timeout: float):
        from . import records  # noqa: F401  (loaded before the fork: the child imports nothing)

        rank, me = launched_rank(), os.getpid()
        read, self.write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self.write)
                if not select.select([read], [], [], timeout)[0]:
                    message = (f"distgrad: rank {rank} ({HOST}): the job did not start within {timeout:g} s "
                               "(dist.timeout_s): MPI is still waiting for a rank that has not started (a "
                               "host that cannot be reached, or a rank stuck before it joined); stopping")
                    os.write(2, (message + "\n").encode())
                    if rank == 0:
                        _record(run_dir, message, rank, host=HOST)
                    os.kill(me, signal.SIGKILL)
            finally:
                os._exit(0)
        os.close(read)

    def cancel(self) -> None:
        os.close(self.write)  # the watchdog sees the end of the pipe and leaves
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _meet(comm, MPI, run_dir: str, problem: str | None, timeout: float) -> list:
    rank, size = comm.Get_rank(), comm.Get_size()
    me = (rank, HOST, os.getpid(), problem)
    deadline = time.monotonic() + timeout
    if rank != 0:
        request = comm.isend(me, dest=0, tag=_TAG_HELLO)
        verdict = _receive(comm, MPI, 0, _TAG_VERDICT, deadline + 5)
        _drain(request, deadline + 5)
        if verdict is None:
            raise StartupFailed(
                f"rank {rank} ({HOST}): rank 0 did not answer the start-up handshake within "
                f"{timeout:g} s (dist.timeout_s); it may not have started, or be stuck")
        everyone, message = verdict
        if message:
            raise StartupFailed(message)
        return everyone
    heard = {0: me}
    status = MPI.Status()
    while len(heard) < size and time.monotonic() < deadline:
        if comm.iprobe(source=MPI.ANY_SOURCE, tag=_TAG_HELLO, status=status):
            msg = comm.recv(source=status.Get_source(), tag=_TAG_HELLO)
            heard[msg[0]] = msg
        else:
            time.sleep(POLL)
    lines = [f"  rank {r} ({h}, pid {p}): {why}" for r, h, p, why in sorted(heard.values()) if why]
    missing = [r for r in range(size) if r not in heard]
    if missing:
        lines.append(f"  rank{'s' if len(missing) > 1 else ''} {_ranges(missing)}: did not report within "
                     f"{timeout:g} s (dist.timeout_s) of rank 0's start")
    message = None
    if lines:
        shared = any(why for *_, why in heard.values())
        message = ("distgrad: the run cannot start; not every rank can run it:\n" + "\n".join(lines)
                   + ("\nEvery rank must see the run directory at the same path: put run.output_dir on "
                      "a filesystem that all hosts share." if shared else ""))
    everyone = [(heard[r][1], heard[r][2]) if r in heard else ("?", None) for r in range(size)]
    requests = [comm.isend((everyone, message), dest=r, tag=_TAG_VERDICT) for r in heard if r != 0]
    for request in requests:
        _drain(request, time.monotonic() + 5)
    if message is None:
        _write_ranks(run_dir, everyone)
    if missing:
        # A rank that never reported cannot be told to stop: end the whole job.
        _record(run_dir, message, missing[0])
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        comm.Abort(2)
    if message:
        first = next((r for r, *_, why in sorted(heard.values()) if why), 0)
        _record(run_dir, message, first, host=heard[first][1])
        raise StartupFailed(message)
    return everyone


def _receive(comm, MPI, source: int, tag: int, deadline: float):
    while time.monotonic() < deadline:
        if comm.iprobe(source=source, tag=tag):
            return comm.recv(source=source, tag=tag)
        time.sleep(POLL)
    return None


def _drain(request, deadline: float) -> None:
    while time.monotonic() < deadline:
        if request.Test():
            return
        time.sleep(POLL)
    request.Cancel()


def _ranges(ranks: list) -> str:
    return ", ".join(map(str, ranks)) if len(ranks) < 8 else f"{ranks[0]}..{ranks[-1]} ({len(ranks)} ranks)"


def _write_ranks(run_dir: str, everyone: list) -> None:
    from .records import atomic_write

    try:
        atomic_write(os.path.join(run_dir, "ranks.json"), json.dumps(
            [{"rank": r, "host": h, "pid": p} for r, (h, p) in enumerate(everyone)], indent=1) + "\n")
    except OSError:
        pass  # only for naming ranks after a crash; the run does not depend on it


def _record(run_dir: str, message: str, rank: int, host: str | None = None) -> None:
    from .records import write_summary

    try:
        write_summary(run_dir, status="failed", error=message.removeprefix("distgrad: "), failed_rank=rank,
                      failed_host=host or "?", failed_phase="startup", failed_step=0)
    except OSError:
        pass  # rank 0 cannot write the run directory either; the message is on stderr


def read_ranks(run_dir: str) -> list:
    """[{rank, host, pid}] as rank 0 recorded them at start-up ([] if it did not)."""
    try:
        with open(os.path.join(run_dir, "ranks.json")) as f:
            data = json.load(f)
        return data if isinstance(data, list) else []
    except (OSError, ValueError):
        return []
