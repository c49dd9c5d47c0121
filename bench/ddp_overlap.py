"""How much of DistributedDataParallel's communication hides behind backward, and
the DDP step against PyTorch DDP (gloo) on the same model, ranks and data.

- backward alone: inside ``no_sync()`` (no communication),
- communication alone: what DDP adds to a backward that computes next to nothing
  but still hands every gradient to DDP (that backward with DDP, minus it inside
  ``no_sync()``): the copies into the buckets, the all-reduces and the copies
  back (the raw all-reduce of the same buckets is printed too),
- backward with DDP: the real thing.
Hidden = backward alone + communication alone - backward with DDP; the hidden
share is hidden / communication alone, the overlap efficiency hidden / min(backward
alone, communication alone) (what could be hidden at most). The same figures are
taken for PyTorch DDP when torch is installed.

Run it directly (it starts ``mpiexec -n 2`` with one BLAS thread per rank) or under
``mpiexec -n N python bench/ddp_overlap.py``. Options:

    --link RATE   two ranks on a real wire: one in each of two network namespaces
                  joined by a veth pair shaped to RATE (tc notation: 1gbit, 500mbit),
                  MPICH and gloo over TCP (see _link.py; needs root, ip and tc)
    --batch N     batch per rank (default 64; 1024 with --link: there backward takes
                  a little longer than the all-reduces at 1gbit, so all of them but the
                  last bucket's can hide; the link idles until the first large gradient
                  is ready, which caps the efficiency lower where they take as long)
    --reps N      rounds of measurements (default 5; 9 with --link)
    --width N, --depth N, --bucket-cap-mb X
                  the MLP (default 8 layers of width 1024) and DDP's bucket cap (default
                  4): a deeper, narrower MLP leaves less of the gradients for the end of
                  backward (``--depth 24 --width 512``), PyTorch's default cap is 25
    --timeline    print rank 0's per-bucket timeline of the last backward with DDP
    --trace PATH  write that backward's Chrome trace (rank 0) to PATH
"""
from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _mpi import allreduce_buckets, nprocs_arg, relaunch_under_mpiexec  # noqa: E402


def _arg(name, default=None):
    for i, a in enumerate(sys.argv):
        if a == name and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return default


def _run_on_link(rate: str) -> None:
    """Not under MPI yet: build the shaped link, run this script across it, exit."""
    from _link import shaped_link

    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec") or "mpiexec"
    with shaped_link(rate) as link:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", **link.env())
        before = link.counters()
        status = subprocess.call(link.mpiexec([sys.executable] + sys.argv, mpiexec), env=env)
        sent = [tx - tx0 for (_, tx), (_, tx0) in zip(link.counters(), before)]
        print(f"  bytes sent over the veth (rank 0, rank 1): {sent[0] / 2 ** 20:.0f}, {sent[1] / 2 ** 20:.0f} MiB")
    sys.exit(status)


LINK = _arg("--link")
if LINK is not None and not any(v in os.environ for v in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")):
    _run_on_link(LINK)
relaunch_under_mpiexec(nprocs_arg())

import numpy as np  # noqa: E402

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
from distgrad import profiler  # noqa: E402

try:
    import torch
    import torch.distributed as tdist
except ImportError:  # the PyTorch comparison is skipped without it
    torch = None

WIDTH, DEPTH = int(_arg("--width", 1024)), int(_arg("--depth", 8))
BATCH = int(_arg("--batch", 1024 if LINK else 64))
REPS = int(_arg("--reps", 9 if LINK else 5))
BUCKET_CAP_MB = float(_arg("--bucket-cap-mb", 4))  # several buckets, so they can overlap backward
PERCENT = ("hidden share", "overlap efficiency", "efficiency, median round")


def make_model(lib):
    nn = lib.nn
    layers = [nn.Linear(256, WIDTH), nn.Tanh()]
    for _ in range(DEPTH - 2):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Tanh()]
    layers += [nn.Linear(WIDTH, 10)]
    return nn.Sequential(*layers)


def timed_backward(make_loss, reps=5, cpu=None):
    """Best time of loss.backward() alone (the forward is built outside the timer);
    ``cpu`` gets each call's (CPU time of this thread, of the whole process)."""
    best = float("inf")
    for _ in range(reps):
        loss = make_loss()
        c0, p0 = time.thread_time(), time.process_time()
        t0 = time.perf_counter()
        loss.backward()
        best = min(best, time.perf_counter() - t0)
        if cpu is not None:
            cpu.append((time.thread_time() - c0, time.process_time() - p0))
    return best


def overlap(comm, no_sync, loss_fn, idle_loss, raw=None, reducer=None, reps=REPS):
    """Best of ``reps`` (the slowest rank's) of each figure of the module docstring,
    and the median over the rounds of each round's overlap efficiency (its figures
    are taken next to each other, so a burst of load from elsewhere moves them together).
    With ``reducer``, also the median of what its backward waited for communication
    after the graph walk ended (the exposed tail, from the reducer's own clock). And
    the CPU time communication took during backward with DDP (medians, rank 0): the
    main thread's beyond backward alone's (copies into and out of the buckets) and the
    other threads' (the communication thread's progress calls and, after the walk, its
    wait; the kernel's TCP work in its system calls). Where every core runs a rank's
    backward, that CPU time comes out of backward's."""
    results = {"backward alone": [], "raw all-reduce": [], "communication alone": [], "backward with DDP": []}
    exposed, cpu_alone, cpu_ddp = [], [], []
    for _ in range(reps):
        comm.barrier()
        with no_sync():
            results["backward alone"].append(timed_backward(loss_fn, 1, cpu_alone))
        if raw is not None:
            comm.barrier()
            t0 = time.perf_counter()
            raw()
            results["raw all-reduce"].append(time.perf_counter() - t0)
        comm.barrier()
        with no_sync():
            idle = timed_backward(idle_loss, 1)
        comm.barrier()
        results["communication alone"].append(timed_backward(idle_loss, 1) - idle)
        comm.barrier()
        results["backward with DDP"].append(timed_backward(loss_fn, 1, cpu_ddp))
        if reducer is not None and reducer.last_overlap is not None:
            exposed.append(reducer.last_overlap["wait_s"])
    slowest = {k: [max(r) for r in zip(*comm.comm.allgather(v))] for k, v in results.items() if v}
    t = {k: min(v) for k, v in slowest.items()}
    hidden = t["backward alone"] + t["communication alone"] - t["backward with DDP"]
    t["hidden share"] = hidden / t["communication alone"]
    t["overlap efficiency"] = hidden / min(t["backward alone"], t["communication alone"])
    rounds = [(b + c - d) / min(b, c) for b, c, d in zip(slowest["backward alone"], slowest["communication alone"],
                                                         slowest["backward with DDP"])]
    t["efficiency, median round"] = float(np.median(rounds))
    if exposed:
        t["waited after the walk"] = float(np.median([max(r) for r in zip(*comm.comm.allgather(exposed))]))
    main_alone, main_ddp = np.median([c[0] for c in cpu_alone]), np.median([c[0] for c in cpu_ddp])
    t["CPU, main thread extra"] = float(main_ddp - main_alone)
    t["CPU, other threads"] = float(np.median([p - c for c, p in cpu_ddp]))
    return t


def timeline(loss_fn, trace):
    """Per-bucket (index, bytes, ready, all-reduce start, end) of one backward with
    DDP, in ms from its start."""
    with profiler.profile() as prof:
        loss = loss_fn()
        profiler.instant("bench: backward starts")
        loss.backward()
    if trace:
        prof.export_chrome_trace(trace)
    t0 = next(e.ts for e in prof.events if e.name == "bench: backward starts")
    rows = {}
    for e in prof.events:
        b = (e.args or {}).get("bucket")
        if b is None:
            continue
        row = rows.setdefault(b, [b, e.args.get("bytes", 0), None, None, None])
        if e.ph == "i":
            row[2] = (e.ts - t0) / 1e3
        elif e.name.startswith("DDP: all-reduce"):
            row[3], row[4] = (e.ts - t0) / 1e3, (e.ts + e.dur - t0) / 1e3
    return [rows[k] for k in sorted(rows)]


def overlap_ceiling(rows, t) -> float | None:
    """The overlap efficiency this model allows on this link with no CPU contention:
    each bucket ready when backward alone would make it (the timeline's ready times
    scaled to backward alone's length), the wire taking buckets in order, each for
    its share of communication alone, from max(ready, the previous one's end)."""
    readies = [r[2] for r in rows if r[2] is not None]
    if len(readies) != len(rows) or not readies or max(readies) <= 0:
        return None
    b, c = t["backward alone"], t["communication alone"]
    total = sum(r[1] for r in rows)
    scale = b * 1e3 / max(readies)
    end = 0.0
    for _, nbytes, ready, _, _ in rows:
        end = max(end, ready * scale / 1e3) + c * nbytes / total
    return (b + c - max(b, end)) / min(b, c)


def main():
    dist.init_process_group("mpi")
    comm = dist.group.default_comm()
    rank, size = comm.rank, comm.size
    rng = np.random.default_rng(rank)
    xs = rng.standard_normal((BATCH, 256)).astype(np.float32)
    ys = rng.integers(0, 10, BATCH)
    dg.manual_seed(0)
    model = make_model(dg)
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=BUCKET_CAP_MB)
    x, y = dg.tensor(xs), dg.tensor(ys)
    loss_fn = lambda: dg.nn.functional.cross_entropy(ddp(x), y)  # noqa: E731
    loss_fn().backward()  # first step: buckets rebuilt in gradient-ready order
    reducer = ddp.reducer

    # A loss whose backward does almost no work but gives every parameter a gradient.
    idle_loss = lambda: sum((p * 0.0).sum() for p in model.parameters())  # noqa: E731
    figures = {"distgrad DDP": overlap(comm, ddp.no_sync, loss_fn, idle_loss, lambda: allreduce_buckets(reducer),
                                        reducer)}
    early, total = reducer.overlap_report()  # of the last backward with DDP
    early = comm.comm.allreduce(early, op=comm.MPI.MIN)
    comm.barrier()
    rows = timeline(loss_fn, _arg("--trace") if rank == 0 else None)
    ceiling = overlap_ceiling(rows, figures["distgrad DDP"])

    step = {}
    dg_step = lambda: loss_fn().backward()  # noqa: E731
    contenders = {"distgrad DDP": dg_step}
    if torch is not None:
        torch.set_num_threads(1)
        master = os.environ.get("DISTGRAD_LINK_MASTER", "127.0.0.1")
        port = comm.broadcast_object(29500 + int(time.time()) % 1000 if rank == 0 else None, 0)
        tdist.init_process_group("gloo", init_method=f"tcp://{master}:{port}", rank=rank, world_size=size,
                                timeout=datetime.timedelta(seconds=120))
        tmodel = make_model(torch)
        tmodel.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
        tddp = torch.nn.parallel.DistributedDataParallel(tmodel, bucket_cap_mb=BUCKET_CAP_MB)
        tx, ty = torch.tensor(xs), torch.tensor(ys)
        t_loss = lambda: torch.nn.functional.cross_entropy(tddp(tx), ty)  # noqa: E731
        t_idle = lambda: tddp(tx[:1]).sum() * 0.0  # noqa: E731
        t_loss().backward()
        figures["torch DDP (gloo)"] = overlap(comm, tddp.no_sync, t_loss, t_idle)
        contenders["torch DDP (gloo)"] = lambda: t_loss().backward()
    for name in contenders:
        step[name] = float("inf")
    for _ in range(REPS):
        for name, fn in contenders.items():
            comm.barrier()
            t0 = time.perf_counter()
            fn()
            step[name] = min(step[name], comm.comm.allreduce(time.perf_counter() - t0, op=comm.MPI.MAX))

    if rank == 0:
        nparam = sum(p.numel() for p in model.parameters())
        where = f"over a veth shaped to {LINK} (MPICH and gloo over TCP)" if LINK else f"on {os.cpu_count()} cores"
        print(f"MLP {DEPTH} layers of width {WIDTH}, batch {BATCH} per rank, {nparam / 1e6:.1f} M parameters, "
              f"{len(reducer.buckets)} buckets of <= {BUCKET_CAP_MB} MiB; {size} ranks {where} "
              f"({os.cpu_count()} cores, {platform.machine()}), one BLAS thread per rank")
        from _isolated import blas_line
        print(blas_line())
        names = list(figures)
        print(f"  {'':<26}" + "".join(f"{n:>18}" for n in names))
        for k in figures["distgrad DDP"]:
            cells = []
            for n in names:
                v = figures[n].get(k)
                cells.append("" if v is None else f"{v:.0%}" if k in PERCENT else f"{v * 1e3:.1f} ms")
            print(f"  {k:<26}" + "".join(f"{c:>18}" for c in cells))
        print("  (overlap efficiency = hidden / min(backward alone, communication alone); goal on a link: >= 90%)")
        if ceiling is not None:
            print(f"  ceiling for this model here: {ceiling:.0%} (gradients ready when backward alone makes them, "
                  "buckets on the wire in order at communication alone's pace, no CPU taken from backward)")
        print(f"  buckets all-reduced while backward was still running: {early / 2 ** 20:.1f} of "
              f"{total / 2 ** 20:.1f} MiB")
        for name, v in step.items():
            print(f"  step (forward + backward), {name:<17} {v * 1e3:8.2f} ms")
        if torch is not None:
            print(f"  distgrad DDP / torch DDP: {step['distgrad DDP'] / step['torch DDP (gloo)']:.2f} x "
                  f"(goal <= {0.9 if LINK else 1.0})")
        if "--timeline" in sys.argv or _arg("--trace"):
            print("  per bucket of one backward with DDP (ms from its start): bucket, KiB, ready, "
                  "all-reduce start, end")
            for b, nbytes, ready, start, end in rows:
                fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
                print(f"    {b:3d} {nbytes / 1024:8.0f} {fmt(ready):>8} {fmt(start):>8} {fmt(end):>8}")
    if torch is not None:
        tdist.destroy_process_group()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
