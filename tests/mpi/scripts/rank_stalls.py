"""One rank stalls (sleeps) while ``init_process_group(timeout=...)`` is set.

    mpiexec -n 2 python tests/mpi/scripts/rank_stalls.py {backward|buffers}

- backward: rank 1 stalls before its second step; rank 0's DDP backward must fail
            after the timeout with a message naming the step and the bucket, and the
            job then aborts (a non-zero status within seconds).
- buffers:  the model has a buffer, which DDP's forward broadcasts from rank 0; rank 0
            stalls before its second step, so rank 1 waits in that broadcast, which the
            timeout must bound too.

The stalled rank sleeps for STALL seconds and then carries on, so a job whose waiting
rank ignores the timeout finishes (status 0, after the stall) instead of hanging.
"""
import os
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)  # run from a checkout without installing distgrad

import numpy as np  # noqa: E402

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
from distgrad import nn  # noqa: E402

TIMEOUT = 2.0
STALL = {"backward": 20.0, "buffers": 6.0}


class Net(nn.Module):
    def __init__(self, buffer):
        super().__init__()
        self.a = nn.Linear(4, 16)
        self.b = nn.Linear(16, 2)
        if buffer:
            self.register_buffer("scale", dg.ones(2))

    def forward(self, x):
        out = self.b(self.a(x).tanh())
        return out * self.scale if hasattr(self, "scale") else out


def main(mode):
    if mode not in STALL:
        raise SystemExit(f"unknown mode {mode!r}")
    dist.init_process_group("mpi", timeout=TIMEOUT)
    rank = dist.get_rank()
    stalling = 1 if mode == "backward" else 0
    dg.manual_seed(0)
    ddp = dist.DistributedDataParallel(Net(buffer=mode == "buffers"), bucket_cap_mb=0.0002,
                                       first_bucket_cap_mb=0.0001)
    x = dg.tensor(np.random.default_rng(rank).standard_normal((8, 4)), dtype=dg.float32)
    ddp(x).pow(2).mean().backward()  # step 0 completes on every rank
    if rank == stalling:
        print(f"rank {rank}: stalling for {STALL[mode]:g} s", flush=True)
        time.sleep(STALL[mode])
        print(f"rank {rank}: woke up", flush=True)
    start = time.monotonic()
    ddp(x).pow(2).mean().backward()  # step 1
    print(f"rank {rank}: step 1 finished after {time.monotonic() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
