"""Top-level random draws shaped by a tensor of parameters: ``bernoulli``, ``poisson``.

Draws come from ``generator`` (the default generator when None), so ``manual_seed``
makes them reproducible. The results carry no gradient, as in PyTorch.
"""
from __future__ import annotations

import numpy as np

from .random import rng

__all__ = ["bernoulli", "poisson"]


def _host(t):
    return np.asarray(t.detach().cpu().numpy() if hasattr(t, "cpu") else t.detach().numpy())


def _like(arr, input):
    import distgrad as dg

    return dg.tensor(np.asarray(arr), dtype=input.dtype, device=input.device)


def bernoulli(input, p=None, *, generator=None, out=None):
    """Draw 0/1 values: each element is 1 with probability ``input[i]`` (or ``p`` when
    given, keeping ``input``'s shape). The result has ``input``'s dtype."""
    if p is None:
        probs = _host(input).astype(np.float64)
        if np.any((probs < 0) | (probs > 1)) or np.any(np.isnan(probs)):
            raise RuntimeError("Expected p_in >= 0 && p_in <= 1 to be true, but got false.  "
                               "(Could this error message be improved?  If so, please report an "
                               "enhancement request to PyTorch.)")
    else:
        probs = np.full(tuple(input.shape), float(p))
    draws = rng(generator).random(probs.shape) < probs
    result = _like(draws, input)
    if out is not None:
        out.copy_(result)
        return out
    return result


def poisson(input, generator=None):
    """Draw from Poisson distributions with rates ``input`` (same shape and dtype)."""
    rates = _host(input).astype(np.float64)
    if np.any(rates < 0) or np.any(np.isnan(rates)):
        raise RuntimeError("invalid Poisson rate, expected rate to be non-negative")
    return _like(rng(generator).poisson(rates), input)


def _standard_gamma(concentration, generator=None):
    """Draws from Gamma(concentration, 1) with ``concentration``'s shape and dtype."""
    conc = _host(concentration).astype(np.float64)
    out = rng(generator).standard_gamma(conc)
    import distgrad as dg

    tiny = dg.finfo(concentration.dtype).tiny
    return _like(np.maximum(out, tiny), concentration)
