"""Data-parallel training over MPI: the process group, collectives on tensors, and
``DistributedDataParallel`` (also at ``distgrad.nn.parallel``)."""
from .ddp import DistributedDataParallel
from .group import (ReduceOp, Work, all_gather, all_gather_object, all_reduce, barrier,
                    broadcast, broadcast_object_list, destroy_process_group, get_backend,
                    get_local_rank, get_local_world_size, get_rank, get_world_size,
                    init_process_group, is_available, is_initialized, reduce_scatter_tensor)

__all__ = [
    "DistributedDataParallel", "ReduceOp", "Work", "all_gather", "all_gather_object", "all_reduce",
    "barrier", "broadcast", "broadcast_object_list", "destroy_process_group", "get_backend",
    "get_local_rank", "get_local_world_size", "get_rank", "get_world_size", "init_process_group",
    "is_available", "is_initialized", "reduce_scatter_tensor",
]
from . import algorithms  # noqa: E402
from .algorithms import ddp_comm_hooks  # noqa: E402,F401
from .reducer import GradBucket  # noqa: E402

__all__ += ["GradBucket", "algorithms"]
from . import optim  # noqa: E402,F401  (ZeroRedundancyOptimizer, as torch.distributed.optim)
