"""Adadelta: step sizes from running averages of squared gradients and squared updates."""
from __future__ import annotations

import numpy as np

from ..tensor import _wrap
from .optimizer import Optimizer


class Adadelta(Optimizer):
    """As ``torch.optim.Adadelta``; ``foreach``, ``capturable`` and ``differentiable``
    are accepted and select nothing (one implementation serves all; ``differentiable=True`` is not supported)."""

    def __init__(self, params, lr=1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0,
                 foreach=None, *, capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False):
        self._check_args(("learning rate", lr, 0.0, None), ("rho value", rho, 0.0, 1.0),
                         ("epsilon value", eps, 0.0, None), ("weight_decay value", weight_decay, 0.0, None))
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      capturable=capturable, foreach=foreach, differentiable=differentiable))
        self._check_impl_flags(foreach, None, differentiable)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, rho, eps = group["lr"], group["rho"], group["eps"]
            wd = group["weight_decay"]
            for p, x, g, xp, f in self._with_grads(group):
                state = self.state[p]
                if not state:
                    state["step"] = _wrap(np.zeros((), np.float32))
                    state["square_avg"] = _wrap(xp.zeros_like(x))
                    state["acc_delta"] = _wrap(xp.zeros_like(x))
                state["step"]._data += 1
                if wd:
                    g = g + f(wd) * x
                sq, acc = state["square_avg"]._data, state["acc_delta"]._data
                sq *= f(rho)
                sq += f(1 - rho) * g * g
                std = xp.sqrt(sq + f(eps))
                delta = xp.sqrt(acc + f(eps))
                delta /= std
                delta *= g
                acc *= f(rho)
                acc += f(1 - rho) * delta * delta
                x += f(-lr) * delta
                p._vc[0] += 1
        return loss
