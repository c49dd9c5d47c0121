"""Every op, registered once: this module binds the op functions to ``Tensor`` as
methods and operators, and lists the public functions ``distgrad`` re-exports."""
from __future__ import annotations

from .. import dtype as _dt
from ..tensor import Tensor
from . import creation, indexing, inplace, linalg, pointwise, reduction, shape

# Ops that are both ``distgrad.<name>`` functions and ``Tensor.<name>`` methods.
_SHARED = {
    pointwise: """add sub rsub mul div pow neg abs sign exp expm1 log log1p sqrt rsqrt reciprocal
        square sin cos tanh sigmoid erf relu clamp clip maximum minimum nonzero floor ceil
        round trunc isnan isinf isfinite logical_not logical_and logical_or logical_xor
        bitwise_not bitwise_and bitwise_or bitwise_xor eq ne lt le gt ge equal allclose isclose
        floor_divide remainder""",
    reduction: """sum nansum mean prod max min amax amin argmax argmin all any var std norm
        logsumexp softmax log_softmax cumsum""",
    linalg: "matmul mm bmm dot mv outer",
    shape: """view reshape flatten unflatten transpose swapaxes t permute movedim squeeze unsqueeze
        expand narrow split chunk unbind select clone contiguous flip repeat""",
    indexing: "gather scatter scatter_add index_select index_add index_put masked_fill masked_select tril triu",
}

# Ops that are functions only.
_FUNCTIONS = {
    pointwise: "where",
    reduction: "var_mean std_mean",
    shape: "cat concat concatenate stack hstack vstack broadcast_tensors broadcast_to",
    creation: """tensor as_tensor from_numpy zeros ones empty full arange linspace eye randn rand
        randint randperm normal multinomial zeros_like ones_like empty_like full_like randn_like
        rand_like randint_like""",
    indexing: "",
}

# Methods only.
_METHODS = {
    reduction: "sum_to_size",
    shape: "view_as reshape_as expand_as type_as to cuda cpu",
    creation: """new_tensor new_zeros new_ones new_empty new_full uniform_ normal_ bernoulli_
        random_""",
    inplace: """add_ sub_ mul_ div_ pow_ copy_ fill_ zero_ relu_ clamp_ clip_ masked_fill_
        index_put_ scatter_ scatter_add_ index_add_ neg_ exp_ log_ sqrt_ sigmoid_ tanh_ abs_
        tril_ triu_""",
}

FUNCTIONS = {}
for _mod, _names in list(_SHARED.items()) + list(_FUNCTIONS.items()):
    for _n in _names.split():
        FUNCTIONS[_n] = getattr(_mod, _n)
for _mod, _names in list(_SHARED.items()) + list(_METHODS.items()):
    for _n in _names.split():
        setattr(Tensor, _n, getattr(_mod, _n))

for _name, _d in (("float", _dt.float32), ("double", _dt.float64), ("half", _dt.float16),
                  ("long", _dt.int64), ("int", _dt.int32), ("short", _dt.int16), ("bool", _dt.bool),
                  ("byte", _dt.uint8)):
    setattr(Tensor, _name, shape._cast(_d))

Tensor.where = lambda self, condition, other: pointwise.where(condition, self, other)
Tensor.T = property(shape._T)
Tensor.mT = property(shape._mT)
Tensor.__getitem__ = indexing.getitem
Tensor.__setitem__ = inplace.setitem

Tensor.__add__ = Tensor.__radd__ = pointwise.add
Tensor.__sub__ = pointwise.sub
Tensor.__rsub__ = pointwise.rsub
Tensor.__mul__ = Tensor.__rmul__ = pointwise.mul
Tensor.__truediv__ = pointwise.div
Tensor.__rtruediv__ = pointwise.rdiv
Tensor.__floordiv__ = pointwise.floor_divide
Tensor.__mod__ = pointwise.remainder
Tensor.__pow__ = pointwise.pow
Tensor.__rpow__ = pointwise._rpow
Tensor.__matmul__ = linalg.matmul
Tensor.__rmatmul__ = linalg.rmatmul
Tensor.__neg__ = pointwise.neg
Tensor.__abs__ = pointwise.abs
Tensor.__pos__ = lambda self: self
Tensor.__invert__ = pointwise.bitwise_not
Tensor.__and__ = Tensor.__rand__ = pointwise.bitwise_and
Tensor.__or__ = Tensor.__ror__ = pointwise.bitwise_or
Tensor.__xor__ = Tensor.__rxor__ = pointwise.bitwise_xor
Tensor.__eq__ = pointwise.eq
Tensor.__ne__ = pointwise.ne
Tensor.__lt__ = pointwise.lt
Tensor.__le__ = pointwise.le
Tensor.__gt__ = pointwise.gt
Tensor.__ge__ = pointwise.ge
Tensor.__iadd__ = inplace.add_
Tensor.__isub__ = inplace.sub_
Tensor.__imul__ = inplace.mul_
Tensor.__itruediv__ = inplace.div_
