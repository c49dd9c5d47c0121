"""``distgrad.nn.functional``: the stateless layer and loss functions, as in PyTorch."""
from ..ops.conv import (adaptive_avg_pool1d, adaptive_avg_pool2d, avg_pool1d, avg_pool2d, conv1d,
                        conv2d, conv_transpose1d, conv_transpose2d, max_pool1d, max_pool2d)
from ..ops.indexing import one_hot
from ..ops.nn import (binary_cross_entropy_with_logits, cross_entropy, dropout, embedding,
                      l1_loss, layer_norm, linear, mse_loss, nll_loss, normalize, rms_norm,
                      scaled_dot_product_attention, smooth_l1_loss, softmin)
from ..ops.pointwise import gelu, relu, sigmoid, silu, softplus, tanh
from ..ops.reduction import log_softmax, softmax

__all__ = [
    "binary_cross_entropy_with_logits", "cross_entropy", "dropout", "embedding", "gelu",
    "l1_loss", "layer_norm", "linear", "log_softmax", "mse_loss", "nll_loss", "normalize",
    "one_hot", "relu", "rms_norm", "scaled_dot_product_attention", "sigmoid", "silu", "softmax",
    "smooth_l1_loss", "softmin", "softplus", "tanh",
]
__all__ += [
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "avg_pool1d", "avg_pool2d", "conv1d", "conv2d",
    "conv_transpose1d", "conv_transpose2d", "max_pool1d", "max_pool2d",
]
from ..ops.conv import (adaptive_max_pool1d, adaptive_max_pool1d_with_indices, adaptive_max_pool2d,
                        adaptive_max_pool2d_with_indices, conv3d, conv_transpose3d, fold, interpolate,
                        max_pool1d_with_indices, max_pool2d_with_indices, max_unpool1d, max_unpool2d, unfold,
                        upsample, upsample_bilinear, upsample_nearest)

__all__ += ["adaptive_max_pool1d", "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d",
            "adaptive_max_pool2d_with_indices", "conv3d", "conv_transpose3d", "fold", "interpolate",
            "max_pool1d_with_indices", "max_pool2d_with_indices", "max_unpool1d", "max_unpool2d", "unfold",
            "upsample", "upsample_bilinear", "upsample_nearest"]
from ..ops.sampling import affine_grid, grid_sample

__all__ += ["affine_grid", "grid_sample"]
from ..ops.nn import binary_cross_entropy, huber_loss, kl_div

__all__ += ["binary_cross_entropy", "huber_loss", "kl_div"]
from ..ops.norms import batch_norm, group_norm

__all__ += ["batch_norm", "group_norm"]

# ------------------------------------------------------ multi-head attention
import math as _math
import warnings as _warnings

from ..dtype import bool as _bool
from ..ops.creation import zeros as _zeros
from ..ops.creation import zeros_like as _zeros_like
from ..ops.linalg import baddbmm as _baddbmm
from ..ops.linalg import bmm as _bmm
from ..ops.shape import cat as _cat
from ..tensor import Size as _Size


def _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads):
    """Checks the dims of the inputs and masks; True for batched (3-D) input."""
    if query.dim() == 3:
        if key.dim() != 3 or value.dim() != 3:
            raise AssertionError(
                "For batched (3-D) `query`, expected `key` and `value` to be 3-D"
                f" but found {key.dim()}-D and {value.dim()}-D tensors respectively")
        if key_padding_mask is not None and key_padding_mask.dim() != 2:
            raise AssertionError(
                "For batched (3-D) `query`, expected `key_padding_mask` to be `None` or 2-D"
                f" but found {key_padding_mask.dim()}-D tensor instead")
        if attn_mask is not None and attn_mask.dim() not in (2, 3):
            raise AssertionError(
                "For batched (3-D) `query`, expected `attn_mask` to be `None`, 2-D or 3-D"
                f" but found {attn_mask.dim()}-D tensor instead")
        return True
    if query.dim() == 2:
        if key.dim() != 2 or value.dim() != 2:
            raise AssertionError(
                "For unbatched (2-D) `query`, expected `key` and `value` to be 2-D"
                f" but found {key.dim()}-D and {value.dim()}-D tensors respectively")
        if key_padding_mask is not None and key_padding_mask.dim() != 1:
            raise AssertionError(
                "For unbatched (2-D) `query`, expected `key_padding_mask` to be `None` or 1-D"
                f" but found {key_padding_mask.dim()}-D tensor instead")
        if attn_mask is not None:
            if attn_mask.dim() not in (2, 3):
                raise AssertionError(
                    "For unbatched (2-D) `query`, expected `attn_mask` to be `None`, 2-D or 3-D"
                    f" but found {attn_mask.dim()}-D tensor instead")
            if attn_mask.dim() == 3:
                expected_shape = (num_heads, query.shape[0], key.shape[0])
                if attn_mask.shape != expected_shape:
                    raise AssertionError(
                        f"Expected `attn_mask` shape to be {expected_shape} but got {attn_mask.shape}")
        return False
    raise AssertionError(
        f"query should be unbatched 2D or batched 3D tensor but received {query.dim()}-D query tensor")


def _none_or_dtype(input):
    return None if input is None else input.dtype


def _canonical_mask(mask, mask_name, other_type, other_name, target_type, check_other=True):
    """A boolean mask (True: do not attend) as an additive float mask of ``target_type``
    (-inf where True, 0 elsewhere); float masks pass through."""
    if mask is None:
        return None
    is_float = mask.is_floating_point()
    if mask.dtype != _bool and not is_float:
        raise AssertionError(f"only bool and floating types of {mask_name} are supported")
    if check_other and other_type is not None and mask.dtype != other_type:
        _warnings.warn(f"Support for mismatched {mask_name} and {other_name} "
                       "is deprecated. Use same type for both instead.", stacklevel=3)
    if not is_float:
        mask = _zeros_like(mask, dtype=target_type).masked_fill_(mask, float("-inf"))
    return mask


def _pad_last(mask):
    """One zero column appended to the last dim (an always-visible extra key)."""
    return _cat([mask, _zeros(*mask.shape[:-1], 1, dtype=mask.dtype, device=mask.device)], dim=-1)


def _in_projection_packed(q, k, v, w, b=None):
    E = q.size(-1)
    if k is v:
        if q is k:
            proj = linear(q, w, b)
            proj = proj.unflatten(-1, (3, E)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
            return proj[0], proj[1], proj[2]
        w_q, w_kv = w.split([E, E * 2])
        b_q, b_kv = (None, None) if b is None else b.split([E, E * 2])
        q_proj = linear(q, w_q, b_q)
        kv_proj = linear(k, w_kv, b_kv)
        kv_proj = kv_proj.unflatten(-1, (2, E)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
        return q_proj, kv_proj[0], kv_proj[1]
    w_q, w_k, w_v = w.chunk(3)
    b_q, b_k, b_v = (None, None, None) if b is None else b.chunk(3)
    return linear(q, w_q, b_q), linear(k, w_k, b_k), linear(v, w_v, b_v)


def _in_projection(q, k, v, w_q, w_k, w_v, b_q=None, b_k=None, b_v=None):
    Eq, Ek, Ev = q.size(-1), k.size(-1), v.size(-1)
    for what, w, shape in (("query", w_q, (Eq, Eq)), ("key", w_k, (Eq, Ek)), ("value", w_v, (Eq, Ev))):
        if w.shape != shape:
            raise AssertionError(f"expecting {what} weights shape of {shape}, but got {w.shape}")
    for what, b in (("query", b_q), ("key", b_k), ("value", b_v)):
        if b is not None and b.shape != (Eq,):
            raise AssertionError(f"expecting {what} bias shape of {(Eq,)}, but got {b.shape}")
    return linear(q, w_q, b_q), linear(k, w_k, b_k), linear(v, w_v, b_v)


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight,
                                 in_proj_bias, bias_k, bias_v, add_zero_attn, dropout_p,
                                 out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
                                 need_weights=True, attn_mask=None, use_separate_proj_weight=False,
                                 q_proj_weight=None, k_proj_weight=None, v_proj_weight=None,
                                 static_k=None, static_v=None, average_attn_weights=True,
                                 is_causal=False):
    """PyTorch's ``F.multi_head_attention_forward``: inputs (L, N, E) or unbatched (L, E);
    returns the output and the attention weights (None unless ``need_weights``)."""
    is_batched = _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    if not is_batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)

    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]

    key_padding_mask = _canonical_mask(key_padding_mask, "key_padding_mask", _none_or_dtype(attn_mask),
                                       "attn_mask", query.dtype)
    if is_causal and attn_mask is None:
        raise RuntimeError(
            "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
            "`generate_square_subsequent_mask` to create this mask.")
    if is_causal and key_padding_mask is None and not need_weights:
        # The hint alone drives the attention kernel.
        attn_mask = None
    else:
        attn_mask = _canonical_mask(attn_mask, "attn_mask", None, "", query.dtype, check_other=False)
        if key_padding_mask is not None:
            is_causal = False  # merged with the padding mask, it is no longer causal

    if embed_dim != embed_dim_to_check:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim}")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if use_separate_proj_weight:
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"key's sequence and batch dims {_Size(key.shape[:2])} do not match "
                                 f"value's {_Size(value.shape[:2])}")
    elif key.shape != value.shape:
        raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")

    if not use_separate_proj_weight:
        if in_proj_weight is None:
            raise AssertionError("use_separate_proj_weight is False but in_proj_weight is None")
        q, k, v = _in_projection_packed(query, key, value, in_proj_weight, in_proj_bias)
    else:
        for name, w in (("q", q_proj_weight), ("k", k_proj_weight), ("v", v_proj_weight)):
            if w is None:
                raise AssertionError(f"use_separate_proj_weight is True but {name}_proj_weight is None")
        b_q, b_k, b_v = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)
        q, k, v = _in_projection(query, key, value, q_proj_weight, k_proj_weight, v_proj_weight,
                                 b_q, b_k, b_v)

    if attn_mask is not None:
        if attn_mask.dim() == 2:
            correct_2d_size = (tgt_len, src_len)
            if attn_mask.shape != correct_2d_size:
                raise RuntimeError(
                    f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be {correct_2d_size}.")
            attn_mask = attn_mask.unsqueeze(0)
        elif attn_mask.dim() == 3:
            correct_3d_size = (bsz * num_heads, tgt_len, src_len)
            if attn_mask.shape != correct_3d_size:
                raise RuntimeError(
                    f"The shape of the 3D attn_mask is {attn_mask.shape}, but should be {correct_3d_size}.")
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.dim()} is not supported")

    if bias_k is not None and bias_v is not None:
        if static_k is not None:
            raise AssertionError("bias cannot be added to static key.")
        if static_v is not None:
            raise AssertionError("bias cannot be added to static value.")
        k = _cat([k, bias_k.repeat(1, bsz, 1)])
        v = _cat([v, bias_v.repeat(1, bsz, 1)])
        if attn_mask is not None:
            attn_mask = _pad_last(attn_mask)
        if key_padding_mask is not None:
            key_padding_mask = _pad_last(key_padding_mask)
    elif bias_k is not None:
        raise AssertionError("bias_k is set but bias_v is None")
    elif bias_v is not None:
        raise AssertionError("bias_v is set but bias_k is None")

    q = q.view(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
    if static_k is None:
        k = k.view(k.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
    else:
        if static_k.size(0) != bsz * num_heads:
            raise AssertionError(f"expecting static_k.size(0) of {bsz * num_heads}, but got {static_k.size(0)}")
        if static_k.size(2) != head_dim:
            raise AssertionError(f"expecting static_k.size(2) of {head_dim}, but got {static_k.size(2)}")
        k = static_k
    if static_v is None:
        v = v.view(v.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
    else:
        if static_v.size(0) != bsz * num_heads:
            raise AssertionError(f"expecting static_v.size(0) of {bsz * num_heads}, but got {static_v.size(0)}")
        if static_v.size(2) != head_dim:
            raise AssertionError(f"expecting static_v.size(2) of {head_dim}, but got {static_v.size(2)}")
        v = static_v

    if add_zero_attn:
        zero_attn_shape = (bsz * num_heads, 1, head_dim)
        k = _cat([k, _zeros(*zero_attn_shape, dtype=k.dtype, device=k.device)], dim=1)
        v = _cat([v, _zeros(*zero_attn_shape, dtype=v.dtype, device=v.device)], dim=1)
        if attn_mask is not None:
            attn_mask = _pad_last(attn_mask)
        if key_padding_mask is not None:
            key_padding_mask = _pad_last(key_padding_mask)

    src_len = k.size(1)

    if key_padding_mask is not None:
        if key_padding_mask.shape[0] != bsz:
            raise AssertionError(f"Expected key_padded_mask.shape[0] to be {bsz}, but got {key_padding_mask.shape[0]}")
        if key_padding_mask.shape[1] != src_len:
            raise AssertionError(
                f"Expected key_padded_mask.shape[1] to be {src_len}, but got {key_padding_mask.shape[1]}")
        key_padding_mask = (key_padding_mask.view(bsz, 1, 1, src_len).expand(bsz, num_heads, 1, src_len)
                            .reshape(bsz * num_heads, 1, src_len))
        attn_mask = key_padding_mask if attn_mask is None else attn_mask + key_padding_mask

    if not training:
        dropout_p = 0.0

    if need_weights:
        E = q.shape[-1]
        q_scaled = q * _math.sqrt(1.0 / float(E))
        if is_causal and attn_mask is None:
            raise AssertionError("FIXME: is_causal not implemented for need_weights")
        if attn_mask is not None:
            attn_output_weights = _baddbmm(attn_mask, q_scaled, k.transpose(-2, -1))
        else:
            attn_output_weights = _bmm(q_scaled, k.transpose(-2, -1))
        attn_output_weights = softmax(attn_output_weights, dim=-1)
        if dropout_p > 0.0:
            attn_output_weights = dropout(attn_output_weights, p=dropout_p)
        attn_output = _bmm(attn_output_weights, v)
        attn_output = attn_output.transpose(0, 1).reshape(tgt_len * bsz, embed_dim)
        attn_output = linear(attn_output, out_proj_weight, out_proj_bias)
        attn_output = attn_output.view(tgt_len, bsz, attn_output.size(1))
        attn_output_weights = attn_output_weights.view(bsz, num_heads, tgt_len, src_len)
        if average_attn_weights:
            attn_output_weights = attn_output_weights.mean(dim=1)
        if not is_batched:
            attn_output = attn_output.squeeze(1)
            attn_output_weights = attn_output_weights.squeeze(0)
        return attn_output, attn_output_weights

    if attn_mask is not None:
        if attn_mask.size(0) == 1 and attn_mask.dim() == 3:
            attn_mask = attn_mask.unsqueeze(0)
        else:
            attn_mask = attn_mask.view(bsz, num_heads, -1, src_len)
    q = q.view(bsz, num_heads, tgt_len, head_dim)
    k = k.view(bsz, num_heads, src_len, head_dim)
    v = v.view(bsz, num_heads, src_len, head_dim)
    attn_output = scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
    attn_output = attn_output.permute(2, 0, 1, 3).reshape(bsz * tgt_len, embed_dim)
    attn_output = linear(attn_output, out_proj_weight, out_proj_bias)
    attn_output = attn_output.view(tgt_len, bsz, attn_output.size(1))
    if not is_batched:
        attn_output = attn_output.squeeze(1)
    return attn_output, None


__all__ += ["multi_head_attention_forward"]


# ------------------------------------- leaky_relu / elu / hardtanh / relu6 / pad
from ..ops import pointwise as _pw
from ..ops.inplace import apply_inplace as _apply_inplace
from ..ops.shape import pad, pixel_shuffle, pixel_unshuffle


def leaky_relu(input, negative_slope=0.01, inplace=False):
    if inplace:
        return _apply_inplace(input, "leaky_relu_", _pw._leaky_relu_inplace_form, (negative_slope,))
    return _pw.leaky_relu(input, negative_slope)


def leaky_relu_(input, negative_slope=0.01):
    return leaky_relu(input, negative_slope, inplace=True)


def elu(input, alpha=1.0, inplace=False):
    if inplace:
        return _apply_inplace(input, "elu_", _pw._elu_inplace_form, (alpha,))
    return _pw.elu(input, alpha)


def elu_(input, alpha=1.0):
    return elu(input, alpha, inplace=True)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    if inplace:
        if min_val > max_val:
            raise ValueError("min_val cannot be greater than max_val")
        return _apply_inplace(input, "hardtanh_", _pw.hardtanh, (min_val, max_val))
    return _pw.hardtanh(input, min_val, max_val)


def hardtanh_(input, min_val=-1.0, max_val=1.0):
    return hardtanh(input, min_val, max_val, inplace=True)


def relu6(input, inplace=False):
    return hardtanh(input, 0.0, 6.0, inplace)


__all__ += ["elu", "elu_", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "pad",
            "pixel_shuffle", "pixel_unshuffle", "relu6"]


# ----------------------------------------------------------------------------
# More activations, channel-wise and alpha dropout, margin/embedding/NLL losses,
# distances, bilinear, instance and local response norm, embedding_bag.
# Built from differentiable distgrad ops (the activations with nodes of their own,
# named as PyTorch's, whose backward formulas are tensor ops), so gradients of any
# order work.
import numpy as _np
from ..dtype import kind_of as _kind_of

from ..autograd.function import Node as _Node
from ..autograd.function import record as _record
from ..autograd.grad_mode import no_grad as _no_grad
from ..ops import reduction as _red
from ..ops._util import _wrap
from ..ops._util import array_module as _xp
from ..ops._util import result_float as _result_float
from ..ops._util import wrap_dim as _wrap_dim
from ..ops.nn import _check_reduction
from ..ops.nn import _legacy_reduction
from ..ops.nn import _reduce as _reduce_loss
from ..ops.pointwise import threshold_backward as _threshold_backward
from ..ops.pointwise import where as _where
from ..tensor import Tensor as _Tensor


def _float_data(input):
    return _result_float(input._data)


def relu(input, inplace=False):  # noqa: F811 (adds PyTorch's inplace flag)
    return input.relu_() if inplace else _pw.relu(input)


def relu_(input):
    return input.relu_()


def silu(input, inplace=False):  # noqa: F811
    if inplace:
        return _apply_inplace(input, "silu_", _pw.silu)
    return _pw.silu(input)


def rrelu_(input, lower=1.0 / 8, upper=1.0 / 3, training=False):
    return rrelu(input, lower, upper, training, inplace=True)


class LogSigmoidBackward0(_Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return g * _pw.sigmoid(-x)


def logsigmoid(input):
    x = _float_data(input)
    xp = _xp(x)
    data = -(xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0))
    return _record(LogSigmoidBackward0, data.astype(x.dtype, copy=False), (input,), (input,))


def softsign(input):
    return input / (input.abs() + 1)


def tanhshrink(input):
    return input - input.tanh()


class SoftshrinkBackward0(_Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return _where(x.abs() > self.args, g, 0.0)


class HardshrinkBackward0(SoftshrinkBackward0):
    pass


def _check_lambd(lambd, input):
    if lambd < 0:
        raise RuntimeError(f"lambda must be greater or equal to 0 for softshrink, but found {lambd}")


def softshrink(input, lambd=0.5):
    _check_lambd(lambd, input)
    x = _float_data(input)
    xp = _xp(x)
    data = xp.where(x > lambd, x - lambd, xp.where(x < -lambd, x + lambd, 0)).astype(x.dtype, copy=False)
    return _record(SoftshrinkBackward0, data, (input,), (input,), args=lambd)


def hardshrink(input, lambd=0.5):
    x = _float_data(input)
    xp = _xp(x)
    data = xp.where((x >= -lambd) & (x <= lambd), 0, x).astype(x.dtype, copy=False)
    return _record(HardshrinkBackward0, data, (input,), (input,), args=lambd)


class HardswishBackward0(_Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return _where(x < -3.0, 0.0, _where(x <= 3.0, g * (x / 3.0 + 0.5), g))


def _hardswish(input):
    x = _float_data(input)
    xp = _xp(x)
    data = (x * xp.clip(x + 3.0, 0.0, 6.0) / 6.0).astype(x.dtype, copy=False)
    return _record(HardswishBackward0, data, (input,), (input,))


def hardswish(input, inplace=False):
    if inplace:
        return _apply_inplace(input, "hardswish_", _hardswish)
    return _hardswish(input)


class HardsigmoidBackward0(_Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return _where((x > -3.0) & (x < 3.0), g / 6.0, 0.0)


def _hardsigmoid(input):
    x = _float_data(input)
    xp = _xp(x)
    data = (xp.clip(x + 3.0, 0.0, 6.0) / 6.0).astype(x.dtype, copy=False)
    return _record(HardsigmoidBackward0, data, (input,), (input,))


def hardsigmoid(input, inplace=False):
    if inplace:
        return _apply_inplace(input, "hardsigmoid_", _hardsigmoid)
    return _hardsigmoid(input)


class MishBackward0(_Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        t = _pw.softplus(x).tanh()
        return g * (t + x * _pw.sigmoid(x) * (1 - t * t))


def _mish(input):
    x = _float_data(input)
    xp = _xp(x)
    sp = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(x, 0)
    return _record(MishBackward0, (x * xp.tanh(sp)).astype(x.dtype, copy=False), (input,), (input,))


def mish(input, inplace=False):
    if inplace:
        return _apply_inplace(input, "mish_", _mish)
    return _mish(input)


class EluBackward0(_Node):
    """The general ELU's gradient (selu): ``scale`` where ``x > 0``, else
    ``alpha * scale * input_scale * exp(x * input_scale)``."""

    def backward(self, g):
        (x,) = self.saved_tensors
        alpha, scale, input_scale = self.args
        return _where(x > 0, g * scale, g * ((x * input_scale).exp() * (alpha * scale * input_scale)))


class CeluBackward0(EluBackward0):
    pass


def _elu_general(input, alpha, scale, input_scale, cls):
    x = _float_data(input)
    xp = _xp(x)
    neg = xp.expm1(xp.minimum(x, 0) * input_scale) * (alpha * scale)
    data = xp.where(x > 0, x * scale, neg).astype(x.dtype, copy=False)
    return _record(cls, data, (input,), (input,), args=(alpha, scale, input_scale))


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _selu(input):
    return _elu_general(input, _SELU_ALPHA, _SELU_SCALE, 1.0, EluBackward0)


def selu(input, inplace=False):
    if inplace:
        return _apply_inplace(input, "selu_", _selu)
    return _selu(input)


def selu_(input):
    return selu(input, inplace=True)


def _celu(input, alpha=1.0):
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: alpha cannot be 0 for CELU")
    return _elu_general(input, alpha, 1.0, 1.0 / alpha, CeluBackward0)


def celu(input, alpha=1.0, inplace=False):
    if inplace:
        if alpha == 0:
            raise RuntimeError("ZeroDivisionError: alpha cannot be 0 for CELU")
        return _apply_inplace(input, "celu_", _celu, (alpha,))
    return _celu(input, alpha)


def celu_(input, alpha=1.0):
    return celu(input, alpha, inplace=True)


class ThresholdBackward0(_Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        return _threshold_backward(g, x, self.args)


def _threshold(input, threshold, value):
    x = input._data
    xp = _xp(x)
    data = xp.where(x > threshold, x, value).astype(x.dtype, copy=False)
    return _record(ThresholdBackward0, data, (input,), (input,), args=threshold)


def threshold(input, threshold, value, inplace=False):
    if inplace:
        return _apply_inplace(input, "threshold_", _threshold, (threshold, value))
    return _threshold(input, threshold, value)


def threshold_(input, threshold, value):
    return _apply_inplace(input, "threshold_", _threshold, (threshold, value))


class PreluKernelBackward0(_Node):
    def backward(self, g):
        x, w = self.saved_tensors
        pos = x > 0
        gx = _where(pos, g, g * w) if self.needs(0) else None
        gw = _where(pos, 0.0, g * x) if self.needs(1) else None
        return gx, gw


def prelu(input, weight):
    if not isinstance(weight, _Tensor):
        raise TypeError(f"prelu(): argument 'weight' must be Tensor, not {type(weight).__name__}")
    nd = input.dim()
    channels = input.shape[1] if nd >= 2 else 1
    n = weight.numel()
    if weight.dim() > 1:
        raise RuntimeError(f"prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = {weight.dim()}")
    if n != 1 and n != channels:
        raise RuntimeError(
            "Mismatch of parameter numbers and input channel size. Found parameter numbers = "
            f"{n} and channel size = {channels}.")
    if n == 1 or nd < 2:
        w = weight.reshape([1] * nd) if nd else weight.reshape(())
    else:
        w = weight.reshape([1, channels] + [1] * (nd - 2))
    x = _float_data(input)
    wd = w._data
    xp = _xp(x)
    data = xp.where(x > 0, x, x * wd).astype(_np.result_type(x.dtype, wd.dtype), copy=False)
    return _record(PreluKernelBackward0, data, (input, w), (input, w))


class GluBackward0(_Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        dim = self.args
        a, b = x.chunk(2, dim)
        s = _pw.sigmoid(b)
        return _cat([g * s, g * a * s * (1 - s)], dim)


def glu(input, dim=-1):
    if input.dim() == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    d = _wrap_dim(dim, input.dim(), "glu")
    size = input.shape[d]
    if size % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {d} is size {size}")
    x = _float_data(input)
    xp = _xp(x)
    a, b = xp.split(x, 2, axis=d)
    data = (a / (1 + xp.exp(-b))).astype(x.dtype, copy=False)
    return _record(GluBackward0, data, (input,), (input,), args=d)


class RreluWithNoiseBackward0(_Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        noise, training, slope = self.args
        if training:
            return g * noise
        return _where(x > 0, g, g * slope)


def _rrelu(input, lower, upper, training):
    x = _float_data(input)
    xp = _xp(x)
    if training and upper - lower > 1e-6:
        from ..random import uniform_like

        u = xp.asarray(uniform_like(x), dtype=x.dtype)
        slopes = lower + (upper - lower) * u
        noise = xp.where(x > 0, xp.ones((), x.dtype), slopes).astype(x.dtype, copy=False)
        data = x * noise
        return _record(RreluWithNoiseBackward0, data, (input,), (input,), args=(_wrap(noise), True, None))
    slope = (lower + upper) / 2
    data = xp.where(x > 0, x, x * slope).astype(x.dtype, copy=False)
    return _record(RreluWithNoiseBackward0, data, (input,), (input,), args=(None, False, slope))


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False):
    if lower > upper:
        raise RuntimeError("Lower bound should be less than or equal to the upper bound")
    if inplace:
        return _apply_inplace(input, "rrelu_", _rrelu, (lower, upper, training))
    return _rrelu(input, lower, upper, training)


def _get_softmax_dim(name, ndim, stacklevel):
    _warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to "
                   "include dim=X as an argument.", stacklevel=stacklevel)
    return 0 if ndim in (0, 1, 3) else 1


def softmin(input, dim=None, _stacklevel=3, dtype=None):  # noqa: F811 (PyTorch's signature)
    if dim is None:
        dim = _get_softmax_dim("softmin", input.dim(), _stacklevel)
    if dtype is not None:
        input = input.to(dtype)
    return _red.softmax(-input, dim)


__all__ += ["celu", "celu_", "glu", "hardshrink", "hardsigmoid", "hardswish", "logsigmoid", "mish",
            "prelu", "relu_", "rrelu", "rrelu_", "selu", "selu_", "softshrink", "softsign",
            "tanhshrink", "threshold", "threshold_"]


# ---------------------------------------------------------------- dropout
def _check_p(p):
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _noise_dropout(input, p, training, inplace, feature, alpha):
    """PyTorch's _dropout_impl: a keep mask (per element, or per (N, C) for the feature
    forms) scaled by 1/(1-p); the alpha forms keep SELU's mean and variance."""
    _check_p(p)
    if p == 0 or not training or input.numel() == 0:
        return input
    if feature and input.dim() < 2:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    x = input._data
    dt = x.dtype if _kind_of(x.dtype) == "f" else _np.dtype(_np.float64)
    xp = _xp(x)
    shape = tuple(x.shape[:2]) + (1,) * (x.ndim - 2) if feature else x.shape
    if p == 1:
        out = input * _wrap(xp.zeros((), dt))
        return input.copy_(out) if inplace else out
    from ..random import uniform_like

    keep = (xp.asarray(uniform_like(xp.empty(shape, dt))) >= p).astype(dt)
    if not alpha:
        out = input * _wrap((keep / (1 - p)).astype(dt))
    else:
        a_ = 1.7580993408473766
        a = 1.0 / _math.sqrt((a_ * a_ * p + 1) * (1 - p))
        b = (keep - 1) * (a_ * a) + a_ * a * p
        out = input * _wrap((keep * a).astype(dt)) + _wrap(b.astype(dt))
    return input.copy_(out) if inplace else out


def _feature_dropout(input, p, training, inplace):
    return _noise_dropout(input, p, training, inplace, True, False)


def dropout1d(input, p=0.5, training=True, inplace=False):
    _check_p(p)
    nd = input.dim()
    if nd not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {nd}D input. Note that dropout1d "
            "exists to provide channel-wise dropout on inputs with 1 spatial dimension, a channel "
            "dimension, and an optional batch dimension (i.e. 2D or 3D inputs).")
    if not training or p == 0:
        return input
    if nd == 2:
        if inplace:
            return input.copy_(_feature_dropout(input.unsqueeze(0), p, training, False).squeeze(0))
        return _feature_dropout(input.unsqueeze(0), p, training, False).squeeze(0)
    return _feature_dropout(input, p, training, inplace)


def dropout2d(input, p=0.5, training=True, inplace=False):
    _check_p(p)
    nd = input.dim()
    if nd not in (3, 4):
        _warnings.warn(
            f"dropout2d: Received a {nd}-D input to dropout2d, which is deprecated and will result "
            "in an error in a future release. To retain the behavior and silence this warning, "
            "please use dropout instead. Note that dropout2d exists to provide channel-wise "
            "dropout on inputs with 2 spatial dimensions, a channel dimension, and an optional "
            "batch dimension (i.e. 3D or 4D inputs).", stacklevel=2)
    if nd == 3:
        _warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D "
            "dropout behavior is desired - input is interpreted as shape (N, C, L), where C is "
            "the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=2)
    return _feature_dropout(input, p, training, inplace)


def dropout3d(input, p=0.5, training=True, inplace=False):
    _check_p(p)
    nd = input.dim()
    if nd not in (4, 5):
        _warnings.warn(
            f"dropout3d: Received a {nd}-D input to dropout3d, which is deprecated and will result "
            "in an error in a future release. To retain the behavior and silence this warning, "
            "please use dropout instead. Note that dropout3d exists to provide channel-wise "
            "dropout on inputs with 3 spatial dimensions, a channel dimension, and an optional "
            "batch dimension (i.e. 4D or 5D inputs).", stacklevel=2)
    if not training or p == 0:
        return input
    if nd == 4:
        out = _feature_dropout(input.unsqueeze(0), p, training, False).squeeze(0)
        return input.copy_(out) if inplace else out
    return _feature_dropout(input, p, training, inplace)


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    return _noise_dropout(input, p, training, inplace, False, True)


def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    return _noise_dropout(input, p, training, inplace, True, True)


__all__ += ["alpha_dropout", "dropout1d", "dropout2d", "dropout3d", "feature_alpha_dropout"]


# ---------------------------------------------------------------- distances
def _clamped(n, eps):
    """``n`` clamped below at ``eps`` in value only: the gradient passes through as if
    unclamped (PyTorch clamps the norm in place under no_grad)."""
    return n + (n.clamp(min=eps) - n).detach()


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    if not x1.is_floating_point():
        x1 = x1.to(_dt_default())
    if not x2.is_floating_point():
        x2 = x2.to(_dt_default())
    if x1.shape != x2.shape:
        from ..ops.shape import broadcast_tensors

        try:
            x1, x2 = broadcast_tensors(x1, x2)
        except (RuntimeError, ValueError):
            raise RuntimeError(
                f"cosine_similarity: the size of tensor a ({list(x1.shape)}) must match the size "
                f"of tensor b ({list(x2.shape)}) or be broadcastable to it") from None
    d = _wrap_dim(dim, max(x1.dim(), 1), "cosine_similarity")
    n1 = _clamped(_red.norm(x1, 2, d, keepdim=True), eps)
    n2 = _clamped(_red.norm(x2, 2, d, keepdim=True), eps)
    return ((x1 / n1) * (x2 / n2)).sum(d)


def _dt_default():
    from ..dtype import get_default_dtype

    return get_default_dtype()


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    out_dim = max(x1.dim(), x2.dim())
    inner = out_dim - 1 if out_dim > 0 else None
    diff = x1 - x2 + eps
    if inner is None:
        return _red.norm(diff, p)
    return _red.norm(diff, p, inner, keepdim=keepdim)


__all__ += ["cosine_similarity", "pairwise_distance"]


# ---------------------------------------------------------------- losses
def _reduction(size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction)
    return reduction


def margin_ranking_loss(input1, input2, target, margin=0, size_average=None, reduce=None,
                        reduction="mean"):
    reduction = _reduction(size_average, reduce, reduction)
    if not (input1.dim() == input2.dim() == target.dim()):
        raise RuntimeError(
            "margin_ranking_loss : All input tensors should have same dimension but got sizes: "
            f"input1: {input1.size()}, input2: {input2.size()}, target: {target.size()} ")
    return _reduce_loss((-target * (input1 - input2) + margin).clamp(min=0), reduction)


def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None, reduction="mean"):
    reduction = _reduction(size_average, reduce, reduction)
    zeros = _zeros_like(input)
    margin_clamp = (margin - input).clamp(min=0)
    out = _where(target != 1, margin_clamp, zeros) + _where(target != -1, input, zeros)
    return _reduce_loss(out, reduction)


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    reduction = _reduction(size_average, reduce, reduction)
    if target.dtype != input.dtype:   # PyTorch computes it in the input's dtype
        target = target.to(input.dtype)
    return _reduce_loss((-input * target).exp().log1p(), reduction)


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None,
                                reduction="mean"):
    reduction = _reduction(size_average, reduce, reduction)
    loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    class_dim = input.dim() - 1
    loss = loss.sum(class_dim) / input.size(class_dim)
    return _reduce_loss(loss, reduction)


def _class_targets(input, target, op):
    t = target._data
    if t.dtype.kind not in "iu":
        raise RuntimeError(f"{op}: expected target of an integer dtype (int64), got {target.dtype}")
    return t


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None,
                      reduction="mean"):
    reduction = _reduction(size_average, reduce, reduction)
    if p != 1 and p != 2:
        raise ValueError("only p == 1 and p == 2 supported")
    if weight is not None and weight.dim() != 1:
        raise ValueError("weight must be one-dimensional")
    if input.dim() > 2:
        raise RuntimeError(f"multi_margin_loss: expected 1D or 2D input, got {input.dim()}D")
    t = _class_targets(input, target, "multi_margin_loss")
    x = input if input.dim() == 2 else input.reshape(1, -1)
    n, c = x.shape
    tflat = t.reshape(-1)
    if tflat.shape[0] != n:
        raise RuntimeError(f"inconsistent target size, expected {n} but got {list(target.shape)}")
    if tflat.size and (tflat.min() < 0 or tflat.max() >= c):
        raise RuntimeError("target out of range")
    tt = _wrap(_xp(t).asarray(tflat, dtype=_np.int64)).reshape(n, 1)
    xy = x.gather(1, tt)
    z = (margin - xy + x).clamp(min=0)
    if p == 2:
        z = z * z
    if weight is not None:
        z = z * weight[tt.reshape(-1)].reshape(n, 1)
    is_target = _wrap(_np.arange(c)[None, :] == _np.asarray(tflat)[:, None])
    loss = z.masked_fill(is_target, 0.0).sum(1) / c
    if input.dim() < 2 and reduction == "none":
        loss = loss.reshape(target.shape)
    return _reduce_loss(loss, reduction)


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    reduction = _reduction(size_average, reduce, reduction)
    t = _class_targets(input, target, "multilabel_margin_loss")
    if tuple(target.shape) != tuple(input.shape) or input.dim() > 2:
        raise RuntimeError(f"inconsistent target size: {list(target.shape)} for input of size: "
                           f"{list(input.shape)}")
    x = input.reshape(1, -1) if input.dim() < 2 else input
    n, c = x.shape
    tt = _np.asarray(t).reshape(n, c)
    cnt = _np.zeros((n, c), dtype=x._data.dtype)
    for i in range(n):
        for j in tt[i]:
            if j < 0:
                break
            if j >= c:
                raise RuntimeError(f"multilabel_margin_loss: target index {int(j)} is out of "
                                   f"range for {c} classes")
            cnt[i, j] += 1
    nontarget = (cnt == 0).astype(cnt.dtype)
    w = _wrap(cnt[:, :, None] * nontarget[:, None, :])
    z = (1 - x.unsqueeze(2) + x.unsqueeze(1)).clamp(min=0) * w
    loss = z.sum((1, 2)) / c
    if input.dim() < 2:
        loss = loss.reshape(())
    return _reduce_loss(loss, reduction)


def cosine_embedding_loss(input1, input2, target, margin=0, size_average=None, reduce=None,
                          reduction="mean"):
    reduction = _reduction(size_average, reduce, reduction)
    td = target.dim()
    if td not in (0, 1):
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    if td == 1 and not (input1.dim() == 2 and input2.dim() == 2):
        raise RuntimeError(f"1D target tensor expects 2D input tensors, but found inputs with sizes "
                           f"{list(input1.shape)} and {list(input2.shape)}.")
    if td == 0 and not (input1.dim() == 1 and input2.dim() == 1):
        raise RuntimeError(f"0D target tensor expects 1D input tensors, but found inputs with sizes "
                           f"{list(input1.shape)} and {list(input2.shape)}.")
    eps = 1e-12
    prod_sum = (input1 * input2).sum(td)
    mag1 = (input1 * input1).sum(td) + eps
    mag2 = (input2 * input2).sum(td) + eps
    cos = prod_sum / (mag1 * mag2).sqrt()
    zeros = _zeros_like(cos)
    out = _where(target == 1, 1 - cos, zeros) + _where(target == -1, (cos - margin).clamp(min=0), zeros)
    return _reduce_loss(out, reduction)


def _check_triplet_dims(anchor, positive, negative):
    a, p, n = anchor.dim(), positive.dim(), negative.dim()
    if not (a == p and p == n):
        raise RuntimeError(
            "The anchor, positive, and negative tensors are expected to have the same number of "
            f"dimensions, but got: anchor {a}D, positive {p}D, and negative {n}D inputs")


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False,
                        size_average=None, reduce=None, reduction="mean"):
    reduction = _reduction(size_average, reduce, reduction)
    _check_triplet_dims(anchor, positive, negative)
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_neg = _pw.minimum(d_neg, pairwise_distance(positive, negative, p, eps))
    return _reduce_loss((margin + d_pos - d_neg).clamp(min=0), reduction)


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None,
                                      margin=1.0, swap=False, reduction="mean"):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    _check_triplet_dims(anchor, positive, negative)
    dist = pairwise_distance if distance_function is None else distance_function
    d_pos = dist(anchor, positive)
    d_neg = dist(anchor, negative)
    if swap:
        d_neg = _pw.minimum(d_neg, dist(positive, negative))
    return _reduce_loss((margin + d_pos - d_neg).clamp(min=0), reduction)


def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8,
                     reduce=None, reduction="mean"):
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce, reduction)
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction + " is not a valid value for reduction")
    if log_input:
        loss = input.exp() - target * input
    else:
        loss = input - target * (input + eps).log()
    if full:
        stirling = target * target.log() - target + (target * (2 * _math.pi)).log() * 0.5
        loss = loss + stirling.masked_fill(target <= 1, 0.0)
    return _reduce_loss(loss, reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    if isinstance(var, (float, int)) and not isinstance(var, bool):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        var = _wrap(_xp(input._data).full(input._data.shape, var, dtype=input._data.dtype))
    elif bool((var < 0).any()):
        raise ValueError("var has negative entry/entries")
    if tuple(var.shape) != tuple(input.shape):
        if tuple(input.shape[:-1]) == tuple(var.shape):
            var = var.unsqueeze(-1)
        elif input.dim() == var.dim() and sum(
                y for x, y in zip(input.shape, var.shape) if x != y) == 1:
            pass
        else:
            raise ValueError("var is of incorrect size")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction + " is not valid")
    var = _clamped(var, eps)
    loss = 0.5 * (var.log() + (input - target) ** 2 / var)
    if full:
        loss = loss + 0.5 * _math.log(2 * _math.pi)
    return _reduce_loss(loss, reduction)


__all__ += ["cosine_embedding_loss", "gaussian_nll_loss", "hinge_embedding_loss",
            "margin_ranking_loss", "multi_margin_loss", "multilabel_margin_loss",
            "multilabel_soft_margin_loss", "poisson_nll_loss", "soft_margin_loss",
            "triplet_margin_loss", "triplet_margin_with_distance_loss"]


# ---------------------------------------------------------------- bilinear
def bilinear(input1, input2, weight, bias=None):
    if input1.dim() != input2.dim():
        raise RuntimeError(f"bilinear(): input dimensions do not match: got {input1.dim()} and "
                           f"{input2.dim()}")
    if tuple(input1.shape[:-1]) != tuple(input2.shape[:-1]):
        raise RuntimeError(f"bilinear(): input batch dimensions do not match: got "
                           f"{list(input1.shape[:-1])} and {list(input2.shape[:-1])}")
    if weight.dim() != 3:
        raise RuntimeError(f"bilinear(): weight must be a 3D tensor, got {weight.dim()}D")
    if input1.shape[-1] != weight.shape[1]:
        raise RuntimeError(f"bilinear(): input1 size does not match weight size: got "
                           f"{input1.shape[-1]} but expected {weight.shape[1]}")
    if input2.shape[-1] != weight.shape[2]:
        raise RuntimeError(f"bilinear(): input2 size does not match weight size: got "
                           f"{input2.shape[-1]} but expected {weight.shape[2]}")
    if bias is not None and bias.shape[-1] != weight.shape[0]:
        raise RuntimeError(f"bilinear(): bias size does not match weight size: got "
                           f"{bias.shape[-1]} but expected {weight.shape[0]}")
    lead = tuple(input1.shape[:-1])
    a = input1.reshape(-1, input1.shape[-1])
    b = input2.reshape(-1, input2.shape[-1])
    o, i, j = weight.shape
    # (B, i) @ (i, o*j) -> (B, o, j), then a batched dot with b.
    t = (a @ weight.permute(1, 0, 2).reshape(i, o * j)).reshape(-1, o, j)
    y = (t * b.unsqueeze(1)).sum(2)
    if bias is not None:
        y = y + bias
    return y.reshape(lead + (o,))


__all__ += ["bilinear"]


# ---------------------------------------------------------------- norms
def _verify_spatial_size(size):
    prod = 1
    for s in list(size)[2:]:
        prod *= s
    if prod == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {size}")


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Each (sample, channel) normalized over its spatial dims, as PyTorch computes it:
    batch_norm of the input viewed as (1, N*C, ...), the running statistics (where
    given) updated with the batch average of the per-instance ones."""
    if use_input_stats:
        _verify_spatial_size(input.size())
    if input.dim() < 2:
        raise ValueError(f"instance_norm: expected an input with at least 2 dims, got {input.dim()}D")
    b, c = input.shape[0], input.shape[1]
    shape = (1, b * c) + tuple(input.shape[2:])
    x = input.contiguous().view(shape)

    def rep(t):
        return None if t is None else t.repeat(b)

    rm, rv = rep(running_mean), rep(running_var)
    out = batch_norm(x, rm, rv, rep(weight), rep(bias), use_input_stats, momentum, eps)
    if use_input_stats:
        with _no_grad():
            if running_mean is not None:
                running_mean.copy_(rm.view(b, c).mean(0))
            if running_var is not None:
                running_var.copy_(rv.view(b, c).mean(0))
    return out.view(tuple(input.shape))


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    dim = input.dim()
    if dim < 3:
        raise ValueError(f"Expected 3D or higher dimensionality input (got {dim} dimensions)")
    if input.numel() == 0:
        return input
    sizes = tuple(input.shape)
    n, c = sizes[0], sizes[1]
    sq = (input * input).reshape(n, c, -1)
    m = sq.shape[2]
    front, back = size // 2, (size - 1) // 2
    parts = []
    if front:
        parts.append(_zeros(n, front, m, dtype=sq.dtype))
    parts.append(sq)
    if back:
        parts.append(_zeros(n, back, m, dtype=sq.dtype))
    padded = _cat(parts, 1) if len(parts) > 1 else sq
    acc = None
    for i in range(size):
        s = padded.narrow(1, i, c)
        acc = s if acc is None else acc + s
    div = (acc / size).reshape(sizes)
    div = (div * alpha + k) ** beta
    return input / div


__all__ += ["instance_norm", "local_response_norm"]


# ---------------------------------------------------------------- embedding_bag
def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False,
                  mode="mean", sparse=False, per_sample_weights=None, include_last_offset=False,
                  padding_idx=None):
    """Sums, means or maxes of bags of embeddings: the bags are the rows of a 2-D
    ``input``, or the runs of a 1-D ``input`` that ``offsets`` starts. Empty bags
    give zeros; ``padding_idx`` entries are left out of their bag."""
    if per_sample_weights is not None and tuple(input.shape) != tuple(per_sample_weights.shape):
        raise ValueError(
            f"embedding_bag: If per_sample_weights ({per_sample_weights.shape}) is not None, "
            f"then it must have the same shape as the input ({input.shape})")
    if weight.dim() != 2:
        raise ValueError(f"weight has to be a 2D Tensor, but got Tensor of dimension {weight.dim()}")
    idx = input._data
    if input.dim() == 2:
        if offsets is not None:
            raise ValueError(
                "if input is 2D, then offsets has to be None, as input is treated is a mini-batch "
                "of fixed length sequences. However, found offsets of type "
                f"{type(offsets).__name__}")
        nbags, length = idx.shape
        offs = _np.arange(0, nbags * length, length, dtype=_np.int64) if length else _np.zeros(nbags, _np.int64)
        flat = input.reshape(-1)
        if per_sample_weights is not None:
            per_sample_weights = per_sample_weights.reshape(-1)
        include_last_offset = False
    elif input.dim() == 1:
        if offsets is None:
            raise ValueError("offsets has to be a 1D Tensor but got None")
        if offsets.dim() != 1:
            raise ValueError("offsets has to be a 1D Tensor")
        offs = _np.asarray(offsets._data).astype(_np.int64)
        flat = input
    else:
        raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension {input.dim()}")
    if mode not in ("sum", "mean", "max"):
        raise ValueError("mode has to be one of sum, mean or max")
    if mode == "max" and scale_grad_by_freq:
        raise ValueError("max mode does not support scaling the gradient by the frequency")
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError(
            "embedding_bag: per_sample_weights was not None. per_sample_weights is only "
            f"supported for mode='sum' (got mode='{mode}'). Please open a feature request on "
            "GitHub.")
    n = flat.shape[0]
    if offs.size and offs[0] != 0:
        raise RuntimeError(
            "offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to start from "
            f"position 0. However, got {int(offs[0])}")
    if offs.size and (offs[-1] > n or (_np.diff(offs) < 0).any()):
        raise RuntimeError(f"offsets must be non-decreasing and at most the input's length {n}, "
                           f"got {offs.tolist()}")
    if include_last_offset:
        nbags = max(offs.size - 1, 0)
        stops = offs[1:]
    else:
        nbags = offs.size
        stops = _np.append(offs[1:], n).astype(_np.int64)
    num, dim = weight.shape
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise AssertionError("padding_idx must be within the number of embeddings")
        padding_idx = padding_idx + num if padding_idx < 0 else padding_idx
    emb = embedding(flat, weight, None, max_norm, norm_type)
    bag = _np.searchsorted(stops, _np.arange(n), side="right")  # the bag of each position
    flat_np = _np.asarray(flat._data)
    keep = _np.ones(n, bool) if padding_idx is None else flat_np != padding_idx
    keep &= bag < nbags
    if per_sample_weights is not None:
        emb = emb * per_sample_weights.unsqueeze(1)
    if mode in ("sum", "mean"):
        kept = _np.nonzero(keep)[0]
        rows = emb[_wrap(kept)] if kept.size != n else emb
        out = _zeros(nbags, dim, dtype=emb.dtype).index_add(0, _wrap(bag[kept]), rows)
        if mode == "mean":
            counts = _np.bincount(bag[kept], minlength=nbags).astype(_np.asarray(emb._data).dtype)
            out = out / _wrap(_np.maximum(counts, 1)[:, None])
        return out
    pieces = []
    for b in range(nbags):
        sel = _np.nonzero(keep & (bag == b))[0]
        if sel.size:
            pieces.append(emb[_wrap(sel)].amax(0))
        else:
            pieces.append(_zeros(dim, dtype=emb.dtype))
    if not pieces:
        return _zeros(0, dim, dtype=emb.dtype)
    from ..ops.shape import stack as _stack

    return _stack(pieces, 0)


__all__ += ["embedding_bag"]


def gumbel_softmax(logits, tau: float = 1, hard: bool = False, eps: float = 1e-10, dim: int = -1):
    """Sample from the Gumbel-Softmax distribution: ``softmax((logits + g) / tau)`` with
    Gumbel noise ``g`` from the default generator. With ``hard=True`` the result is one-hot
    in the forward pass, with the soft sample's gradient (straight-through)."""
    import numpy as _gnp

    from ..random import default_generator as _gen
    from ..tensor import _wrap as _gwrap

    if eps != 1e-10:
        _warnings.warn("`eps` parameter is deprecated and has no effect.", stacklevel=2)
    e = _gen._rng.standard_exponential(tuple(logits.shape)).astype(_gnp.asarray(logits.detach().numpy()).dtype)
    gumbels = -_gwrap(e).to(device=logits.device).log()
    gumbels = (logits + gumbels) / tau
    y_soft = gumbels.softmax(dim)
    if hard:
        index = y_soft.max(dim, keepdim=True)[1]
        y_hard = _zeros_like(logits).scatter(dim, index, 1.0)
        return y_hard - y_soft.detach() + y_soft
    return y_soft


__all__ += ["gumbel_softmax"]
from ..ops.ctc import ctc_loss  # noqa: E402

__all__ += ["ctc_loss"]
