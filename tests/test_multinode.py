"""Multi-node jobs on one machine: two "nodes" that are network namespaces joined by
a bridge (see ``tests/netns.py``), each with its own hostname, /etc/hosts, sshd and
mount namespace. ``distgrad-launch --hosts node1-PID:N,node2-PID:N`` runs on node 1;
MPICH's Hydra reaches node 2 over ssh (the harness's ssh client and daemon, over TCP
on the test network); mpiexec's control port and the ranks' MPI traffic (UCX over
TCP) cross the veths, and the run directory is on the filesystem both nodes share,
except where a test hides it from node 2.

    node1-PID (netns dgnPIDa, 10.213.X.11)          node2-PID (netns dgnPIDb, 10.213.X.12)
      distgrad-launch -> mpiexec -> rank 0 [,1]  ---ssh:22---> sshd -> hydra_pmi_proxy -> rank 1 [2,3]
                        eth0 ----------- br0 (netns dgnPIDsw) ----------- eth0

Every job has a timeout; after each test whatever is left on the nodes is killed
(a test that expects nothing left asserts it first)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from jobs import (PROMPT, REPO, assert_same_tensors, find_mpiexec, needs_mpi, ok, run, step_losses, summary,
                  tensors, tree, wait_for)
from netns import cluster  # noqa: F401 (the fixture)

pytestmark = needs_mpi

STEPS = 6  # jobs.SMALL


@pytest.fixture(autouse=True)
def _clean_nodes(cluster):  # noqa: F811
    yield
    cluster.reset()


# BLAS threads per rank are pinned to 1 on both sides: by default each rank gets its
# node's cores divided by the ranks on that node, so one rank on a "node" of this
# machine runs 2 threads where two ranks sharing it run 1, and OpenBLAS then rounds some
# gradients differently (the losses agree; parameters differ by ~1e-7 after 6 steps).
ONE_THREAD = {"DISTGRAD_THREADS": "1"}


@pytest.fixture(scope="module")
def one_host(tmp_path_factory):
    """{ranks: run directory} of the small quickstart on 2 and 4 ranks on one host (the
    host's own namespace)."""
    return {n: ok(run(str(tmp_path_factory.mktemp(f"onehost{n}") / "runs"), "--np", str(n),
                      env=ONE_THREAD)).run_dir for n in (2, 4)}


def _model_bytes(run_dir):
    return sum(a.nbytes for k, a in tensors(run_dir, STEPS).items() if k.startswith("model."))


# ------------------------------------------------------------ same numbers
@pytest.mark.parametrize("slots", [1, 2], ids=["2x1", "2x2"])
def test_two_nodes_train_bit_identically_to_one_host(cluster, tmp_path, slots, one_host):  # noqa: F811
    np_ = 2 * slots
    ref = one_host[np_]
    cluster.ssh_calls()
    before = cluster.counters()
    job = ok(cluster.run(str(tmp_path / "runs"), "--hosts", cluster.hosts(slots), "--np", str(np_),
                         env=ONE_THREAD, timeout=PROMPT * 3))
    after = cluster.counters()
    node1, node2 = (n.hostname for n in cluster.nodes)
    # Hydra started node1's proxy itself and reached node2 through ssh, once
    calls = cluster.ssh_calls()
    assert [c["host"] for c in calls] == [node2] and "hydra_pmi_proxy" in calls[0]["command"], calls
    # the ranks really ran where they were placed: 0.. on node1, the rest on node2
    hosts = summary(job.run_dir)["hosts"]  # by rank, as each rank saw its own hostname
    assert hosts == [node1] * slots + [node2] * slots, (hosts, job.describe())
    for rank in range(np_):
        assert step_losses(job.run_dir, rank) == step_losses(ref, rank), f"rank {rank}\n{job.describe()}"
    assert_same_tensors(tensors(job.run_dir, STEPS), tensors(ref, STEPS))
    # and the gradients crossed the veth: every all-reduce moves at least the model's
    # size between the two halves (shared memory would leave only Hydra's chatter)
    crossed = after[node2][1] - before[node2][1]
    assert crossed >= STEPS * _model_bytes(job.run_dir), (crossed, _model_bytes(job.run_dir))
    assert cluster.wait_until_empty(10) == {}


def test_a_completed_two_node_run_prints_no_mpi_warnings(cluster, tmp_path):  # noqa: F811
    """Over TCP, UCX warns at MPI_Finalize about every message that arrived and was never
    received (with shared memory such messages vanish silently): a clean run ends
    without a message left in flight."""
    job = ok(cluster.run(str(tmp_path / "runs"), "--hosts", cluster.hosts(1), "--np", "2", timeout=PROMPT * 3))
    warnings = [ln for ln in job.output.splitlines() if " UCX " in ln or "WARN" in ln]
    assert not warnings, "\n".join(warnings[:10]) + "\n" + job.describe()


# ------------------------------------------------------------ environment
PROBE = """
    import json
    import os
    import socket
    import sys

    from distgrad.nn import functional as F


    def loss(output, target):
        # once per rank: what this rank sees, written into the run directory
        if not getattr(loss, "done", False):
            loss.done = True
            run_dir = next(a for a in sys.argv[1:] if os.path.isfile(os.path.join(a, "config.toml")))
            rank = os.environ.get("PMI_RANK", "0")
            seen = {k: os.environ.get(k) for k in ("MY_SETTING", "OTHER", "THIRD")}
            with open(os.path.join(run_dir, f"probe.rank{rank}.json"), "w") as f:
                json.dump({"rank": int(rank), "host": socket.gethostname(), "env": seen}, f)
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
"""


def _probe_job(cluster, tmp_path, *args, env=None):  # noqa: F811
    (tmp_path / "envprobe.py").write_text(textwrap.dedent(PROBE))
    job = ok(cluster.run(str(tmp_path / "runs"), "--hosts", cluster.hosts(1), "--np", "2",
                         "train.loss=envprobe:loss", "train.steps=2", *args, env=env, pythonpath=[tmp_path],
                         timeout=PROMPT * 3))
    seen = {}
    for rank in (0, 1):
        path = os.path.join(job.run_dir, f"probe.rank{rank}.json")
        assert os.path.exists(path), job.describe()
        with open(path) as f:
            seen[rank] = json.load(f)
    node1, node2 = (n.hostname for n in cluster.nodes)
    assert seen[0]["host"] == node1 and seen[1]["host"] == node2, seen
    return job, seen


def test_the_launchers_environment_reaches_the_rank_on_the_remote_node(cluster, tmp_path):  # noqa: F811
    job, seen = _probe_job(cluster, tmp_path, env={"MY_SETTING": "42"})
    assert seen[0]["env"]["MY_SETTING"] == "42", (seen, job.describe())
    assert seen[1]["env"]["MY_SETTING"] == "42", (seen, job.describe())


def test_env_option_and_dist_env_reach_every_node(cluster, tmp_path):  # noqa: F811
    job, seen = _probe_job(cluster, tmp_path, "--env", "OTHER=7", 'dist.env.THIRD="x"')
    for rank in (0, 1):
        assert seen[rank]["env"]["OTHER"] == "7", (rank, seen, job.describe())
        assert seen[rank]["env"]["THIRD"] == "x", (rank, seen, job.describe())


# ------------------------------------------------------------ failures
def test_a_rank_killed_on_the_remote_node_ends_the_job_naming_it(cluster, tmp_path):  # noqa: F811
    node2 = cluster.nodes[1].hostname
    job = cluster.run(str(tmp_path / "runs"), "--hosts", cluster.hosts(1), "--np", "2",
                      env={"DISTGRAD_TEST_FAULT": "kill@1:backward:3"}, timeout=PROMPT + 30)
    assert job.rc != 0 and job.elapsed < PROMPT, job.describe()
    assert "test fault: kill at step 3, backward" in job.err, job.describe()
    # the launcher's own words after the job name the rank and its host
    said = [ln for ln in job.err.splitlines() if ln.startswith("distgrad-launch") and "rank 1" in ln]
    assert said and any(node2 in ln for ln in said), job.describe()
    assert cluster.wait_until_empty(10) == {}, job.describe()


def test_a_node_without_the_run_directory_is_named_at_startup(cluster, tmp_path):  # noqa: F811
    out_dir = tmp_path / "runs"
    out_dir.mkdir()
    node2 = cluster.nodes[1].hostname
    with cluster.hidden(1, out_dir):
        job = cluster.run(str(out_dir), "--hosts", cluster.hosts(1), "--np", "2", "dist.timeout_s=10",
                          timeout=PROMPT + 30)
    assert job.rc != 0, job.describe()
    assert job.elapsed < 10 + 15, job.describe()  # the start-up timeout, and the time to say so
    run_dir = job.run_dir
    lines = [ln for ln in job.err.splitlines() if "rank 1" in ln and node2 in ln and run_dir in ln]
    assert lines, job.describe()
    assert cluster.wait_until_empty(10) == {}, job.describe()


def _start_long_job(cluster, tmp_path):  # noqa: F811
    """A 2x1 job that trains for minutes; returns once rank 1 (node2) has done 2 steps."""
    job = cluster.start(str(tmp_path / "runs"), "--hosts", cluster.hosts(1), "--np", "2", "train.steps=3000",
                        "train.checkpoint_interval=1000", "train.log_interval=1")

    def training():
        out = job.out_dir
        dirs = [d for d in os.listdir(out) if os.path.isdir(os.path.join(out, d))]
        if not dirs:
            return False
        path = os.path.join(out, dirs[0], "metrics.rank1.jsonl")
        if not os.path.exists(path):
            return False
        with open(path) as f:
            return sum(1 for _ in f) >= 2

    wait_for(training, job, timeout=PROMPT * 2, what="rank 1 training on node2")
    with open(f"/proc/{job.proc.pid}/cmdline", "rb") as f:
        assert b"launch.cli" in f.read()  # the pid is the launcher itself (ip and unshare exec)
    # what the checks after the signal must find gone is seen now: mpiexec and rank 0 on
    # node1; Hydra's proxy and rank 1 on node2 (children of that node's sshd, not of the launcher)
    running = cluster.processes()
    for node, needs in ((0, ("mpiexec", "distgrad.train")), (1, ("hydra_pmi_proxy", "distgrad.train"))):
        seen = " | ".join(c for _, c in running[cluster.nodes[node].hostname])
        assert all(n in seen for n in needs), running
    below_launcher = {pid for pid, _ in tree(job.proc.pid)}
    assert not below_launcher & {pid for pid, _ in running[cluster.nodes[1].hostname]}, running
    return job


def test_sigterm_to_the_launcher_stops_every_process_on_every_node(cluster, tmp_path):  # noqa: F811
    job = _start_long_job(cluster, tmp_path)
    os.kill(job.proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    left = cluster.wait_until_empty(10)
    gone_after = time.monotonic() - signalled
    job.wait(timeout=PROMPT)
    assert left == {}, f"still running 10 s after SIGTERM: {left}\n{job.describe()}"
    assert job.rc == 143, f"(all gone after {gone_after:.1f} s)\n{job.describe()}"


def test_sigkill_to_the_launcher_leaves_nothing_running_on_any_node(cluster, tmp_path):  # noqa: F811
    job = _start_long_job(cluster, tmp_path)
    os.kill(job.proc.pid, signal.SIGKILL)
    left = cluster.wait_until_empty(15)
    job.wait(timeout=PROMPT)
    assert left == {}, f"still running 15 s after the launcher was killed: {left}\n{job.describe()}"


# ------------------------------------------------------------ a user's script
SCRIPT = """
    import sys

    import distgrad as dg
    import distgrad.distributed as dist

    dist.init_process_group("mpi")
    rank = dist.get_rank()
    t = dg.ones(4) * (rank + 1)
    dist.all_reduce(t)
    assert t.tolist() == [3.0] * 4, t
    if sys.argv[1] == "destroy":
        dist.destroy_process_group()
    print(f"rank {rank} done", flush=True)
"""


@pytest.mark.parametrize("ending", ["destroy", "no destroy"])
def test_a_script_under_mpiexec_across_nodes_ends_without_mpi_warnings(cluster, tmp_path, ending):  # noqa: F811
    """A user's script run by mpiexec itself across two nodes, with and without
    destroy_process_group at its end (PyTorch scripts often leave it out): no message
    of distgrad's is left unreceived for UCX to warn about at MPI_Finalize."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = dict(os.environ, PYTHONPATH=REPO, **cluster.env())
    cmd = [find_mpiexec(), "-hosts", cluster.hosts(1), "-n", "2", sys.executable, str(script), ending.split()[0]]
    proc = subprocess.run(cluster.on(0, cmd), capture_output=True, text=True, timeout=PROMPT * 3, env=env,
                          cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "rank 0 done" in proc.stdout and "rank 1 done" in proc.stdout, out
    warnings = [ln for ln in out.splitlines() if " UCX " in ln or "WARN" in ln]
    assert not warnings, "\n".join(warnings[:10])
