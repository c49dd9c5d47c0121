"""RMSprop, with optional momentum and centering."""
from __future__ import annotations

import numpy as np

from ..tensor import _wrap
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """As ``torch.optim.RMSprop``; ``foreach``, ``capturable`` and ``differentiable``
    are accepted and select nothing (one implementation serves all; ``differentiable=True`` is not supported)."""

    def __init__(self, params, lr=1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, capturable: bool = False, foreach=None,
                 maximize: bool = False, differentiable: bool = False):
        self._check_args(("learning rate", lr, 0.0, None), ("epsilon value", eps, 0.0, None),
                         ("momentum value", momentum, 0.0, None), ("weight_decay value", weight_decay, 0.0, None),
                         ("alpha value", alpha, 0.0, None))
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))
        self._check_impl_flags(foreach, None, differentiable)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, alpha, eps, mom = group["lr"], group["alpha"], group["eps"], group["momentum"]
            wd, centered = group["weight_decay"], group["centered"]
            for p, x, g, xp, f in self._with_grads(group):
                state = self.state[p]
                if not state:
                    state["step"] = _wrap(np.zeros((), np.float32))
                    state["square_avg"] = _wrap(xp.zeros_like(x))
                    if mom > 0:
                        state["momentum_buffer"] = _wrap(xp.zeros_like(x))
                    if centered:
                        state["grad_avg"] = _wrap(xp.zeros_like(x))
                state["step"]._data += 1
                if wd:
                    g = g + f(wd) * x
                sq = state["square_avg"]._data
                sq *= f(alpha)
                sq += f(1 - alpha) * g * g
                if centered:
                    ga = state["grad_avg"]._data
                    w = 1 - alpha
                    if abs(w) < 0.5:  # lerp as PyTorch computes it
                        ga += f(w) * (g - ga)
                    else:
                        ga[...] = g - (g - ga) * f(1 - w)
                    avg = xp.sqrt(sq - ga * ga)
                else:
                    avg = xp.sqrt(sq)
                avg += f(eps)
                if mom > 0:
                    buf = state["momentum_buffer"]._data
                    buf *= f(mom)
                    buf += g / avg
                    x += f(-lr) * buf
                else:
                    x += f(-lr) * g / avg
                p._vc[0] += 1
        return loss
