"""Matrix products: matmul (1-D, 2-D, batched, broadcast), mm, bmm, dot, mv, outer."""
from __future__ import annotations

from ..autograd.function import Node, record
from ._util import array_module, device_error


def _check_dtypes(op, a, b):
    err = device_error(op, a, b)
    if err is not None:
        raise err
    if a._data.dtype != b._data.dtype:
        raise RuntimeError(
            f"{op}: expected both operands to have the same dtype, but got {a.dtype} and "
            f"{b.dtype}; convert one of them with .to(dtype)"
        )


def _mismatch(op, a, b):
    return RuntimeError(
        f"{op}: shapes {list(a._data.shape)} and {list(b._data.shape)} cannot be multiplied "
        f"(the last dim of the first must equal the {'only' if b._data.ndim == 1 else 'second-to-last'} "
        "dim of the second)"
    )


class MmBackward0(Node):
    def backward(self, g):
        a, b = self.saved_tensors
        ga = g @ b.mT if self.needs(0) else None
        gb = a.mT @ g if self.needs(1) else None
        return ga, gb


class BmmBackward0(MmBackward0):
    pass


class DotBackward0(Node):
    def backward(self, g):
        a, b = self.saved_tensors
        return (g * b if self.needs(0) else None, g * a if self.needs(1) else None)


class MvBackward0(Node):
    def backward(self, g):
        a, v = self.saved_tensors
        ga = g.unsqueeze(-1) * v if self.needs(0) else None
        gv = a.mT @ g if self.needs(1) else None
        return ga, gv


def matmul(input, other):
    a, b = input, other
    _check_dtypes("matmul", a, b)
    na, nb = a._data.ndim, b._data.ndim
    if na == 0 or nb == 0:
        raise RuntimeError(
            f"both arguments to matmul need to be at least 1D, but they are {na}D and {nb}D"
        )
    if na == 1 and nb == 1:
        return dot(a, b)
    if na == 2 and nb == 1:
        return mv(a, b)
    if na == 1:
        return matmul(a.unsqueeze(0), b).squeeze(-2)
    if nb == 1:
        return matmul(a, b.unsqueeze(-1)).squeeze(-1)
    try:
        data = a._data @ b._data
    except ValueError:
        raise _mismatch("matmul", a, b) from None
    cls = MmBackward0 if na == 2 and nb == 2 else BmmBackward0
    return record(cls, data, (a, b), (a, b))


def mm(input, mat2):
    if input._data.ndim != 2 or mat2._data.ndim != 2:
        raise RuntimeError(
            f"mm: both arguments must be 2D matrices, got {input._data.ndim}D and {mat2._data.ndim}D"
        )
    if input._data.shape[1] != mat2._data.shape[0]:
        s1, s2 = input._data.shape, mat2._data.shape
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({s1[0]}x{s1[1]} and {s2[0]}x{s2[1]})")
    return matmul(input, mat2)


def bmm(input, mat2):
    for name, t in (("batch1", input), ("batch2", mat2)):
        if t._data.ndim != 3:
            raise RuntimeError(f"bmm: {name} must be a 3D tensor, got {t._data.ndim}D with shape {list(t._data.shape)}")
    B, _, K = input._data.shape
    if mat2._data.shape[:2] != (B, K):
        raise RuntimeError(
            f"bmm: Expected size for first two dimensions of batch2 tensor to be: [{B}, {K}] but "
            f"got: [{mat2._data.shape[0]}, {mat2._data.shape[1]}] (shapes {list(input._data.shape)} "
            f"and {list(mat2._data.shape)})."
        )
    _check_dtypes("bmm", input, mat2)
    return record(BmmBackward0, input._data @ mat2._data, (input, mat2), (input, mat2))


def dot(input, other):
    if input._data.ndim != 1 or other._data.ndim != 1:
        raise RuntimeError(
            f"1D tensors expected, but got {input._data.ndim}D and {other._data.ndim}D tensors"
        )
    if input._data.shape != other._data.shape:
        raise RuntimeError(
            "inconsistent tensor size, expected tensor [%d] and src [%d] to have the same number "
            "of elements, but got %d and %d elements respectively"
            % (input._data.shape[0], other._data.shape[0], input._data.shape[0], other._data.shape[0])
        )
    _check_dtypes("dot", input, other)
    data = array_module(input._data).asarray(input._data @ other._data)
    return record(DotBackward0, data, (input, other), (input, other))


def mv(input, vec):
    if input._data.ndim != 2 or vec._data.ndim != 1 or input._data.shape[1] != vec._data.shape[0]:
        raise _mismatch("mv", input, vec)
    _check_dtypes("mv", input, vec)
    return record(MvBackward0, input._data @ vec._data, (input, vec), (input, vec))


def outer(input, vec2):
    return input.unsqueeze(-1) * vec2


def rmatmul(input, other):
    return matmul(other, input)
