"""Fit the polynomial Q of the compiled GELU's normal CDF (``distgrad/ops/_jit_bodies.py``).

    Phi(-|x|) = erfc(z) / 2 = t Q(t) exp(-z^2) / 2,   z = |x| / sqrt 2,   t = 1 / (1 + p z)

Q(t) approximates erfc(z) exp(z^2) / t over the |x| where the kernel uses it (from
0.8, below which a Taylor series takes over, to 13.3, past which float32's exp
underflows). The fit minimizes Phi's absolute error: a least-squares fit on Chebyshev
nodes in t, weighted by t exp(-z^2) / 2, then reweighted toward the nodes with the
largest error (Lawson's iteration) until the error levels out. Needs mpmath (for erfc
far in the tail). Prints p, the coefficients (lowest power first) and the largest error
on a dense grid.

    python tools/fit_phi.py [p] [degree]
"""
import math
import sys

import mpmath as mp
import numpy as np

X_LO, X_HI = 0.8, 13.3


def q_exact(t: float, p: float) -> float:
    z = (1 / mp.mpf(t) - 1) / p
    return float(mp.erfc(z) * mp.exp(z * z) / t)


def phi_weight(t, p):
    z = (1 / t - 1) / p
    return 0.5 * t * np.exp(-z * z)


def fit(p: float, degree: int, nodes: int = 1200, rounds: int = 200):
    mp.mp.dps = 30
    t_lo, t_hi = 1 / (1 + p * X_HI / math.sqrt(2)), 1 / (1 + p * X_LO / math.sqrt(2))
    mid, half = (t_lo + t_hi) / 2, (t_hi - t_lo) / 2
    ts = mid + half * np.cos(np.pi * (np.arange(nodes) + 0.5) / nodes)
    f = np.array([q_exact(t, p) for t in ts])
    w_phi = phi_weight(ts, p)
    basis = np.polynomial.chebyshev.chebvander((ts - mid) / half, degree)
    lawson = np.ones(nodes)
    for _ in range(rounds):
        w = w_phi * np.sqrt(lawson)
        c, *_ = np.linalg.lstsq(basis * w[:, None], f * w, rcond=None)
        err = np.abs((basis @ c - f) * w_phi)
        lawson *= err / err.max() + 1e-3
        lawson /= lawson.mean()
    in_s = np.polynomial.Polynomial(np.polynomial.chebyshev.cheb2poly(c))
    in_t = in_s(np.polynomial.Polynomial([-mid / half, 1 / half]))
    grid = np.linspace(t_lo, t_hi, 5000)
    worst = np.max(np.abs(in_t(grid) - [q_exact(t, p) for t in grid]) * phi_weight(grid, p))
    return in_t.coef, worst


if __name__ == "__main__":
    p = float(sys.argv[1]) if len(sys.argv) > 1 else 0.6
    degree = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    coef, worst = fit(p, degree)
    print(f"p = {p}, degree {degree}: Phi within {worst:.2e}")
    print("Q coefficients, lowest power first:", ", ".join(repr(float(c)) for c in coef))
