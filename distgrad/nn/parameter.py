"""``Parameter``: a tensor that a Module registers as one of its parameters."""
from __future__ import annotations

from ..tensor import Tensor, _new


class Parameter(Tensor):
    """A leaf tensor that requires grad by default; assigning one to a Module
    attribute registers it in ``parameters()``."""

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            from ..ops.creation import empty

            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter expects a Tensor, got {type(data).__name__}")
        p = _new(cls)
        p._data = data._data
        p._vc = data._vc
        if requires_grad:
            p.requires_grad_(True)
        return p

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (self.detach(), self.requires_grad))

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        p = Parameter(self.detach().clone(), self.requires_grad)
        memo[id(self)] = p
        return p


def _rebuild_parameter(data, requires_grad):
    return Parameter(data, requires_grad)


class Buffer(Tensor):
    """Marks a tensor to be registered as a buffer when assigned to a Module attribute."""

    def __new__(cls, data: Tensor, *, persistent: bool = True):
        b = _new(cls)
        b._data = data._data
        b._vc = data._vc
        b.persistent = persistent
        return b
