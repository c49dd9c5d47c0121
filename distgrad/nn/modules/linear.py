"""Linear and Identity."""
from __future__ import annotations

import math

from ...ops.creation import empty
from .. import functional as F
from .. import init
from ..module import Module
from ..parameter import Parameter


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x W^T + b, initialized as PyTorch does (uniform in +-1/sqrt(in_features))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(empty(out_features, in_features, dtype=dtype, device=device))
        if bias:
            self.bias = Parameter(empty(out_features, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# ------------------------------------------------------------ lazy and bilinear
from ...autograd.grad_mode import no_grad as _no_grad
from ..parameter import Parameter as _Parameter

_UNINIT_MSG = (
    "Can't access the shape of an uninitialized parameter or buffer. This error usually happens "
    "in `load_state_dict` when trying to load an uninitialized parameter into an initialized one. "
    "Call `forward` to initialize the parameters before accessing their attributes.")


class UninitializedParameter(_Parameter):
    """A parameter whose shape is not known yet (a lazy module's, before its first
    forward). ``materialize(shape)`` gives it data and makes it a ``Parameter``."""

    cls_to_become = _Parameter

    def __new__(cls, requires_grad: bool = True, device=None, dtype=None):
        p = _Parameter.__new__(cls, empty(0, dtype=dtype, device=device), requires_grad)
        return p

    def materialize(self, shape, device=None, dtype=None) -> None:
        dtype = dtype if dtype is not None else self.dtype
        device = device if device is not None else self.device
        self._data = empty(tuple(shape), dtype=dtype, device=device)._data
        self._vc[0] += 1
        self.__class__ = self.cls_to_become

    @property
    def shape(self):
        raise RuntimeError(_UNINIT_MSG)

    def size(self, dim=None):
        raise RuntimeError(_UNINIT_MSG)

    def __repr__(self):
        return "<UninitializedParameter>"

    def __reduce_ex__(self, protocol):
        return (UninitializedParameter, (self.requires_grad, None, self.dtype))

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        p = UninitializedParameter(self.requires_grad, self.device, self.dtype)
        memo[id(self)] = p
        return p


def _is_lazy(p) -> bool:
    return isinstance(p, UninitializedParameter)


class LazyLinear(Linear):
    """A Linear whose ``in_features`` is inferred from the first input's last dim;
    after that forward the module is a ``Linear``."""

    cls_to_become = Linear

    def __init__(self, out_features: int, bias: bool = True, device=None, dtype=None):
        Module.__init__(self)
        self.in_features = 0
        self.out_features = out_features
        self.weight = UninitializedParameter(device=device, dtype=dtype)
        if bias:
            self.bias = UninitializedParameter(device=device, dtype=dtype)
        else:
            self.register_parameter("bias", None)

    def has_uninitialized_params(self) -> bool:
        return any(_is_lazy(p) for p in self._parameters.values())

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            super().reset_parameters()

    def initialize_parameters(self, input) -> None:
        if self.has_uninitialized_params():
            with _no_grad():
                self.in_features = input.shape[-1]
                self.weight.materialize((self.out_features, self.in_features))
                if self.bias is not None:
                    self.bias.materialize((self.out_features,))
                self.reset_parameters()

    def forward(self, input):
        if self.has_uninitialized_params():
            self.initialize_parameters(input)
            self.__class__ = self.cls_to_become
        return F.linear(input, self.weight, self.bias)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Loading into a module not run yet takes its shapes from the state dict.
        w = state_dict.get("weight")
        if self.has_uninitialized_params() and w is not None and not _is_lazy(w):
            with _no_grad():
                self.in_features = w.shape[1]
                self.weight.materialize(tuple(w.shape))
                b = state_dict.get("bias")
                if self.bias is not None and b is not None and not _is_lazy(b):
                    self.bias.materialize(tuple(b.shape))
            if not self.has_uninitialized_params():
                self.__class__ = self.cls_to_become
        return Module.load_state_dict(self, state_dict, strict, assign)


class Bilinear(Module):
    """y = x1^T A x2 + b, for each of ``out_features`` matrices A."""

    def __init__(self, in1_features: int, in2_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        self.weight = _Parameter(empty(out_features, in1_features, in2_features, dtype=dtype,
                                       device=device))
        if bias:
            self.bias = _Parameter(empty(out_features, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight.size(1))
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        return F.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")
