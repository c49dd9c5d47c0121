"""``DistributedDataParallel``: data-parallel training of a Module over MPI ranks."""
from __future__ import annotations

import contextlib

from ..nn.module import Module
from . import group as _group
from . import monitor
from .reducer import Reducer

_MiB = 1024 * 1024


class DistributedDataParallel(Module):
    """Wrap ``module`` so that backward leaves every rank with the gradients averaged
    over all ranks, reduced in buckets while backward is still running.

    At construction, rank 0's parameters and buffers are broadcast to every rank,
    after checking that all ranks hold the same parameters (names, shapes, dtypes).
    With ``gradient_as_bucket_view=True`` each ``.grad`` is a view of its bucket
    (no copy back; the next step overwrites it), as in PyTorch.
    """

    def __init__(self, module: Module, device_ids=None, output_device=None, dim: int = 0,
                 broadcast_buffers: bool = True, process_group=None, bucket_cap_mb: float = 25,
                 find_unused_parameters: bool = False, check_reduction: bool = False,
                 gradient_as_bucket_view: bool = False, static_graph: bool = False,
                 first_bucket_cap_mb: float = 1):
        super().__init__()
        comm = _group.default_comm()
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        config = {"bucket_cap_mb": bucket_cap_mb, "first_bucket_cap_mb": first_bucket_cap_mb,
                  "find_unused_parameters": find_unused_parameters, "broadcast_buffers": broadcast_buffers}
        self._check_same_model(comm, config)  # first: every rank must reach this collective
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError(
                "DistributedDataParallel is not needed when a module doesn't have any parameter "
                "that requires a gradient."
            )
        self._sync_state(comm)
        self._comm_hook = None
        self.reducer = Reducer(
            [p for _, p in named], [n for n, _ in named], comm,
            int(bucket_cap_mb * _MiB), int(first_bucket_cap_mb * _MiB), find_unused_parameters,
            _group.collective_timeout(), grad_views=gradient_as_bucket_view,
        )

    def _check_same_model(self, comm, config: dict) -> None:
        mine = [(f"option {k}", v, "", False) for k, v in sorted(config.items())]
        mine += [(n, tuple(p.shape), str(p.dtype), p.requires_grad) for n, p in self.module.named_parameters()]
        mine += [("buffer " + n, tuple(b.shape), str(b.dtype), False) for n, b in self.module.named_buffers()]
        everyone = _group.run_with_timeout(lambda: comm.allgather_object(mine), "the DDP model check")
        ref = everyone[0]
        for r, theirs in enumerate(everyone):
            if theirs == ref:
                continue
            for k in range(max(len(ref), len(theirs))):
                a = ref[k] if k < len(ref) else None
                b = theirs[k] if k < len(theirs) else None
                if a != b:
                    raise RuntimeError(
                        f"DistributedDataParallel: rank {r} does not hold the same model as rank 0 "
                        f"(seen on rank {comm.rank}): the first difference is {_describe(b)} on rank "
                        f"{r} but {_describe(a)} on rank 0. Every rank must build the same model "
                        "and pass the same DistributedDataParallel options."
                    )

    def _sync_state(self, comm) -> None:
        if comm.size == 1:
            return
        for t in list(self.module.parameters()) + list(self.module.buffers()):
            _group.run_with_timeout(lambda t=t: comm.broadcast_(t._data, 0), "the DDP parameter broadcast")
            t._vc[0] += 1

    def forward(self, *inputs, **kwargs):
        if self.reducer.active:
            raise RuntimeError(
                "DistributedDataParallel: the previous backward pass has not finished reducing "
                "gradients; did a backward pass raise an error?"
            )
        monitor.at("forward")
        comm = self.reducer.comm
        if self.broadcast_buffers and comm.size > 1 and self.reducer.sync:
            for b in self.module.buffers():
                _group.run_with_timeout(lambda b=b: comm.broadcast_(b._data, 0), "the DDP buffer broadcast")
                b._vc[0] += 1
        return self.module(*inputs, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Inside, backward accumulates gradients locally without communicating; the
        first backward after it reduces everything accumulated."""
        old = self.reducer.sync
        self.reducer.sync = False
        try:
            yield
        finally:
            self.reducer.sync = old

    def register_comm_hook(self, state, hook) -> None:
        """Reduce each gradient bucket with ``hook(state, bucket)`` instead of the
        built-in all-reduce (PyTorch's API; built-in hooks in
        ``distgrad.distributed.algorithms.ddp_comm_hooks.default_hooks``). ``bucket``
        is a ``GradBucket``; the hook returns a ``distgrad.futures.Future`` of the
        reduced buffer. It receives the gradients summed by nothing yet (not divided by
        the world size) and runs, in bucket order, on the communication thread, where
        its collectives use that thread's own communicator."""
        if not callable(hook):
            raise TypeError("Communication hook must be callable.")
        if self._comm_hook is not None:
            raise RuntimeError("register_comm_hook or register_builtin_comm_hook can only be called once.")
        if self.reducer.active:
            raise RuntimeError("register_comm_hook must be called before the first backward pass "
                               "(a backward pass is in progress)")
        self._comm_hook = (state, hook)
        self.reducer.register_comm_hook(state, hook)

    def bucket_names(self) -> list:
        """Parameter names per bucket, in the order buckets are all-reduced."""
        return self.reducer.bucket_names()

    def __del__(self):
        reducer = self.__dict__.get("reducer")
        if reducer is not None:
            reducer.close()


def _describe(entry) -> str:
    if entry is None:
        return "missing"
    name, shape, dtype, rg = entry
    if name.startswith("option "):
        return f"{name[7:]}={shape!r}"
    return f"'{name}' of shape {list(shape)} and dtype {dtype}" + ("" if rg or name.startswith("buffer") else " (frozen)")
