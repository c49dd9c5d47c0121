"""DDP on the GPU across real ranks against one process on the whole batch.

    mpiexec -n 2 python tests/mpi/scripts/gpu_ddp.py BACKEND [HOOK [DEVICE]]

BACKEND is 'mpi' (GPU gradients staged through pinned host memory: ranks may share a
GPU) or 'nccl' (one GPU per rank). HOOK: 'none', 'allreduce' or 'fp16'. Each rank takes
GPU local_rank % device_count, trains an MLP for 3 SGD steps in float32 on its share
of the batch, and compares its gradients with the one-process gradients of the whole
batch (computed on the same GPU): equal to float32 rounding without a hook or with the
all-reduce hook, to float16 rounding with the fp16 hook. Prints "rank R: gpu_ddp OK".
A third argument "cpu" runs the same checks on the CPU.
"""
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
from distgrad.distributed.algorithms.ddp_comm_hooks import default_hooks  # noqa: E402

backend = sys.argv[1]
hook = sys.argv[2] if len(sys.argv) > 2 else "none"
dist.init_process_group(backend)
rank, size = dist.get_rank(), dist.get_world_size()
if len(sys.argv) > 3 and sys.argv[3] == "cpu":   # the same checks on the CPU (the script's own test)
    dev = "cpu"
else:
    dev = f"cuda:{dist.get_local_rank() % dg.cuda.device_count()}"
    dg.cuda.set_device(dev)


def build():
    dg.manual_seed(0)
    return dg.nn.Sequential(dg.nn.Linear(6, 32), dg.nn.Tanh(), dg.nn.Linear(32, 3)).to(dev)


model, ref = build(), build()
ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.0004, first_bucket_cap_mb=0.0002)
if hook == "allreduce":
    ddp.register_comm_hook(None, default_hooks.allreduce_hook)
elif hook == "fp16":
    ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
opt, opt_ref = dg.optim.SGD(model.parameters(), lr=0.1), dg.optim.SGD(ref.parameters(), lr=0.1)
rows = 4
for step in range(3):
    rng = np.random.default_rng(step)
    x = dg.tensor(rng.standard_normal((rows * size, 6)).astype(np.float32), device=dev)
    y = dg.tensor(rng.integers(0, 3, rows * size), device=dev)
    opt.zero_grad()
    dg.nn.functional.cross_entropy(ddp(x[rank * rows:(rank + 1) * rows]), y[rank * rows:(rank + 1) * rows]).backward()
    opt_ref.zero_grad()
    dg.nn.functional.cross_entropy(ref(x), y).backward()
    tol = 2e-3 if hook == "fp16" else 1e-5
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.cpu().numpy(), q.grad.cpu().numpy(), rtol=tol, atol=tol,
                                   err_msg=f"rank {rank} step {step} {name}")
    opt.step()
    opt_ref.step()
print(f"rank {rank}: gpu_ddp OK ({dist.get_backend()}, hook {hook})", flush=True)
dist.destroy_process_group()
