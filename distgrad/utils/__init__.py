"""Utilities: gradient checkpointing."""
from . import checkpoint
