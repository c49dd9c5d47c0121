"""``distgrad.utils.data``: the same module as ``distgrad.data``, so code written against
``torch.utils.data`` (``from torch.utils.data import DataLoader``,
``from torch.utils.data.distributed import DistributedSampler``) ports by renaming."""
import sys

from .. import data as _data
from ..data import dataloader, dataset, datasets, distributed, sampler  # noqa: F401

for _name in ("dataloader", "dataset", "datasets", "distributed", "sampler"):
    # the submodules under this name too, so that importing one does not load a second copy
    sys.modules[f"{__name__}.{_name}"] = getattr(_data, _name)
sys.modules[__name__] = _data
