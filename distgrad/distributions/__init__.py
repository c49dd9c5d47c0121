"""Probability distributions with sampling, ``log_prob`` and KL divergences, as
``torch.distributions``.

Parameters and results are distgrad tensors, so ``log_prob``, ``entropy`` and
reparameterized samples (``rsample``) are differentiable. Draws come from distgrad's
default generator, so ``distgrad.manual_seed`` makes them reproducible (the streams
differ from PyTorch's). Gamma, Beta and Dirichlet can be sampled but have no
reparameterized ``rsample``.
"""
from . import constraints
from .bernoulli import Bernoulli
from .beta import Beta
from .binomial import Binomial
from .categorical import Categorical
from .dirichlet import Dirichlet
from .distribution import Distribution
from .exponential import Exponential
from .gamma import Gamma
from .independent import Independent
from .kl import kl_divergence, register_kl
from .laplace import Laplace
from .multivariate_normal import MultivariateNormal
from .normal import Normal
from .one_hot_categorical import OneHotCategorical, OneHotCategoricalStraightThrough
from .poisson import Poisson
from .uniform import Uniform

__all__ = [
    "Bernoulli", "Beta", "Binomial", "Categorical", "Dirichlet", "Distribution", "Exponential",
    "Gamma", "Independent", "Laplace", "MultivariateNormal", "Normal", "OneHotCategorical",
    "OneHotCategoricalStraightThrough", "Poisson", "Uniform", "constraints", "kl_divergence",
    "register_kl",
]
