"""The legacy ``Variable`` wrapper, as ``torch.autograd.Variable``.

Variables and tensors were merged long ago in PyTorch: ``Variable(t)`` returns a
tensor sharing ``t``'s data (detached from its history), with ``requires_grad`` as
given, and ``isinstance(x, Variable)`` is true for every tensor.
"""
from __future__ import annotations

import warnings

from ..tensor import Tensor

__all__ = ["Variable"]


class _VariableMeta(type):
    def __instancecheck__(cls, other):
        return isinstance(other, Tensor)


class Variable(metaclass=_VariableMeta):
    """``Variable(data, requires_grad=False, volatile=False)``: a tensor sharing ``data``'s
    storage, detached, with ``requires_grad`` set (``volatile`` is accepted and ignored)."""

    def __new__(cls, data=None, requires_grad=False, volatile=False):
        if volatile:
            warnings.warn("volatile was removed and now has no effect. Use `with torch.no_grad():` "
                          "instead.", UserWarning, stacklevel=2)
        if data is None:
            import distgrad as dg

            data = dg.tensor([])
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
        out = data.detach()
        if requires_grad:
            out.requires_grad_(True)
        return out
