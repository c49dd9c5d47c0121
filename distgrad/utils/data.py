"""``distgrad.utils.data``: the same module as ``distgrad.data``, so code written against
``torch.utils.data`` (``from torch.utils.data import DataLoader``) ports by renaming."""
import sys

from .. import data as _data

sys.modules[__name__] = _data
