"""Gradient clipping."""
from __future__ import annotations

import math

from ...autograd.grad_mode import no_grad
from ...tensor import Tensor


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """Scale the gradients in place so their total ``norm_type``-norm is at most
    ``max_norm``; returns the total norm before clipping (a 0-d tensor)."""
    grads = _grads(parameters)
    norm_type = float(norm_type)
    if not grads:
        from ...ops.creation import zeros

        return zeros(())
    with no_grad():
        norms = [g.norm(norm_type) for g in grads]
        if norm_type == math.inf:
            total = norms[0] if len(norms) == 1 else _stack_max(norms)
        else:
            from ...ops.shape import stack

            total = stack([n.to(grads[0].dtype) for n in norms]).norm(norm_type)
        if error_if_nonfinite and not math.isfinite(total.item()):
            raise RuntimeError(
                f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
                "so it cannot be clipped. To disable this error and scale the gradients by the "
                "non-finite norm anyway, set `error_if_nonfinite=False`"
            )
        # The factor stays a tensor (no read of the norm, so a GPU need not wait).
        coef = (total.to(grads[0].dtype) + 1e-6).reciprocal() * float(max_norm)
        coef = coef.clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(device=g.device))
    return total


def _stack_max(norms):
    from ...ops.shape import stack

    return stack(norms).amax()


def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(-clip_value, clip_value)
