"""``distgrad.linalg``: PyTorch's ``torch.linalg`` functions."""
from .ops.linalg import matmul
from .ops.linalg_extra import (
    cholesky,
    det,
    eigh,
    eigvalsh,
    inv,
    matrix_exp,
    matrix_norm,
    pinv,
    qr,
    slogdet,
    solve,
    svdvals,
    vector_norm,
)
from .ops.linalg_extra import linalg_norm as norm
from .ops.linalg_extra import svd_linalg as svd
from .ops.shape_extra import diagonal as _diagonal
from .ops.shape_extra import linalg_cross as cross


def diagonal(A, *, offset=0, dim1=-2, dim2=-1):
    return _diagonal(A, offset, dim1, dim2)


def inv_ex(A, *, check_errors=False):
    from .ops.creation import zeros
    return inv(A), zeros(A.shape[:-2], dtype=__import__("distgrad").int32)


def vecdot(x, y, *, dim=-1):
    return (x * y).sum(dim)


__all__ = ["cholesky", "cross", "det", "diagonal", "eigh", "eigvalsh", "inv", "inv_ex", "matmul",
           "matrix_exp", "matrix_norm", "norm", "pinv", "qr", "slogdet", "solve", "svd", "svdvals",
           "vecdot", "vector_norm"]


from .ops.methods_extra import matrix_power  # noqa: F401

__all__.append("matrix_power")
