"""Matrix functions: det, slogdet, inverse, solve, cholesky, qr, eigh, svd, pinv,
matrix norms and matrix_exp, batched over leading dims. Backward formulas are the
standard ones, written with tensor ops (so they differentiate again)."""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from ..dtype import kind_of as _kind_of

from ..autograd.function import OUTPUT, Node, record, record_multi as _record_multi
from . import pointwise as _pw
from ._util import Tensor, _wrap, array_module
from .math_extra import named

slogdet_t = namedtuple("slogdet", ["sign", "logabsdet"])
qr_t = namedtuple("qr", ["Q", "R"])
eigh_t = namedtuple("eigh", ["eigenvalues", "eigenvectors"])
svd_t = namedtuple("svd", ["U", "S", "Vh"])
svd_old_t = namedtuple("svd", ["U", "S", "V"])


def _check_square(op, A):
    if A.dim() < 2:
        raise RuntimeError(f"{op}: The input tensor A must have at least 2 dimensions.")
    if A.shape[-1] != A.shape[-2]:
        raise RuntimeError(f"{op}: A must be batches of square matrices, but they are "
                           f"{A.shape[-2]} by {A.shape[-1]} matrices")
    if _kind_of(A._data.dtype) != "f":
        raise RuntimeError(f"{op}: Expected a floating point or complex tensor as input. Got {A.dtype}")


def _mT(t):
    return t.transpose(-2, -1)


def _la():
    return np.linalg


# ---------------------------------------------------------------- inverse
class LinalgInvExBackward0(Node):
    def backward(self, g):
        (inv,) = self.saved_tensors
        it = _mT(inv)
        return -(it @ g @ it)


def inv(A):
    _check_square("linalg.inv", A)
    xp = array_module(A._data)
    try:
        data = xp.linalg.inv(A._data)
    except np.linalg.LinAlgError:
        raise RuntimeError("linalg.inv: The diagonal element 1 is zero, the inversion could not be "
                           "completed because the input matrix is singular.") from None
    return record(LinalgInvExBackward0, data, (A,), (OUTPUT,))


def inverse(input):
    return inv(input)


# -------------------------------------------------------------------- det
class LinalgDetBackward0(Node):
    def backward(self, g):
        A, det = self.saved_tensors
        return (g * det).unsqueeze(-1).unsqueeze(-1) * _mT(inv(A))


def det(A):
    _check_square("linalg.det", A)
    xp = array_module(A._data)
    return record(LinalgDetBackward0, xp.asarray(xp.linalg.det(A._data)), (A,), (A, OUTPUT))


class LinalgSlogdetBackward0(Node):
    def backward(self, gsign, glog=None):
        (A,) = self.saved_tensors
        if glog is None:
            return None
        return glog.unsqueeze(-1).unsqueeze(-1) * _mT(inv(A))


def slogdet(A):
    _check_square("linalg.slogdet", A)
    xp = array_module(A._data)
    sign, logabs = xp.linalg.slogdet(A._data)
    out = _record_multi(LinalgSlogdetBackward0, [xp.asarray(sign), xp.asarray(logabs)], (A,), (A,), diff=(False, True))
    return slogdet_t(*out)


def logdet(A):
    sign, logabs = slogdet(A)
    return _pw.where(sign < 0, math.nan, logabs)


# ------------------------------------------------------------------- solve
class LinalgSolveExBackward0(Node):
    def backward(self, g):
        A, X = self.saved_tensors
        vec = self.args
        gB = solve(_mT(A), g)
        if vec:
            gA = -(gB.unsqueeze(-1) * X.unsqueeze(-2))
        else:
            gA = -(gB @ _mT(X))
        return (gA if self.needs(0) else None, gB if self.needs(1) else None)


def solve(A, B, *, left=True):
    if not left:
        return _mT(solve(_mT(A), _mT(B)))
    _check_square("linalg.solve", A)
    a, b = A._data, B._data
    xp = array_module(a)
    vec = b.ndim == 1 or (b.ndim == a.ndim - 1 and b.shape == a.shape[:-1])
    try:
        if vec:
            data = xp.linalg.solve(a, b[..., None])[..., 0]
        else:
            data = xp.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        raise RuntimeError("torch.linalg.solve: The solver failed because the input matrix is "
                           "singular.") from None
    except ValueError as e:
        raise RuntimeError(f"linalg.solve: Incompatible shapes of A and B for the equation AX = B "
                           f"({list(a.shape)} and {list(b.shape)}): {e}") from None
    return record(LinalgSolveExBackward0, data, (A, B), (A, OUTPUT), args=vec)


# ---------------------------------------------------------------- cholesky
class LinalgCholeskyExBackward0(Node):
    def backward(self, g):
        (L,) = self.saved_tensors
        P = (_mT(L) @ g).tril()
        P = (P + _mT(P.tril(-1))) * 0.5
        # L^{-T} P L^{-1}
        X = solve(_mT(L), P)
        return _mT(solve(_mT(L), _mT(X)))


def cholesky(A, *, upper=False):
    _check_square("linalg.cholesky", A)
    xp = array_module(A._data)
    try:
        data = xp.linalg.cholesky(A._data)
    except np.linalg.LinAlgError:
        raise RuntimeError("linalg.cholesky: The factorization could not be completed because the "
                           "input is not positive-definite.") from None
    L = record(LinalgCholeskyExBackward0, data, (A,), (OUTPUT,))
    return _mT(L) if upper else L


# --------------------------------------------------------------------- qr
class LinalgQrBackward0(Node):
    def backward(self, gQ, gR):
        Q, R = self.saved_tensors
        if gQ is None:
            gQ = Q * 0
        if gR is None:
            gR = R * 0
        M = R @ _mT(gR) - _mT(gQ) @ Q
        copyltu = M.tril(-1) + _mT(M.tril(-1)) + _diag_part(M)
        B = gQ + Q @ copyltu
        # B R^{-T}: solve X R^T = B, i.e. R X^T = B^T
        return _mT(solve(R, _mT(B)))


def _diag_part(M):
    from .shape_extra import diag_embed, diagonal
    return diag_embed(diagonal(M, 0, -2, -1))


def qr(A, mode="reduced"):
    if mode not in ("reduced", "complete", "r"):
        raise RuntimeError(f"qr received unrecognized mode '{mode}' but expected one of 'reduced' "
                           "(default), 'r', or 'complete'")
    xp = array_module(A._data)
    q, r = xp.linalg.qr(A._data, mode="reduced" if mode == "r" else mode)
    Q, R = _record_multi(LinalgQrBackward0, [q, r], (A,), (OUTPUT,), diff=(True, True))
    if mode == "r":
        return qr_t(_wrap(xp.zeros((0,), A._data.dtype)), R)
    return qr_t(Q, R)


# -------------------------------------------------------------------- eigh
class LinalgEighBackward0(Node):
    def backward(self, gL, gV):
        L, V = self.saved_tensors
        from .shape_extra import diag_embed
        inner = 0
        if gV is not None:
            E = L.unsqueeze(-2) - L.unsqueeze(-1)           # E_ij = L_j - L_i
            off = _pw.where(E == 0, 1.0, E)
            VgV = _mT(V) @ gV
            S = (VgV - _mT(VgV)) * 0.5
            n = L.shape[-1]
            from .creation import eye
            inner = (S / off) * (1 - eye(n, dtype=L.dtype, device=L.device))
        if gL is not None:
            inner = inner + diag_embed(gL)
        return V @ inner @ _mT(V)


def eigh(A, UPLO="L"):
    _check_square("linalg.eigh", A)
    xp = array_module(A._data)
    w, v = xp.linalg.eigh(A._data, UPLO=UPLO)
    L, V = _record_multi(LinalgEighBackward0, [w, v], (A,), (OUTPUT,), diff=(True, True))
    return eigh_t(L, V)


def eigvalsh(A, UPLO="L"):
    return eigh(A, UPLO).eigenvalues


# --------------------------------------------------------------------- svd
class LinalgSvdBackward0(Node):
    def backward(self, gU, gS, gVh):
        U, S, Vh = self.saved_tensors
        k = S.shape[-1]
        U = U.narrow(-1, 0, k)
        Vh = Vh.narrow(-2, 0, k)
        V = _mT(Vh)
        from .creation import eye
        from .shape_extra import diag_embed
        if gU is not None:
            gU = gU.narrow(-1, 0, k)
        gV = _mT(gVh.narrow(-2, 0, k)) if gVh is not None else None
        S2 = S * S
        E = S2.unsqueeze(-2) - S2.unsqueeze(-1)              # E_ij = s_j^2 - s_i^2
        I = eye(k, dtype=S.dtype, device=S.device)
        F = (1 - I) / _pw.where(I > 0, 1.0, E)
        inner = diag_embed(gS) if gS is not None else 0
        m, n = U.shape[-2], V.shape[-2]
        gA = 0
        if gU is not None:
            J = _mT(U) @ gU
            inner = inner + (F * (J - _mT(J))) @ diag_embed(S)
        if gV is not None:
            K = _mT(V) @ gV
            inner = inner + diag_embed(S) @ (F * (K - _mT(K)))
        gA = U @ inner @ Vh
        Sinv = diag_embed(1 / S)
        if gU is not None and m > k:
            gA = gA + (gU - U @ (_mT(U) @ gU)) @ Sinv @ Vh
        if gV is not None and n > k:
            gA = gA + U @ Sinv @ _mT(gV - V @ (_mT(V) @ gV))
        return gA


def svd_linalg(A, full_matrices=True, *, driver=None):
    if A.dim() < 2:
        raise RuntimeError("linalg.svd: The input tensor A must have at least 2 dimensions.")
    xp = array_module(A._data)
    u, s, vh = xp.linalg.svd(A._data, full_matrices=full_matrices)
    return svd_t(*_record_multi(LinalgSvdBackward0, [u, s, vh], (A,), (OUTPUT,), diff=(True, True, True)))


def svd(input, some=True, compute_uv=True):
    """torch.svd: (U, S, V) with V (not V^H); zeros for U and V when not compute_uv."""
    U, S, Vh = svd_linalg(input, full_matrices=not some)
    if not compute_uv:
        xp = array_module(input._data)
        return svd_old_t(_wrap(xp.zeros(U.shape, U._data.dtype)), S, _wrap(xp.zeros(Vh.shape, U._data.dtype)))
    return svd_old_t(U, S, _mT(Vh))


def svdvals(A, *, driver=None):
    return svd_linalg(A, full_matrices=False).S


def pinv(A, *, atol=None, rtol=None, hermitian=False):
    U, S, Vh = svd_linalg(A, full_matrices=False)
    smax = S.amax(-1, keepdim=True)
    if rtol is None:
        rtol = (max(A.shape[-2:]) * np.finfo(A._data.dtype).eps) if atol is None or atol == 0 else 0.0
    tol = smax * rtol
    if atol is not None:
        tol = _pw.maximum(tol, _pw.mul(smax * 0, 1) + atol) if not isinstance(atol, Tensor) else _pw.maximum(tol, atol)
    keep = S > tol
    Sinv = _pw.where(keep, 1 / _pw.where(keep, S, 1.0), 0.0)
    out = (_mT(Vh) * Sinv.unsqueeze(-2)) @ _mT(U)
    return named(out, "LinalgPinvBackward0")


def pinverse(input, rcond=1e-15):
    return pinv(input, rtol=rcond)


# ------------------------------------------------------------------- norms
def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    from .reduction import norm
    if dtype is not None:
        x = x.to(dtype)
    if _kind_of(x._data.dtype) != "f":
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point or complex tensor as input. Got {x.dtype}")
    if isinstance(dim, int):
        dim = (dim,)
    if ord == 0:
        out = (x != 0).to(x.dtype).sum(dim=dim if dim is not None else None, keepdim=keepdim)
        return out
    if dim is None:
        out = norm(x.reshape(-1), p=ord, dim=0)
        if keepdim:
            out = out.reshape((1,) * x.dim())
    else:
        out = norm(x, p=ord, dim=tuple(dim), keepdim=keepdim)
    return named(out, "LinalgVectorNormBackward0")


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    if dtype is not None:
        A = A.to(dtype)
    if A.dim() < 2:
        raise RuntimeError("linalg.matrix_norm: The input tensor A must have at least 2 dimensions.")
    d0, d1 = [d % A.dim() for d in dim]
    if ord == "fro":
        return vector_norm(A, 2, (d0, d1), keepdim)
    if ord in ("nuc", 2, -2):
        M = A.movedim((d0, d1), (-2, -1))
        S = svdvals(M)
        out = S.sum(-1) if ord == "nuc" else S.amax(-1) if ord == 2 else S.amin(-1)
        if keepdim:
            out = out.unsqueeze(min(d0, d1)).unsqueeze(max(d0, d1))
        return out
    if ord in (1, -1, math.inf, -math.inf):
        sum_dim, red_dim = (d0, d1) if ord in (1, -1) else (d1, d0)
        s = A.abs().sum(sum_dim, keepdim=True)
        out = s.amax(red_dim, keepdim=True) if ord > 0 else s.amin(red_dim, keepdim=True)
        if not keepdim:
            out = out.squeeze((d0, d1))
        return out
    raise RuntimeError(f"linalg.matrix_norm: Order {ord} not supported.")


def linalg_norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    if isinstance(dim, int):
        dim = (dim,)
    if dim is not None and len(dim) == 2 or (dim is None and ord is not None and A.dim() == 2):
        return matrix_norm(A, "fro" if ord is None else ord, dim or (-2, -1), keepdim, dtype=dtype)
    if ord is not None and dim is None and A.dim() != 1:
        raise RuntimeError("linalg.norm: If dim is not specified but ord is, the input must be 1D or 2D.")
    return vector_norm(A, 2 if ord is None else ord, dim, keepdim, dtype=dtype)


# -------------------------------------------------------------- matrix_exp
def matrix_exp(A):
    """exp(A) by scaling and squaring with a degree-18 Taylor polynomial (built from
    matmuls, so it differentiates to any order)."""
    _check_square("linalg.matrix_exp", A)
    xp = array_module(A._data)
    nrm = float(xp.abs(A._data).sum(-2).max()) if A.numel() else 0.0
    s = max(0, int(math.ceil(math.log2(nrm))) + 1) if nrm > 0.5 else 0
    X = A / (2 ** s)
    from .creation import eye
    n = A.shape[-1]
    I = eye(n, dtype=A.dtype, device=A.device)
    out = I + X * 0
    term = I + X * 0
    for k in range(1, 19):
        term = term @ X / k
        out = out + term
    for _ in range(s):
        out = out @ out
    return named(out, "LinalgMatrixExpBackward0")
