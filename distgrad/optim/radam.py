"""RAdam: Adam with the variance of the adaptive rate rectified in early steps."""
from __future__ import annotations

from ..tensor import _wrap
from .optimizer import Optimizer, _lerp_, _scalar_state


class RAdam(Optimizer):
    """As ``torch.optim.RAdam`` (``decoupled_weight_decay=True`` is RAdamW); ``foreach``
    is accepted and selects nothing (one implementation), ``capturable`` is accepted
    (no CUDA graphs) and ``differentiable=True`` is not supported."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0,
                 decoupled_weight_decay: bool = False, *, foreach=None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False):
        self._check_args(("learning rate", lr, 0.0, None), ("epsilon value", eps, 0.0, None))
        self._check_betas(betas)
        self._check_args(("weight_decay value", weight_decay, 0.0, None))
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      foreach=foreach, capturable=capturable,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      differentiable=differentiable))
        self._check_impl_flags(foreach, None, differentiable)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, (b1, b2), eps = float(group["lr"]), group["betas"], group["eps"]
            wd, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
            for p, x, g, xp, f in self._with_grads(group):
                state = self.state[p]
                if not state:
                    state["step"] = _scalar_state(0.0)
                    state["exp_avg"] = _wrap(xp.zeros_like(x))
                    state["exp_avg_sq"] = _wrap(xp.zeros_like(x))
                state["step"]._data += 1
                step = float(state["step"]._data)
                if wd:
                    if decoupled:
                        x *= f(1 - lr * wd)
                    else:
                        g = g + f(wd) * x
                m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
                _lerp_(m, g, 1 - b1, f)
                v *= f(b2)
                v += f(1 - b2) * g * g
                bc1 = 1 - b1 ** step
                bc2 = 1 - b2 ** step
                update = m / f(bc1) * f(lr)
                rho_inf = 2 / (1 - b2) - 1
                rho_t = rho_inf - 2 * step * (b2 ** step) / bc2
                if rho_t > 5.0:
                    rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                    denom = xp.sqrt(v)
                    denom += f(eps)
                    update = update * (f(bc2 ** 0.5) / denom)
                    update *= f(rect)
                x -= update
                p._vc[0] += 1
        return loss
