"""Adamax: Adam with the infinity norm of past gradients in place of the second moment."""
from __future__ import annotations

from ..tensor import _wrap
from .optimizer import Optimizer, _lerp_, _scalar_state


class Adamax(Optimizer):
    """As ``torch.optim.Adamax``; ``foreach`` is accepted and selects nothing (one
    implementation), ``capturable`` is accepted (no CUDA graphs) and
    ``differentiable=True`` is not supported."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0,
                 foreach=None, *, maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False):
        self._check_args(("learning rate", lr, 0.0, None), ("epsilon value", eps, 0.0, None))
        self._check_betas(betas)
        self._check_args(("weight_decay value", weight_decay, 0.0, None))
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, capturable=capturable))
        self._check_impl_flags(foreach, None, differentiable)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = float(group["lr"]), group["betas"], group["eps"], group["weight_decay"]
            for p, x, g, xp, f in self._with_grads(group):
                state = self.state[p]
                if not state:
                    state["step"] = _scalar_state(0.0)
                    state["exp_avg"] = _wrap(xp.zeros_like(x))
                    state["exp_inf"] = _wrap(xp.zeros_like(x))
                state["step"]._data += 1
                step = float(state["step"]._data)
                if wd:
                    g = g + f(wd) * x
                m, u = state["exp_avg"]._data, state["exp_inf"]._data
                _lerp_(m, g, 1 - b1, f)
                u *= f(b2)
                norm = xp.abs(g)
                norm += f(eps)
                xp.maximum(u, norm, out=u)
                clr = lr / (1 - b1 ** step)
                x += f(-clr) * m / u
                p._vc[0] += 1
        return loss
