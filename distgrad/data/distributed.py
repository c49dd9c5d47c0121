"""``DistributedSampler``: each rank's share of a dataset, as
``torch.utils.data.distributed.DistributedSampler``."""
from __future__ import annotations

import math

from ..random import Generator
from .sampler import Sampler

_NOT_INITIALIZED = "Default process group has not been initialized, please make sure to call init_process_group."


def _from_default_group(what: str) -> int:
    from .. import distributed as dist

    if not dist.is_initialized():  # PyTorch's get_world_size/get_rank raise ValueError here
        raise ValueError(_NOT_INITIALIZED)
    return dist.get_world_size() if what == "world_size" else dist.get_rank()


class DistributedSampler(Sampler):
    """Each of ``num_replicas`` ranks gets a disjoint, equally long share of the
    dataset: the index list (``0..n-1``, or a permutation of it with ``shuffle``) is
    padded by repeating its start until its length divides evenly (or, with
    ``drop_last``, cut to the largest length that does), and rank ``r`` takes the
    items ``r, r + num_replicas, r + 2 * num_replicas, ...``. That rule is PyTorch's,
    so without shuffling every rank gets exactly the indices PyTorch gives it.

    ``num_replicas`` and ``rank`` default to the world size and rank of the default
    process group (``distgrad.distributed.init_process_group``); without one, leaving
    them out is an error, as in PyTorch.

    With ``shuffle`` the permutation is drawn from a generator seeded with
    ``seed + epoch``, so every rank cuts its share from the same permutation; call
    ``set_epoch(epoch)`` at the start of each epoch to reshuffle. The generator is
    distgrad's, so the permutation for a given seed differs from the one
    ``torch.randperm`` gives (the partitioning of it is the same).
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if num_replicas is None:
            num_replicas = _from_default_group("world_size")
        if rank is None:
            rank = _from_default_group("rank")
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle = shuffle
        self.seed = seed

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            indices = Generator().manual_seed(self.seed + self.epoch)._rng.permutation(n).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            pad = self.total_size - len(indices)
            if pad <= len(indices):
                indices += indices[:pad]
            else:
                indices += (indices * math.ceil(pad / len(indices)))[:pad]
        else:
            indices = indices[: self.total_size]
        if len(indices) != self.total_size:
            raise AssertionError(f"Number of indices ({len(indices)}) does not match total_size ({self.total_size})")
        indices = indices[self.rank:self.total_size:self.num_replicas]
        if len(indices) != self.num_samples:
            raise AssertionError(f"Number of indices ({len(indices)}) does not match num_samples ({self.num_samples})")
        return iter(indices)

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch: with ``shuffle``, each epoch gets its own permutation (the
        same on every rank)."""
        self.epoch = epoch


__all__ = ["DistributedSampler"]
