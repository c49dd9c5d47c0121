"""``DataLoader``: batches from a dataset, in the order a sampler gives."""
from __future__ import annotations

import warnings
from numbers import Number

import numpy as np

from ..dtype import float64
from ..ops.creation import tensor
from ..ops.shape import stack
from ..tensor import Tensor
from .sampler import BatchSampler, RandomSampler, SequentialSampler


def default_collate(batch):
    """Stack a list of samples: tensors and arrays are stacked along a new first
    dim, numbers become a tensor (Python floats float64, as in PyTorch), and
    tuples, lists and dicts are collated field by field (a list per field, a
    namedtuple keeping its type)."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(batch, 0)
    if isinstance(elem, np.ndarray):
        return tensor(np.stack(batch))
    if isinstance(elem, np.number):
        return tensor(np.asarray(batch))
    if isinstance(elem, float):
        return tensor(batch, dtype=float64)
    if isinstance(elem, (bool, Number)):
        return tensor(batch)
    if isinstance(elem, str):
        return list(batch)
    if isinstance(elem, dict):
        return {k: default_collate([d[k] for d in batch]) for k in elem}
    if isinstance(elem, (tuple, list)):
        if any(len(s) != len(elem) for s in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        out = [default_collate(list(field)) for field in zip(*batch)]
        if hasattr(elem, "_fields"):  # a namedtuple keeps its type
            return type(elem)(*out)
        return out
    raise TypeError(f"default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {type(elem).__name__}")


class DataLoader:
    """Iterate over ``dataset`` in batches, as ``torch.utils.data.DataLoader``.

    Batches are loaded in the calling process; ``num_workers`` is accepted for
    compatibility and ignored (with a warning when it is not 0).
    """

    def __init__(self, dataset, batch_size: int | None = 1, shuffle: bool | None = None, sampler=None,
                 batch_sampler=None, num_workers: int = 0, collate_fn=None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn=None, generator=None,
                 *, prefetch_factor=None, persistent_workers: bool = False):
        if num_workers:
            warnings.warn("distgrad's DataLoader loads batches in the calling process; num_workers is ignored",
                          UserWarning, stacklevel=2)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last")
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.generator = generator
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        self.sampler = sampler
        if batch_sampler is None and batch_size is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.batch_sampler = batch_sampler
        self.collate_fn = collate_fn or (default_collate if batch_sampler is not None else (lambda x: x))

    def __iter__(self):
        if self.batch_sampler is None:
            for i in self.sampler:
                yield self.collate_fn(self.dataset[i])
            return
        fetch_many = getattr(self.dataset, "__getitems__", None)
        for indices in self.batch_sampler:
            samples = fetch_many(indices) if fetch_many else [self.dataset[i] for i in indices]
            yield self.collate_fn(samples)

    def __len__(self):
        return len(self.batch_sampler) if self.batch_sampler is not None else len(self.sampler)
