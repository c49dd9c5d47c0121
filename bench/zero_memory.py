"""ZeRO: optimizer-state bytes per rank and the training-step time at stages 0, 1
and 2 (DDP + AdamW; ``ZeroRedundancyOptimizer``; plus ``shard_gradients``), and
PyTorch's DDP + AdamW and ``ZeroRedundancyOptimizer`` over gloo side by side when
torch is installed.

State bytes are the local optimizer's state tensors after one step (AdamW: exp_avg
and exp_avg_sq, the size of the parameters twice); gradient bytes are the ``.grad``
tensors each rank holds after backward (stage 2 keeps its shard's only); bucket bytes
are what DDP's bucket buffers hold after backward (full-size and kept at stages 0 and
1; at stage 2 a bucket exists only while it is filled and reduce-scattered). The
peak is tracemalloc's (which sees numpy's allocations) over one whole step of a model
built under tracing: parameters, optimizer state, buckets, gradients, activations
and every temporary; PyTorch's allocations are invisible to it, so its rows have
none. The step (forward, backward, clip-free update) is the best of 5, the slowest
rank's, timed without tracing.

Run it directly (it starts ``mpiexec -n 2`` with one BLAS thread per rank) or under
``mpiexec -n N python bench/zero_memory.py``. Options: ``--np N``, ``--width W``.
"""
from __future__ import annotations

import datetime
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(__file__))
from _mpi import nprocs_arg, relaunch_under_mpiexec  # noqa: E402

relaunch_under_mpiexec(nprocs_arg())

import numpy as np  # noqa: E402

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
from distgrad.distributed.optim import ZeroRedundancyOptimizer, shard_gradients  # noqa: E402

try:
    import torch
    import torch.distributed as tdist
    from torch.distributed.optim import ZeroRedundancyOptimizer as TorchZero
except ImportError:  # the PyTorch comparison is skipped without it
    torch = None


def _arg(name, default):
    for i, a in enumerate(sys.argv):
        if a == name and i + 1 < len(sys.argv):
            return type(default)(sys.argv[i + 1])
    return default


WIDTH, DEPTH, BATCH = _arg("--width", 512), 8, 64


def make_model(lib):
    nn = lib.nn
    layers = [nn.Linear(128, WIDTH), nn.Tanh()]
    for _ in range(DEPTH - 2):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Tanh()]
    layers += [nn.Linear(WIDTH, 10)]
    return nn.Sequential(*layers)


def state_bytes(opt) -> int:
    return sum(int(v.numel() * v.element_size()) for s in opt.state.values() for v in s.values()
               if hasattr(v, "numel") and v.dim() > 0)


def grad_bytes(params) -> int:
    return sum(int(p.grad.numel() * p.grad.element_size()) for p in params if p.grad is not None)


def measure(comm, step_fn, opt_for_state, params, reps=5):
    """(state bytes, grad bytes, best step seconds of the slowest rank)."""
    step_fn()
    best = float("inf")
    for _ in range(reps):
        comm.barrier()
        t0 = time.perf_counter()
        step_fn()
        best = min(best, comm.comm.allreduce(time.perf_counter() - t0, op=comm.MPI.MAX))
    return state_bytes(opt_for_state), grad_bytes(params), best


def distgrad_step(stage, xs, ys):
    dg.manual_seed(0)
    model = make_model(dg)
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=4)
    if stage == 0:
        opt = local = dg.optim.AdamW(model.parameters(), lr=1e-3)
    else:
        opt = ZeroRedundancyOptimizer(model.parameters(), dg.optim.AdamW, lr=1e-3)
        local = opt.optim
        if stage == 2:
            shard_gradients(ddp, opt)
    x, y = dg.tensor(xs), dg.tensor(ys)

    def step():
        opt.zero_grad()
        dg.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    return step, local, list(model.parameters()), ddp.reducer


def bucket_bytes(reducer) -> int:
    """What the reducer's buckets hold now (after a backward)."""
    return sum((0 if b.buffer is None else b.buffer.nbytes)
               + (0 if getattr(b, "shard_out", None) is None else b.shard_out.nbytes) for b in reducer.buckets)


def traced_peak(stage, xs, ys) -> int:
    """tracemalloc's peak over the third step of a model built under tracing."""
    tracemalloc.start()
    try:
        step, *_ = distgrad_step(stage, xs, ys)
        step()
        step()
        tracemalloc.reset_peak()
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def torch_step(sharded, xs, ys, state):
    torch.manual_seed(0)
    model = make_model(torch)
    model.load_state_dict(state)
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=4)
    if sharded:
        opt = TorchZero(model.parameters(), torch.optim.AdamW, lr=1e-3)
        local = opt.optim
    else:
        opt = local = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.tensor(xs), torch.tensor(ys)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    return step, local, list(model.parameters())


def main():
    dist.init_process_group("mpi")
    comm = dist.group.default_comm()
    rank, size = comm.rank, comm.size
    rng = np.random.default_rng(rank)
    xs = rng.standard_normal((BATCH, 128)).astype(np.float32)
    ys = rng.integers(0, 10, BATCH)
    rows = {}
    for stage in (0, 1, 2):
        step, local, params, reducer = distgrad_step(stage, xs, ys)
        opt_step = step
        gb_after = []

        def step_and_look():
            opt_step()
            gb_after[:] = [bucket_bytes(reducer)]
        sb, gb, t = measure(comm, step_and_look, local, params)
        peak = traced_peak(stage, xs, ys)
        rows[f"distgrad stage {stage}"] = (comm.comm.gather(sb, 0), comm.comm.gather(gb, 0), t,
                                           comm.comm.gather(gb_after[0], 0), comm.comm.gather(peak, 0))
    if torch is not None:
        torch.set_num_threads(1)
        port = comm.broadcast_object(29500 + int(time.time()) % 1000 if rank == 0 else None, 0)
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
                                timeout=datetime.timedelta(seconds=120))
        dg.manual_seed(0)
        state = {k: torch.tensor(v.numpy()) for k, v in make_model(dg).state_dict().items()}
        for sharded in (False, True):
            step, local, params = torch_step(sharded, xs, ys, state)
            sb, gb, t = measure(comm, step, local, params)
            rows["torch " + ("ZeroRedundancyOptimizer" if sharded else "DDP + AdamW")] = (
                comm.comm.gather(sb, 0), comm.comm.gather(gb, 0), t, None, None)
        tdist.destroy_process_group()
    if rank == 0:
        n_params = sum(p.numel() for p in make_model(dg).parameters())
        print(f"ZeRO on {size} ranks, {os.cpu_count()} cores: an MLP of {n_params:,} parameters "
              f"({n_params * 4 / 2 ** 20:.1f} MiB in float32), batch {BATCH} per rank, AdamW")
        def mib(values):
            return "-" if values is None else ", ".join(f"{b / 2 ** 20:.2f}" for b in values)
        print("MiB per rank:")
        print(f"{'':34s} {'optimizer state':>16s} {'.grad':>14s} {'buckets':>14s} {'step peak':>14s} "
              f"{'step ms':>9s}")
        for name, (sb, gb, t, bb, peak) in rows.items():
            print(f"  {name:32s} {mib(sb):>16s} {mib(gb):>14s} {mib(bb):>14s} {mib(peak):>14s} {t * 1e3:9.1f}")
        base = rows["distgrad stage 0"]
        for stage in (1, 2):
            sb, gb, t, bb, peak = rows[f"distgrad stage {stage}"]
            print(f"  stage {stage} / stage 0: largest state {max(sb) / max(base[0]):.2f} x (1/N = {1 / size:.2f}), "
                  f"largest .grad {max(gb) / max(base[1]):.2f} x, largest step peak "
                  f"{max(peak) / max(base[4]):.2f} x, step time {t / base[2]:.2f} x")
        if torch is not None:
            tz, tb = rows["torch ZeroRedundancyOptimizer"], rows["torch DDP + AdamW"]
            d1 = rows["distgrad stage 1"]
            print(f"  torch ZeRO / torch DDP: largest state {max(tz[0]) / max(tb[0]):.2f} x, "
                  f"step time {tz[2] / tb[2]:.2f} x")
            print(f"  distgrad stage 1 / torch ZeRO: step time {d1[2] / tz[2]:.2f} x")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
