"""Distributed optimizers (PyTorch's ``torch.distributed.optim``): optimizer state
sharded among the ranks (ZeRO stage 1), and the gradients too (stage 2)."""
from .zero import ZeroRedundancyOptimizer, global_grad_norm, shard_gradients

__all__ = ["ZeroRedundancyOptimizer", "global_grad_norm", "shard_gradients"]
