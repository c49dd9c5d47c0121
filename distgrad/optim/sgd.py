"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""
from __future__ import annotations

import numpy as np

from ..ops import _jit_kernels, cuda_kernels
from ..tensor import _wrap
from .optimizer import Optimizer, compiled_step_applies, required


class SGD(Optimizer):
    """As ``torch.optim.SGD``; ``foreach`` and ``fused`` are accepted (True or False)
    and select nothing: distgrad has one implementation, with the same results."""

    def __init__(self, params, lr=1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach=None, differentiable: bool = False, fused=None):
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                                      foreach=foreach, differentiable=differentiable, fused=fused))
        self._check_impl_flags(foreach, fused, differentiable)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, mom, damp = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
            for p in group["params"]:
                if p._grad is None:
                    continue
                x = p._data
                d = p._grad._data
                f = x.dtype.type  # numpy is faster with scalars of the array's dtype
                if maximize:
                    d = -d
                if wd:
                    d = d + f(wd) * x
                if self._compiled_step(p, x, d, mom, damp, nesterov, lr):
                    continue
                if mom:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = _wrap(d.copy())
                    else:
                        b = buf._data
                        b *= f(mom)
                        b += f(1 - damp) * d if damp else d
                    d = d + f(mom) * buf._data if nesterov else buf._data
                if cuda_kernels.use(x) and d.dtype == x.dtype:  # one fused kernel, not two passes
                    cuda_kernels.sgd_update(x, d, lr)
                else:
                    x -= f(lr) * d
                p._vc[0] += 1
        return loss

    def _compiled_step(self, p, x, d, mom, damp, nesterov, lr) -> bool:
        """The step as one compiled pass (``_jit_bodies.sgd_f32``, the same bits), where
        it applies; False where the numpy body must take it."""
        if not compiled_step_applies(x, d):
            return False
        buf = self.state[p].get("momentum_buffer") if mom else None
        if buf is not None and not compiled_step_applies(buf._data):
            return False
        first = bool(mom) and buf is None
        b = np.empty_like(d) if first else (buf._data if buf is not None else d)
        k = np.array([float(lr), mom, 1 - damp], np.float32)
        _jit_kernels.get()["sgd_f32"](x.reshape(-1), d.reshape(-1), b.reshape(-1), k, bool(mom), first,
                                      bool(nesterov), bool(damp))
        if first:
            self.state[p]["momentum_buffer"] = _wrap(b)
        p._vc[0] += 1
        return True
