"""Config-driven training: the config schema, the trainer, checkpoints."""
from .checkpoint import CheckpointError, NonFiniteCheckpointError
from .config import ConfigError, load, resolve
from .losses import LossMismatch
from .trainer import NonFiniteStop, ResumeRefused, Trainer

__all__ = ["CheckpointError", "ConfigError", "LossMismatch", "NonFiniteCheckpointError", "NonFiniteStop",
           "ResumeRefused", "Trainer", "load", "resolve"]
