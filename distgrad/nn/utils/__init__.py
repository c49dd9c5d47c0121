"""Utilities for parameters and gradients."""
from .clip_grad import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm
from . import rnn
from . import parametrizations, parametrize  # noqa: E402
from .convert_parameters import parameters_to_vector, vector_to_parameters  # noqa: E402
from .spectral_norm import remove_spectral_norm, spectral_norm  # noqa: E402
from .weight_norm import remove_weight_norm, weight_norm  # noqa: E402
