"""The synchronized batch normalization behind ``nn.SyncBatchNorm``.

Forward: every rank computes, per channel, its count, mean and sum of squared
deviations from that mean (M2); one all-gather gives every rank every rank's
triple, and each rank combines them in rank order (Chan's parallel variance:
``M2 = sum M2_r + sum n_r (mean_r - mean)^2``, never ``E[x^2] - E[x]^2``), so all
ranks normalize with the same statistics of the union of their batches. Ranks may
hold different batch sizes, or none at all.

Backward: one all-reduce of the per-channel sums of ``grad`` and ``grad * xhat``
gives every rank the input gradient that batch norm on the concatenated batch
gives its slice. The weight and bias gradients stay local (DDP averages them).

The collectives run on a communicator of their own (a dup of the default one,
made once, at the first synchronized forward, which every rank reaches), so they
never pair with DDP's gradient all-reduces on its communication thread; every
wait is bounded by the process group's timeout and names what it waited for.
"""
from __future__ import annotations

from ...autograd.function import Function, _DelayedError, record
from ...autograd.grad_mode import no_grad
from ...autograd.grad_mode import state as _grad_state
from ...backend import array_module
from ...tensor import Tensor, _wrap

_shared = {"world": None, "comm": None}


def sync_comm():
    """This job's SyncBatchNorm communicator: made at the first call after
    ``init_process_group`` (collective: every rank must make this call at the same
    point, which the first synchronized forward is)."""
    from ...distributed import group as _group

    world = _group.default_comm()
    if _shared["world"] is world:
        return _shared["comm"]
    mpi = getattr(world, "MPI", None)
    if mpi is not None and mpi.Query_thread() < mpi.THREAD_MULTIPLE:
        raise RuntimeError(
            "SyncBatchNorm: MPI was initialized without MPI_THREAD_MULTIPLE, but its collectives "
            "run on the main thread while DistributedDataParallel's communication thread "
            "all-reduces gradients; leave mpi4py.rc.thread_level at its default, 'multiple'")
    comm = _group.run_with_timeout(world.dup, "SyncBatchNorm's communicator setup (a dup of the "
                                              "default communicator, at the first synchronized forward)")
    _shared["world"], _shared["comm"] = world, comm
    return comm


def _wait(request, what: str):
    from ...distributed import group as _group

    return _group.wait_for(request, what)


class SyncBatchNormFunction(Function):
    """Batch norm in training over the union of all ranks' batches (see the module's
    docstring). Arguments: input, weight, bias, running_mean, running_var, eps,
    momentum, comm, what (a name for the layer in wait and error messages)."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, comm, what):
        x = input._data
        xp = array_module(x)
        ndim, c = x.ndim, x.shape[1]
        axes = (0,) + tuple(range(2, ndim))
        shape = (1, c) + (1,) * (ndim - 2)
        n = x.size // c if c else 0
        acc = xp.float64
        # this rank's count, mean and M2 per channel, in float64, as one message
        packed = xp.zeros(2 * c + 1, acc)
        if n > 0:
            xa = x.astype(acc, copy=False)
            m = xa.mean(axis=axes)
            d = xa - m.reshape(shape)
            packed[:c] = m
            packed[c:2 * c] = (d * d).sum(axis=axes)
        packed[2 * c] = n
        parts = _wait(comm.iallgather(packed),
                      f"{what}: the all-gather of per-rank batch statistics in forward")
        table = xp.stack([xp.asarray(p) for p in parts])  # (world size, 2C + 1), rank order
        counts = table[:, 2 * c]
        total = float(counts.sum())
        if total <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got {int(total)} over all "
                f"{comm.size} ranks (input size {list(x.shape)} on rank {comm.rank})")
        means, m2s = table[:, :c], table[:, c:2 * c]
        mean = (counts[:, None] * means).sum(axis=0) / total
        dev = means - mean
        m2 = m2s.sum(axis=0) + (counts[:, None] * dev * dev).sum(axis=0)
        var = m2 / total
        invstd = 1.0 / xp.sqrt(var + eps)

        mean_x = mean.astype(x.dtype)
        invstd_x = invstd.astype(x.dtype)
        y = (x - mean_x.reshape(shape)) * invstd_x.reshape(shape)
        if weight is not None:
            y = y * weight._data.reshape(shape)
        if bias is not None:
            y = y + bias._data.reshape(shape)
        y = y.astype(x.dtype, copy=False)

        if running_mean is not None or running_var is not None:
            f = 0.0 if momentum is None else float(momentum)
            with no_grad():  # as F.batch_norm updates them, with the global statistics
                if running_mean is not None:
                    bm = _wrap(mean.astype(running_mean._data.dtype))
                    running_mean.mul_(1.0 - f).add_(bm * f)
                if running_var is not None:
                    bv = _wrap((m2 / (total - 1)).astype(running_var._data.dtype))
                    running_var.mul_(1.0 - f).add_(bv * f)

        ctx.save_for_backward(input, weight)
        ctx.mean, ctx.invstd, ctx.total = mean_x, invstd_x, total
        ctx.comm, ctx.what = comm, what
        ctx.bias_dtype = None if bias is None else bias._data.dtype
        return _wrap(y)

    @staticmethod
    def backward(ctx, grad_output):
        x_t, w_t = ctx.saved_tensors
        wants_graph = _grad_state.enabled
        with no_grad():
            gi, gw, gb = _backward(ctx, grad_output._data, x_t._data,
                                   None if w_t is None else w_t._data)
        outs = [None if g is None else _wrap(g) for g in (gi, gw, gb)]
        if wants_graph:
            # create_graph=True: these gradients are not differentiable again (neither are
            # PyTorch's); differentiating them raises instead of giving a wrong (zero) result.
            graph_inputs = tuple(t for t in (grad_output, x_t, w_t)
                                 if isinstance(t, Tensor) and t.requires_grad)
            if graph_inputs:
                msg = ("SyncBatchNorm does not support double backward: its gradients cannot be "
                       "differentiated again (PyTorch's cannot either)")
                outs = [None if o is None else record(_DelayedError, o._data, graph_inputs, args=msg)
                        for o in outs]
        return (*outs, None, None, None, None, None, None)


def _backward(ctx, dy, x, w):
    xp = array_module(x)
    ndim, c = x.ndim, x.shape[1]
    axes = (0,) + tuple(range(2, ndim))
    shape = (1, c) + (1,) * (ndim - 2)
    mean, invstd = ctx.mean.reshape(shape), ctx.invstd.reshape(shape)
    xhat = (x - mean) * invstd
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    sum_dy = dy.sum(axis=axes)
    sum_dy_xhat = (dy * xhat).sum(axis=axes)
    gi = None
    if need_x:
        sums = xp.concatenate([sum_dy, sum_dy_xhat]).astype(xp.float64)
        _wait(ctx.comm.iallreduce_(sums),
              f"{ctx.what}: the all-reduce of the gradient sums in backward")
        mean_dy = (sums[:c] / ctx.total).astype(x.dtype).reshape(shape)
        mean_dy_xhat = (sums[c:] / ctx.total).astype(x.dtype).reshape(shape)
        scale = invstd if w is None else invstd * w.reshape(shape)
        gi = ((dy - mean_dy - xhat * mean_dy_xhat) * scale).astype(x.dtype, copy=False)
    gw = sum_dy_xhat.astype(w.dtype, copy=False) if (need_w and w is not None) else None
    gb = sum_dy.astype(ctx.bias_dtype, copy=False) if (need_b and ctx.bias_dtype is not None) else None
    return gi, gw, gb
