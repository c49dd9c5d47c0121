"""A cluster of machines on this one: network namespaces joined by a bridge, each with
its own hostname, /etc/hosts, sshd and init, for multi-node jobs that are as real as
one machine allows. The tests run as root; without root, ``ip netns``, ``unshare`` or
a bridge and veths, the fixture skips, saying why.

Topology of ``netns_cluster(n)`` (TAG is ``dgn`` and this process's pid; X comes from
the pid)::

    namespace TAGsw (the switch):  bridge br0 with veths v0, v1, ...; no address
                 |                                 |
    namespace TAGa: "node1-PID"          namespace TAGb: "node2-PID"        ...
      eth0 10.213.X.11/24, lo up           eth0 10.213.X.12/24, lo up
      sshd+init: ssh.py --serve            sshd+init: ssh.py --serve
      distgrad-launch, mpiexec, ranks      (Hydra's proxy and ranks, over ssh)

* 10.213.X.0/24 exists only on that bridge: the nodes have no default route and the
  switch no address, so nothing they send can leave it, and nothing in the host's own
  namespace changes (deleting the switch namespace removes the bridge and veths).
* ``/etc/netns/TAGa/hosts`` (``ip netns exec`` mounts it over /etc/hosts) maps every
  node's hostname to its address; on each node its own name is its eth0 address.
* Each node runs ``tests/netns/ssh.py --serve`` under ``ip netns exec NS unshare
  --uts --mount``: the node's hostname, its sshd on port 22 (what Hydra's ssh
  launcher reaches, over TCP on the test network) and its subreaper. A command
  started "over ssh" runs on that node with a login environment, outside the
  launching node's process tree, as with real ssh (see that file).
* ``Cluster.start`` runs ``distgrad-launch`` on node 1 (``ip netns exec NS1 unshare
  --uts sh -c 'hostname node1-PID; exec ...'``: the Popen's pid is the launcher's, as
  ip, unshare and sh exec) with ``HYDRA_LAUNCHER=ssh``, ``HYDRA_LAUNCHER_EXEC`` (a
  wrapper that runs the ssh client), ``HYDRA_IFACE=eth0`` (mpiexec's control port on
  the test network) and the transport settings: MPICH's ch4 UCX would otherwise use
  shared memory between two "nodes" of one kernel; ``UCX_TLS=tcp,self`` (and
  ``FI_PROVIDER=tcp`` for the OFI netmod) put rank-to-rank traffic on the veths. They
  are also every node's site environment (what /etc/environment would set), so they
  do not depend on the launcher forwarding them.
* ``Cluster.hidden(node, path)`` gives that node an empty read-only tmpfs over
  ``path`` for the ssh sessions started while it is in effect (a mount namespace per
  session): a node without the shared filesystem.
* Teardown, always (also after a failed setup): every process in the namespaces is
  killed, the namespaces deleted (the bridge and veths with them), /etc/netns/NAME
  removed. A job's launcher gets SIGKILL if the test process dies; the node daemons
  leave when their stdin (a pipe from the test process) closes; namespaces of a test
  process that is gone are removed at the next setup.

Processes are found by network namespace, as ``ip netns pids`` does (/proc/PID/ns/net).

The fixture ``cluster`` (module scope, two nodes) yields a ``Cluster``: ``nodes``
(``hostname``, ``address``, ``netns``), ``hosts(slots)`` (for ``--hosts``),
``start``/``run`` (distgrad-launch on node 1, returning a ``jobs.Job``), ``env()``,
``on(node, cmd)``/``exec(node, cmd)``, ``processes()``/``leftovers()``/
``wait_until_empty(s)``/``kill_all()``, ``hidden(node, *paths)``, ``counters()`` (eth0
bytes per node), ``ssh_calls()`` (Hydra's ssh calls) and ``reset()`` (between tests).
"""
import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from jobs import LAUNCHER_VARS, QUICKSTART, REPO, SMALL, Job

SSH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netns", "ssh.py")
PREFIX = "dgn"
IFACE = "eth0"
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
TRANSPORT = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": IFACE, "FI_PROVIDER": "tcp"}


def _ip(*args, check=True):
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _netns_inode(ns):
    return os.stat(f"/run/netns/{ns}").st_ino


def pids_in(ns):
    """Live (not zombie) pids in network namespace ``ns`` (``ip netns pids NS``)."""
    try:
        ino = _netns_inode(ns)
    except OSError:
        return []
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.stat(f"/proc/{p}/ns/net").st_ino != ino:
                continue
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        out.append(int(p))
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _die_with_parent():
    """In a child before exec: SIGKILL it when the test process dies (a killed test run
    then leaves no launcher behind; its watchdog stops the job, as after any SIGKILL).
    The signal comes when the thread that started the child ends: start jobs from the
    test's own thread."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Node:
    def __init__(self, index, netns, hostname, address, veth):
        self.index, self.netns, self.hostname, self.address, self.veth = index, netns, hostname, address, veth
        self.daemon = None  # the Popen of its sshd/init

    def __repr__(self):
        return f"<node {self.hostname} {self.address} netns {self.netns}>"


class Cluster:
    """The nodes and how to run things on them. ``nodes[0]`` is where jobs are launched."""

    def __init__(self, tag, subnet, nodes, state_dir):
        self.tag, self.subnet, self.nodes, self.state_dir = tag, subnet, nodes, state_dir
        self.switch = f"{tag}sw"
        self.wrapper = os.path.join(state_dir, "ssh")
        self.ssh_log = os.path.join(state_dir, "ssh.log")

    # ------------------------------------------------------------ lookup
    def node(self, which):
        """A node by index (0 is node1), hostname or Node."""
        if isinstance(which, Node):
            return which
        if isinstance(which, int):
            return self.nodes[which]
        for n in self.nodes:
            if n.hostname == which:
                return n
        raise KeyError(which)

    def hosts(self, slots=1):
        """``--hosts`` for every node with ``slots`` each: 'node1-PID:2,node2-PID:2'."""
        return ",".join(f"{n.hostname}:{slots}" for n in self.nodes)

    # ------------------------------------------------------------ running
    def env(self):
        """What the launching environment on node 1 needs beyond the usual."""
        return {"HYDRA_LAUNCHER": "ssh", "HYDRA_LAUNCHER_EXEC": self.wrapper, "HYDRA_IFACE": IFACE,
                **TRANSPORT}

    def on(self, node, cmd):
        """``cmd`` wrapped to run on ``node`` (its network namespace, /etc/hosts and
        hostname), as a shell there would, but as a child of the caller (with the
        caller's environment)."""
        n = self.node(node)
        return ["ip", "netns", "exec", n.netns, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', n.hostname, *map(str, cmd)]

    def exec(self, node, cmd, timeout=30, **kw):
        """Run ``cmd`` on ``node`` and wait for it (subprocess.run, output captured)."""
        return subprocess.run(self.on(node, cmd), capture_output=True, text=True, timeout=timeout, check=False,
                              **kw)

    def start(self, out_dir, *args, env=None, pythonpath=(), config=None, small=True, cwd=None):
        """Start ``distgrad-launch CONFIG ARGS run.output_dir=OUT_DIR`` on node 1 (in a
        new session, with a timeout in ``Job.wait`` as in ``jobs.start``). CONFIG is
        the quickstart with ``jobs.SMALL`` unless ``config`` is given."""
        os.makedirs(out_dir, exist_ok=True)
        base = [config] if config else [QUICKSTART, *(SMALL if small else [])]
        cmd = [sys.executable, "-m", "launch.cli", *base, *args, f'run.output_dir="{out_dir}"']
        e = {k: v for k, v in os.environ.items()
             if not k.startswith(LAUNCHER_VARS) and k not in ("DISTGRAD_TEST_PAUSE_IN_SAVE", "DISTGRAD_TEST_FAULT")}
        e["PYTHONPATH"] = os.pathsep.join([REPO, *map(str, pythonpath)]
                                          + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
        e["PYTHONUNBUFFERED"] = "1"
        e.update(self.env())
        e.update(env or {})
        proc = subprocess.Popen(self.on(0, cmd), cwd=cwd or os.path.dirname(out_dir), env=e,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, preexec_fn=_die_with_parent)
        return Job(proc, cmd, out_dir)

    def run(self, out_dir, *args, timeout=None, **kw):
        job = self.start(out_dir, *args, **kw)
        return job.wait() if timeout is None else job.wait(timeout=timeout)

    def ssh_calls(self):
        """[{"host", "command", "argv"}] of every ssh call since the last (Hydra's, from
        any node), and forget them."""
        if not os.path.exists(self.ssh_log):
            return []
        with open(self.ssh_log) as f:
            calls = [json.loads(line) for line in f if line.strip()]
        os.remove(self.ssh_log)
        return calls

    # ------------------------------------------------------------ processes
    def daemons(self):
        return {n.daemon.pid for n in self.nodes if n.daemon is not None}

    def processes(self):
        """{hostname: [(pid, command line)]} of everything running on the nodes but
        their daemons (a session being closed may show up for a moment)."""
        keep = self.daemons()
        return {n.hostname: [(p, cmdline(p)) for p in pids_in(n.netns) if p not in keep] for n in self.nodes}

    def leftovers(self):
        """Like ``processes`` but only nodes with something running."""
        return {h: ps for h, ps in self.processes().items() if ps}

    def wait_until_empty(self, timeout):
        """Wait up to ``timeout`` s for no process to be left on any node; what is
        left then ({} when none)."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.leftovers()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def kill_all(self):
        """SIGKILL everything on the nodes but their daemons; what was killed."""
        left = self.leftovers()
        for ps in left.values():
            for pid, _ in ps:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        return left

    # ------------------------------------------------------------ counters
    def counters(self):
        """{hostname: (rx bytes, tx bytes)} of each node's eth0."""
        out = {}
        for n in self.nodes:
            stats = json.loads(_ip("-n", n.netns, "-j", "-s", "link", "show", IFACE).stdout)[0]["stats64"]
            out[n.hostname] = (stats["rx"]["bytes"], stats["tx"]["bytes"])
        return out

    # ------------------------------------------------------------ filesystems
    @contextlib.contextmanager
    def hidden(self, node, *paths):
        """``paths`` are empty (a read-only tmpfs) on ``node`` for the sessions started
        meanwhile. The launching node (node 1) runs the launcher itself: not there."""
        n = self.node(node)
        if n is self.nodes[0]:
            raise ValueError("the launching node cannot have hidden directories")
        path = os.path.join(self.state_dir, "hide", f"{n.hostname}.json")
        with open(path, "w") as f:
            json.dump([os.path.abspath(p) for p in paths], f)
        try:
            yield
        finally:
            os.remove(path)

    def reset(self):
        """Between tests: kill what a test left on the nodes, unhide everything. What
        was killed."""
        for name in os.listdir(os.path.join(self.state_dir, "hide")):
            os.remove(os.path.join(self.state_dir, "hide", name))
        self.ssh_calls()
        left = self.kill_all()
        self.wait_until_empty(5)
        return left


# ---------------------------------------------------------------- set-up
def _why_not():
    """Why this machine cannot host the cluster, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "mount", "hostname"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "--uts", "--mount", "true"], capture_output=True, text=True, timeout=30,
                           check=False)
    if probe.returncode != 0:
        return f"unshare --uts --mount fails here: {probe.stderr.strip()}"
    return None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_netns(ns):
    for pid in pids_in(ns):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pids_in(ns) and time.monotonic() < deadline:
        time.sleep(0.05)
    _ip("netns", "del", ns, check=False)
    shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def _sweep_stale():
    """Remove namespaces of this harness whose test process is gone."""
    listed = _ip("netns", "list", check=False).stdout.split()
    etc = os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []
    for ns in set(listed) | set(etc):
        if not ns.startswith(PREFIX):
            continue
        digits = "".join(c for c in ns[len(PREFIX):] if c.isdigit())
        if digits and not _pid_alive(int(digits)):
            _remove_netns(ns)
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        digits = name[len(PREFIX):].partition("-")[0]
        if name.startswith(PREFIX) and digits.isdigit() and not _pid_alive(int(digits)):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


def _build_network(cluster, created):
    """The switch's bridge, each node's namespace, veth pair, addresses and hosts file."""
    _ip("-n", cluster.switch, "link", "add", "br0", "type", "bridge")
    _ip("-n", cluster.switch, "link", "set", "br0", "up")
    _ip("-n", cluster.switch, "link", "set", "lo", "up")
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost\n" + "".join(
        f"{nd.address}\t{nd.hostname}\n" for nd in cluster.nodes)
    for nd in cluster.nodes:
        _ip("netns", "add", nd.netns)
        created.append(nd.netns)
        _ip("-n", cluster.switch, "link", "add", nd.veth, "type", "veth", "peer", "name", IFACE, "netns", nd.netns)
        _ip("-n", cluster.switch, "link", "set", nd.veth, "master", "br0")
        _ip("-n", cluster.switch, "link", "set", nd.veth, "up")
        _ip("-n", nd.netns, "link", "set", "lo", "up")
        _ip("-n", nd.netns, "addr", "add", f"{nd.address}/24", "dev", IFACE)
        _ip("-n", nd.netns, "link", "set", IFACE, "up")
        for attempt in range(3):  # another run may remove /etc/netns when it is empty
            os.makedirs(f"/etc/netns/{nd.netns}", exist_ok=True)
            try:
                with open(f"/etc/netns/{nd.netns}/hosts", "w") as f:
                    f.write(hosts)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise


@contextlib.contextmanager
def netns_cluster(n=2):
    """Set up ``n`` nodes (see the module's docstring); yields a Cluster, tears all of
    it down after. Skips the calling test when this machine cannot do it."""
    why = _why_not()
    if why:
        pytest.skip(f"multi-node tests: {why}")
    pid = os.getpid()
    tag = f"{PREFIX}{pid}"
    x = 16 + pid % 200
    subnet = f"10.213.{x}.0/24"
    nodes = [Node(i, f"{tag}{chr(ord('a') + i)}", f"node{i + 1}-{pid}", f"10.213.{x}.{11 + i}", f"v{i}")
             for i in range(n)]
    state_dir = tempfile.mkdtemp(prefix=f"{tag}-")
    cluster = Cluster(tag, subnet, nodes, state_dir)
    created = []
    try:
        _sweep_stale()
        try:
            _ip("netns", "add", cluster.switch)
        except RuntimeError as e:
            pytest.skip(f"multi-node tests: cannot create a network namespace: {e}")
        created.append(cluster.switch)
        try:
            _build_network(cluster, created)
        except (RuntimeError, OSError) as e:
            pytest.skip(f"multi-node tests: cannot build the test network here: {e}")
        os.makedirs(os.path.join(state_dir, "hide"))
        with open(os.path.join(state_dir, "cluster.json"), "w") as f:
            json.dump({"site_env": TRANSPORT, "nodes": {nd.hostname: nd.address for nd in nodes}}, f)
        with open(cluster.wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec {sys.executable} {SSH} --log {cluster.ssh_log} \"$@\"\n")
        os.chmod(cluster.wrapper, 0o755)
        for nd in nodes:
            with open(os.path.join(state_dir, f"{nd.hostname}.log"), "w") as log:
                nd.daemon = subprocess.Popen(
                    ["ip", "netns", "exec", nd.netns, "unshare", "--uts", "--mount", "--propagation", "private",
                     "--", sys.executable, SSH, "--serve", state_dir, nd.hostname],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        for nd in nodes:
            ready, _, _ = select.select([nd.daemon.stdout], [], [], 30)
            line = nd.daemon.stdout.readline() if ready else ""
            if not line.startswith("ready"):
                with open(os.path.join(state_dir, f"{nd.hostname}.log")) as f:
                    raise RuntimeError(f"the daemon of {nd.hostname} did not start: {line}{f.read()}")
        yield cluster
    finally:
        for nd in nodes:
            if nd.daemon is not None:
                with contextlib.suppress(OSError):
                    nd.daemon.stdin.close()
                    nd.daemon.kill()
        for ns in reversed(created):
            _remove_netns(ns)
        for nd in nodes:
            if nd.daemon is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    nd.daemon.wait(timeout=5)
        shutil.rmtree(state_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir("/etc/netns")  # only when empty: another run may be using it


@pytest.fixture(scope="module")
def cluster():
    """Two nodes (see the module's docstring): ``cluster.nodes``, ``cluster.hosts(slots)``,
    ``cluster.start``/``run`` (distgrad-launch on node 1), ``cluster.leftovers()``,
    ``cluster.wait_until_empty(s)``, ``cluster.hidden(node, path)``, ``cluster.counters()``,
    ``cluster.reset()``."""
    with netns_cluster(2) as c:
        yield c


__all__ = ["Cluster", "Node", "cluster", "netns_cluster", "pids_in"]
