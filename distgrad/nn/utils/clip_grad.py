"""Gradient clipping."""
from __future__ import annotations

import math

from ...autograd.grad_mode import no_grad
from ...tensor import Tensor


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def get_total_norm(tensors, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                   foreach=None) -> Tensor:
    """The ``norm_type``-norm of all ``tensors`` together, as if concatenated (a 0-d
    tensor; not read, so a GPU need not wait)."""
    tensors = [tensors] if isinstance(tensors, Tensor) else [t for t in tensors if t is not None]
    norm_type = float(norm_type)
    if not tensors:
        from ...ops.creation import zeros

        return zeros(())
    with no_grad():
        norms = [t.norm(norm_type) for t in tensors]
        if norm_type == math.inf:
            total = norms[0] if len(norms) == 1 else _stack_max(norms)
        else:
            from ...ops.shape import stack

            total = stack([n.to(tensors[0].dtype) for n in norms]).norm(norm_type)
    if error_if_nonfinite and not math.isfinite(total.item()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
            "so it cannot be clipped. To disable this error and scale the gradients by the "
            "non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    return total


def clip_grads_with_norm_(parameters, max_norm: float, total_norm, foreach=None) -> None:
    """Scale the gradients by ``max_norm / total_norm`` where that is below 1."""
    grads = _grads(parameters)
    if not grads:
        return
    with no_grad():
        # The factor stays a tensor (no read of the norm, so a GPU need not wait).
        coef = (total_norm.to(grads[0].dtype) + 1e-6).reciprocal() * float(max_norm)
        coef = coef.clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(device=g.device))


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """Scale the gradients in place so their total ``norm_type``-norm is at most
    ``max_norm``; returns the total norm before clipping (a 0-d tensor)."""
    parameters = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    total = get_total_norm(_grads(parameters), norm_type, error_if_nonfinite)
    clip_grads_with_norm_(parameters, max_norm, total)
    return total


def _stack_max(norms):
    from ...ops.shape import stack

    return stack(norms).amax()


def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(-clip_value, clip_value)
