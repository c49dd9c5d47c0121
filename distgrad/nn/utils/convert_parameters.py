"""Flatten parameters into one vector and back, as ``torch.nn.utils.convert_parameters``."""
from __future__ import annotations

__all__ = ["parameters_to_vector", "vector_to_parameters"]


def _check_param_device(param, old_param_device):
    device = str(param.device)
    if old_param_device is None:
        return device
    if device != old_param_device:
        raise TypeError("Found two parameters on different devices, this is currently not supported.")
    return old_param_device


def parameters_to_vector(parameters):
    """One 1-D tensor concatenating the flattened ``parameters`` (differentiable)."""
    from ...ops.shape import cat
    from ...tensor import Tensor

    if isinstance(parameters, Tensor):
        parameters = [parameters]
    device, vec = None, []
    for param in parameters:
        device = _check_param_device(param, device)
        vec.append(param.reshape(-1))
    return cat(vec)


def vector_to_parameters(vec, parameters) -> None:
    """Copy consecutive slices of the 1-D ``vec`` into ``parameters`` (their ``.data``)."""
    from ...tensor import Tensor

    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__module__}.{type(vec).__qualname__}")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    device, pointer = None, 0
    for param in parameters:
        device = _check_param_device(param, device)
        n = param.numel()
        param.data = vec[pointer:pointer + n].detach().reshape(tuple(param.shape)).clone()
        pointer += n
