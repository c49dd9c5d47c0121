"""ASGD: averaged stochastic gradient descent."""
from __future__ import annotations

import numpy as np

from ..tensor import _wrap
from .optimizer import Optimizer, _scalar_state


class ASGD(Optimizer):
    """As ``torch.optim.ASGD``: the average of the iterates is kept in ``state["ax"]``;
    ``eta`` and ``mu`` are float32 scalars in the state, as PyTorch keeps them.
    ``foreach`` is accepted and selects nothing (one implementation), ``capturable``
    is accepted (no CUDA graphs) and ``differentiable=True`` is not supported."""

    def __init__(self, params, lr=1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
                 weight_decay: float = 0, foreach=None, maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False):
        self._check_args(("learning rate", lr, 0.0, None), ("weight_decay value", weight_decay, 0.0, None))
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                                      foreach=foreach, maximize=maximize, differentiable=differentiable,
                                      capturable=capturable))
        self._check_impl_flags(foreach, None, differentiable)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, lambd, alpha = float(group["lr"]), group["lambd"], group["alpha"]
            t0, wd = group["t0"], group["weight_decay"]
            for p, x, g, xp, f in self._with_grads(group):
                state = self.state[p]
                if not state:
                    state["step"] = _scalar_state(0.0)
                    state["eta"] = _scalar_state(lr)
                    state["mu"] = _scalar_state(1.0)
                    state["ax"] = _wrap(xp.zeros_like(x))
                state["step"]._data += 1
                if wd:
                    g = g + f(wd) * x
                eta = float(state["eta"]._data)
                x *= f(1 - lambd * eta)
                x -= f(eta) * g
                ax = state["ax"]._data
                mu = float(state["mu"]._data)
                if mu != 1:
                    ax += (x - ax) * f(mu)
                else:
                    ax[...] = x
                step = float(state["step"]._data)
                # float32 values (PyTorch makes them with ``torch.as_tensor`` of a
                # Python float), stored in the entry's dtype (float64 once loaded)
                state["eta"]._data[...] = np.float32(lr / ((1 + lambd * lr * step) ** alpha))
                state["mu"]._data[...] = np.float32(1 / max(1, step - t0))
                p._vc[0] += 1
        return loss
