"""Matrix products: matmul (1-D, 2-D, batched, broadcast), mm, bmm, dot, mv, outer."""
from __future__ import annotations

import numpy as np
from ..dtype import kind_of as _kind_of

from ..autograd.function import Node, record
from ._util import array_module, device_error, matprod


def _check_dtypes(op, a, b):
    err = device_error(op, a, b)
    if err is not None:
        raise err
    if a._data.dtype != b._data.dtype:
        raise RuntimeError(
            f"{op}: expected both operands to have the same dtype, but got {a.dtype} and "
            f"{b.dtype}; convert one of them with .to(dtype)"
        )


def _mat(x, y):
    """``x @ y`` in the operands' dtype: numpy computes a bfloat16 product in float32
    (as PyTorch accumulates it) and returns float32, which is rounded back here."""
    r = matprod(x, y)
    return r.astype(x.dtype) if r.dtype != x.dtype else r


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
        data = _mat(a._data, b._data)
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
    return record(BmmBackward0, _mat(input._data, mat2._data), (input, mat2), (input, mat2))


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
    data = array_module(input._data).asarray(_mat(input._data, other._data))
    return record(DotBackward0, data, (input, other), (input, other))


def mv(input, vec):
    if input._data.ndim != 2 or vec._data.ndim != 1 or input._data.shape[1] != vec._data.shape[0]:
        raise _mismatch("mv", input, vec)
    _check_dtypes("mv", input, vec)
    return record(MvBackward0, _mat(input._data, vec._data), (input, vec), (input, vec))


def outer(input, vec2):
    return input.unsqueeze(-1) * vec2


def rmatmul(input, other):
    return matmul(other, input)


# ------------------------------------------------------------ addmm / baddbmm
class AddmmBackward0(Node):
    """out = beta * input + alpha * (mat1 @ mat2); input broadcast to the output
    (the engine sums its gradient back to its shape)."""

    def backward(self, g):
        m1, m2 = self.saved_tensors
        beta, alpha = self.args
        gi = (g * beta if beta != 1 else g) if self.needs(0) else None
        ga = g if alpha == 1 else g * alpha
        g1 = ga @ m2.mT if self.needs(1) else None
        g2 = m1.mT @ ga if self.needs(2) else None
        return gi, g1, g2


class BaddbmmBackward0(AddmmBackward0):
    pass


def _scaled_sum(inp, prod, beta, alpha):
    """beta * inp + alpha * prod on arrays; with beta == 0, ``inp`` is ignored
    (its NaN and inf do not propagate), as in PyTorch. A bfloat16 product comes
    as float32: the sum is taken in float32 and rounded once."""
    dt = inp.dtype
    if prod.dtype != dt:
        inp = inp.astype(prod.dtype)
        return _scaled_sum(inp, prod, beta, alpha).astype(dt)
    if alpha != 1:
        prod = prod * prod.dtype.type(alpha)
    if beta == 0:
        return prod
    i = inp if beta == 1 else inp * inp.dtype.type(beta)
    return prod + i


def _check_beta_alpha(op, dtype, beta, alpha):
    if _kind_of(dtype) not in "fc":
        for name, v in (("beta", beta), ("alpha", alpha)):
            if isinstance(v, float) and not float(v).is_integer():
                raise RuntimeError(f"For integral input tensors, argument {name} must not be a floating point number.")


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    if mat1._data.ndim != 2 or mat2._data.ndim != 2:
        raise RuntimeError(f"mat1 must be a matrix, got {mat1._data.ndim}-D tensor" if mat1._data.ndim != 2
                           else f"mat2 must be a matrix, got {mat2._data.ndim}-D tensor")
    (n, k), (k2, m) = mat1._data.shape, mat2._data.shape
    if k != k2:
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({n}x{k} and {k2}x{m})")
    _check_dtypes("addmm", mat1, mat2)
    _check_dtypes("addmm", input, mat1)
    _check_beta_alpha("addmm", mat1._data.dtype, beta, alpha)
    try:
        if np.broadcast_shapes(input._data.shape, (n, m)) != (n, m):
            raise ValueError
    except ValueError:
        raise RuntimeError(
            f"The expanded size of the tensor ({m}) must match the existing size at non-singleton "
            f"dimension; input of shape {list(input._data.shape)} does not broadcast to [{n}, {m}]"
        ) from None
    data = _scaled_sum(input._data, mat1._data @ mat2._data, beta, alpha)
    return record(AddmmBackward0, data, (input, mat1, mat2), (mat1, mat2), args=(beta, alpha))


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    for name, t in (("batch1", batch1), ("batch2", batch2)):
        if t._data.ndim != 3:
            raise RuntimeError(f"{name} must be a 3D tensor")
    (b, n, k), (b2, k2, m) = batch1._data.shape, batch2._data.shape
    if b != b2 or k != k2:
        raise RuntimeError(
            f"Expected size for first two dimensions of batch2 tensor to be: [{b}, {k}] but got: "
            f"[{b2}, {k2}]."
        )
    _check_dtypes("baddbmm", batch1, batch2)
    _check_dtypes("baddbmm", input, batch1)
    _check_beta_alpha("baddbmm", batch1._data.dtype, beta, alpha)
    try:
        if np.broadcast_shapes(input._data.shape, (b, n, m)) != (b, n, m):
            raise ValueError
    except ValueError:
        raise RuntimeError(
            f"The expanded size of the tensor must match the existing size: input of shape "
            f"{list(input._data.shape)} does not broadcast to [{b}, {n}, {m}]"
        ) from None
    data = _scaled_sum(input._data, batch1._data @ batch2._data, beta, alpha)
    return record(BaddbmmBackward0, data, (input, batch1, batch2), (batch1, batch2), args=(beta, alpha))


# --------------------------------------------------------------------- einsum
_ELL = "."  # the label of the ellipsis dims in a parsed term (one per dim, numbered)


def _parse_term(term, ndim, k):
    """The labels of operand ``k``'s dims: letters, and ("...", i) for the ellipsis dims
    (numbered from the right, so operands' ellipses broadcast)."""
    if term.count("...") > 1 or term.replace("...", "").count("."):
        raise RuntimeError(f"einsum(): found '.' for operand {k} that is not part of any ellipsis")
    if "..." in term:
        before, after = term.split("...")
        n_ell = ndim - len(before) - len(after)
        if n_ell < 0:
            raise RuntimeError(
                f"einsum(): the number of subscripts in the equation ({len(before) + len(after)}) is more "
                f"than the number of dimensions ({ndim}) for operand {k}")
        labels = list(before) + [(_ELL, n_ell - 1 - i) for i in range(n_ell)] + list(after)
    else:
        if len(term) != ndim:
            raise RuntimeError(
                f"einsum(): the number of subscripts in the equation ({len(term)}) does not match the "
                f"number of dimensions ({ndim}) for operand {k} and no ellipsis was given")
        labels = list(term)
    for c in labels:
        if isinstance(c, str) and not c.isalpha():
            raise RuntimeError(f"einsum(): invalid subscript given at index {term.index(c)} in the equation "
                               "string, subscripts must be in [a-zA-Z]")
    return labels


def _diagonal(t, labels, j, k):
    """Take the diagonal of dims ``j`` and ``k`` (equal labels); it stays at ``j``."""
    from ..ops.creation import arange

    nd = t._data.ndim
    rest = [d for d in range(nd) if d not in (j, k)]
    moved = t.permute(rest + [j, k])
    n = t._data.shape[j]
    ar = arange(n, device=t.device)
    diag = moved[(Ellipsis, ar, ar)]
    return diag.movedim(-1, j), labels[:k] + labels[k + 1:]


def _sumproduct_pair(left, right, sum_dims):
    """Contract ``sum_dims`` of two aligned operands (same rank) with one batched
    product; the summed dims stay as size 1 (as PyTorch's sumproduct_pair)."""
    nd = left._data.ndim
    lro, lo, ro, sums = [], [], [], []
    lro_size = lo_size = ro_size = sum_size = 1
    for i in range(nd):
        sl, sr = left._data.shape[i] > 1, right._data.shape[i] > 1
        if i in sum_dims:
            if sl and sr:
                sums.append(i)
                sum_size *= left._data.shape[i]
            elif sl:
                left = left.sum(i, keepdim=True)
                sums.append(i)
            elif sr:
                right = right.sum(i, keepdim=True)
                sums.append(i)
            else:
                sums.append(i)
        elif sl and sr:
            lro.append(i)
            lro_size *= left._data.shape[i]
        elif sl:
            lo.append(i)
            lo_size *= left._data.shape[i]
        else:
            ro.append(i)
            ro_size *= right._data.shape[i]
    out_size = ([left._data.shape[d] for d in lro] + [left._data.shape[d] for d in lo]
                + [1] * len(sums) + [right._data.shape[d] for d in ro])
    lperm = lro + lo + sums + ro
    rperm = lro + sums + ro + lo
    operm = [0] * nd
    for pos, d in enumerate(lperm):
        operm[d] = pos
    lm = left.permute(lperm).reshape(lro_size, lo_size, sum_size)
    rm = right.permute(rperm).reshape(lro_size, sum_size, ro_size)
    return matmul(lm, rm).view(out_size).permute(operm)


def einsum(equation, *operands):
    """Einstein summation, as ``torch.einsum``: operands as arguments or one list.
    Built from permutes, diagonals, sums, products and one batched product per
    contracted pair (PyTorch's own decomposition), so it is differentiable to any
    order and its ``grad_fn`` is the node PyTorch shows (``PermuteBackward0``,
    ``SumBackward1``, ``MulBackward0`` or ``ViewBackward0``)."""
    from ._util import Tensor

    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise RuntimeError("einsum(): must provide at least one operand")
    for i, t in enumerate(operands):
        if not isinstance(t, Tensor):
            raise TypeError(f"einsum(): operand {i} is a {type(t).__name__}, expected a Tensor")
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise RuntimeError(
            "einsum(): more operands were provided than specified in the equation" if len(operands) > len(terms)
            else "einsum(): fewer operands were provided than specified in the equation")
    op_labels = [_parse_term(term, t._data.ndim, k) for k, (term, t) in enumerate(zip(terms, operands))]
    n_ell = max((sum(1 for c in ls if isinstance(c, tuple)) for ls in op_labels), default=0)
    ell = [(_ELL, n_ell - 1 - i) for i in range(n_ell)]
    counts = {}
    for ls in op_labels:
        for c in ls:
            counts[c] = counts.get(c, 0) + 1
    if arrow:
        if rhs.count("...") > 1 or rhs.replace("...", "").count("."):
            raise RuntimeError("einsum(): found '.' for output that is not part of any ellipsis")
        if "..." in rhs:
            before, after = rhs.split("...")
            out = list(before) + ell + list(after)
        else:
            out = list(rhs)
        seen = set()
        for c in out:
            if isinstance(c, str):
                if not c.isalpha():
                    raise RuntimeError("einsum(): invalid subscript given in the equation string, "
                                       "subscripts must be in [a-zA-Z]")
                if c in seen:
                    raise RuntimeError(f"einsum(): output subscript {c} appears more than once in the output")
                if c not in counts:
                    raise RuntimeError(f"einsum(): output subscript {c} does not appear in the equation for "
                                       "any input operand")
                seen.add(c)
    else:
        out = ell + sorted(c for c, n in counts.items() if isinstance(c, str) and n == 1)
    contracted = sorted(c for c in counts if c not in out and isinstance(c, str))
    contracted = [c for c in ell if c not in out] + contracted
    order = out + contracted
    n_out = len(out)

    # Each operand: diagonals of repeated labels, then aligned to ``order`` (size-1
    # dims for labels it lacks).
    sizes = {}
    aligned = []
    last_op = {}
    for k, (t, ls) in enumerate(zip(operands, op_labels)):
        j = 0
        while j < len(ls):
            c = ls[j]
            k2 = next((m for m in range(j + 1, len(ls)) if ls[m] == c), None)
            if k2 is None:
                j += 1
                continue
            if t._data.shape[j] != t._data.shape[k2]:
                raise RuntimeError(
                    f"einsum(): subscript {c} is repeated for operand {k} but the sizes don't match, "
                    f"{t._data.shape[j]} != {t._data.shape[k2]}")
            t, ls = _diagonal(t, ls, j, k2)
        for c, s in zip(ls, t._data.shape):
            prev = sizes.get(c)
            if prev is None or prev == 1:
                sizes[c] = s
            elif s != 1 and s != prev:
                name = "..." if isinstance(c, tuple) else c
                raise RuntimeError(
                    f"einsum(): operands do not broadcast with remapped shapes (subscript {name} has size "
                    f"{s} for operand {k} which does not broadcast with previously seen size {prev})")
            last_op[c] = k
        present = {c: d for d, c in enumerate(ls)}
        missing = [c for c in order if c not in present]
        for c in missing:
            t = t.unsqueeze(-1)
            present[c] = t._data.ndim - 1
        perm = [present[c] for c in order]
        aligned.append(t.permute(perm))

    if len(aligned) == 1:
        result = aligned[0]
        if len(order) > n_out:
            result = result.sum(list(range(n_out, len(order))))
        return result

    result = aligned[0]
    first_sum = [d for d in range(n_out, len(order)) if last_op[order[d]] == 0]
    if first_sum:
        result = result.sum(first_sum, keepdim=True)
    for i in range(1, len(aligned)):
        operand = aligned[i]
        sum_dims = []
        for d in range(n_out, len(order)):
            if last_op[order[d]] != i:
                continue
            if result._data.shape[d] == 1:
                operand = operand.sum(d, keepdim=True)
            elif operand._data.shape[d] == 1:
                result = result.sum(d, keepdim=True)
            else:
                sum_dims.append(d)
        if not sum_dims:
            result = result * operand
        elif len(sum_dims) == result._data.ndim:
            result = dot(result.flatten(), operand.flatten())
        else:
            result = _sumproduct_pair(result, operand, sum_dims)
    if len(order) > n_out:
        result = result.view(list(result._data.shape[:n_out]))
    return result
