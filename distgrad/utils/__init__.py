"""Utilities: gradient checkpointing."""
from . import checkpoint
from . import data  # noqa: F401  (distgrad.data, under torch.utils.data's name)
