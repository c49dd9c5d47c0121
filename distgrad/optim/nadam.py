"""NAdam: Adam with Nesterov momentum (and a momentum-decay schedule)."""
from __future__ import annotations

from ..tensor import _wrap
from .optimizer import Optimizer, _lerp_, _scalar_state


class NAdam(Optimizer):
    """As ``torch.optim.NAdam`` (``decoupled_weight_decay=True`` is NAdamW); ``foreach``
    is accepted and selects nothing (one implementation), ``capturable`` is accepted
    (no CUDA graphs) and ``differentiable=True`` is not supported. ``mu_product`` is a
    float32 scalar in the state, as PyTorch keeps it."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0,
                 momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *, foreach=None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False):
        self._check_args(("learning rate", lr, 0.0, None), ("epsilon value", eps, 0.0, None))
        self._check_betas(betas)
        self._check_args(("weight_decay value", weight_decay, 0.0, None),
                         ("momentum_decay value", momentum_decay, 0.0, None))
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                                      foreach=foreach, capturable=capturable, differentiable=differentiable))
        self._check_impl_flags(foreach, None, differentiable)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, (b1, b2), eps = float(group["lr"]), group["betas"], group["eps"]
            wd, md, decoupled = group["weight_decay"], group["momentum_decay"], group["decoupled_weight_decay"]
            for p, x, g, xp, f in self._with_grads(group):
                state = self.state[p]
                if not state:
                    state["step"] = _scalar_state(0.0)
                    state["mu_product"] = _scalar_state(1.0)
                    state["exp_avg"] = _wrap(xp.zeros_like(x))
                    state["exp_avg_sq"] = _wrap(xp.zeros_like(x))
                state["step"]._data += 1
                step = float(state["step"]._data)
                bc2 = 1 - b2 ** step
                if wd:
                    if decoupled:
                        x *= f(1 - lr * wd)
                    else:
                        g = g + f(wd) * x
                mu = b1 * (1.0 - 0.5 * (0.96 ** (step * md)))
                mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * md)))
                mp = state["mu_product"]._data
                mp *= mp.dtype.type(mu)  # in the scalar's own precision (float32 until loaded)
                mu_product = float(mp)
                m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
                _lerp_(m, g, 1 - b1, f)
                v *= f(b2)
                v += f(1 - b2) * g * g
                denom = xp.sqrt(v / f(bc2))
                denom += f(eps)
                x += f(-lr * (1.0 - mu) / (1.0 - mu_product)) * g / denom
                x += f((-lr * mu_next) / (1.0 - mu_product * mu_next)) * m / denom
                p._vc[0] += 1
        return loss
