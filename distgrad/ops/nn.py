"""Neural-network ops: linear, embedding, layer/RMS norm, dropout, the losses and
attention. Linear, embedding, layer_norm, dropout and nll_loss have nodes of their
own (one node instead of several keeps the training step lean); the rest are
compositions of other ops and need no derivative of their own."""
from __future__ import annotations

import math

import numpy as np
from ..dtype import kind_of as _kind_of

from .. import backend
from .. import random as _random
from ..autograd.function import OUTPUT, Node, record
from ..autograd.grad_mode import state as _grad_state
from ..backends import cuda as _cuda_backend
from . import cpu_kernels, cuda_kernels, pointwise
from . import flash_attention as _flash
from . import reduction as _red
from ..backend import errstate, freeze
from ._util import Tensor, _wrap, array_module, down, matprod, up, wrap_dim


# -------------------------------------------------------------------- linear
class AddmmBackward0(Node):
    """y = x @ W.T + b, for x of any leading shape."""

    def backward(self, g):
        saved = self.saved_tensors
        x, w = saved[0], saved[1]
        out_f, in_f = w._data.shape
        g2 = g.reshape(-1, out_f)
        gx = (g2 @ w).reshape(x._data.shape) if self.needs(0) else None
        gw = g2.mT @ x.reshape(-1, in_f) if self.needs(1) else None
        if len(self.next_functions) == 2:
            return gx, gw
        gb = None
        if self.needs(2):
            fast = None if _grad_state.enabled else cpu_kernels.column_sums(g2._data)
            gb = _wrap(fast) if fast is not None else g2.sum(0)
        return gx, gw, gb


class MmBackward0(AddmmBackward0):
    pass


def linear(input, weight, bias=None):
    x, w = input._data, weight._data
    if x.ndim == 0 or x.shape[-1] != w.shape[-1]:
        raise RuntimeError(
            f"linear: mat1 and mat2 shapes cannot be multiplied (input {list(x.shape)} and "
            f"weight.T {list(w.shape[::-1])}): the input's last dim must equal in_features={w.shape[-1]}"
        )
    if x.dtype != w.dtype:
        raise RuntimeError(
            f"linear: expected input and weight to have the same dtype, but got {input.dtype} "
            f"and {weight.dtype}; convert the input with .to({weight.dtype})"
        )
    lead = x.shape[:-1]
    y = matprod(x.reshape(-1, x.shape[-1]), w.T)  # float32 for 16-bit floats: the bias is added before rounding
    if bias is None:
        return record(MmBackward0, down(y, x.dtype).reshape(lead + (w.shape[0],)), (input, weight),
                      (input, weight))
    b = bias._data
    if (type(y) is not np.ndarray and b.dtype == y.dtype and b.ndim == 1 and cuda_kernels.rows_supported(y)
            and y.flags.c_contiguous):
        cuda_kernels.add_bias_(y, array_module(b).ascontiguousarray(b))
    else:
        y += b
    return record(AddmmBackward0, down(y, x.dtype).reshape(lead + (w.shape[0],)), (input, weight, bias),
                  (input, weight))


# ----------------------------------------------------------------- embedding
class EmbeddingBackward0(Node):
    def backward(self, g):
        num, idx, padding_idx = self.args
        dim = g._data.shape[-1]
        g2 = g.reshape(-1, dim)
        flat = idx.reshape(-1)
        if padding_idx is not None:
            g2 = g2.masked_fill((flat == padding_idx).unsqueeze(1), 0.0)
        from .creation import zeros

        return zeros(num, dim, dtype=g.dtype, device=g.device).index_add(0, flat, g2)


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    idx = input._data
    if idx.dtype.kind not in "iu":
        raise RuntimeError(
            f"embedding: expected the indices to be an integer tensor (int64), got {input.dtype}; "
            "use .long()"
        )
    num = weight._data.shape[0]
    if idx.size:
        lo, hi = idx.min(), idx.max()
        backend.check((hi >= num) | (lo < 0), IndexError, lambda: (
            f"embedding: index out of range: indices must be in [0, {num}), got values from "
            f"{int(lo)} to {int(hi)}"))
    if padding_idx is not None and padding_idx < 0:
        padding_idx += num
    if max_norm is not None:
        _renorm_rows_(weight, idx, max_norm, norm_type)
    data = weight._data[idx]
    return record(EmbeddingBackward0, data, (weight,), args=(num, input, padding_idx))


def _renorm_rows_(weight, idx, max_norm, norm_type):
    """Scale the looked-up rows of ``weight`` in place so their norm is at most
    ``max_norm`` (outside autograd, as PyTorch's embedding_renorm_)."""
    w = weight._data
    xp = array_module(w)
    rows = xp.unique(idx.reshape(-1))
    sub = w[rows]
    norms = (xp.abs(sub) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    big = norms > max_norm
    if big.any():
        scale = (max_norm / (norms[big] + 1e-7)).astype(w.dtype)
        w[rows[big]] = sub[big] * scale[:, None]
        weight._vc[0] += 1


# ------------------------------------------------------------------- norms
def _norm_dims(input, normalized_shape, op):
    shape = tuple(normalized_shape) if not isinstance(normalized_shape, int) else (normalized_shape,)
    if input._data.shape[input._data.ndim - len(shape):] != shape:
        raise RuntimeError(
            f"{op}: Given normalized_shape={list(shape)}, expected input with shape "
            f"[*, {', '.join(map(str, shape))}], but got input of size {list(input._data.shape)}"
        )
    return tuple(range(input._data.ndim - len(shape), input._data.ndim)), shape


class NativeLayerNormBackward0(Node):
    def backward(self, g):
        saved = self.saved_tensors
        x = saved[0]
        dims, eps, has_w, has_b, stats = self.args
        if not _grad_state.enabled:
            if stats is not None and g._data.dtype == x._data.dtype:
                return _layer_norm_backward_fused(self, g, saved, stats)
            if _layer_norm_cpu_applies(x, saved[1] if has_w else None, None, g):
                return _layer_norm_backward_cpu(self, g, saved)
            return _layer_norm_backward_arrays(self, g, saved)
        # Building a graph (create_graph=True): xhat is recomputed from x with tensor
        # ops, so this formula can itself be differentiated.
        mean = x.mean(dims, keepdim=True)
        xc = x - mean
        rstd = ((xc * xc).mean(dims, keepdim=True) + eps).rsqrt()
        xhat = xc * rstd
        gxhat = g * saved[1] if has_w else g
        lead = tuple(range(x._data.ndim - len(dims)))
        gx = None
        if self.needs(0):
            gx = rstd * (gxhat - gxhat.mean(dims, keepdim=True)
                         - xhat * (gxhat * xhat).mean(dims, keepdim=True))
        grads = [gx]
        if has_w:
            grads.append((g * xhat).sum(lead) if self.needs(1) else None)
        if has_b:
            grads.append(g.sum(lead) if self.needs(len(grads)) else None)
        return tuple(grads)


def _layer_norm_backward_arrays(node, g, saved):
    """The same formula as above on arrays, for the usual backward that builds no
    graph: a few passes over memory instead of a dozen tensor ops."""
    dims, eps, has_w, has_b, _ = node.args
    dt = g._data.dtype
    x, gd = up(saved[0]._data), up(g._data)  # bfloat16: in float32, rounded at the end
    f = x.dtype.type
    xc = x - x.mean(axis=dims, keepdims=True)
    rstd = (xc * xc).mean(axis=dims, keepdims=True)
    rstd += f(eps)
    rstd = array_module(x).sqrt(rstd, out=rstd)
    array_module(x).reciprocal(rstd, out=rstd)
    xc *= rstd                                            # xhat
    lead = tuple(range(x.ndim - len(dims)))
    grads = [None]
    gxhat = gd * up(saved[1]._data) if has_w else gd
    if node.needs(0):
        gx = gxhat * xc
        proj = gx.mean(axis=dims, keepdims=True)
        gx = gxhat - gxhat.mean(axis=dims, keepdims=True)
        gx -= xc * proj
        gx *= rstd
        grads[0] = _wrap(down(gx, dt))
    if has_w:
        grads.append(_wrap(down((gd * xc).sum(axis=lead), dt)) if node.needs(1) else None)
    if has_b:
        grads.append(_wrap(down(gd.sum(axis=lead), dt)) if node.needs(len(grads)) else None)
    return tuple(grads)


def _layer_norm_backward_fused(node, g, saved, stats):
    """The GPU row kernel: the input's gradient in one pass, and ``g * xhat``, whose
    column sums are the weight's gradient."""
    dims, _, has_w, has_b, _ = node.args
    x = saved[0]._data
    xp = array_module(x)
    nshape = x.shape[x.ndim - len(dims):]
    c = math.prod(nshape)
    x2 = xp.ascontiguousarray(x).reshape(-1, c)
    g2 = xp.ascontiguousarray(g._data).reshape(-1, c)
    w = xp.ascontiguousarray(saved[1]._data).reshape(c) if has_w else None
    need_w = has_w and node.needs(1)
    gx, gxh = cuda_kernels.layer_norm_backward(x2, g2, w, *stats, node.needs(0), need_w)
    grads = [_wrap(gx.reshape(x.shape)) if gx is not None else None]
    def col_sums(a):  # kept unreshaped when already shaped: a view would be copied into .grad
        r = backend.sum_leading(a, 1)
        return _wrap(r if r.shape == nshape else r.reshape(nshape))

    if has_w:
        grads.append(col_sums(gxh) if need_w else None)
    if has_b:
        grads.append(col_sums(g2) if node.needs(len(grads)) else None)
    return tuple(grads)


def _layer_norm_cpu_applies(x, weight, bias, g=None):
    """Whether the CPU row kernels take this LayerNorm: float32 or float64 arrays of one
    dtype (and the gradient of the input's shape)."""
    return (cpu_kernels.use(x._data) and all(
        t is None or t._data.dtype == x._data.dtype for t in (weight, bias, g))
        and (g is None or g._data.shape == x._data.shape))


def _layer_norm_backward_cpu(node, g, saved):
    """The CPU row kernels: the input's gradient and ``g * xhat`` in threads over rows."""
    dims, eps, has_w, has_b, _ = node.args
    x = saved[0]._data
    nshape = x.shape[x.ndim - len(dims):]
    c = math.prod(nshape)
    w = saved[1]._data.reshape(c) if has_w else None
    need_w = has_w and node.needs(1)
    need_b = has_b and node.needs(2 if has_w else 1)
    gx, dw, db = cpu_kernels.layer_norm_grad_sums(x, g._data, c, w, eps, node.needs(0), need_w, need_b)
    grads = [_wrap(gx) if gx is not None else None]

    def shaped(r):  # kept unreshaped when already shaped: a view would be copied into .grad
        return _wrap(r if r.shape == nshape else r.reshape(nshape))

    if has_w:
        grads.append(shaped(dw) if need_w else None)
    if has_b:
        grads.append(shaped(db) if need_b else None)
    return tuple(grads)


def _layer_norm_fused(input, dims, weight, bias, eps):
    """LayerNorm by the GPU row kernel, or None where it does not apply (another
    dtype, weights of another dtype, an empty normalized shape)."""
    x = input._data
    if not cuda_kernels.rows_supported(x) or any(
            t is not None and t._data.dtype != x.dtype for t in (weight, bias)):
        return None
    xp = array_module(x)
    c = math.prod(x.shape[x.ndim - len(dims):])
    if c == 0:
        return None
    x2 = xp.ascontiguousarray(x).reshape(-1, c)
    w = xp.ascontiguousarray(weight._data).reshape(c) if weight is not None else None
    b = xp.ascontiguousarray(bias._data).reshape(c) if bias is not None else None
    y, mean, rstd = cuda_kernels.layer_norm_forward(x2, w, b, eps)
    inputs = (input,) + tuple(t for t in (weight, bias) if t is not None)
    saved = (input, weight) if weight is not None else (input,)
    return record(NativeLayerNormBackward0, y.reshape(x.shape), inputs, saved,
                  args=(dims, eps, weight is not None, bias is not None, (mean, rstd)))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims, _ = _norm_dims(input, normalized_shape, "layer_norm")
    x = input._data
    xp = array_module(x)
    if xp is not np:
        out = _layer_norm_fused(input, dims, weight, bias, eps)
        if out is not None:
            return out
    inputs = (input,) + tuple(t for t in (weight, bias) if t is not None)
    saved = (input, weight) if weight is not None else (input,)
    args = (dims, eps, weight is not None, bias is not None, None)
    if _layer_norm_cpu_applies(input, weight, bias):
        c = math.prod(x.shape[x.ndim - len(dims):])
        y = cpu_kernels.layer_norm(x, c, *(t._data.reshape(c) if t is not None else None
                                           for t in (weight, bias)), eps)
        return record(NativeLayerNormBackward0, y, inputs, saved, args=args)
    dt, x = x.dtype, up(x)  # bfloat16: in float32, rounded once
    mean = x.mean(axis=dims, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=dims, keepdims=True)
    y = xc * (1.0 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)
    if weight is not None:
        y *= up(weight._data)
    if bias is not None:
        y += up(bias._data)
    return record(NativeLayerNormBackward0, down(y, dt), inputs, saved, args=args)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    dims, _ = _norm_dims(input, normalized_shape, "rms_norm")
    if eps is None:
        eps = float(array_module(input._data).finfo(input._data.dtype).eps)
    y = input * ((input * input).mean(dims, keepdim=True) + eps).rsqrt()
    return y * weight if weight is not None else y


# ------------------------------------------------------------------ dropout
class NativeDropoutBackward0(Node):
    def backward(self, g):
        return g * self.args


def dropout(input, p=0.5, training=True, inplace=False):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    x = input._data
    if p == 1.0:
        mask = array_module(x).zeros(x.shape, x.dtype)
    else:
        keep = _random.uniform_like(x) >= p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    out = record(NativeDropoutBackward0, x * mask, (input,), args=_wrap(mask))
    if inplace:
        return input.copy_(out)
    return out


# ------------------------------------------------------------------- losses
# Each loss that PyTorch computes with a node of its own (mse, smooth L1, Huber,
# nll, the two binary cross-entropies) has that node here, with its name; the
# others (l1, kl_div, cross_entropy with class probabilities or label smoothing)
# are compositions, as in PyTorch, so their grad_fn is PyTorch's too.
_REDUCTIONS = ("none", "mean", "sum")


def _legacy_reduction(size_average, reduce, reduction):
    """PyTorch's mapping of the deprecated size_average/reduce flags."""
    if size_average is None and reduce is None:
        return reduction
    import warnings

    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    new = "none" if not reduce else ("mean" if size_average else "sum")
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{new}' instead.",
                  UserWarning, stacklevel=3)
    return new


def _check_reduction(reduction_, extra=()):
    if reduction_ not in _REDUCTIONS + extra:
        raise ValueError(f"{reduction_} is not a valid value for reduction")


def _reduce(loss, reduction_, op=None):
    if reduction_ == "mean":
        return loss.mean()
    if reduction_ == "sum":
        return loss.sum()
    if reduction_ == "none":
        return loss
    raise ValueError(f"{reduction_} is not a valid value for reduction")


def _reduce_arr(loss, reduction_):
    """The reduced loss array (same dtype), for the losses with their own node."""
    xp = array_module(loss)
    if reduction_ == "mean":
        return xp.asarray(up(loss).mean(), dtype=loss.dtype)
    if reduction_ == "sum":
        return xp.asarray(up(loss).sum(), dtype=loss.dtype)
    return loss


def _grad_scale(g, reduction_, n):
    """The incoming gradient as a factor on each element's loss gradient."""
    if reduction_ == "mean":
        return g / n
    return g


def _size_warning(input, target, stacklevel=3):
    import warnings

    warnings.warn(
        f"Using a target size ({_size_str(target)}) that is different to the input size "
        f"({_size_str(input)}). This will likely lead to incorrect results due to "
        "broadcasting. Please ensure they have the same size.", UserWarning, stacklevel=stacklevel)


def _size_str(t):
    return f"distgrad.Size({list(t._data.shape)})"


def _broadcast_pair(input, target):
    if input._data.shape == target._data.shape:
        return input, target
    _size_warning(input, target, stacklevel=4)
    from .shape import broadcast_tensors

    return broadcast_tensors(input, target)


def _check_weight_grad(op, **tensors):
    """PyTorch's error for a weight that requires grad (it is not differentiated)."""
    if not _grad_state.enabled:
        return
    for name, t in tensors.items():
        if t is not None and t.requires_grad:
            raise RuntimeError(
                f"The function '{op}' is not differentiable with respect to argument '{name}'. "
                "This input cannot have requires_grad True.")


class MseLossBackward0(Node):
    def backward(self, g):
        x, y = self.saved_tensors
        reduction_, n = self.args
        gx = (x - y) * (_grad_scale(g, reduction_, n) * 2.0)
        return (gx if self.needs(0) else None, -gx if self.needs(1) else None)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    input, target = _broadcast_pair(input, target)
    d = input._data - target._data
    loss = _reduce_arr(d * d, reduction)
    out = record(MseLossBackward0, loss, (input, target), (input, target), args=(reduction, d.size))
    return out if weight is None else _weighted_after(out, input, target, weight, reduction, mse_loss)


def _weighted_after(out, input, target, weight, reduction_, fn):
    """The ``weight=`` form of mse_loss/l1_loss/huber_loss (PyTorch 2.6+): the
    elementwise losses times ``weight``, then reduced."""
    per = fn(input, target, reduction="none") * weight
    return _reduce(per, reduction_)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    input, target = _broadcast_pair(input, target)
    loss = (input - target).abs()
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


class SmoothL1LossBackward0(Node):
    def backward(self, g):
        x, y = self.saved_tensors
        reduction_, n, beta = self.args
        d = x - y
        inner = (d.abs() < beta).to(d.dtype)
        local = inner * d / beta + (1 - inner) * pointwise.sign(d)
        gx = local * _grad_scale(g, reduction_, n)
        return (gx if self.needs(0) else None, -gx if self.needs(1) else None)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """Squared error (halved, over ``beta``) where |input - target| < beta, absolute
    error (less beta/2) elsewhere, as ``torch.nn.functional.smooth_l1_loss``."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if beta < 0:
        raise ValueError("smooth_l1_loss does not support negative values for beta.")
    if beta == 0:
        return l1_loss(input, target, reduction=reduction)
    input, target = _broadcast_pair(input, target)
    d = input._data - target._data
    xp = array_module(d)
    a = xp.abs(d)
    loss = xp.where(a < beta, d * d * (0.5 / beta), a - 0.5 * beta).astype(d.dtype, copy=False)
    return record(SmoothL1LossBackward0, _reduce_arr(loss, reduction), (input, target), (input, target),
                  args=(reduction, d.size, beta))


class HuberLossBackward0(Node):
    def backward(self, g):
        x, y = self.saved_tensors
        reduction_, n, delta = self.args
        d = x - y
        inner = (d.abs() < delta).to(d.dtype)
        local = inner * d + (1 - inner) * pointwise.sign(d) * delta
        gx = local * _grad_scale(g, reduction_, n)
        return (gx if self.needs(0) else None, -gx if self.needs(1) else None)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """0.5 * d**2 where |d| < delta, delta * (|d| - delta/2) elsewhere (d = input -
    target), as ``torch.nn.functional.huber_loss``."""
    _check_reduction(reduction)
    if delta <= 0:
        raise RuntimeError(f"huber_loss does not support non-positive values for delta (got {delta}).")
    input, target = _broadcast_pair(input, target)
    d = input._data - target._data
    xp = array_module(d)
    a = xp.abs(d)
    loss = xp.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta)).astype(d.dtype, copy=False)
    out = record(HuberLossBackward0, _reduce_arr(loss, reduction), (input, target), (input, target),
                 args=(reduction, d.size, delta))
    return out if weight is None else _weighted_after(out, input, target, weight, reduction,
                                                      lambda a, b, reduction: huber_loss(a, b, reduction, delta))


class BinaryCrossEntropyWithLogitsBackward0(Node):
    """d/dx = (sigmoid(x) - y) * w, or with pos_weight p: ((p y + 1 - y) sigmoid(x) - p y) * w;
    d/dy = -x * w, or (log_sigmoid(-x) - p log_sigmoid(x)) * w."""

    def backward(self, g):
        saved = iter(self.saved_tensors)
        reduction_, n, has_w, has_pw = self.args
        x, y = next(saved), next(saved)
        w = next(saved) if has_w else None
        pw = next(saved) if has_pw else None
        scale = _grad_scale(g, reduction_, n)
        if w is not None:
            scale = scale * w
        gx = gy = None
        if self.needs(0):
            s = pointwise.sigmoid(x)
            if pw is None:
                gx = (s - y) * scale
            else:
                t = pw * y
                gx = ((t + 1 - y) * s - t) * scale
        if self.needs(1):
            if pw is None:
                gy = -x * scale
            else:
                gy = (_log_sigmoid(-x) - _log_sigmoid(x) * pw) * scale
        return gx, gy


def _log_sigmoid(x):
    """log(sigmoid(x)) = -softplus(-x), stably, with tensor ops (differentiable)."""
    return -pointwise.softplus(-x)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """max(x, 0) - x y + log(1 + exp(-|x|)) (weighted), computed stably in one node,
    as ``torch.nn.functional.binary_cross_entropy_with_logits``."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if input._data.shape != target._data.shape:
        raise ValueError(
            f"Target size ({_size_str(target)}) must be the same as input size ({_size_str(input)})"
        )
    _check_weight_grad("binary_cross_entropy_with_logits", weight=weight, pos_weight=pos_weight)
    x, y = input._data, target._data
    xp = array_module(x)
    with errstate(xp, over="ignore"):
        soft = xp.log1p(xp.exp(-xp.abs(x)))            # log(1 + exp(-|x|))
    if pos_weight is None:
        loss = xp.maximum(x, 0) - x * y + soft
    else:
        lw = (pos_weight._data - 1) * y + 1
        loss = (1 - y) * x + lw * (soft + xp.maximum(-x, 0))   # lw * softplus(-x)
    if weight is not None:
        loss = loss * weight._data
    loss = loss.astype(xp.result_type(x, y), copy=False)
    if loss.shape != x.shape:  # a weight of more dims than the input
        n = loss.size
    else:
        n = x.size
    return record(BinaryCrossEntropyWithLogitsBackward0, _reduce_arr(loss, reduction), (input, target),
                  tuple(t for t in (input, target, weight, pos_weight) if t is not None),
                  args=(reduction, n, weight is not None, pos_weight is not None))


class BinaryCrossEntropyBackward0(Node):
    """d/dx = (x - y) / max(x (1 - x), 1e-12) * w; d/dy = -logit(x) * w (PyTorch's)."""

    def backward(self, g):
        saved = self.saved_tensors
        x, y = saved[0], saved[1]
        w = saved[2] if len(saved) > 2 else None
        reduction_, n = self.args
        scale = _grad_scale(g, reduction_, n)
        if w is not None:
            scale = scale * w
        gx = gy = None
        if self.needs(0):
            gx = (x - y) / (x * (1 - x)).clamp(min=1e-12) * scale
        if self.needs(1):
            gy = (pointwise.log(1 - x) - pointwise.log(x)) * scale
        return gx, gy


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """-w (y log x + (1 - y) log(1 - x)), each log clamped to >= -100 (PyTorch's),
    in one node, as ``torch.nn.functional.binary_cross_entropy``."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if target._data.shape != input._data.shape:
        raise ValueError(
            f"Using a target size ({_size_str(target)}) that is different to the input size "
            f"({_size_str(input)}) is deprecated. Please ensure they have the same size."
        )
    _check_weight_grad("binary_cross_entropy", weight=weight)
    if weight is not None and weight._data.shape != input._data.shape:
        weight = weight.expand(*np.broadcast_shapes(weight._data.shape, input._data.shape))
    x, y = input._data, target._data
    xp = array_module(x)
    backend.check(((x < 0) | (x > 1)).any(), RuntimeError, lambda: "all elements of input should be between 0 and 1")
    with errstate(xp, divide="ignore"):
        log_x = xp.maximum(xp.log(x), -100)
        log_1mx = xp.maximum(xp.log1p(-x), -100)
    loss = -(y * log_x + (1 - y) * log_1mx)
    if weight is not None:
        loss = loss * weight._data
    loss = loss.astype(x.dtype, copy=False)
    return record(BinaryCrossEntropyBackward0, _reduce_arr(loss, reduction), (input, target),
                  (input, target) if weight is None else (input, target, weight), args=(reduction, loss.size))


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """target * (log(target) - input) (``input`` holds log-probabilities), as
    ``torch.nn.functional.kl_div``; ``reduction='batchmean'`` divides the sum by the
    batch size (the mathematical KL divergence)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, ("batchmean",))
    if reduction == "mean":
        import warnings

        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support size."
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
            "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
            UserWarning, stacklevel=2)
    if log_target:
        loss = pointwise.exp(target) * (target - input)
    else:
        loss = _xlogy_self(target) - target * input
    if reduction == "batchmean":
        total = loss.sum()
        return total / input._data.shape[0] if input._data.ndim else total
    return _reduce(loss, reduction)


def _xlogy_self(t):
    """t * log(t), 0 where t == 0 (PyTorch's xlogy(t, t)); NaN stays NaN."""
    safe = pointwise.where(t == 0, 1.0, t)
    return t * pointwise.log(safe)


class NllLossBackward0(Node):
    def backward(self, g):
        target, w_t, denom, shape, unbatched = self.args
        from .creation import zeros

        coef = -g / denom if g._data.ndim == 0 and denom is not None else -g
        src = coef * w_t
        if unbatched and src._data.ndim == 0:
            src = src.reshape(1)
        if not _grad_state.enabled and len(shape) == 2 and type(src._data) is np.ndarray:
            # one target per row: a write into zeros is the scatter-add (5x faster)
            gx = np.zeros(shape, dtype=g._data.dtype)
            gx[np.arange(shape[0]), target._data] = src._data
            gx = _wrap(gx)
        else:
            gx = zeros(shape, dtype=g.dtype, device=g.device).scatter_add(1, target.unsqueeze(1),
                                                                          src.unsqueeze(1))
        return gx.reshape(shape[1:]) if unbatched else gx


class NllLoss2DBackward0(NllLossBackward0):
    """nll_loss of inputs with dims after the class dim (PyTorch's nll_loss2d)."""


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if not isinstance(target, Tensor) or target._data.dtype.kind not in "iu":
        raise RuntimeError(
            f"nll_loss: expected target to be a tensor of class indices (int64), got "
            f"{target.dtype if isinstance(target, Tensor) else type(target).__name__}"
        )
    _check_reduction(reduction)
    xd = input._data
    unbatched = xd.ndim == 1
    x2 = xd[None] if unbatched else xd
    td = target._data.reshape(1) if unbatched and target._data.ndim == 0 else target._data
    if x2.ndim < 2:
        raise ValueError(f"Expected 1 or more dimensions (got {xd.ndim})")
    n, c = x2.shape[:2]
    expected = (n,) + x2.shape[2:]
    if td.shape != expected:
        if x2.ndim == 2:
            raise ValueError(
                f"Expected input batch_size ({n}) to match target batch_size ({td.shape[0] if td.ndim else 0}).")
        raise RuntimeError(
            f"nll_loss: expected target of shape {list(expected)} for input of shape "
            f"{list(xd.shape)}, got {list(target._data.shape)}")
    xp = array_module(x2)
    valid = td != ignore_index
    out_of_range = valid & ((td < 0) | (td >= c))
    backend.check(out_of_range.any(), IndexError,
                  lambda: f"nll_loss: Target {int(td[out_of_range][0])} is out of bounds for {c} classes")
    safe_t = xp.where(valid, td, 0).astype(xp.int64, copy=False)
    w = xp.ones(c, x2.dtype) if weight is None else weight._data.astype(x2.dtype)
    w_t = xp.where(valid, w[safe_t], 0).astype(x2.dtype)
    picked = xp.take_along_axis(x2, safe_t[:, None], axis=1)[:, 0]
    losses = -picked * w_t
    denom = None
    if reduction == "none":
        data = losses.reshape(()) if unbatched else losses
    elif reduction == "sum":
        data = up(losses).sum()
    else:
        d = up(w_t).sum()  # kept as an array: reading it would make a GPU wait
        with errstate(xp, divide="ignore", invalid="ignore"):
            data = up(losses).sum() / d  # NaN when every target is ignored, as in PyTorch
        denom = _wrap(xp.asarray(down(d, w_t.dtype)))
    cls = NllLoss2DBackward0 if x2.ndim > 2 else NllLossBackward0
    out = record(cls, xp.asarray(data, dtype=x2.dtype), (input,),
                 args=(_wrap(safe_t), _wrap(w_t), denom, x2.shape, unbatched))
    if reduction == "none" and x2.ndim > 2 and x2.ndim != 4:
        out = out.view(out.shape)  # PyTorch runs other ranks through nll_loss2d and a view
    return out


class CrossEntropyLossBackward0(Node):
    """Backward of the fused GPU cross-entropy: ``coef * (softmax(x) - one_hot(t))``
    in one pass over the logits."""

    def backward(self, g):
        (x,) = self.saved_tensors
        target, lse, w_t, denom, reduction = self.args
        gd = g._data
        if not _grad_state.enabled:
            coef = w_t * (gd / denom) if reduction == "mean" else w_t * gd
            xd = array_module(x._data).ascontiguousarray(x._data)
            return _wrap(cuda_kernels.cross_entropy_backward(xd, target, lse, coef.astype(xd.dtype)))
        # Building a graph (create_graph=True): the same formula with tensor ops.
        xp = array_module(x._data)
        coef = (g / _wrap(denom) if reduction == "mean" else g) * _wrap(w_t)
        one_hot = (xp.arange(x._data.shape[1])[None, :] == target[:, None]).astype(x._data.dtype)
        return coef.unsqueeze(1) * (_red.softmax(x, 1) - _wrap(one_hot))


def _cross_entropy_fused(input, target, weight, ignore_index, reduction):
    """Softmax with cross-entropy by the GPU row kernels, for (N, C) logits and class
    indices; None where they do not apply (the unfused ops then run, and raise the
    errors for bad shapes)."""
    x = input._data
    if (not cuda_kernels.rows_supported(x) or x.ndim != 2 or not isinstance(target, Tensor)
            or target._data.dtype.kind not in "iu" or target._data.shape != x.shape[:1]
            or reduction not in ("mean", "sum", "none")
            or (weight is not None and weight._data.dtype != x.dtype)):
        return None
    xp = array_module(x)
    n, c = x.shape
    t = xp.ascontiguousarray(target._data.astype(xp.int64, copy=False))
    valid = t != ignore_index
    out_of_range = valid & ((t < 0) | (t >= c))
    backend.check(out_of_range.any(), IndexError,
                  lambda: f"cross_entropy: Target {int(t[out_of_range][0])} is out of bounds for {c} classes")
    lse, loss = cuda_kernels.cross_entropy_forward(xp.ascontiguousarray(x), t, ignore_index)
    if weight is None:
        w_t = valid.astype(x.dtype)
    else:
        w_t = xp.where(valid, weight._data[xp.where(valid, t, 0)], 0).astype(x.dtype)
        loss = loss * w_t
    if reduction == "none":
        data, denom = loss, None
    elif reduction == "sum":
        data, denom = loss.sum(), None
    else:
        denom = w_t.sum()
        data = loss.sum() / denom  # NaN when every target is ignored, as in PyTorch
    # Ignored rows have w_t = 0, so their gradient is 0 whatever their target.
    return record(CrossEntropyLossBackward0, data, (input,), (input,),
                  args=(t, lse, w_t, denom, reduction))


class DivBackward1(Node):
    """Division by a Python number inside a loss (PyTorch's ``div.Scalar`` node)."""

    def backward(self, g):
        return g / self.args


def _div_scalar(t, s):
    x = t._data
    return record(DivBackward1, x / x.dtype.type(s), (t,), args=s)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """log_softmax over the class dim (1, or 0 for an unbatched input) and nll_loss;
    ``target`` holds class indices, or class probabilities (a float tensor). On a GPU,
    (N, C) logits with class indices take one fused kernel each way."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    if not label_smoothing and array_module(input._data) is not np:
        out = _cross_entropy_fused(input, target, weight, ignore_index, reduction)
        if out is not None:
            return out
    cdim = 0 if input._data.ndim == 1 else 1
    logp = _red.log_softmax(input, cdim)
    c = input._data.shape[cdim]
    if isinstance(target, Tensor) and _kind_of(target._data.dtype) == "f":
        if target._data.shape != input._data.shape:
            raise RuntimeError(
                f"cross_entropy: class-probability target must have the input's shape "
                f"{list(input._data.shape)}, got {list(target._data.shape)}"
            )
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / c
        wl = logp if weight is None else logp * _class_view(weight, input, cdim)
        prod_ = wl * target
        if reduction == "none":
            return -prod_.sum(cdim)
        if reduction == "sum":
            return -prod_.sum()
        return _div_scalar(-prod_.sum(), input._data.size / c)
    nll = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if not label_smoothing:
        return nll
    # The smoothing term: the (weighted) mean of -log p over classes, over valid targets.
    valid = (target != ignore_index)
    wl = logp if weight is None else logp * _class_view(weight, input, cdim)
    smooth = -wl.sum(cdim) * valid.to(logp.dtype)
    if reduction == "mean":
        if weight is None:
            denom = valid.sum().to(logp.dtype)
        else:
            t_safe = pointwise.where(valid, target, 0)
            denom = (weight[t_safe] * valid.to(weight.dtype)).sum()
        smooth = smooth.sum() / denom  # a tensor: reading it would make a GPU wait
    else:
        smooth = _reduce(smooth, reduction, "cross_entropy")
    return nll * (1 - label_smoothing) + smooth * (label_smoothing / c)


def _class_view(weight, input, cdim):
    shape = [1] * input._data.ndim
    shape[cdim] = weight._data.shape[0]
    return weight.reshape(shape)


# ---------------------------------------------------------------- attention
_CAUSAL = {}


def _causal_bias(L, S, dtype, xp):
    """0 where query i may attend to key j <= i, -inf elsewhere (cached, read-only):
    adding it is cheaper than masking."""
    key = (L, S, dtype, xp.__name__)
    bias = _CAUSAL.get(key)
    if bias is None:
        if len(_CAUSAL) > 32:
            _CAUSAL.clear()
        arr = xp.where(xp.tril(xp.ones((L, S), dtype=bool)), 0, -xp.inf).astype(dtype)
        freeze(arr)
        bias = _CAUSAL[key] = _wrap(arr)
    return bias


class ScaledSoftmaxBackward0(Node):
    """Backward of softmax(x * scale) over the last dim (causal-masked or not)."""

    def backward(self, g):
        (y,) = self.saved_tensors
        scale = self.args
        if (not _grad_state.enabled and cpu_kernels.use(y._data) and g._data.dtype == y._data.dtype
                and g._data.shape == y._data.shape):
            return _wrap(cpu_kernels.softmax_grad(y._data, g._data, scale))
        if not _grad_state.enabled and g._data.dtype == y._data.dtype and cuda_kernels.use(y._data):
            xp = array_module(y._data)
            return _wrap(cuda_kernels.softmax_backward(xp.ascontiguousarray(y._data),
                                                       xp.ascontiguousarray(g._data), scale))
        return y * (g - (g * y).sum(-1, keepdim=True)) * scale


def _scaled_softmax(scores, scale, causal):
    """The GPU row kernel for softmax(scores * scale) with the causal mask applied
    inside it: one pass each way instead of a scale, a mask add and a softmax. On the
    CPU (float32, float64), the row kernels do the same ops as those three, with their
    roundings, without their temporaries and nodes."""
    x = scores._data
    if cpu_kernels.use(x):
        L, S = x.shape[-2:]
        bias = _causal_bias(L, S, x.dtype, np)._data if causal else None
        y = cpu_kernels.softmax(x, scale, bias)
    else:
        y = cuda_kernels.softmax_forward(array_module(x).ascontiguousarray(x), scale, causal)
    return record(ScaledSoftmaxBackward0, y, (scores,), (OUTPUT,), args=scale)


def _attention_weights(query, key, scale, causal):
    """softmax(q k^T * scale) with the causal mask, as tensor ops (differentiable)."""
    if cuda_kernels.rows_supported(query._data):
        return _scaled_softmax(query @ key.transpose(-2, -1), scale, causal)
    scores = (query @ key.transpose(-2, -1)) * scale
    if causal:
        L, S = query._data.shape[-2], key._data.shape[-2]
        scores = scores + _causal_bias(L, S, query._data.dtype, array_module(query._data))
    return _red.softmax(scores, -1)


def _attention_grads(q, k, v, g, scale, causal):
    """The attention's (dq, dk, dv) as tensor ops, for a backward with create_graph."""
    attn = _attention_weights(q, k, scale, causal)
    dp = g @ v.transpose(-2, -1)
    ds = attn * (dp - (dp * attn).sum(-1, keepdim=True)) * scale
    return ds @ k, ds.transpose(-2, -1) @ q, attn.transpose(-2, -1) @ g


class ScaledDotProductAttentionBackward0(Node):
    """Backward of the GPU attention: five batched products and one softmax pass,
    with the transposed operands read in place."""

    def backward(self, g):
        q, k, v, p = self.saved_tensors
        scale, causal = self.args
        if _grad_state.enabled:  # create_graph: the same formulas with tensor ops
            return _attention_grads(q, k, v, g, scale, causal)
        p = p._data
        xp = array_module(p)
        nb, L, S = p.shape

        def flat(t, rows):
            return xp.ascontiguousarray(t._data).reshape(nb, rows, -1)

        gd = flat(g, L)
        vc = flat(v, S)
        dv = _wrap(cuda_kernels.bmm(p, gd, transa=True).reshape(v._data.shape)) if self.needs(2) else None
        if not (self.needs(0) or self.needs(1)):
            return None, None, dv
        ds = cuda_kernels.softmax_backward(p, cuda_kernels.bmm(gd, vc, transb=True), scale)
        dq = _wrap(cuda_kernels.bmm(ds, flat(k, S)).reshape(q._data.shape)) if self.needs(0) else None
        dk = (_wrap(cuda_kernels.bmm(ds, flat(q, L), transa=True).reshape(k._data.shape))
              if self.needs(1) else None)
        return dq, dk, dv


class ScaledDotProductFlashAttentionForCpuBackward0(Node):
    """Backward of the CPU attention (PyTorch's node of the same name): the products
    and the softmax gradient over the causal row blocks (``cpu_kernels.attention_grad``),
    from the kept weights."""

    def backward(self, g):
        q, k, v, p = self.saved_tensors
        scale, causal = self.args
        if _grad_state.enabled:  # create_graph: the same formulas with tensor ops
            return _attention_grads(q, k, v, g, scale, causal)
        grads = cpu_kernels.attention_grad(q._data, k._data, v._data, p._data,
                                           g._data.astype(q._data.dtype, copy=False), scale, causal,
                                           tuple(self.needs(i) for i in range(3)))
        return tuple(None if d is None else _wrap(d) for d in grads)


def _attention_cpu(query, key, value, scale, causal):
    """softmax(q k^T * scale, causal) v on the CPU as one node (``cpu_kernels.attention``:
    with the causal mask, row blocks that skip the keys they may not see); None where it
    does not apply (fewer than 3 dims, broadcast batch dims, mixed dtypes)."""
    q, k, v = query._data, key._data, value._data
    if (q.ndim < 3 or not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]) or q.shape[-1] != k.shape[-1]
            or k.shape[-2] != v.shape[-2] or not (q.dtype == k.dtype == v.dtype) or not cpu_kernels.use(k)
            or not cpu_kernels.use(v)):
        return None
    L, S = q.shape[-2], k.shape[-2]
    bias = _causal_bias(L, S, q.dtype, np)._data if causal else None
    out, p = cpu_kernels.attention(q, k, v, scale, bias)
    # The inputs are saved as they are (a double backward differentiates through them)
    # and the weights as a tensor, so checkpointing can drop them too.
    return record(ScaledDotProductFlashAttentionForCpuBackward0, out, (query, key, value),
                  (query, key, value, _wrap(p)), args=(scale, causal))


def _attention_fused(query, key, value, scale, causal):
    """softmax(q k^T * scale, causal) v on the GPU with the batched products and the
    softmax row kernel; None where it does not apply (broadcast batch dims, mixed
    dtypes)."""
    q, k, v = query._data, key._data, value._data
    if (q.ndim < 3 or not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]) or q.shape[-1] != k.shape[-1]
            or k.shape[-2] != v.shape[-2] or not (q.dtype == k.dtype == v.dtype)):
        return None
    xp = array_module(q)
    lead, L, S = q.shape[:-2], q.shape[-2], k.shape[-2]
    nb = math.prod(lead)
    qc = xp.ascontiguousarray(q).reshape(nb, L, -1)
    kc = xp.ascontiguousarray(k).reshape(nb, S, -1)
    vc = xp.ascontiguousarray(v).reshape(nb, S, -1)
    p = cuda_kernels.softmax_forward(cuda_kernels.bmm(qc, kc, transb=True), scale, causal)
    out = cuda_kernels.bmm(p, vc).reshape(lead + (L, v.shape[-1]))
    # The inputs themselves are saved (a double backward differentiates through them;
    # backward makes its contiguous copies again), and the attention weights as a
    # tensor, so checkpointing can drop them too.
    return record(ScaledDotProductAttentionBackward0, out, (query, key, value),
                  (query, key, value, _wrap(p)), args=(scale, causal))


class ScaledDotProductFlashAttentionBackward0(Node):
    """Backward of the flash attention: the kernels recompute the probabilities tile by
    tile from q, k and each row's logsumexp, so no (L, S) matrix is kept or made. They
    read q, k, v, the output and its gradient through their strides and write the
    gradients laid out (B, L, H, D), so the transpose and view that made q, k and v
    from one projection pass the gradients back without copies."""

    def backward(self, g):
        q, k, v, out, lse = self.saved_tensors
        scale, causal = self.args
        if _grad_state.enabled:  # create_graph: the formulas with tensor ops
            return _attention_grads(q, k, v, g, scale, causal)
        heads = _flash.as_heads
        grads = _flash.flash_backward(
            heads(q._data), heads(k._data), heads(v._data), heads(out._data), lse._data,
            heads(g._data.astype(q._data.dtype, copy=False)), scale, causal)
        return tuple(_wrap(d.reshape(t._data.shape)) if self.needs(i) else None
                     for i, (d, t) in enumerate(zip(grads, (q, k, v))))


def _attention_flash(query, key, value, scale, causal):
    """The flash kernels' forward: the output and each row's logsumexp, nothing more.
    q, k and v are read in place through their strides; the output is laid out (B, L,
    H, D), as PyTorch's flash attention lays it out, so ``y.transpose(1, 2).reshape(B,
    L, H * D)`` is a view."""
    out, lse = _flash.flash_forward(*(_flash.as_heads(t._data) for t in (query, key, value)),
                                    scale, causal)
    return record(ScaledDotProductFlashAttentionBackward0, out.reshape(query._data.shape),
                  (query, key, value), (query, key, value, OUTPUT, _wrap(lse)), args=(scale, causal))


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """softmax(q @ k^T * scale + mask) @ v, over the last two dims. On a GPU, without
    a mask tensor or dropout: the flash kernels where they apply and are enabled
    (``backends.cuda.enable_flash_sdp``), else one node of batched products and a
    causal softmax row kernel."""
    L, S = query._data.shape[-2], key._data.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(query._data.shape[-1])
    if (attn_mask is None and dropout_p == 0.0 and L and S
            and _flash.applies(query._data, key._data, value._data)):
        return _attention_flash(query, key, value, scale, is_causal)
    if backend.is_device_array(query._data) and not _cuda_backend.math_sdp_enabled():
        raise RuntimeError("scaled_dot_product_attention: no available kernel: the math path is "
                           "disabled (backends.cuda.enable_math_sdp(False)) and the flash kernels "
                           f"do not take this call (dtype {query._data.dtype}, head dim "
                           f"{query._data.shape[-1]}, attn_mask given: {attn_mask is not None}, "
                           f"dropout_p={dropout_p}, flash enabled: {_cuda_backend.flash_sdp_enabled()})")
    if (attn_mask is None and dropout_p == 0.0 and cuda_kernels.rows_supported(query._data)
            and L and S):
        out = _attention_fused(query, key, value, scale, is_causal)
        if out is not None:
            return out
    if attn_mask is None and dropout_p == 0.0 and L and S and cpu_kernels.use(query._data):
        out = _attention_cpu(query, key, value, scale, is_causal)
        if out is not None:
            return out
    scores = query @ key.transpose(-2, -1)
    if attn_mask is None and L and S and (cuda_kernels.rows_supported(scores._data)
                                          or cpu_kernels.use(scores._data)):
        attn = _scaled_softmax(scores, scale, is_causal)
        if dropout_p > 0.0:
            attn = dropout(attn, dropout_p)
        return attn @ value
    scores = scores * scale
    xp = array_module(query._data)
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
        scores = scores + _causal_bias(L, S, query._data.dtype, xp)
    elif attn_mask is not None:
        if attn_mask._data.dtype.kind == "b":
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    attn = _red.softmax(scores, -1)
    if dropout_p > 0.0:
        attn = dropout(attn, dropout_p)
    return attn @ value


def softmin(input, dim):
    return _red.softmax(-input, dim)


def normalize(input, p=2.0, dim=1, eps=1e-12):
    d = wrap_dim(dim, input._data.ndim, "normalize")
    return input / _red.norm(input, p, d, keepdim=True).clamp(min=eps)
