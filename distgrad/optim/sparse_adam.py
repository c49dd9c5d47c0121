"""SparseAdam: PyTorch's Adam for sparse gradients. distgrad has no sparse tensors,
so every gradient is dense and ``step`` raises PyTorch's own error for that case."""
from __future__ import annotations

from .optimizer import Optimizer


class SparseAdam(Optimizer):
    """As ``torch.optim.SparseAdam``: the constructor checks its arguments as
    PyTorch's does; ``step`` over a parameter with a (dense) gradient raises
    ``RuntimeError`` as PyTorch does for dense gradients: use ``Adam`` instead."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8, maximize: bool = False):
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        self._check_betas(betas)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize))

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p._grad is not None:
                    raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")
        return loss
