"""Config-driven training: the config schema, the trainer, checkpoints."""
from .config import ConfigError, load, resolve
from .trainer import Trainer

__all__ = ["ConfigError", "Trainer", "load", "resolve"]
