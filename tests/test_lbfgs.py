"""L-BFGS against PyTorch in float64: parameters and returned losses after each
``step`` on a quadratic, the Rosenbrock function and a linear regression, with and
without the strong-Wolfe line search."""
import copy

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn, optim

TOL = dict(rtol=1e-10, atol=1e-12)
STEPS = 4


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def arr(t):
    return t.detach().numpy()


# ------------------------------------------------------------------ problems
def make_quadratic(lib, seed=0):
    """f(x) = 1/2 x^T A x - b^T x over two parameters (shapes (2, 2) and (2,))."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((6, 6))
    a = m @ m.T + 0.5 * np.eye(6)
    b = rng.standard_normal(6)
    init = [rng.standard_normal((2, 2)), rng.standard_normal(2)]
    params = [lib.nn.Parameter(lib.tensor(v.copy(), dtype=lib.float64)) for v in init]
    A, B = lib.tensor(a, dtype=lib.float64), lib.tensor(b, dtype=lib.float64)

    def loss_fn():
        x = lib.cat([params[0].reshape(-1), params[1]])
        return 0.5 * (x * (A @ x)).sum() - (B * x).sum()

    return params, loss_fn


def make_rosenbrock(lib, seed=0):
    """The n-dimensional Rosenbrock function from (-1.5, 2, -0.5, 1)."""
    x = lib.nn.Parameter(lib.tensor([-1.5, 2.0, -0.5, 1.0], dtype=lib.float64))

    def loss_fn():
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    return [x], loss_fn


def make_regression(lib, seed=0):
    """Mean-squared error of an ``nn.Linear(3, 1)`` on fixed data."""
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((20, 3))
    ys = xs @ np.array([[1.5], [-2.0], [0.5]]) + 0.3 + 0.1 * rng.standard_normal((20, 1))
    w, b0 = rng.standard_normal((1, 3)), rng.standard_normal(1)
    lin = lib.nn.Linear(3, 1, dtype=lib.float64)
    with lib.no_grad():
        lin.weight.copy_(lib.tensor(w, dtype=lib.float64))
        lin.bias.copy_(lib.tensor(b0, dtype=lib.float64))
    X, Y = lib.tensor(xs, dtype=lib.float64), lib.tensor(ys, dtype=lib.float64)

    def loss_fn():
        return lib.nn.functional.mse_loss(lin(X), Y)

    return list(lin.parameters()), loss_fn


PROBLEMS = {"quadratic": make_quadratic, "rosenbrock": make_rosenbrock, "regression": make_regression}


def run(lib, make, kw, steps=STEPS):
    params, loss_fn = make(lib)
    opt = lib.optim.LBFGS(params, **kw)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    history, losses = [], []
    for _ in range(steps):
        loss = opt.step(closure)
        losses.append(float(loss.detach()))
        history.append([p.detach().numpy().copy() for p in params])
    return history, losses, opt


CONFIGS = [
    dict(),
    dict(history_size=3, max_iter=5),
    dict(line_search_fn="strong_wolfe"),
    dict(line_search_fn="strong_wolfe", history_size=2, max_iter=7),
    dict(lr=0.5, history_size=4, max_iter=6, max_eval=9),
    dict(line_search_fn="strong_wolfe", lr=0.01, history_size=3, max_iter=8),  # extrapolation
    dict(line_search_fn="strong_wolfe", lr=30, history_size=3, max_iter=8),    # zoom
]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_matches_torch(torch, problem, kw):
    ours, our_losses, opt = run(dg, PROBLEMS[problem], kw)
    theirs, their_losses, topt = run(torch, PROBLEMS[problem], kw)
    np.testing.assert_allclose(our_losses, their_losses, **TOL)
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, **TOL)
    s, ts = next(iter(opt.state.values())), next(iter(topt.state.values()))
    assert s["func_evals"] == ts["func_evals"] and s["n_iter"] == ts["n_iter"]
    assert len(s["old_dirs"]) == len(ts["old_dirs"])
    if "history_size" in kw:
        assert len(s["old_dirs"]) <= kw["history_size"]


def test_converges_on_rosenbrock():
    x = nn.Parameter(dg.tensor([-1.2, 1.0], dtype=dg.float64))

    def loss_fn():
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()

    opt = optim.LBFGS([x], line_search_fn="strong_wolfe", max_iter=100, tolerance_grad=1e-12,
                      tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    np.testing.assert_allclose(arr(x), np.ones(2), atol=1e-6)


def test_returns_first_loss_of_the_step():
    params, loss_fn = make_quadratic(dg)
    opt = optim.LBFGS(params)
    first = []

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        first.append(loss)
        return loss

    out = opt.step(closure)
    assert out is first[0] and len(first) > 1


def test_closure_runs_with_grad_enabled():
    params, loss_fn = make_quadratic(dg)
    opt = optim.LBFGS(params, max_iter=3)
    modes = []

    def closure():
        modes.append(dg.is_grad_enabled())
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    with dg.no_grad():
        opt.step(closure)
    assert modes and all(modes)


def test_stops_at_optimum_without_moving():
    x = nn.Parameter(dg.tensor([1.0, 1.0, 1.0, 1.0], dtype=dg.float64))
    opt = optim.LBFGS([x])

    def closure():
        opt.zero_grad()
        loss = (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
        loss.backward()
        return loss

    assert float(opt.step(closure)) == 0.0
    np.testing.assert_array_equal(arr(x), np.ones(4))
    assert opt.state[x]["func_evals"] == 1 and opt.state[x]["n_iter"] == 0


def test_state_dict_round_trip_continues_identically():
    def closure_for(opt, loss_fn):
        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss
        return closure

    kw = dict(history_size=3, max_iter=3, line_search_fn="strong_wolfe")
    pa, fa = make_regression(dg)
    oa = optim.LBFGS(pa, **kw)
    oa.step(closure_for(oa, fa))
    pb, fb = make_regression(dg)
    with dg.no_grad():
        for p, q in zip(pb, pa):
            p.copy_(q)
    ob = optim.LBFGS(pb, **kw)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))
    for _ in range(2):
        la, lb = oa.step(closure_for(oa, fa)), ob.step(closure_for(ob, fb))
        assert float(la) == float(lb)
        for p, q in zip(pa, pb):
            np.testing.assert_array_equal(arr(p), arr(q))


def test_step_requires_a_closure():
    (x,), _ = make_rosenbrock(dg)
    opt = optim.LBFGS([x])
    with pytest.raises(TypeError, match="closure"):
        opt.step()


def test_multiple_param_groups_rejected(torch):
    a = nn.Parameter(dg.ones(2))
    b = nn.Parameter(dg.ones(3))
    with pytest.raises(ValueError, match="doesn't support per-parameter options") as ours:
        optim.LBFGS([{"params": [a]}, {"params": [b], "lr": 0.1}])
    ta, tb = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError) as theirs:
        torch.optim.LBFGS([{"params": [ta]}, {"params": [tb], "lr": 0.1}])
    assert str(ours.value) == str(theirs.value)


def test_invalid_arguments():
    x = nn.Parameter(dg.ones(2))
    with pytest.raises(ValueError, match="Invalid learning rate"):
        optim.LBFGS([x], lr=-1)
    opt = optim.LBFGS([x], line_search_fn="backtracking")

    def closure():
        opt.zero_grad()
        loss = (x * x).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        opt.step(closure)
    assert optim.LBFGS([x], max_iter=8).param_groups[0]["max_eval"] == 10
