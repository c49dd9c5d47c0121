"""Adam and AdamW (decoupled weight decay)."""
from __future__ import annotations

import math

import numpy as np

from ..backend import array_module
from ..ops import _jit_kernels, cuda_kernels
from ..tensor import Tensor, _wrap
from .optimizer import Optimizer, compiled_step_applies


class Adam(Optimizer):
    """As ``torch.optim.Adam`` (``decoupled_weight_decay=True`` makes it AdamW);
    ``foreach`` and ``fused`` are accepted (True or False) and select nothing:
    distgrad has one implementation, with the same results. ``capturable`` is
    accepted (there are no CUDA graphs to capture)."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, foreach=None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False,
                 fused=None, decoupled_weight_decay: bool = False):
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        self._check_betas(betas)
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not ((isinstance(betas[0], float) and isinstance(betas[1], float))
                or (isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor))):
            raise ValueError("betas must be either both floats or both Tensors")
        betas = tuple(float(b) for b in betas)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                                      capturable=capturable, differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay or self._decoupled))
        self._check_impl_flags(foreach, fused, differentiable)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            wd, amsgrad, maximize = group["weight_decay"], group["amsgrad"], group["maximize"]
            decoupled = group.get("decoupled_weight_decay", self._decoupled)
            lr = float(lr)
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
                if wd and not decoupled:
                    g = g + f(wd) * x
                m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
                bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
                decay = 1 - lr * wd if wd and decoupled else 1.0
                if cuda_kernels.use(x) and not amsgrad and g.dtype == x.dtype:  # one GPU kernel
                    cuda_kernels.adam_update(x, g, m, v, b1, b2, lr / bc1, 1 / math.sqrt(bc2), eps, decay)
                    p._vc[0] += 1
                    continue
                if not amsgrad and compiled_step_applies(x, g, m, v):  # one pass, the same bits
                    k = np.array([decay, 1 - b1, b1, 1 - b2, b2, 1 / math.sqrt(bc2), eps, lr / bc1], np.float32)
                    _jit_kernels.get()["adam_f32"](x.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), k)
                    p._vc[0] += 1
                    continue
                if wd and decoupled:
                    x *= f(decay)
                tmp = xp.multiply(g, f(1 - b1), out=xp.empty_like(x))
                m *= f(b1)
                m += tmp
                xp.multiply(g, g, out=tmp)
                tmp *= f(1 - b2)
                v *= f(b2)
                v += tmp
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
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach=None, capturable: bool = False, differentiable: bool = False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True)
