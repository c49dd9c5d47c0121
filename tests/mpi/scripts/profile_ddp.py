"""A DDP step traced on every rank, the traces merged by rank 0.

    mpiexec -n 2 python tests/mpi/scripts/profile_ddp.py OUT_DIR

Each rank trains an MLP under DistributedDataParallel (tiny buckets) for 3 steps, the
last 2 inside ``distgrad.profiler.profile()``, writes OUT_DIR/rank{R}.json, and rank 0
merges them into OUT_DIR/trace.json. Prints the number of buckets.
"""
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
from distgrad import profiler  # noqa: E402

out = sys.argv[1]
dist.init_process_group("mpi")
rank, size = dist.get_rank(), dist.get_world_size()
dg.manual_seed(0)
model = dg.nn.Sequential(dg.nn.Linear(8, 32), dg.nn.Tanh(), dg.nn.Linear(32, 32), dg.nn.Tanh(), dg.nn.Linear(32, 3))
ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.002, first_bucket_cap_mb=0.001)
opt = dg.optim.SGD(model.parameters(), lr=0.1)


def step():
    x = dg.randn(4, 8)
    loss = dg.nn.functional.cross_entropy(ddp(x), dg.randint(0, 3, (4,)))
    opt.zero_grad()
    loss.backward()
    opt.step()


step()
with profiler.profile() as prof:
    for _ in range(2):
        with profiler.record_function("train step"):
            step()
        prof.step()
prof.export_chrome_trace(os.path.join(out, f"rank{rank}.json"))
dist.barrier()
if rank == 0:
    profiler.merge_chrome_traces([os.path.join(out, f"rank{r}.json") for r in range(size)],
                                 os.path.join(out, "trace.json"))
print(f"rank {rank}: buckets {len(ddp.bucket_names())}", flush=True)
dist.destroy_process_group()
