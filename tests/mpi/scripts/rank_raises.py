"""One rank raises an exception while the other ranks wait for it in a collective.

    mpiexec -n 2 python tests/mpi/scripts/rank_raises.py {allreduce|backward|thread}

- allreduce: rank 1 raises while rank 0 waits in ``dist.all_reduce``;
- backward:  rank 1 raises inside its DDP backward (from a tensor hook, after some
             buckets were launched) while rank 0 waits in its DDP backward;
- thread:    a helper thread of rank 1 raises while rank 0 waits in ``dist.all_reduce``.

Expected: the job ends within seconds with a non-zero status, and stderr names the
failing rank and the exception (distgrad's failure hook aborts the MPI job). No rank
may print "UNEXPECTEDLY FINISHED".
"""
import os
import sys
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)  # run from a checkout without installing distgrad

import numpy as np  # noqa: E402

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
from distgrad import nn  # noqa: E402

FAILING = 1
DELAY = 0.5  # long enough for the other ranks to be waiting inside the collective


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 16)
        self.b = nn.Linear(16, 16)
        self.c = nn.Linear(16, 2)
        self.fail = False

    def forward(self, x):
        h = self.b(self.a(x).tanh()).tanh()
        if self.fail:
            def boom(grad):
                time.sleep(DELAY)
                raise ValueError(f"intentional failure on rank {FAILING} inside backward")
            h.register_hook(boom)
        return self.c(h)


def main(mode):
    dist.init_process_group("mpi")
    rank = dist.get_rank()
    if mode == "allreduce":
        dist.barrier()
        if rank == FAILING:
            time.sleep(DELAY)
            raise ValueError(f"intentional failure on rank {FAILING} before all_reduce")
        dist.all_reduce(dg.ones(4))
    elif mode == "backward":
        dg.manual_seed(0)
        model = Net()
        ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.0002, first_bucket_cap_mb=0.0001)
        x = dg.tensor(np.random.default_rng(rank).standard_normal((8, 4)), dtype=dg.float32)
        ddp(x).pow(2).mean().backward()  # one good step
        model.fail = rank == FAILING
        ddp(x).pow(2).mean().backward()
    elif mode == "thread":
        if rank == FAILING:
            def worker():
                time.sleep(DELAY)
                raise ValueError(f"intentional failure in a thread of rank {FAILING}")
            t = threading.Thread(target=worker, name="data-loader")
            t.start()
            t.join()
            time.sleep(60)  # the abort ends this rank long before
        else:
            dist.all_reduce(dg.ones(4))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(f"rank {rank}: UNEXPECTEDLY FINISHED", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
