"""Helpers shared by the distributions, as ``torch.distributions.utils``."""
from __future__ import annotations

import numbers
from functools import update_wrapper

import numpy as np

__all__ = ["broadcast_all", "clamp_probs", "lazy_property", "logits_to_probs", "probs_to_logits",
           "tril_matrix_to_vec", "vec_to_tril_matrix"]

euler_constant = 0.57721566490153286060  # Euler-Mascheroni constant


def _is_tensor(v):
    from ..tensor import Tensor

    return isinstance(v, Tensor)


def broadcast_all(*values):
    """Broadcast tensors and numbers together; numbers become tensors of the first tensor's
    dtype (the default dtype when all are numbers)."""
    import distgrad as dg

    if not all(_is_tensor(v) or isinstance(v, numbers.Number) for v in values):
        raise ValueError("Input arguments must all be instances of Number, "
                         "torch.Tensor or objects implementing __torch_function__.")
    if not all(_is_tensor(v) for v in values):
        options = dict(dtype=dg.get_default_dtype())
        for v in values:
            if _is_tensor(v):
                options = dict(dtype=v.dtype, device=v.device)
                break
        values = [v if _is_tensor(v) else dg.tensor(v, **options) for v in values]
    return dg.broadcast_tensors(*values)


def _standard_normal(shape, dtype, device):
    import distgrad as dg

    return dg.randn(tuple(shape), dtype=dtype, device=device)


def _uniform(shape, dtype, device):
    import distgrad as dg

    return dg.rand(tuple(shape), dtype=dtype, device=device)


def _rng():
    from ..random import default_generator

    return default_generator._rng


def _from_numpy(arr, like):
    """A tensor holding ``arr`` with ``like``'s dtype and device (no gradient)."""
    import distgrad as dg

    return dg.tensor(np.asarray(arr), dtype=like.dtype, device=like.device)


def _sum_rightmost(value, dim: int):
    """Sum out the ``dim`` rightmost dimensions of ``value``."""
    if dim == 0:
        return value
    return value.reshape(tuple(value.shape[:-dim]) + (-1,)).sum(-1)


def logits_to_probs(logits, is_binary: bool = False):
    import distgrad.nn.functional as F

    if is_binary:
        return logits.sigmoid()
    return F.softmax(logits, dim=-1)


def clamp_probs(probs):
    """Clamp probabilities into the open interval (eps, 1 - eps) of their dtype."""
    import distgrad as dg

    eps = dg.finfo(probs.dtype).eps
    return probs.clamp(min=eps, max=1 - eps)


def probs_to_logits(probs, is_binary: bool = False):
    ps_clamped = clamp_probs(probs)
    if is_binary:
        return ps_clamped.log() - (-ps_clamped).log1p()
    return ps_clamped.log()


class lazy_property:
    """A non-data descriptor computing the wrapped method once, on first access, then
    storing the result as an instance attribute."""

    def __init__(self, wrapped):
        self.wrapped = wrapped
        update_wrapper(self, wrapped)

    def __get__(self, instance, obj_type=None):
        if instance is None:
            return _lazy_property_and_property(self.wrapped)
        import distgrad as dg

        with dg.enable_grad():
            value = self.wrapped(instance)
        setattr(instance, self.wrapped.__name__, value)
        return value


class _lazy_property_and_property(lazy_property, property):
    def __init__(self, wrapped):
        property.__init__(self, wrapped)


def tril_matrix_to_vec(mat, diag: int = 0):
    n = mat.shape[-1]
    rows, cols = np.tril_indices(n, diag)
    return mat[..., rows, cols]


def vec_to_tril_matrix(vec, diag: int = 0):
    import distgrad as dg

    n = int((-(1 + 2 * diag) + ((1 + 2 * diag) ** 2 + 8 * vec.shape[-1] + 4 * abs(diag) * (diag + 1)) ** 0.5) / 2)
    eps = np.finfo(np.float64).eps
    if not round(n) - eps <= n <= round(n) + eps:
        raise ValueError(f"The size of last dimension is {vec.shape[-1]} which cannot be expressed as "
                         "the lower triangular part of a square D x D matrix.")
    n = round(n)
    rows, cols = np.tril_indices(n, diag)
    flat = rows * n + cols
    out = dg.zeros(tuple(vec.shape[:-1]) + (n * n,), dtype=vec.dtype, device=vec.device)
    idx = dg.tensor(flat).expand(tuple(vec.shape[:-1]) + (len(flat),))
    out = out.scatter(-1, idx, vec)
    return out.reshape(tuple(vec.shape[:-1]) + (n, n))
