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
from ..ops.nn import binary_cross_entropy, huber_loss, kl_div

__all__ += ["binary_cross_entropy", "huber_loss", "kl_div"]
from ..ops.norms import batch_norm, group_norm

__all__ += ["batch_norm", "group_norm"]
