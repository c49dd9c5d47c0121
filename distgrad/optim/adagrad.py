"""Adagrad: per-coordinate learning rates from the sum of squared gradients."""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..tensor import _wrap
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """As ``torch.optim.Adagrad``; ``foreach``, ``differentiable`` and ``fused`` are
    accepted and select nothing (one implementation serves all; ``differentiable=True`` is not supported)."""

    def __init__(self, params, lr=1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, foreach=None, *,
                 maximize: bool = False, differentiable: bool = False, fused=None):
        self._check_args(("learning rate", lr, 0.0, None), ("lr_decay value", lr_decay, 0.0, None),
                         ("weight_decay value", weight_decay, 0.0, None),
                         ("initial_accumulator_value value", initial_accumulator_value, 0.0, None),
                         ("epsilon value", eps, 0.0, None))
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      foreach=foreach, maximize=maximize, differentiable=differentiable,
                                      fused=fused))
        self._check_impl_flags(foreach, fused, differentiable)
        for group in self.param_groups:  # PyTorch makes the state up front
            for p in group["params"]:
                self._init_state(p, group)

    def _init_state(self, p, group) -> dict:
        state = self.state[p]
        if not state:
            x = p._data
            state["step"] = _wrap(np.zeros((), np.float32))
            sum_ = array_module(x).empty_like(x)
            sum_.fill(group["initial_accumulator_value"])
            state["sum"] = _wrap(sum_)
        return state

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
            wd = group["weight_decay"]
            for p, x, g, xp, f in self._with_grads(group):
                state = self._init_state(p, group)
                state["step"]._data += 1
                step = float(state["step"]._data)
                if wd:
                    g = g + f(wd) * x
                clr = lr / (1 + (step - 1) * lr_decay)
                s = state["sum"]._data
                s += g * g
                std = xp.sqrt(s)
                std += f(eps)
                x += f(-clr) * g / std
                p._vc[0] += 1
        return loss
