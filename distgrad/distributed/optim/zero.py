"""``ZeroRedundancyOptimizer`` (PyTorch's API): each rank keeps the optimizer state of
its shard of the parameters only and updates only that shard; the updated shards are
then broadcast from their owners, so every rank ends the step with the same
parameters (ZeRO stage 1). ``shard_gradients`` adds stage 2: DistributedDataParallel
reduce-scatters each gradient bucket by the same partition instead of all-reducing
it, and every rank keeps only the averaged gradients of its own shard.

Partition (as PyTorch's): group by group, the parameters in decreasing size, each to
the rank with the fewest elements so far (the lowest rank on a tie); the same on
every rank, and a parameter group added later leaves earlier assignments alone.
"""
from __future__ import annotations

import copy

import numpy as np

from ...backend import array_module, to_numpy
from ...optim.optimizer import Optimizer
from ...tensor import Tensor, _wrap
from .. import group as _group

__all__ = ["ZeroRedundancyOptimizer", "global_grad_norm", "shard_gradients"]


def partition(param_groups: list, world_size: int) -> list:
    """``[rank][group] -> list of parameters``: PyTorch's greedy partition by size."""
    sizes = [0] * world_size
    out = [[] for _ in range(world_size)]
    for g in param_groups:
        per_rank = [[] for _ in range(world_size)]
        for p in sorted(g["params"], key=lambda t: t.numel(), reverse=True):
            r = sizes.index(min(sizes))
            per_rank[r].append(p)
            sizes[r] += p.numel()
        for r in range(world_size):
            out[r].append(per_rank[r])
    return out


class ZeroRedundancyOptimizer(Optimizer):
    """Wrap ``optimizer_class`` so that each rank holds the state of about
    ``1 / world_size`` of the parameters (PyTorch's ``ZeroRedundancyOptimizer``).

    ``step()`` updates this rank's shard with the local optimizer (``.optim``) and
    then broadcasts every shard from its owner (one flat buffer per rank and dtype).
    ``param_groups`` is the full list of groups; the hyper-parameters set there (the
    learning rate a scheduler sets) reach the local optimizer at each step.
    ``state_dict()`` is the ordinary full state dict, which any optimizer of the
    same class loads: call ``consolidate_state_dict(to)`` on every rank first, then
    ``state_dict()`` on rank ``to``. ``load_state_dict`` takes such a full state
    dict (saved by any world size) and keeps this rank's shard of it.
    """

    def __init__(self, params, optimizer_class, process_group=None, parameters_as_bucket_view: bool = False,
                 overlap_with_ddp: bool = False, **defaults):
        if parameters_as_bucket_view:
            raise NotImplementedError(
                "ZeroRedundancyOptimizer: parameters_as_bucket_view=True is not supported (each "
                "shard is packed into a flat buffer for its broadcast at every step); leave it False")
        if overlap_with_ddp:
            raise NotImplementedError(
                "ZeroRedundancyOptimizer: overlap_with_ddp=True is not supported; leave it False (for "
                "sharded gradients use distgrad.distributed.optim.shard_gradients(ddp_model, optimizer))")
        if process_group is not None:
            raise NotImplementedError(
                "ZeroRedundancyOptimizer: only the default process group is supported; pass "
                "process_group=None")
        self.comm = _group.default_comm()
        self.rank, self.world_size = self.comm.rank, self.comm.size
        self._initialized = False
        super().__init__(params, defaults)
        self._optimizer_class = optimizer_class
        self._defaults = defaults
        self._repartition()
        self.optim = optimizer_class(self._partition[self.rank], **defaults)
        self._sync_groups(self.param_groups, self.optim.param_groups)
        self._all_state_dicts = None
        self._initialized = True

    # -------------------------------------------------------------- partition
    def _repartition(self) -> None:
        self._partition = partition(self.param_groups, self.world_size)
        self._owner = {id(p): r for r, groups in enumerate(self._partition) for g in groups for p in g}
        self._index = {}
        for g in self.param_groups:
            for p in g["params"]:
                self._index.setdefault(id(p), len(self._index))
        self._partition = [[dict(g, params=ps) for g, ps in zip(self.param_groups, groups)]
                           for groups in self._partition]
        # Per owner, its parameters by dtype, in the same order on every rank.
        self._flat = []
        for groups in self._partition:
            by_dtype = {}
            for g in groups:
                for p in g["params"]:
                    by_dtype.setdefault(str(p._data.dtype), []).append(p)
            self._flat.append([by_dtype[k] for k in sorted(by_dtype)])

    def owner(self, param) -> int:
        """The rank that updates ``param`` and holds its optimizer state."""
        return self._owner[id(param)]

    @property
    def state(self):
        """This rank's optimizer state (its shard's, as the local optimizer keeps it)."""
        optim = self.__dict__.get("optim")
        return optim.state if optim is not None else self.__dict__["_state"]

    @state.setter
    def state(self, value) -> None:
        self.__dict__["_state"] = value   # the base class's, until the local optimizer exists

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        if self._initialized:
            self._repartition()   # earlier groups keep their owners: sizes accumulate in order
            self.optim.add_param_group(self._partition[self.rank][-1])

    @staticmethod
    def _sync_groups(src: list, dst: list) -> None:
        for s, d in zip(src, dst):
            for k, v in s.items():
                if k != "params":
                    d[k] = v

    # ------------------------------------------------------------------- step
    def step(self, closure=None):
        """Update this rank's shard, then give every rank every shard."""
        self._sync_groups(self.param_groups, self.optim.param_groups)
        loss = self.optim.step(closure) if closure is not None else self.optim.step()
        self._sync_groups(self.optim.param_groups, self.param_groups)
        self._broadcast_shards()
        return loss

    def _broadcast_shards(self) -> None:
        """Every owner's updated parameters to every rank: per owner and dtype one flat
        buffer, broadcast and copied out before the next is made (so the step holds
        one shard's worth of extra memory, not the whole model's). Blocking calls in a
        helper thread whose end the main thread waits for within the job's timeout (a
        non-blocking broadcast would progress only while this thread polls it, which
        slows large ones down)."""
        if self.world_size == 1:
            return

        def broadcast_all():
            for r, lists in enumerate(self._flat):
                for params in lists:
                    xp = array_module(params[0]._data)
                    if r == self.rank:
                        buf = xp.concatenate([p._data.reshape(-1) for p in params])
                    else:
                        buf = xp.empty(sum(p._data.size for p in params), params[0]._data.dtype)
                    self.comm.broadcast_(buf, r)
                    if r != self.rank:
                        off = 0
                        for p in params:
                            p._data[...] = buf[off:off + p._data.size].reshape(p._data.shape)
                            p._vc[0] += 1
                            off += p._data.size
                    del buf   # before the next shard's buffer is made

        _group.run_with_timeout(broadcast_all, "ZeroRedundancyOptimizer's broadcast of the updated shards")

    # ------------------------------------------------------------- state dict
    def _global_state(self) -> dict:
        """This rank's optimizer state keyed by global parameter index, tensors as
        host arrays (picklable; sent to the consolidating rank)."""
        out = {}
        for p, s in self.optim.state.items():
            out[self._index[id(p)]] = {k: (("tensor", to_numpy(v._data).copy()) if isinstance(v, Tensor) else v)
                                       for k, v in s.items()}
        return out

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's shard of the optimizer state on rank ``to`` (a
        collective: every rank must call it)."""
        if not 0 <= to < self.world_size:
            raise ValueError(f"consolidate_state_dict: to={to} is not a rank of this world of size "
                             f"{self.world_size} (rank {self.rank})")
        mine = self._global_state()
        # Gathered on ``to`` alone: the other ranks never hold the full state.
        every = [mine] if self.world_size == 1 else _group.run_with_timeout(
            lambda: self.comm.gather_object(mine, root=to), "ZeroRedundancyOptimizer.consolidate_state_dict")
        if self.rank != to:
            self._all_state_dicts = None
            return
        state = {}
        for part in every:
            for idx, s in part.items():
                state[idx] = {k: (_wrap(np.array(v[1])) if isinstance(v, tuple) and v[:1] == ("tensor",) else v)
                              for k, v in s.items()}
        self._all_state_dicts = {k: state[k] for k in sorted(state)}
        self._consolidated_on = to

    def state_dict(self) -> dict:
        """The full state dict (PyTorch's format: every parameter's state keyed by its
        index in ``param_groups``), on the rank ``consolidate_state_dict`` gathered it to."""
        if self._all_state_dicts is None:
            raise RuntimeError(
                f"ZeroRedundancyOptimizer (rank {self.rank}): optimizer state has not been consolidated on "
                "this rank. Call consolidate_state_dict(to=...) on all ranks beforehand, then state_dict() "
                "on rank `to`, if you meant to save the global state")
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = [self._index[id(p)] for p in g["params"]]
            groups.append(packed)
        return {"state": dict(self._all_state_dicts), "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a full state dict (from any world size) and keep this rank's shard."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(
                f"ZeroRedundancyOptimizer (rank {self.rank}): the loaded state dict has {len(saved)} parameter "
                f"groups, this optimizer {len(self.param_groups)}; load a state dict of the same model and groups")
        by_old = {}
        for i, (g, s) in enumerate(zip(self.param_groups, saved)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    f"ZeroRedundancyOptimizer (rank {self.rank}): the loaded state dict contains a parameter "
                    f"group {i} with {len(s['params'])} parameters, but this optimizer's group has "
                    f"{len(g['params'])}")
            by_old.update({int(old): p for old, p in zip(s["params"], g["params"])})
        local_index = {}
        for g in self.optim.param_groups:
            for p in g["params"]:
                local_index.setdefault(id(p), len(local_index))
        state = {}
        for k, v in state_dict["state"].items():
            p = by_old[int(k)]
            if self._owner[id(p)] == self.rank:
                state[local_index[id(p)]] = v
        local_groups = [dict({k: v for k, v in s.items() if k != "params"},
                             params=[local_index[id(p)] for p in g["params"]])
                        for s, g in zip(saved, self.optim.param_groups)]
        self.optim.load_state_dict({"state": state, "param_groups": local_groups})
        self._sync_groups(copy.deepcopy(saved), self.param_groups)


def shard_gradients(ddp_model, optimizer: ZeroRedundancyOptimizer) -> None:
    """ZeRO stage 2: from now on ``ddp_model``'s synchronized backward reduce-scatters
    each gradient bucket by ``optimizer``'s partition, and each rank's parameters
    outside its shard end backward with ``.grad = None``; inside ``no_sync()``
    gradients still accumulate locally in full.

    Memory: a gradient leaves ``.grad`` as soon as its bucket has it, and a bucket's
    buffer (laid out as one segment per owning rank, so it is reduce-scattered as it
    is) exists only from its first gradient until its reduce-scatter ends; after
    backward a rank holds the averaged gradients of its own parameters only (its
    segment of each bucket, which their ``.grad`` are views of); during backward
    the buckets on their way add to that. The traffic is a reduce-scatter instead of an all-reduce. The
    global gradient norm needs the squared norms of all shards summed over ranks
    (``global_grad_norm``)."""
    from ..ddp import DistributedDataParallel

    if not isinstance(ddp_model, DistributedDataParallel):
        raise TypeError(f"shard_gradients: expected a DistributedDataParallel model, got "
                        f"{type(ddp_model).__name__}")
    if not isinstance(optimizer, ZeroRedundancyOptimizer):
        raise TypeError(f"shard_gradients: expected a ZeroRedundancyOptimizer, got {type(optimizer).__name__}; "
                        "stage 2 shards the gradients by the optimizer's partition")
    if ddp_model._comm_hook is not None:
        raise RuntimeError(
            f"shard_gradients (rank {optimizer.rank}): this DistributedDataParallel model already has a "
            "communication hook; gradient sharding reduce-scatters the buckets itself, so build the model "
            "without register_comm_hook")
    reducer = ddp_model.reducer
    missing = [n for n, p in zip(reducer.names, reducer.params) if id(p) not in optimizer._owner]
    if missing:
        raise ValueError(
            f"shard_gradients (rank {optimizer.rank}): the optimizer does not hold the parameters "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; it must be built over all of the "
            "DDP model's trainable parameters")
    if reducer.size == 1:
        return
    reducer.shard([optimizer.owner(p) for p in reducer.params])


def global_grad_norm(parameters):
    """The 2-norm of the gradients of every rank's shard together (ZeRO stage 2: each
    rank holds only its shard's gradients): this rank's squared norm, summed over the
    ranks (one all-reduce of a float64), as a 0-d tensor of the gradients' dtype."""
    from ...nn.utils import get_total_norm

    grads = [p.grad for p in parameters if p.grad is not None]
    local = float(get_total_norm(grads).item()) if grads else 0.0
    comm = _group.default_comm()
    sq = np.asarray([local * local])
    if comm.size > 1:
        _group.wait_for(comm.iallreduce_(sq), "the all-reduce of the sharded gradients' squared norm")
    dtype = grads[0]._data.dtype if grads else np.float32
    return _wrap(np.asarray(np.sqrt(sq[0]), dtype=dtype).reshape(()))
