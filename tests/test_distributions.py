"""distgrad.distributions against torch.distributions: log_prob, entropy, moments, cdf/icdf
and KL match exactly in float64 with the same parameters; gradients of log_prob and of
rsample match; sample statistics agree within a few standard errors; validation errors
carry PyTorch's messages."""
from __future__ import annotations

import math

import numpy as np
import pytest

import distgrad as dg
import distgrad.distributions as D

torch = pytest.importorskip("torch")
TD = torch.distributions

RNG = np.random.default_rng(0)


def both(a, requires_grad=False):
    a = np.asarray(a, np.float64)
    return (dg.tensor(a, dtype=dg.float64, requires_grad=requires_grad),
            torch.tensor(a, dtype=torch.float64, requires_grad=requires_grad))


def close(d, t, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(np.asarray(d.detach().numpy(), np.float64),
                               t.detach().numpy().astype(np.float64), rtol=rtol, atol=atol)


LOC = RNG.standard_normal((2, 3))
SCALE = RNG.uniform(0.5, 2.0, (2, 3))
PROBS = RNG.uniform(0.05, 1.0, (2, 4))
LOGITS = RNG.standard_normal((2, 4))
P01 = RNG.uniform(0.05, 0.95, (2, 3))
POS = RNG.uniform(0.5, 3.0, (2, 3))


def _cases():
    """(name, factory(lib, params), params, value) — value is what log_prob is scored at."""
    A = RNG.standard_normal((3, 3))
    cov = A @ A.T + 3 * np.eye(3)
    tril = np.linalg.cholesky(cov)
    return [
        ("normal", lambda m, p: m.Normal(p[0], p[1]), [LOC, SCALE], RNG.standard_normal((5, 2, 3))),
        ("categorical_probs", lambda m, p: m.Categorical(probs=p[0]), [PROBS], np.array([[0, 3], [2, 1]])),
        ("categorical_logits", lambda m, p: m.Categorical(logits=p[0]), [LOGITS], np.array([1, 2])),
        ("bernoulli_probs", lambda m, p: m.Bernoulli(probs=p[0]), [P01], (RNG.random((4, 2, 3)) < 0.5) * 1.0),
        ("bernoulli_logits", lambda m, p: m.Bernoulli(logits=p[0]), [LOC], (RNG.random((2, 3)) < 0.5) * 1.0),
        ("uniform", lambda m, p: m.Uniform(p[0], p[0] + p[1]), [LOC, SCALE], LOC + 0.3 * SCALE),
        ("independent_normal", lambda m, p: m.Independent(m.Normal(p[0], p[1]), 1), [LOC, SCALE],
         RNG.standard_normal((4, 2, 3))),
        ("onehot", lambda m, p: m.OneHotCategorical(probs=p[0]), [PROBS], np.eye(4)[[[0, 3], [1, 1]]]),
        ("mvn_cov", lambda m, p: m.MultivariateNormal(p[0], covariance_matrix=p[1]), [LOC[0], cov],
         RNG.standard_normal((4, 3))),
        ("mvn_tril", lambda m, p: m.MultivariateNormal(p[0], scale_tril=p[1]), [LOC, tril],
         RNG.standard_normal((4, 2, 3))),
        ("mvn_prec", lambda m, p: m.MultivariateNormal(p[0], precision_matrix=p[1]), [LOC[1], cov],
         RNG.standard_normal((3,))),
        ("exponential", lambda m, p: m.Exponential(p[0]), [POS], RNG.uniform(0.1, 3, (2, 3))),
        ("laplace", lambda m, p: m.Laplace(p[0], p[1]), [LOC, SCALE], RNG.standard_normal((2, 3))),
        ("poisson", lambda m, p: m.Poisson(p[0]), [POS], RNG.integers(0, 6, (2, 3)) * 1.0),
        ("gamma", lambda m, p: m.Gamma(p[0], p[1]), [POS, SCALE], RNG.uniform(0.1, 3, (2, 3))),
        ("beta", lambda m, p: m.Beta(p[0], p[1]), [POS, SCALE], RNG.uniform(0.05, 0.95, (2, 3))),
        ("dirichlet", lambda m, p: m.Dirichlet(p[0]), [POS], np.array([0.2, 0.3, 0.5])),
        ("binomial", lambda m, p: m.Binomial(7, probs=p[0]), [P01], RNG.integers(0, 8, (2, 3)) * 1.0),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]


def _build(case, requires_grad=False):
    name, factory, params, value = case
    pd, pt = zip(*[both(p, requires_grad) for p in params])
    return factory(D, pd), factory(TD, pt), pd, pt, value


def _value(value, dtype_long):
    if dtype_long:
        return dg.tensor(value, dtype=dg.int64), torch.tensor(value, dtype=torch.int64)
    return both(value)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_prob_and_shapes_match_torch(case):
    d, t, _, _, value = _build(case)
    assert tuple(d.batch_shape) == tuple(t.batch_shape)
    assert tuple(d.event_shape) == tuple(t.event_shape)
    vd, vt = _value(value, case[0].startswith("categorical"))
    close(d.log_prob(vd), t.log_prob(vt))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_moments_and_entropy_match_torch(case):
    d, t, _, _, _ = _build(case)
    for attr in ("mean", "variance", "stddev", "mode"):
        try:
            expected = getattr(t, attr)
        except NotImplementedError:
            continue
        got = getattr(d, attr)
        np.testing.assert_allclose(np.asarray(got.numpy(), np.float64), expected.numpy().astype(np.float64),
                                   rtol=1e-10, atol=1e-12, equal_nan=True, err_msg=attr)
    try:
        expected = t.entropy()
    except NotImplementedError:
        return
    close(d.entropy(), expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_prob_gradients_match_torch(case):
    d, t, pd, pt, value = _build(case, requires_grad=True)
    vd, vt = _value(value, case[0].startswith("categorical"))
    d.log_prob(vd).sum().backward()
    t.log_prob(vt).sum().backward()
    for a, b in zip(pd, pt):
        assert a.grad is not None
        close(a.grad, b.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name,make", [
    ("normal", lambda m, x, y: m.Normal(x, y)),
    ("laplace", lambda m, x, y: m.Laplace(x, y)),
    ("uniform", lambda m, x, y: m.Uniform(x, x + y)),
])
def test_cdf_icdf_match_torch(name, make):
    (ld, lt), (sd, st) = both(LOC), both(SCALE)
    d, t = make(D, ld, sd), make(TD, lt, st)
    vd, vt = both(LOC + 0.4 * SCALE)
    close(d.cdf(vd), t.cdf(vt))
    qd, qt = both(RNG.uniform(0.05, 0.95, (2, 3)))
    close(d.icdf(qd), t.icdf(qt))
    ed, et = D.Exponential(sd), TD.Exponential(st)
    close(ed.cdf(vd.abs()), et.cdf(vt.abs()))
    close(ed.icdf(qd), et.icdf(qt))


def test_normal_rsample_is_loc_plus_scale_eps_with_torch_gradients():
    (ld, lt), (sd, st) = both(LOC, True), both(SCALE, True)
    dg.manual_seed(3)
    x = D.Normal(ld, sd).rsample((7,))
    dg.manual_seed(3)
    eps = dg.randn(7, 2, 3, dtype=dg.float64)
    close(x, ld.detach() + eps * sd.detach())
    # torch with the same eps: the gradient of sum(x**2) must match
    xt = lt + torch.tensor(eps.numpy()) * st
    (x ** 2).sum().backward()
    (xt ** 2).sum().backward()
    close(ld.grad, lt.grad)
    close(sd.grad, st.grad)
    assert D.Normal(ld, sd).sample((2,)).grad_fn is None


def test_mvn_rsample_gradient_flows_to_loc_and_scale_tril():
    (ld, _), (Ld, _) = both(LOC[0], True), both(np.linalg.cholesky(np.eye(3) * 2 + 0.5), True)
    x = D.MultivariateNormal(ld, scale_tril=Ld).rsample((5,))
    assert tuple(x.shape) == (5, 3)
    x.sum().backward()
    np.testing.assert_allclose(ld.grad.numpy(), np.full(3, 5.0))
    assert Ld.grad is not None and np.abs(Ld.grad.numpy()).sum() > 0


def test_seeded_samples_reproducible():
    d = D.Categorical(probs=dg.tensor([0.2, 0.3, 0.5]))
    dg.manual_seed(11)
    a = d.sample((20,))
    dg.manual_seed(11)
    b = d.sample((20,))
    assert a.dtype == dg.int64 and np.array_equal(a.numpy(), b.numpy())


def _check_stats(samples, mean, var, n):
    samples = np.asarray(samples, np.float64)
    se = np.sqrt(np.asarray(var, np.float64) / n)
    assert np.all(np.abs(samples.mean(0) - mean) < 5 * se + 1e-12), (samples.mean(0), mean)
    np.testing.assert_allclose(samples.var(0), var, rtol=0.1, atol=1e-3)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] not in ("categorical_probs", "categorical_logits")],
                         ids=[c[0] for c in CASES if c[0] not in ("categorical_probs", "categorical_logits")])
def test_sample_statistics(case):
    d, _, _, _, _ = _build(case)
    dg.manual_seed(0)
    n = 20000
    s = d.sample((n,))
    assert tuple(s.shape) == (n,) + tuple(d.batch_shape) + tuple(d.event_shape)
    _check_stats(s.numpy(), d.mean.numpy(), d.variance.numpy(), n)


def test_categorical_sample_frequencies():
    p = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    d = D.Categorical(probs=dg.tensor(p))
    dg.manual_seed(1)
    s = d.sample((30000,)).numpy()
    assert s.shape == (30000, 2)
    freq = np.stack([(s == k).mean(0) for k in range(3)], -1)
    np.testing.assert_allclose(freq, p, atol=0.015)


def test_categorical_normalizes_like_torch():
    pd, pt = both([[1.0, 3.0], [2.0, 2.0]])
    close(D.Categorical(probs=pd).probs, TD.Categorical(probs=pt).probs)
    ld, lt = both([[1.0, 3.0], [2.0, 2.0]])
    close(D.Categorical(logits=ld).logits, TD.Categorical(logits=lt).logits)
    close(D.Categorical(logits=ld).probs, TD.Categorical(logits=lt).probs)
    with pytest.raises(ValueError, match="Either `probs` or `logits` must be specified, but not both."):
        D.Categorical()
    assert tuple(D.Categorical(logits=ld).enumerate_support().shape) == (2, 2)


@pytest.mark.parametrize("pair", [
    ("normal", lambda m, a, b: (m.Normal(a[0], b[0]), m.Normal(a[1], b[1]))),
    ("categorical", lambda m, a, b: (m.Categorical(logits=a), m.Categorical(logits=b))),
    ("bernoulli", lambda m, a, b: (m.Bernoulli(logits=a), m.Bernoulli(logits=b))),
    ("uniform", lambda m, a, b: (m.Uniform(a[0] - b[0], a[0] + 2 * b[0]), m.Uniform(a[0] - 3 * b[0], a[0] + 4 * b[1]))),
    ("independent", lambda m, a, b: (m.Independent(m.Normal(a[0], b[0]), 1), m.Independent(m.Normal(a[1], b[1]), 1))),
    ("exponential", lambda m, a, b: (m.Exponential(b[0]), m.Exponential(b[1]))),
    ("laplace", lambda m, a, b: (m.Laplace(a[0], b[0]), m.Laplace(a[1], b[1]))),
    ("poisson", lambda m, a, b: (m.Poisson(b[0]), m.Poisson(b[1]))),
    ("gamma", lambda m, a, b: (m.Gamma(b[0], b[1]), m.Gamma(b[1], b[0]))),
    ("beta", lambda m, a, b: (m.Beta(b[0], b[1]), m.Beta(b[1], b[0]))),
    ("onehot", lambda m, a, b: (m.OneHotCategorical(logits=a), m.OneHotCategorical(logits=b))),
], ids=lambda p: p[0])
def test_kl_divergence_matches_torch(pair):
    _, make = pair
    (ad, at), (bd, bt) = both(LOC, True), both(SCALE, True)
    pd_, qd_ = make(D, ad, bd)
    pt_, qt_ = make(TD, at, bt)
    kd, kt = D.kl_divergence(pd_, qd_), TD.kl_divergence(pt_, qt_)
    close(kd, kt)
    kd.sum().backward()
    kt.sum().backward()
    close(ad.grad if ad.grad is not None else dg.zeros(2, 3, dtype=dg.float64),
          at.grad if at.grad is not None else torch.zeros(2, 3, dtype=torch.float64), rtol=1e-8)
    close(bd.grad if bd.grad is not None else dg.zeros(2, 3, dtype=dg.float64),
          bt.grad if bt.grad is not None else torch.zeros(2, 3, dtype=torch.float64), rtol=1e-8)


def test_kl_mvn_mvn_matches_torch():
    A, B = RNG.standard_normal((2, 3, 3))
    c1, c2 = A @ A.T + np.eye(3), B @ B.T + np.eye(3)
    (l1d, l1t), (l2d, l2t) = both(LOC, True), both(LOC[::-1].copy(), True)
    (c1d, c1t), (c2d, c2t) = both(c1, True), both(c2, True)
    kd = D.kl_divergence(D.MultivariateNormal(l1d, c1d), D.MultivariateNormal(l2d, c2d))
    kt = TD.kl_divergence(TD.MultivariateNormal(l1t, c1t), TD.MultivariateNormal(l2t, c2t))
    close(kd, kt)
    kd.sum().backward()
    kt.sum().backward()
    close(l1d.grad, l1t.grad, rtol=1e-8)
    close(c2d.grad, c2t.grad, rtol=1e-7, atol=1e-9)


def test_register_kl_and_missing_pair():
    class MyNormal(D.Normal):
        """A subclass, so that a KL registered for it can be told from Normal's."""

    p, q = MyNormal(0.0, 1.0), D.Normal(1.0, 2.0)
    close(D.kl_divergence(p, q), TD.kl_divergence(TD.Normal(0.0, 1.0), TD.Normal(1.0, 2.0)).float(),
          rtol=1e-6)

    @D.register_kl(MyNormal, D.Normal)
    def _kl(p, q):
        return dg.tensor(42.0)

    assert float(D.kl_divergence(p, q)) == 42.0
    with pytest.raises(NotImplementedError, match="No KL\\(p \\|\\| q\\) is implemented for p type Normal "
                                                  "and q type Categorical"):
        D.kl_divergence(D.Normal(0.0, 1.0), D.Categorical(probs=dg.tensor([0.5, 0.5])))


def _message(fn):
    with pytest.raises(ValueError) as info:
        fn()
    return str(info.value).replace("distgrad.", "torch.")  # Size and dtype reprs name the library


def test_validation_messages_match_torch():
    assert _message(lambda: D.Normal(dg.tensor([0.0, 1.0]), dg.tensor([1.0, -1.0]))) == \
        _message(lambda: TD.Normal(torch.tensor([0.0, 1.0]), torch.tensor([1.0, -1.0])))
    assert _message(lambda: D.Bernoulli(probs=dg.tensor(1.5))) == \
        _message(lambda: TD.Bernoulli(probs=torch.tensor(1.5)))
    assert _message(lambda: D.Uniform(dg.tensor(2.0), dg.tensor(1.0))) == \
        _message(lambda: TD.Uniform(torch.tensor(2.0), torch.tensor(1.0)))
    d, t = D.Bernoulli(probs=dg.tensor([0.3, 0.4])), TD.Bernoulli(probs=torch.tensor([0.3, 0.4]))
    assert _message(lambda: d.log_prob(dg.tensor([0.5, 1.0]))) == _message(lambda: t.log_prob(torch.tensor([0.5, 1.0])))
    d, t = D.Normal(dg.zeros(3), 1.0), TD.Normal(torch.zeros(3), 1.0)
    assert _message(lambda: d.log_prob(dg.zeros(2))) == _message(lambda: t.log_prob(torch.zeros(2)))
    d, t = D.Categorical(logits=dg.zeros(2, 3)), TD.Categorical(logits=torch.zeros(2, 3))
    assert _message(lambda: d.log_prob(dg.tensor([0, 3]))) == _message(lambda: t.log_prob(torch.tensor([0, 3])))
    # no validation: no error, NaN-free result for a negative scale is not required
    D.Normal(dg.tensor(0.0), dg.tensor(-1.0), validate_args=False)


def test_set_default_validate_args():
    try:
        D.Distribution.set_default_validate_args(False)
        D.Normal(dg.tensor(0.0), dg.tensor(-1.0))  # not validated
        with pytest.raises(ValueError):
            D.Normal(dg.tensor(0.0), dg.tensor(-1.0), validate_args=True)
    finally:
        D.Distribution.set_default_validate_args(True)
    with pytest.raises(ValueError):
        D.Normal(dg.tensor(0.0), dg.tensor(-1.0))
    with pytest.raises(ValueError):
        D.Distribution.set_default_validate_args("yes")


def test_expand_and_independent():
    d = D.Normal(dg.tensor(0.0, dtype=dg.float64), dg.tensor(2.0, dtype=dg.float64)).expand((4, 3))
    t = TD.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)).expand((4, 3))
    assert tuple(d.batch_shape) == (4, 3)
    v = RNG.standard_normal((4, 3))
    close(d.log_prob(dg.tensor(v)), t.log_prob(torch.tensor(v)))
    ind = D.Independent(d, 2)
    assert tuple(ind.batch_shape) == () and tuple(ind.event_shape) == (4, 3)
    close(ind.log_prob(dg.tensor(v)), TD.Independent(t, 2).log_prob(torch.tensor(v)))
    c = D.Categorical(logits=dg.zeros(3)).expand((2,))
    assert tuple(c.batch_shape) == (2,) and tuple(c.sample((5,)).shape) == (5, 2)
    assert repr(D.Independent(D.Normal(0.0, 1.0), 0)) == repr(TD.Independent(TD.Normal(0.0, 1.0), 0))
    with pytest.raises(ValueError, match="Expected reinterpreted_batch_ndims <= len"):
        D.Independent(D.Normal(0.0, 1.0), 1)


def test_constraints_and_support():
    C = D.constraints
    assert repr(C.positive) == repr(TD.constraints.positive)
    assert repr(C.unit_interval) == repr(TD.constraints.unit_interval)
    assert repr(D.Categorical(logits=dg.zeros(3)).support) == repr(TD.Categorical(logits=torch.zeros(3)).support)
    assert D.Normal.arg_constraints.keys() == TD.Normal.arg_constraints.keys()
    assert C.simplex.check(dg.tensor([0.2, 0.8])).item() and not C.simplex.check(dg.tensor([0.2, 0.9])).item()
    assert C.is_dependent(D.Uniform.support) and C.positive_definite.check(dg.eye(3)).item()


def test_top_level_bernoulli_poisson_normal():
    dg.manual_seed(0)
    p = dg.full((20000,), 0.3, dtype=dg.float64)
    b = dg.bernoulli(p)
    assert b.dtype == dg.float64 and set(np.unique(b.numpy())) <= {0.0, 1.0}
    assert abs(b.numpy().mean() - 0.3) < 5 * math.sqrt(0.21 / 20000)
    b2 = dg.bernoulli(dg.zeros(1000), 0.9)
    assert 0.85 < b2.numpy().mean() < 0.95
    g = dg.Generator().manual_seed(5)
    assert np.array_equal(dg.bernoulli(p[:50], generator=g).numpy(),
                          dg.bernoulli(p[:50], generator=dg.Generator().manual_seed(5)).numpy())
    with pytest.raises(RuntimeError):
        dg.bernoulli(dg.tensor([1.5]))
    r = dg.poisson(dg.full((20000,), 4.0))
    assert r.dtype == dg.float32 and abs(r.numpy().mean() - 4.0) < 5 * math.sqrt(4 / 20000)
    n = dg.normal(dg.zeros(20000), dg.full((20000,), 2.0))
    assert abs(n.numpy().std() - 2.0) < 0.05
