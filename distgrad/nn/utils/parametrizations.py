"""Ready-made parametrizations, as ``torch.nn.utils.parametrizations``:
``weight_norm`` (state_dict keys ``parametrizations.weight.original0`` for the
magnitude and ``original1`` for the direction, as PyTorch) and ``orthogonal``."""
from __future__ import annotations

from ..module import Module
from . import parametrize
from .weight_norm import _weight_norm, norm_except_dim

__all__ = ["orthogonal", "weight_norm"]


class _WeightNorm(Module):
    def __init__(self, dim: int | None = 0) -> None:
        super().__init__()
        if dim is None:
            dim = -1
        self.dim = dim

    def forward(self, weight_g, weight_v):
        return _weight_norm(weight_v, weight_g, self.dim)

    def right_inverse(self, weight):
        weight_g = norm_except_dim(weight, 2, self.dim)
        weight_v = weight
        return weight_g, weight_v


def weight_norm(module, name: str = "weight", dim: int | None = 0):
    """Weight normalization as a parametrization: ``module.<name>`` is recomputed from
    a magnitude (``original0``) and a direction (``original1``) on each access."""
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
    return module


def _is_orthogonal(Q, eps=None):
    import distgrad as dg

    n, k = Q.size(-2), Q.size(-1)
    Id = dg.eye(k, dtype=Q.dtype, device=Q.device)
    eps = 10.0 * n * dg.finfo(Q.dtype).eps
    return bool(dg.allclose(Q.mT.matmul(Q), Id, atol=eps))


def _make_orthogonal(A):
    """The Q of A's QR decomposition, normalized so that R has a positive diagonal."""
    import distgrad as dg

    Q, R = dg.linalg.qr(A)
    return Q * R.diagonal(dim1=-2, dim2=-1).sgn().unsqueeze(-2)


class _Orthogonal(Module):
    """Orthogonal (semi-orthogonal for non-square) matrices via the Cayley map or the
    matrix exponential of a skew-symmetric matrix built from the lower triangle of the
    original, followed by the base ``Q`` fixed at registration (``use_trivialization``)."""

    def __init__(self, weight, orthogonal_map: str, *, use_trivialization: bool = True) -> None:
        super().__init__()
        self.shape = tuple(weight.shape)
        self.orthogonal_map = orthogonal_map
        if use_trivialization:
            self.register_buffer("base", None)

    def forward(self, X):
        import distgrad as dg

        n, k = X.size(-2), X.size(-1)
        transposed = n < k
        if transposed:
            X = X.mT
            n, k = k, n
        if self.orthogonal_map in ("matrix_exp", "cayley"):
            X = X.tril()
            if n != k:
                X = dg.cat([X, X.new_zeros(tuple(X.shape[:-2]) + (n, n - k))], dim=-1)
            A = X - X.mT
            if self.orthogonal_map == "matrix_exp":
                Q = dg.matrix_exp(A)
            else:
                Id = dg.eye(n, dtype=A.dtype, device=A.device)
                Q = dg.linalg.solve(Id - A * 0.5, Id + A * 0.5)
            if n != k:
                Q = Q[..., :k]
        else:
            raise NotImplementedError("orthogonal_map='householder' is not supported by distgrad; "
                                      "use 'matrix_exp' or 'cayley'")
        if hasattr(self, "base") and self.base is not None:
            Q = self.base.matmul(Q)
        if transposed:
            Q = Q.mT
        return Q

    def right_inverse(self, Q):
        import distgrad as dg

        if tuple(Q.shape) != self.shape:
            raise ValueError(f"Expected a matrix or batch of matrices of shape {self.shape}. "
                             f"Got a tensor of shape {tuple(Q.shape)}.")
        Q_init = Q
        n, k = Q.size(-2), Q.size(-1)
        transpose = n < k
        if transpose:
            Q = Q.mT
            n, k = k, n
        if not hasattr(self, "base"):
            raise NotImplementedError("It is not possible to assign to the matrix exponential or the "
                                      "Cayley parametrizations when use_trivialization=False.")
        if n == k:
            Q = _make_orthogonal(Q) if not _is_orthogonal(Q) else Q.clone()
        else:  # complete Q into a full n x n orthogonal matrix
            N = dg.randn(tuple(Q.shape[:-2]) + (n, n - k), dtype=Q.dtype, device=Q.device)
            Q = _make_orthogonal(dg.cat([Q, N], dim=-1))
        self.base = Q.detach()
        # -Id: its skew-symmetric part is zero, so forward() gives back the base
        neg_Id = dg.zeros_like(Q_init)
        neg_Id.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
        return neg_Id


def orthogonal(module, name: str = "weight", orthogonal_map: str | None = None, *,
               use_trivialization: bool = True):
    """Constrain ``module.<name>`` (a matrix or batch of matrices) to be orthogonal (or
    semi-orthogonal). Maps: ``"matrix_exp"`` and ``"cayley"``; the default is
    ``"matrix_exp"`` for square matrices and ``"cayley"`` otherwise (PyTorch's default
    for non-square, ``"householder"``, is not supported)."""
    weight = getattr(module, name, None)
    if weight is None or not hasattr(weight, "dim"):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if weight.dim() < 2:
        raise ValueError(f"Expected a matrix or batch of matrices. Got a tensor of {weight.dim()} dimensions.")
    if orthogonal_map is None:
        orthogonal_map = "matrix_exp" if weight.size(-2) == weight.size(-1) else "cayley"
    if orthogonal_map not in ("matrix_exp", "cayley"):
        raise ValueError("orthogonal_map has to be one of 'matrix_exp' or 'cayley' in distgrad. "
                         f"Got: {orthogonal_map}")
    orth = _Orthogonal(weight, orthogonal_map, use_trivialization=use_trivialization)
    parametrize.register_parametrization(module, name, orth, unsafe=True)
    return module
