"""distgrad.autograd.functional (jacobian, hessian, vjp, jvp, hvp, vhp) and the legacy
autograd.Variable against PyTorch: values for single and multiple inputs/outputs,
create_graph, strict-mode errors and argument checks."""
from __future__ import annotations

import numpy as np
import pytest

import distgrad as dg
import distgrad.autograd.functional as AF

torch = pytest.importorskip("torch")
TF = torch.autograd.functional

RNG = np.random.default_rng(0)
X = RNG.standard_normal(3)
Y = RNG.standard_normal((2, 3))
V3 = RNG.standard_normal(3)
V23 = RNG.standard_normal((2, 3))


def t2(a, lib):
    return dg.tensor(a, dtype=dg.float64) if lib is dg else torch.tensor(a, dtype=torch.float64)


def same(d, t):
    if isinstance(t, (tuple, list)):
        assert isinstance(d, tuple) and len(d) == len(t)
        for a, b in zip(d, t):
            same(a, b)
        return
    assert tuple(d.shape) == tuple(t.shape)
    np.testing.assert_allclose(d.detach().numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)


# functions written once for both libraries (only tensor methods)
def f_vec(x):
    return x.sin() * x.exp() + x ** 2


def f_scalar(x):
    return (x.sin() * x ** 3).sum()


def f_two_in(x, y):
    return (y * x.tanh()).sum(0) + x.exp()


def f_two_out(x, y):
    return (x * y).sum(), y.pow(3) * x


def f_scalar_two(x, y):
    return (x.exp() * y).sum() + (x * x).sum() * y.sum()


@pytest.mark.parametrize("fn,args", [
    (f_vec, (X,)),
    (f_two_in, (X, Y)),
    (f_two_out, (X, Y)),
])
@pytest.mark.parametrize("vectorize", [False, True])
def test_jacobian_matches_torch(fn, args, vectorize):
    di, ti = tuple(t2(a, dg) for a in args), tuple(t2(a, torch) for a in args)
    if len(args) == 1:
        di, ti = di[0], ti[0]
    same(AF.jacobian(fn, di, vectorize=vectorize), TF.jacobian(fn, ti, vectorize=vectorize))


def test_jacobian_forward_mode_strategy_same_values():
    same(AF.jacobian(f_vec, t2(X, dg), vectorize=True, strategy="forward-mode"),
         TF.jacobian(f_vec, t2(X, torch), vectorize=True, strategy="forward-mode"))
    with pytest.raises(NotImplementedError):
        AF.jacobian(f_vec, t2(X, dg), strategy="forward-mode")
    with pytest.raises(AssertionError, match="Expected strategy"):
        AF.jacobian(f_vec, t2(X, dg), strategy="sideways")


@pytest.mark.parametrize("fn,args", [(f_scalar, (X,)), (f_scalar_two, (X, Y))])
def test_hessian_matches_torch(fn, args):
    di, ti = tuple(t2(a, dg) for a in args), tuple(t2(a, torch) for a in args)
    if len(args) == 1:
        di, ti = di[0], ti[0]
    same(AF.hessian(fn, di), TF.hessian(fn, ti))


@pytest.mark.parametrize("name", ["vjp", "jvp"])
def test_vjp_jvp_match_torch(name):
    fd, ft = getattr(AF, name), getattr(TF, name)
    # one input, one output
    same(fd(f_vec, t2(X, dg), t2(V3, dg)), ft(f_vec, t2(X, torch), t2(V3, torch)))
    # two inputs, two outputs
    if name == "vjp":
        vd, vt = (t2(1.3, dg), t2(V23, dg)), (t2(1.3, torch), t2(V23, torch))
    else:
        vd, vt = (t2(V3, dg), t2(V23, dg)), (t2(V3, torch), t2(V23, torch))
    same(fd(f_two_out, (t2(X, dg), t2(Y, dg)), vd), ft(f_two_out, (t2(X, torch), t2(Y, torch)), vt))


@pytest.mark.parametrize("name", ["hvp", "vhp"])
def test_hvp_vhp_match_torch(name):
    fd, ft = getattr(AF, name), getattr(TF, name)
    same(fd(f_scalar, t2(X, dg), t2(V3, dg)), ft(f_scalar, t2(X, torch), t2(V3, torch)))
    same(fd(f_scalar_two, (t2(X, dg), t2(Y, dg)), (t2(V3, dg), t2(V23, dg))),
         ft(f_scalar_two, (t2(X, torch), t2(Y, torch)), (t2(V3, torch), t2(V23, torch))))


def test_create_graph_allows_differentiating_the_result():
    xd = dg.tensor(X, requires_grad=True)
    xt = torch.tensor(X, requires_grad=True)
    jd = AF.jacobian(f_vec, xd, create_graph=True)
    jt = TF.jacobian(f_vec, xt, create_graph=True)
    assert jd.requires_grad
    jd.sum().backward()
    jt.sum().backward()
    np.testing.assert_allclose(xd.grad.numpy(), xt.grad.numpy(), rtol=1e-10)
    _, hd = AF.hvp(f_scalar, xd, t2(V3, dg), create_graph=True)
    assert hd.requires_grad
    # without create_graph, results are detached
    assert not AF.jacobian(f_vec, xd).requires_grad


def test_strict_and_argument_errors_match_torch():
    def indep(x, y):
        return x * 2

    for fd, ft in ((AF.jacobian, TF.jacobian),):
        with pytest.raises(RuntimeError) as ed:
            fd(indep, (t2(X, dg), t2(X, dg)), strict=True)
        with pytest.raises(RuntimeError) as et:
            ft(indep, (t2(X, torch), t2(X, torch)), strict=True)
        assert str(ed.value) == str(et.value)
    # non-strict: zeros for the independent input
    jd = AF.jacobian(indep, (t2(X, dg), t2(X, dg)))
    assert np.all(jd[1].numpy() == 0)
    with pytest.raises(RuntimeError) as ed:
        AF.vjp(f_vec, t2(X, dg))
    with pytest.raises(RuntimeError) as et:
        TF.vjp(f_vec, t2(X, torch))
    assert str(ed.value) == str(et.value)
    with pytest.raises(RuntimeError, match="v has invalid size"):
        AF.vjp(f_vec, t2(X, dg), dg.ones(4, dtype=dg.float64))
    with pytest.raises(TypeError, match="must be either a Tensor or a tuple of Tensors"):
        AF.jacobian(f_vec, [1.0, 2.0])
    with pytest.raises(RuntimeError, match="should return a single Tensor"):
        AF.hvp(f_two_out, (t2(X, dg), t2(Y, dg)), (t2(V3, dg), t2(V23, dg)))


def test_variable_returns_tensor():
    from distgrad.autograd import Variable

    x = dg.ones(3)
    v = Variable(x, requires_grad=True)
    assert isinstance(v, dg.Tensor) and isinstance(x, Variable)
    assert v.requires_grad and not x.requires_grad and v.is_leaf
    (v * 2).sum().backward()
    np.testing.assert_allclose(v.grad.numpy(), [2.0, 2.0, 2.0])
    y = dg.ones(2, requires_grad=True) * 3
    w = Variable(y)
    assert w.grad_fn is None and not w.requires_grad
    np.testing.assert_allclose(w.numpy(), [3.0, 3.0])
    with pytest.warns(UserWarning, match="volatile"):
        Variable(x, volatile=True)
    with pytest.raises(TypeError, match="Variable data has to be a tensor, but got list"):
        Variable([1, 2])
