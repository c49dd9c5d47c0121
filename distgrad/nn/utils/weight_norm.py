"""Weight normalization by forward pre-hook, as ``torch.nn.utils.weight_norm``.

``weight_norm(module)`` replaces the parameter ``weight`` by ``weight_g`` (magnitude)
and ``weight_v`` (direction); before each forward ``weight`` is recomputed as
``weight_v * weight_g / ||weight_v||`` (norm over every dim but ``dim``).
"""
from __future__ import annotations

import warnings

__all__ = ["WeightNorm", "remove_weight_norm", "weight_norm"]


def norm_except_dim(v, pow: float = 2, dim: int = 0):
    """The ``pow``-norm of ``v`` over every dimension except ``dim`` (kept as size 1);
    ``dim=-1`` means the norm of the whole tensor."""
    if dim == -1:
        return v.abs().pow(pow).sum().pow(1.0 / pow)
    dims = tuple(d for d in range(v.dim()) if d != dim)
    if not dims:
        return v.abs()
    return v.abs().pow(pow).sum(dims, keepdim=True).pow(1.0 / pow)


def _weight_norm(v, g, dim: int = 0):
    return v * (g / norm_except_dim(v, 2, dim))


class WeightNorm:
    name: str
    dim: int

    def __init__(self, name: str, dim: int) -> None:
        if dim is None:
            dim = -1
        self.name = name
        self.dim = dim

    def compute_weight(self, module):
        g = getattr(module, self.name + "_g")
        v = getattr(module, self.name + "_v")
        return _weight_norm(v, g, self.dim)

    @staticmethod
    def apply(module, name: str, dim: int) -> "WeightNorm":
        from ..parameter import Parameter

        for entry in module._forward_pre_hooks.values():
            hook = entry[0]
            if isinstance(hook, WeightNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter {name}")
        if dim is None:
            dim = -1
        fn = WeightNorm(name, dim)
        weight = getattr(module, name)
        del module._parameters[name]
        module.register_parameter(name + "_g", Parameter(norm_except_dim(weight, 2, dim).detach()))
        module.register_parameter(name + "_v", Parameter(weight.detach()))
        setattr(module, name, fn.compute_weight(module))
        module.register_forward_pre_hook(fn)
        return fn

    def remove(self, module) -> None:
        from ...autograd.grad_mode import no_grad
        from ..parameter import Parameter

        with no_grad():
            weight = self.compute_weight(module)
        delattr(module, self.name)
        del module._parameters[self.name + "_g"]
        del module._parameters[self.name + "_v"]
        setattr(module, self.name, Parameter(weight.detach()))

    def __call__(self, module, inputs) -> None:
        setattr(module, self.name, self.compute_weight(module))


def weight_norm(module, name: str = "weight", dim: int = 0):
    """Apply weight normalization to ``module``'s parameter ``name``: new parameters
    ``name_g`` and ``name_v``; ``dim=None`` normalizes over the whole tensor.

    Deprecated (as in PyTorch) in favor of ``parametrizations.weight_norm``."""
    warnings.warn("`torch.nn.utils.weight_norm` is deprecated in favor of "
                  "`torch.nn.utils.parametrizations.weight_norm`.", FutureWarning, stacklevel=2)
    WeightNorm.apply(module, name, dim)
    return module


def remove_weight_norm(module, name: str = "weight"):
    """Undo :func:`weight_norm`: ``name`` becomes an ordinary parameter again."""
    for k, entry in list(module._forward_pre_hooks.items()):
        hook = entry[0]
        if isinstance(hook, WeightNorm) and hook.name == name:
            hook.remove(module)
            del module._forward_pre_hooks[k]
            return module
    raise ValueError(f"weight_norm of '{name}' not found in {module}")
