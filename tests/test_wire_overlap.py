"""DDP over a real wire: two ranks in two network namespaces joined by a veth pair
shaped with ``tc ... tbf`` (the link of ``bench/_link.py``, which
``bench/ddp_overlap.py --link`` measures overlap on). The gradients must cross the
veth (its byte counters) through the shaper, which must have held packets back
(its own overlimit counter: the link was the limit), and come out the same on both
ranks. Needs root, ``ip``, ``tc``, mpi4py and mpiexec; skips otherwise."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
import _link  # noqa: E402

RATE = "100mbit"
STEPS = 5

SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import distgrad as dg
    import distgrad.distributed as dist

    def sent():
        with open("/sys/class/net/eth0/statistics/tx_bytes") as f:
            return int(f.read())

    dist.init_process_group("mpi")
    comm = dist.group.default_comm()
    dg.manual_seed(0)
    model = dg.nn.Sequential(dg.nn.Linear(256, 1024), dg.nn.Tanh(), dg.nn.Linear(1024, 10))
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=1)
    rng = np.random.default_rng(comm.rank)
    x = dg.tensor(rng.standard_normal((32, 256)).astype(np.float32))
    y = dg.tensor(rng.integers(0, 10, 32))
    comm.barrier()
    b0 = sent()
    for _ in range({steps}):
        ddp.zero_grad()
        dg.nn.functional.cross_entropy(ddp(x), y).backward()
    nbytes = sent() - b0
    grads = np.concatenate([p.grad.numpy().ravel() for p in model.parameters()])
    same = all(np.array_equal(grads, g) for g in comm.comm.allgather(grads))
    with open(f"rank{{comm.rank}}.json", "w") as f:
        json.dump({{"rank": comm.rank, "bytes": nbytes, "same": same,
                   "grad_bytes": int(grads.nbytes)}}, f)
""").format(steps=STEPS)


def _mpiexec():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


def test_ddp_gradients_cross_the_shaped_veth(tmp_path):
    why = _link.why_not()
    if why:
        pytest.skip(f"shaped link: {why}")
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("shaped link: mpi4py or mpiexec is not installed")
    script = tmp_path / "ddp_on_link.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([REPO] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else [])))
    with _link.shaped_link(RATE) as link:
        env.update(link.env())
        before = link.counters()
        proc = subprocess.run(link.mpiexec([sys.executable, str(script)], mpiexec), env=env, capture_output=True,
                              text=True, timeout=300, cwd=str(tmp_path), check=False)
        after = link.counters()
        shaped = link.shaper_stats()
        namespaces = link.ns
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # torn down, also the veth with them
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split()
    assert not set(namespaces) & set(listed)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, (rx0, tx0), (rx1, tx1), (through, held) in zip(ranks, before, after, shaped):
        assert r["same"], f"rank {r['rank']}: the gradients differ between the ranks"
        # An all-reduce of N bytes between two ranks sends at least N/2 bytes each way.
        assert r["bytes"] >= STEPS * r["grad_bytes"] / 2, r
        assert tx1 - tx0 >= r["bytes"] and rx1 - rx0 >= STEPS * r["grad_bytes"] / 2
        # The rank's traffic went through the token bucket, which ran out of tokens.
        assert through >= r["bytes"] and held > 0, (r, through, held)
