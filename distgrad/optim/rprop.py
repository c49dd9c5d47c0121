"""Rprop: resilient backpropagation (per-coordinate step sizes from gradient signs)."""
from __future__ import annotations

from ..tensor import _wrap
from .optimizer import Optimizer, _scalar_state


class Rprop(Optimizer):
    """As ``torch.optim.Rprop``; ``foreach`` is accepted and selects nothing (one
    implementation), ``capturable`` is accepted (no CUDA graphs) and
    ``differentiable=True`` is not supported."""

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, capturable: bool = False,
                 foreach=None, maximize: bool = False, differentiable: bool = False):
        self._check_args(("learning rate", lr, 0.0, None))
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, capturable=capturable))
        self._check_impl_flags(foreach, None, differentiable)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            etaminus, etaplus = group["etas"]
            step_size_min, step_size_max = group["step_sizes"]
            for p, x, g, xp, f in self._with_grads(group):
                state = self.state[p]
                if not state:
                    state["step"] = _scalar_state(0.0)
                    state["prev"] = _wrap(xp.zeros_like(x))
                    size = xp.empty_like(g)
                    size.fill(float(group["lr"]))
                    state["step_size"] = _wrap(size)
                state["step"]._data += 1
                prev, size = state["prev"]._data, state["step_size"]._data
                sign = xp.sign(g * prev)
                factor = xp.where(sign > 0, f(etaplus), xp.where(sign < 0, f(etaminus), f(1)))
                size *= factor
                xp.clip(size, step_size_min, step_size_max, out=size)
                g = xp.where(factor == f(etaminus), f(0), g)
                x -= xp.sign(g) * size
                prev[...] = g
                p._vc[0] += 1
        return loss
