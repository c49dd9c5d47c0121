"""The Categorical distribution over ``{0, ..., K-1}``."""
from __future__ import annotations

import math

import numpy as np

from . import constraints
from .distribution import Distribution, _size
from .utils import _rng, lazy_property, logits_to_probs, probs_to_logits

__all__ = ["Categorical"]


def _draw_categorical(probs, sample_shape):
    """Indices drawn from the rows of ``probs`` (last dim = events) with the default
    generator: shape ``sample_shape + probs.shape[:-1]``."""
    p = np.asarray(probs.detach().numpy(), dtype=np.float64)
    k = p.shape[-1]
    cdf = np.cumsum(p, axis=-1)
    cdf = cdf / cdf[..., -1:]
    u = _rng().random(tuple(sample_shape) + p.shape[:-1] + (1,))
    idx = (np.broadcast_to(cdf, u.shape[:-1] + (k,)) <= u).sum(-1)
    return np.minimum(idx, k - 1).astype(np.int64)


class Categorical(Distribution):
    """Categorical distribution given by ``probs`` (normalized along the last dim) or
    ``logits`` (unnormalized log probabilities)."""

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("Either `probs` or `logits` must be specified, but not both.")
        if probs is not None:
            if probs.dim() < 1:
                raise ValueError("`probs` parameter must be at least one-dimensional.")
            self.probs = probs / probs.sum(-1, keepdim=True)
        else:
            if logits.dim() < 1:
                raise ValueError("`logits` parameter must be at least one-dimensional.")
            self.logits = logits - logits.logsumexp(dim=-1, keepdim=True)
        self._param = self.probs if probs is not None else self.logits
        self._num_events = self._param.size()[-1]
        batch_shape = self._param.size()[:-1] if self._param.ndimension() > 1 else _size()
        super().__init__(batch_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Categorical, _instance)
        batch_shape = _size(batch_shape)
        param_shape = tuple(batch_shape) + (self._num_events,)
        if "probs" in self.__dict__:
            new.probs = self.probs.expand(param_shape)
            new._param = new.probs
        if "logits" in self.__dict__:
            new.logits = self.logits.expand(param_shape)
            new._param = new.logits
        new._num_events = self._num_events
        super(Categorical, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self._num_events - 1)

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs)

    @lazy_property
    def probs(self):
        return logits_to_probs(self.logits)

    @property
    def param_shape(self):
        return self._param.size()

    @property
    def mean(self):
        import distgrad as dg

        return dg.full(tuple(self._extended_shape()), math.nan, dtype=self.probs.dtype, device=self.probs.device)

    @property
    def mode(self):
        return self.probs.argmax(dim=-1)

    @property
    def variance(self):
        return self.mean

    def sample(self, sample_shape=()):
        import distgrad as dg

        out = _draw_categorical(self.probs, _size(sample_shape))
        return dg.tensor(out, dtype=dg.int64, device=self._param.device)

    def log_prob(self, value):
        import distgrad as dg

        if self._validate_args:
            self._validate_sample(value)
        value = value.long().unsqueeze(-1)
        value, log_pmf = dg.broadcast_tensors(value, self.logits)
        value = value[..., :1]
        return log_pmf.gather(-1, value).squeeze(-1)

    def entropy(self):
        import distgrad as dg

        min_real = dg.finfo(self.logits.dtype).min
        logits = self.logits.clamp(min=min_real)
        p_log_p = logits * self.probs
        return -p_log_p.sum(-1)

    def enumerate_support(self, expand=True):
        import distgrad as dg

        values = dg.arange(self._num_events, dtype=dg.int64, device=self._param.device)
        values = values.view((-1,) + (1,) * len(self._batch_shape))
        if expand:
            values = values.expand((-1,) + tuple(self._batch_shape))
        return values
