"""The Dirichlet distribution (``sample`` only: no reparameterized ``rsample``)."""
from __future__ import annotations

from . import constraints
from .distribution import Distribution, _size

__all__ = ["Dirichlet"]


class Dirichlet(Distribution):
    """Dirichlet distribution with ``concentration`` (last dim = categories). Samples are
    normalized Gamma draws from the default generator; there is no reparameterized
    ``rsample``, unlike PyTorch."""

    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1)}
    support = constraints.simplex
    has_rsample = False

    def __init__(self, concentration, validate_args=None):
        if concentration.dim() < 1:
            raise ValueError("`concentration` parameter must be at least one-dimensional.")
        self.concentration = concentration
        batch_shape, event_shape = concentration.shape[:-1], concentration.shape[-1:]
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Dirichlet, _instance)
        batch_shape = _size(batch_shape)
        new.concentration = self.concentration.expand(tuple(batch_shape) + tuple(self.event_shape))
        super(Dirichlet, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=()):
        import distgrad as dg

        from .._sampling import _standard_gamma

        shape = self._extended_shape(sample_shape)
        g = _standard_gamma(self.concentration.detach().expand(shape))
        out = g / g.sum(-1, keepdim=True)
        tiny = dg.finfo(out.dtype).tiny
        return out.clamp(min=tiny, max=1 - dg.finfo(out.dtype).eps)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        c = self.concentration
        return (c - 1).xlogy(value).sum(-1) + c.sum(-1).lgamma() - c.lgamma().sum(-1)

    @property
    def mean(self):
        return self.concentration / self.concentration.sum(-1, True)

    @property
    def mode(self):
        import distgrad as dg

        concentrationm1 = (self.concentration - 1).clamp(min=0.0)
        mode = concentrationm1 / concentrationm1.sum(-1, True)
        mask = (self.concentration < 1).all(dim=-1)
        onehot = dg.nn.functional.one_hot(self.concentration.argmax(-1), concentrationm1.shape[-1]).to(mode.dtype)
        return dg.where(mask.unsqueeze(-1), onehot, mode)

    @property
    def variance(self):
        con0 = self.concentration.sum(-1, True)
        return self.concentration * (con0 - self.concentration) / (con0.pow(2) * (con0 + 1))

    def entropy(self):
        c = self.concentration
        k = c.size(-1)
        a0 = c.sum(-1)
        return c.lgamma().sum(-1) - a0.lgamma() - (k - a0) * a0.digamma() - ((c - 1.0) * c.digamma()).sum(-1)
