"""A real wire for multi-rank benchmarks: two network namespaces joined by a veth
pair, both ends shaped to one rate with a token bucket (``tc ... tbf``), and an
``mpiexec`` that starts one rank in each namespace with MPICH over TCP.

Topology (TAG is ``dgl`` and this process's pid, X comes from the pid)::

    namespace TAGa: eth0 10.214.X.1/24  <== veth, tbf RATE each way ==>  namespace TAGb: eth0 10.214.X.2/24

The subnet exists only on that pair (no default route), so nothing leaves it and
nothing in the host's own namespace changes; deleting the namespaces removes the
veth and the qdiscs with them.

Crossing namespaces: ``mpiexec`` runs in namespace a with Hydra's ssh launcher
and, as the "ssh" it calls (``-launcher-exec``), a shell script that maps the
host (an address of the pair) to its namespace and runs the command there with
``ip netns exec NS sh -c``. Hydra thus starts its proxy in namespace b as it
would on another machine: the proxy connects back to mpiexec over the veth
(``-iface eth0``) and forks the rank, and PMI gives the two ranks different
hosts, so MPICH uses its network module between them, not shared memory.
``UCX_TLS=tcp,self`` and ``FI_PROVIDER=tcp`` keep UCX and libfabric on TCP
sockets (the only devices in the namespaces are ``lo`` and ``eth0``).

Teardown runs in ``finally`` (also on Ctrl-C, and on SIGTERM, turned into
SystemExit): every process left in the namespaces is killed and the namespaces
are deleted; namespaces of a process that is gone are swept at the next setup.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

PREFIX = "dgl"
IFACE = "eth0"
TRANSPORT = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": IFACE, "FI_PROVIDER": "tcp", "FI_TCP_IFACE": IFACE,
             "GLOO_SOCKET_IFNAME": IFACE}

_SHIM = """#!/bin/sh
# Hydra's "ssh": [options] HOST COMMAND... -> COMMAND in HOST's network namespace
while [ "${1#-}" != "$1" ]; do shift; done
host=$1; shift
case "$host" in
%s
  *) echo "no namespace for host $host" >&2; exit 255;;
esac
exec ip netns exec "$ns" sh -c "$*"
"""


def why_not() -> str | None:
    """Why this machine cannot build the link, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces and tc need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _run(*cmd, check=True):
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _pids_in(ns: str) -> list:
    try:
        ino = os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return []
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{p}/ns/net").st_ino == ino:
                    out.append(int(p))
    return out


def _remove(ns: str) -> None:
    for pid in _pids_in(ns):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _pids_in(ns) and time.monotonic() < deadline:
        time.sleep(0.05)
    _run("ip", "netns", "del", ns, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name: str) -> bool:
    """A namespace or veth end of this module (TAG + a or b) whose process is gone."""
    digits = name[len(PREFIX):-1]
    return name.startswith(PREFIX) and digits.isdigit() and not _pid_alive(int(digits))


def _sweep_stale() -> None:
    for ns in _run("ip", "netns", "list", check=False).stdout.split():
        if _stale(ns):
            _remove(ns)
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if _stale(name):
            _run("ip", "link", "del", name, check=False)


def rate_bits(rate: str) -> float:
    """tc's rate notation ('1gbit', '500mbit', '100kbit') in bits per second."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12, "bit": 1.0}
    for unit, scale in units.items():
        if rate.lower().endswith(unit):
            return float(rate[:-len(unit)]) * scale
    return float(rate)


class Link:
    """The two namespaces (``ns``), their addresses (``addr``), the rate, and how to
    run an MPI job across them (``mpiexec``, ``env``)."""

    def __init__(self, tag: str, x: int, rate: str, state_dir: str):
        self.ns = (f"{tag}a", f"{tag}b")
        self.addr = (f"10.214.{x}.1", f"10.214.{x}.2")
        self.rate = rate
        self.shim = os.path.join(state_dir, "ssh")

    def env(self) -> dict:
        """What the ranks need: the transport settings and rank 0's address (for gloo)."""
        return dict(TRANSPORT, DISTGRAD_LINK_MASTER=self.addr[0])

    def mpiexec(self, argv: list, mpiexec: str = "mpiexec", nprocs: int = 2) -> list:
        """A command (run it from the host's namespace) that starts ``argv`` as
        ``nprocs`` ranks, the first half in namespace a, the rest in b (with two:
        rank r in namespace r)."""
        slots = (nprocs + 1) // 2
        return ["ip", "netns", "exec", self.ns[0], mpiexec, "-launcher", "ssh", "-launcher-exec", self.shim,
                "-iface", IFACE, "-hosts", ",".join(f"{a}:{slots}" for a in self.addr), "-n", str(nprocs), *argv]

    def counters(self) -> list:
        """[(rx bytes, tx bytes)] of eth0 in each namespace."""
        out = []
        for ns in self.ns:
            stats = json.loads(_run("ip", "-n", ns, "-j", "-s", "link", "show", IFACE).stdout)[0]["stats64"]
            out.append((stats["rx"]["bytes"], stats["tx"]["bytes"]))
        return out

    def shaper_stats(self) -> list:
        """[(bytes sent through, overlimits)] of the tbf qdisc in each namespace: what
        the shaper carried, and how often it held packets back for want of tokens."""
        out = []
        for ns in self.ns:
            qdisc = next(q for q in json.loads(_run("tc", "-n", ns, "-j", "-s", "qdisc", "show", "dev", IFACE).stdout)
                         if q.get("kind") == "tbf")
            out.append((qdisc["bytes"], qdisc["overlimits"]))
        return out


def _shape(ns: str, rate: str) -> None:
    # The bucket must hold what arrives between two timer ticks at this rate (and a
    # few full-size GSO segments); the queue absorbs a few milliseconds.
    bits = rate_bits(rate)
    burst = max(int(bits / 8 / 250), 64 * 1024)
    _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", IFACE, "root", "tbf", "rate", rate,
         "burst", str(burst), "latency", "20ms")


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def shaped_link(rate: str = "1gbit"):
    """Build the link (see the module docstring), yield a Link, always tear it down."""
    why = why_not()
    if why:
        raise RuntimeError(f"cannot build a shaped link: {why}")
    pid = os.getpid()
    tag, x = f"{PREFIX}{pid}", 16 + pid % 200
    state_dir = tempfile.mkdtemp(prefix=f"{tag}-")
    link = Link(tag, x, rate, state_dir)
    created = []
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _sigterm) if main_thread else None
    try:
        _sweep_stale()
        for ns in link.ns:
            _run("ip", "netns", "add", ns)
            created.append(ns)
        # Made in the host's namespace under unique names, then moved and renamed: a
        # pair made inside a namespace with its peer in another may never get a carrier.
        ends = (f"{tag}a", f"{tag}b")
        _run("ip", "link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        try:
            for ns, end in zip(link.ns, ends):
                _run("ip", "link", "set", end, "netns", ns)
                _run("ip", "-n", ns, "link", "set", end, "name", IFACE)
        except RuntimeError:
            _run("ip", "link", "del", ends[0], check=False)
            raise
        for ns, addr in zip(link.ns, link.addr):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", IFACE)
            _run("ip", "-n", ns, "link", "set", IFACE, "up")
            _shape(ns, rate)
        cases = "\n".join(f"  {a}) ns={ns};;" for a, ns in zip(link.addr, link.ns))
        with open(link.shim, "w") as f:
            f.write(_SHIM % cases)
        os.chmod(link.shim, 0o755)
        yield link
    finally:
        for ns in reversed(created):
            _remove(ns)
        shutil.rmtree(state_dir, ignore_errors=True)
        if main_thread:
            signal.signal(signal.SIGTERM, old_term)


def main(argv: list) -> int:
    """``python bench/_link.py RATE -- COMMAND...``: run an MPI command across a shaped link."""
    rate = argv[0] if argv else "1gbit"
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []
    with shaped_link(rate) as link:
        env = dict(os.environ, **link.env())
        return subprocess.call(link.mpiexec(cmd, shutil.which("mpiexec") or "mpiexec"), env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
