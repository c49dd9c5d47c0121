"""SyncBatchNorm across real ranks against BatchNorm on the concatenated batch.

    mpiexec -n 2|3 python tests/mpi/scripts/sync_bn.py {check|stall-forward|stall-backward}
    python tests/mpi/scripts/sync_bn.py single

- check: every rank holds a DIFFERENT number of samples (3, 5, 4). A conv +
  SyncBatchNorm2d + linear model in DistributedDataParallel (tiny buckets, so the
  reducer's thread all-reduces gradients while SyncBatchNorm's backward all-reduces
  on the main thread) trains for a few steps in float64; every rank compares its
  output, its input gradient, the (DDP-averaged) parameter gradients and the running
  statistics with single-process BatchNorm2d on the concatenated batch, to 1e-10.
  Then: SyncBatchNorm alone on 2-D and 3-D input (one rank with an EMPTY batch where
  there are 3 ranks), momentum=None, eval mode, and double backward (a clear error).
  Each rank prints "rank R: sync_bn OK" at the end; a failed check raises, which
  brings the job down with a non-zero status.
- stall-forward / stall-backward: rank 1 sleeps past the process group's timeout
  (2 s) before a SyncBatchNorm forward / backward; rank 0's wait in the statistics
  all-gather / the gradient-sums all-reduce must fail, naming it.
- single (without mpiexec): a world of one rank, where it is exactly BatchNorm2d and
  makes no communicator.
"""
import copy
import os
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)  # run from a checkout without installing distgrad

import numpy as np  # noqa: E402

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
import distgrad.nn.functional as F  # noqa: E402
from distgrad import nn  # noqa: E402

TOL = {"rtol": 1e-10, "atol": 1e-10}
SIZES = [3, 5, 4]
STEPS = 3


def arr(t):
    return t.detach().numpy()


def close(got, want, what):
    got = got if isinstance(got, np.ndarray) else arr(got)
    want = want if isinstance(want, np.ndarray) else arr(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, err_msg=f"rank {dist.get_rank()}: {what}", **TOL)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, dtype=dg.float64)
        self.bn = nn.BatchNorm2d(4, dtype=dg.float64)
        self.head = nn.Linear(4 * 4 * 4, 3, dtype=dg.float64)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).tanh().flatten(1))


def check_ddp(rank, world):
    sizes = SIZES[:world]
    lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
    dg.manual_seed(0)
    ref = Net()
    with dg.no_grad():  # a non-trivial affine, so its gradients matter
        ref.bn.weight.copy_(dg.tensor(np.linspace(0.5, 1.5, 4)))
        ref.bn.bias.copy_(dg.tensor(np.linspace(-0.2, 0.3, 4)))
    model = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ref))
    assert type(model.bn) is nn.SyncBatchNorm
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.0004, first_bucket_cap_mb=0.0002)
    opt = dg.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    ref_opt = dg.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(1234)  # the same data on every rank: each takes its slice
    for step in range(STEPS):
        X = rng.standard_normal((sum(sizes), 2, 6, 6)) * 3.0 + 100.0  # a large offset: variance must stay sound
        Y = rng.standard_normal((sum(sizes), 3))
        x = dg.tensor(X[lo:hi].copy(), requires_grad=True)
        out = ddp(x)
        F.mse_loss(out, dg.tensor(Y[lo:hi])).backward()

        # DDP leaves every rank with the average over ranks of its local gradients:
        # the gradient of (1/world) * sum over ranks of each rank's loss.
        xf = dg.tensor(X, requires_grad=True)
        outf = ref(xf)
        loss = sum(F.mse_loss(outf[sum(sizes[:r]):sum(sizes[:r + 1])],
                              dg.tensor(Y[sum(sizes[:r]):sum(sizes[:r + 1])])) for r in range(world))
        (loss / world).backward()

        close(out, arr(outf)[lo:hi], f"step {step}: output")
        close(x.grad, arr(xf.grad)[lo:hi] * world, f"step {step}: input gradient")
        for (n, p), (rn, rp) in zip(model.named_parameters(), ref.named_parameters()):
            assert n == rn
            close(p.grad, rp.grad, f"step {step}: gradient of {n}")
        close(model.bn.running_mean, ref.bn.running_mean, f"step {step}: running_mean")
        close(model.bn.running_var, ref.bn.running_var, f"step {step}: running_var")
        assert int(model.bn.num_batches_tracked) == int(ref.bn.num_batches_tracked) == step + 1
        opt.step()
        opt.zero_grad()
        ref_opt.step()
        ref_opt.zero_grad()
    # eval: the running statistics, no communication
    ddp.eval()
    ref.eval()
    X = rng.standard_normal((sum(sizes), 2, 6, 6))
    with dg.no_grad():
        close(ddp(dg.tensor(X[lo:hi])), arr(ref(dg.tensor(X)))[lo:hi], "eval output")


def check_plain(rank, world):
    """SyncBatchNorm on its own (no DDP): 2-D, 3-D and 4-D input, momentum=None, no
    affine, no running statistics, an empty batch on one rank (with 3 ranks); the input gradient under a random
    upstream gradient is compared with batch_norm's on the concatenated batch."""
    sizes = [4, 3] if world == 2 else [4, 0, 3]
    lo, hi = sum(sizes[:rank]), sum(sizes[:rank + 1])
    rng = np.random.default_rng(99)
    for shape, kwargs in [((5,), {}), ((5, 7), {"momentum": None}), ((5, 2, 3), {"affine": False}),
                          ((5,), {"track_running_stats": False})]:
        c = shape[0]
        bn = nn.SyncBatchNorm(c, dtype=dg.float64, **kwargs)
        run_mean = np.zeros(c)
        run_var = np.ones(c)
        for step in range(2):
            X = rng.standard_normal((sum(sizes),) + shape) + 5.0
            G = rng.standard_normal(X.shape)
            x = dg.tensor(X[lo:hi].copy(), requires_grad=True)
            y = bn(x)
            y.backward(dg.tensor(G[lo:hi].copy()))
            xf = dg.tensor(X, requires_grad=True)
            tracked = kwargs.get("track_running_stats", True)
            rm, rv = (dg.tensor(run_mean), dg.tensor(run_var)) if tracked else (None, None)
            mom = 1.0 / (step + 1) if kwargs.get("momentum", 0.1) is None else 0.1
            yf = F.batch_norm(xf, rm, rv, None if bn.weight is None else bn.weight.detach(),
                              None if bn.bias is None else bn.bias.detach(), True, mom, bn.eps)
            yf.backward(dg.tensor(G))
            what = f"SyncBatchNorm{kwargs} on {len(shape) + 1}-D input, batch {hi - lo}, step {step}"
            close(y, arr(yf)[lo:hi], what + ": output")
            close(x.grad, arr(xf.grad)[lo:hi], what + ": input gradient")
            if tracked:
                run_mean, run_var = arr(rm).copy(), arr(rv).copy()
                close(bn.running_mean, run_mean, what + ": running_mean")
                close(bn.running_var, run_var, what + ": running_var")
                assert int(bn.num_batches_tracked) == step + 1
            else:
                assert bn.running_mean is None and bn.num_batches_tracked is None

    # double backward: the first backward synchronizes as usual; differentiating its
    # result again is a clear error (local, no collective)
    bn = nn.SyncBatchNorm(3, dtype=dg.float64)
    x = dg.tensor(np.random.default_rng(rank).standard_normal((4, 3)), requires_grad=True)
    (g,) = dg.autograd.grad(bn(x).pow(3).sum(), x, create_graph=True)
    try:
        g.sum().backward()
    except RuntimeError as e:
        assert "SyncBatchNorm does not support double backward" in str(e), e
    else:
        raise AssertionError("double backward through SyncBatchNorm did not raise")


def main(mode):
    if mode in ("stall-forward", "stall-backward"):
        dist.init_process_group("mpi", timeout=2.0)
        rank = dist.get_rank()
        bn = nn.SyncBatchNorm(3)
        x = dg.randn(4, 3, requires_grad=True)
        bn(x).sum().backward()  # the first synchronized step completes on every rank
        if rank == 1 and mode == "stall-forward":
            print("rank 1: stalling", flush=True)
            time.sleep(8.0)
        y = bn(x)
        if rank == 1 and mode == "stall-backward":
            print("rank 1: stalling", flush=True)
            time.sleep(8.0)
        y.sum().backward()
        print(f"rank {rank}: second step finished", flush=True)
        return
    if mode == "single":  # no mpiexec: a world of one rank, where it is plain BatchNorm
        dist.init_process_group("mpi")
        assert dist.get_world_size() == 1
        from distgrad.nn.modules import _sync_batchnorm

        dg.manual_seed(0)
        ref = nn.BatchNorm2d(3, dtype=dg.float64)
        bn = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ref))
        rng = np.random.default_rng(0)
        for step in range(3):
            X, G = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2))
            x, xr = dg.tensor(X, requires_grad=True), dg.tensor(X, requires_grad=True)
            y, yr = bn(x), ref(xr)
            y.backward(dg.tensor(G))
            yr.backward(dg.tensor(G))
            assert np.array_equal(arr(y), arr(yr)) and np.array_equal(arr(x.grad), arr(xr.grad))
            assert np.array_equal(arr(bn.running_var), arr(ref.running_var))
        assert _sync_batchnorm._shared["comm"] is None, "a world of one rank made a communicator"
        print("rank 0: sync_bn single OK", flush=True)
        return
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    start = time.monotonic()
    check_ddp(rank, world)
    check_plain(rank, world)
    dist.barrier()
    sys.stdout.write(f"rank {rank}: sync_bn OK ({world} ranks, {time.monotonic() - start:.1f} s)\n")
    sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "check")
