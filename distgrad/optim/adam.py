"""Adam and AdamW (decoupled weight decay)."""
from __future__ import annotations

import math

import numpy as np

from ..backend import array_module
from ..ops import cuda_kernels
from ..tensor import _wrap
from .optimizer import Optimizer


class Adam(Optimizer):
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameters: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            wd, amsgrad, maximize = group["weight_decay"], group["amsgrad"], group["maximize"]
            for p in group["params"]:
                if p._grad is None:
                    continue
                x = p._data
                g = p._grad._data
                xp = array_module(x)
                if maximize:
                    g = -g
                state = self.state[p]
                if not state:
                    state["step"] = _wrap(np.zeros((), np.float32))  # on the host: read every step
                    state["exp_avg"] = _wrap(xp.zeros_like(x))
                    state["exp_avg_sq"] = _wrap(xp.zeros_like(x))
                    if amsgrad:
                        state["max_exp_avg_sq"] = _wrap(xp.zeros_like(x))
                step_t = state["step"]
                step_t._data += 1
                step = float(step_t._data)
                # Scalars of the parameter's own dtype: numpy is much faster with those
                # than with Python floats on every call.
                f = x.dtype.type
                if wd and not self._decoupled:
                    g = g + f(wd) * x
                if wd and self._decoupled and (xp is np or amsgrad):
                    x *= f(1 - lr * wd)
                m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
                if xp is not np and not amsgrad:  # one fused GPU kernel
                    bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
                    decay = 1 - lr * wd if wd and self._decoupled else 1.0
                    cuda_kernels.adam_update(x, g, m, v, b1, b2, lr / bc1, 1 / math.sqrt(bc2), eps, decay)
                    p._vc[0] += 1
                    continue
                tmp = xp.multiply(g, f(1 - b1), out=xp.empty_like(x))
                m *= f(b1)
                m += tmp
                xp.multiply(g, g, out=tmp)
                tmp *= f(1 - b2)
                v *= f(b2)
                v += tmp
                bc1 = 1 - b1 ** step
                bc2 = 1 - b2 ** step
                if amsgrad:
                    vmax = state["max_exp_avg_sq"]._data
                    xp.maximum(vmax, v, out=vmax)
                    v = vmax
                xp.sqrt(v, out=tmp)
                tmp *= f(1 / math.sqrt(bc2))
                tmp += f(eps)
                xp.divide(m, tmp, out=tmp)
                tmp *= f(lr / bc1)
                x -= tmp
                p._vc[0] += 1
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01), as ``torch.optim.AdamW``."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
