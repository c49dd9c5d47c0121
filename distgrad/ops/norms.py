"""Batch and group normalization, as compositions of differentiable ops (so their
gradients of every order come from the ops they are built of)."""
from __future__ import annotations

from .. import dtype as _dt
from ..autograd.grad_mode import no_grad


def _verify_batch_size(size) -> None:
    prod = size[0]
    for s in size[2:]:
        prod *= s
    if prod == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")


def _channel_view(t, ndim):
    """A per-channel (C,) tensor shaped to broadcast against an (N, C, *) input."""
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _check_channels(name, t, c):
    if t is not None and t.numel() != c:
        raise RuntimeError(f"{name} should contain {c} elements not {t.numel()}")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Normalize each channel (dim 1) over all the other dims. In training the batch's
    statistics are used (biased variance) and, where given, ``running_mean`` and
    ``running_var`` are updated in place (the latter with the unbiased variance);
    otherwise the running statistics are used."""
    if training:
        _verify_batch_size(input.size())
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    ndim = input.dim()
    if ndim < 2:
        raise RuntimeError(f"batch_norm: expected an input with at least 2 dims (N, C, ...), got {ndim}D input")
    c = input.shape[1]
    _check_channels("running_mean", running_mean, c)
    _check_channels("running_var", running_var, c)
    _check_channels("weight", weight, c)
    _check_channels("bias", bias, c)
    if input.dtype == _dt.bfloat16:  # in float32 (statistics and affine), rounded once, as PyTorch
        return batch_norm(input.float(), running_mean, running_var, _f32(weight), _f32(bias), training,
                          momentum, eps).to(_dt.bfloat16)
    dims = (0,) + tuple(range(2, ndim))
    if training:
        mean = input.mean(dims, keepdim=True)
        xc = input - mean
        var = (xc * xc).mean(dims, keepdim=True)
        y = xc * (var + eps).rsqrt()
        if running_mean is not None or running_var is not None:
            m = 0.0 if momentum is None else float(momentum)
            n = input.numel() // c
            with no_grad():
                if running_mean is not None:
                    bm = mean.detach().reshape(-1).to(running_mean.dtype)
                    running_mean.mul_(1.0 - m).add_(bm * m)
                if running_var is not None:
                    bv = var.detach().reshape(-1).to(running_var.dtype) * (n / (n - 1))
                    running_var.mul_(1.0 - m).add_(bv * m)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("running_mean and running_var must be defined in evaluation mode")
        rm = _channel_view(running_mean.detach(), ndim)
        rv = _channel_view(running_var.detach(), ndim)
        y = (input - rm) * (rv + eps).rsqrt()
    if weight is not None:
        y = y * _channel_view(weight, ndim)
    if bias is not None:
        y = y + _channel_view(bias, ndim)
    return y


def _f32(t):
    return t.float() if t is not None and t.dtype == _dt.bfloat16 else t


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalize over groups of ``num_groups`` channels (and all the spatial dims) of an
    (N, C, *) input, then apply the per-channel affine ``weight`` and ``bias``."""
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    shape = tuple(input.shape)
    n, c = shape[0], shape[1]
    if num_groups <= 0 or c % num_groups != 0:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got input of "
            f"shape {list(shape)} and num_groups={num_groups}")
    _verify_batch_size([n * c // num_groups, num_groups] + list(shape[2:]))
    _check_channels("weight", weight, c)
    _check_channels("bias", bias, c)
    if input.dtype == _dt.bfloat16:  # in float32, rounded once, as PyTorch
        return group_norm(input.float(), num_groups, _f32(weight), _f32(bias), eps).to(_dt.bfloat16)
    x = input.reshape(n, num_groups, -1)
    mean = x.mean(2, keepdim=True)
    xc = x - mean
    var = (xc * xc).mean(2, keepdim=True)
    y = (xc * (var + eps).rsqrt()).reshape(shape)
    if weight is not None:
        y = y * _channel_view(weight, len(shape))
    if bias is not None:
        y = y + _channel_view(bias, len(shape))
    return y
