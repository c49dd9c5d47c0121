"""distgrad.testing (assert_close, make_tensor), distgrad.jit, nn.utils weight/spectral
norm, parameter vectors and parametrizations, F.gumbel_softmax and init.dirac_ against
PyTorch: values, gradients, state_dict keys and error messages."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import distgrad as dg
import distgrad.nn as nn
import distgrad.nn.functional as F

torch = pytest.importorskip("torch")


def msg_of(fn, exc=AssertionError):
    with pytest.raises(exc) as info:
        fn()
    return str(info.value).replace("distgrad.", "torch.")


# ------------------------------------------------------------------ testing.assert_close
ASSERT_CASES = [
    ("float_close", lambda m: (m.tensor([1.0, 2.0, 3.0]), m.tensor([1.0, 2.1, 3.0])), {}),
    ("2d", lambda m: (m.tensor([[1.0, 2.0], [3.0, 4.0]]), m.tensor([[1.0, 2.1], [3.5, 4.0]])), {}),
    ("int_equal", lambda m: (m.tensor([1, 2, 3]), m.tensor([1, 5, 3])), {}),
    ("shape", lambda m: (m.tensor([1.0, 2.0]), m.tensor([1.0, 2.0, 3.0])), {}),
    ("dtype", lambda m: (m.tensor([1.0, 2.0]), m.tensor([1.0, 2.0], dtype=m.float64)), {}),
    ("scalars", lambda m: (1.0, 1.1), {}),
    ("ints", lambda m: (1, 2), {}),
    ("seq", lambda m: ([m.tensor(1.0), m.tensor(2.0)], [m.tensor(1.0), m.tensor(3.0)]), {}),
    ("map", lambda m: ({"a": m.tensor(1.0)}, {"a": m.tensor(3.0)}), {}),
    ("nan", lambda m: (m.tensor([float("nan")]), m.tensor([float("nan")])), {}),
    ("msg_str", lambda m: (m.tensor([1.0]), m.tensor([2.0])), {"msg": "custom"}),
    ("msg_callable", lambda m: (m.tensor([1.0]), m.tensor([2.0])), {"msg": lambda s: "X" + s}),
    ("bool", lambda m: (m.tensor([True]), m.tensor([False])), {}),
    ("inf", lambda m: (m.tensor([1.0, float("inf")]), m.tensor([1.0, -float("inf")])), {}),
    ("seq_len", lambda m: ([1, 2], [1, 2, 3]), {}),
    ("scalar_tensor", lambda m: (m.tensor(1.0), m.tensor(1.5)), {}),
    ("tol", lambda m: (m.tensor([1.0, 2.0]), m.tensor([1.0, 2.5])), {"rtol": 0.1, "atol": 0.0}),
    ("f64", lambda m: (m.tensor([1.0, 2.0], dtype=m.float64), m.tensor([1.0, 2.0 + 1e-6], dtype=m.float64)), {}),
]


@pytest.mark.parametrize("case", ASSERT_CASES, ids=[c[0] for c in ASSERT_CASES])
def test_assert_close_messages_match_torch(case):
    _, make, kw = case
    a, b = make(dg)
    ta, tb = make(torch)
    assert msg_of(lambda: dg.testing.assert_close(a, b, **kw)) == \
        msg_of(lambda: torch.testing.assert_close(ta, tb, **kw))


def test_assert_close_passes_and_options():
    T = dg.testing
    T.assert_close(dg.tensor([1.0, 2.0]), dg.tensor([1.0, 2.0 + 1e-6]))  # float32 tolerance
    T.assert_close(dg.tensor([float("nan"), 1.0]), dg.tensor([float("nan"), 1.0]), equal_nan=True)
    T.assert_close(dg.tensor([1.0, 2.0]), dg.tensor([1.0, 2.0], dtype=dg.float64), check_dtype=False)
    T.assert_close({"w": [dg.ones(2), 3]}, {"w": [dg.ones(2), 3]})
    T.assert_close(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="Both 'rtol' and 'atol' must be either specified or omitted"):
        T.assert_close(dg.ones(1), dg.ones(1), rtol=1e-3)
    assert msg_of(lambda: T.assert_close(dg.ones(1), 1.0), TypeError) == \
        msg_of(lambda: torch.testing.assert_close(torch.ones(1), 1.0), TypeError)


def test_make_tensor():
    t = dg.testing.make_tensor((3, 4), dtype=dg.float32, device="cpu")
    assert tuple(t.shape) == (3, 4) and t.dtype == dg.float32
    assert np.all(t.numpy() >= -9) and np.all(t.numpy() <= 9)
    i = dg.testing.make_tensor(2, 5, dtype=dg.int64, low=0, high=3, device="cpu")
    assert tuple(i.shape) == (2, 5) and i.dtype == dg.int64 and set(np.unique(i.numpy())) <= {0, 1, 2}
    g = dg.testing.make_tensor((4,), dtype=dg.float64, device="cpu", requires_grad=True, low=1, high=2)
    assert g.requires_grad and np.all(g.detach().numpy() >= 1) and np.all(g.detach().numpy() < 2)
    nz = dg.testing.make_tensor((200,), dtype=dg.int32, device="cpu", exclude_zero=True)
    assert np.all(nz.numpy() != 0)
    b = dg.testing.make_tensor((10,), dtype=dg.bool, device="cpu")
    assert b.dtype == dg.bool
    with pytest.raises(ValueError):
        dg.testing.make_tensor((2,), dtype=dg.int64, device="cpu", requires_grad=True)


# ------------------------------------------------------------------------------------ jit
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    @dg.jit.export
    def double(self, x):
        return 2 * x

    @dg.jit.ignore
    def helper(self, x):
        return x + 1

    def forward(self, x):
        if dg.jit.is_scripting():
            raise AssertionError("never scripting")
        return self.helper(self.fc(x)).relu()


def test_jit_script_and_trace_are_identity():
    dg.manual_seed(0)
    net = Net()
    x = dg.randn(5, 4)
    scripted = dg.jit.script(net)
    traced = dg.jit.trace(net, (x,))
    assert scripted is net and traced is net
    np.testing.assert_array_equal(scripted(x).detach().numpy(), net(x).detach().numpy())
    f = dg.jit.script(lambda a: a * 3)
    np.testing.assert_array_equal(f(x).numpy(), (x * 3).numpy())
    assert dg.jit.is_scripting() is False and dg.jit.is_tracing() is False
    assert dg.jit.unused(Net.forward) is Net.forward


def test_jit_save_load_raise_with_state_dict_advice(tmp_path):
    with pytest.raises(NotImplementedError, match="state_dict"):
        dg.jit.save(dg.jit.script(Net()), str(tmp_path / "m.pt"))
    with pytest.raises(NotImplementedError, match="state_dict"):
        dg.jit.load(str(tmp_path / "m.pt"))


# ----------------------------------------------------------------------------- nn.utils
def twin_linear(i=4, o=3, seed=0):
    d, t = nn.Linear(i, o), torch.nn.Linear(i, o)
    rng = np.random.default_rng(seed)
    w, b = rng.standard_normal((o, i)), rng.standard_normal(o)
    d.double()
    t.double()
    with torch.no_grad():
        t.weight.copy_(torch.tensor(w))
        t.bias.copy_(torch.tensor(b))
    d.load_state_dict({"weight": dg.tensor(w), "bias": dg.tensor(b)})
    return d, t


def run_both(d, t, x):
    yd, yt = d(dg.tensor(x)), t(torch.tensor(x))
    np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    yd.pow(2).sum().backward()
    yt.pow(2).sum().backward()
    for (nd, pd), (nt, pt) in zip(d.named_parameters(), t.named_parameters()):
        assert nd == nt
        np.testing.assert_allclose(pd.grad.numpy(), pt.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=nd)


X = np.random.default_rng(1).standard_normal((5, 4))


def test_parameters_to_vector_roundtrip():
    d, t = twin_linear()
    vd = nn.utils.parameters_to_vector(d.parameters())
    vt = torch.nn.utils.parameters_to_vector(t.parameters())
    np.testing.assert_allclose(vd.detach().numpy(), vt.detach().numpy())
    nn.utils.vector_to_parameters(vd * 2, d.parameters())
    np.testing.assert_allclose(d.weight.detach().numpy(), 2 * t.weight.detach().numpy())
    assert d.weight.requires_grad and d.weight.is_leaf
    with pytest.raises(TypeError, match="expected torch.Tensor"):
        nn.utils.vector_to_parameters([1.0], d.parameters())


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_matches_torch(dim):
    d, t = twin_linear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        nn.utils.weight_norm(d, dim=dim)
        torch.nn.utils.weight_norm(t, dim=dim)
    assert list(d.state_dict()) == list(t.state_dict())
    np.testing.assert_allclose(d.weight_g.detach().numpy(), t.weight_g.detach().numpy(), rtol=1e-12)
    run_both(d, t, X)
    nn.utils.remove_weight_norm(d)
    torch.nn.utils.remove_weight_norm(t)
    assert list(d.state_dict()) == list(t.state_dict()) == ["bias", "weight"]
    np.testing.assert_allclose(d.weight.detach().numpy(), t.weight.detach().numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="weight_norm of 'weight' not found in"):
        nn.utils.remove_weight_norm(d)


def test_spectral_norm_matches_torch_train_and_eval():
    d, t = twin_linear(6, 4)
    nn.utils.spectral_norm(d, n_power_iterations=2)
    torch.nn.utils.spectral_norm(t, n_power_iterations=2)
    assert list(d.state_dict()) == list(t.state_dict()) == ["bias", "weight_orig", "weight_u", "weight_v"]
    d.weight_u.copy_(dg.tensor(t.weight_u.numpy()))
    d.weight_v.copy_(dg.tensor(t.weight_v.numpy()))
    x = np.random.default_rng(2).standard_normal((3, 6))
    run_both(d, t, x)  # training: one power-iteration update of u, v
    np.testing.assert_allclose(d.weight_u.numpy(), t.weight_u.numpy(), rtol=1e-10)
    u_before = d.weight_u.numpy().copy()
    d.eval()
    t.eval()
    yd, yt = d(dg.tensor(x)), t(torch.tensor(x))
    np.testing.assert_allclose(yd.detach().numpy(), yt.detach().numpy(), rtol=1e-10)
    np.testing.assert_array_equal(d.weight_u.numpy(), u_before)  # eval: u not updated
    sigma = np.linalg.svd(d.weight_orig.detach().numpy(), compute_uv=False)[0]
    d.train()
    for _ in range(30):
        d(dg.tensor(x))
    np.testing.assert_allclose(np.linalg.svd(d.weight.detach().numpy(), compute_uv=False)[0], 1.0, rtol=1e-6)
    assert sigma != pytest.approx(1.0)
    nn.utils.remove_spectral_norm(d)
    assert list(d.state_dict()) == ["bias", "weight"]


class Symmetric(nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).transpose(-1, -2)


def test_parametrize_register_cached_remove():
    P = nn.utils.parametrize
    d = nn.Linear(3, 3)
    tl = torch.nn.Linear(3, 3)
    P.register_parametrization(d, "weight", Symmetric())
    torch.nn.utils.parametrize.register_parametrization(tl, "weight", _TorchSym())
    assert type(d).__name__ == "ParametrizedLinear" == type(tl).__name__
    assert list(d.state_dict()) == list(tl.state_dict()) == ["bias", "parametrizations.weight.original"]
    assert P.is_parametrized(d) and P.is_parametrized(d, "weight") and not P.is_parametrized(d, "bias")
    assert P.type_before_parametrizations(d) is nn.Linear
    W = d.weight.detach().numpy()
    np.testing.assert_allclose(W, W.T)
    y = d(dg.ones(2, 3))
    y.sum().backward()
    assert d.parametrizations.weight.original.grad is not None
    with P.cached():
        assert d.weight is d.weight
    assert d.weight is not d.weight
    P.remove_parametrizations(d, "weight")
    torch.nn.utils.parametrize.remove_parametrizations(tl, "weight")
    assert type(d) is nn.Linear and list(d.state_dict()) == list(tl.state_dict()) == ["bias", "weight"]
    np.testing.assert_allclose(d.weight.detach().numpy(), W)
    with pytest.raises(ValueError, match="does not have a parametrization on weight"):
        P.remove_parametrizations(d, "weight")
    with pytest.raises(ValueError, match="does not have a parameter, a buffer, or a parametrized element"):
        P.register_parametrization(d, "nothing", Symmetric())


class _TorchSym(torch.nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).transpose(-1, -2)


def test_parametrizations_weight_norm_matches_torch():
    d, t = twin_linear()
    nn.utils.parametrizations.weight_norm(d)
    torch.nn.utils.parametrizations.weight_norm(t)
    assert list(d.state_dict()) == list(t.state_dict())
    assert list(d.state_dict())[1:] == ["parametrizations.weight.original0", "parametrizations.weight.original1"]
    np.testing.assert_allclose(d.parametrizations.weight.original0.detach().numpy(),
                               t.parametrizations.weight.original0.detach().numpy(), rtol=1e-12)
    run_both(d, t, X)
    # load torch's state_dict into distgrad
    d.load_state_dict({k: dg.tensor(v.numpy()) for k, v in t.state_dict().items()})
    nn.utils.parametrize.remove_parametrizations(d, "weight")
    np.testing.assert_allclose(d.weight.detach().numpy(), t.weight.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3)])
def test_orthogonal_parametrization(shape):
    d = nn.Linear(shape[1], shape[0])
    t = torch.nn.Linear(shape[1], shape[0])
    nn.utils.parametrizations.orthogonal(d)
    torch.nn.utils.parametrizations.orthogonal(t)
    assert list(d.state_dict()) == list(t.state_dict())
    W = d.weight.detach().numpy().astype(np.float64)
    small = min(shape)
    gram = W @ W.T if shape[0] <= shape[1] else W.T @ W
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-5)
    opt = dg.optim.SGD(d.parameters(), lr=0.1)
    d(dg.randn(2, shape[1])).pow(2).sum().backward()
    opt.step()
    W = d.weight.detach().numpy().astype(np.float64)
    gram = W @ W.T if shape[0] <= shape[1] else W.T @ W
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-5)


# --------------------------------------------------------------------------- functional
def test_gumbel_softmax_soft_hard_and_straight_through():
    dg.manual_seed(0)
    logits = dg.tensor(np.log([[0.1, 0.6, 0.3]] * 4000), dtype=dg.float64, requires_grad=True)
    soft = F.gumbel_softmax(logits, tau=0.5)
    np.testing.assert_allclose(soft.sum(-1).detach().numpy(), 1.0)
    hard = F.gumbel_softmax(logits, tau=0.5, hard=True)
    h = hard.detach().numpy()
    assert set(np.unique(h)) <= {0.0, 1.0} and np.all(h.sum(-1) == 1)
    np.testing.assert_allclose(h.mean(0), [0.1, 0.6, 0.3], atol=0.03)  # Gumbel-max sampling
    (hard * dg.tensor([1.0, 2.0, 3.0], dtype=dg.float64)).sum().backward()
    assert logits.grad is not None and np.abs(logits.grad.numpy()).sum() > 0
    # dim argument
    s = F.gumbel_softmax(dg.zeros(3, 5), dim=0)
    np.testing.assert_allclose(s.sum(0).numpy(), 1.0, rtol=1e-6)
    assert "gumbel_softmax" in F.__all__


@pytest.mark.parametrize("shape,groups", [((4, 4, 3), 1), ((6, 3, 3, 3), 2), ((2, 3, 3, 3, 3), 1)])
def test_dirac_matches_torch(shape, groups):
    w, wt = dg.zeros(*shape), torch.zeros(*shape)
    nn.init.dirac_(w, groups)
    torch.nn.init.dirac_(wt, groups)
    np.testing.assert_array_equal(w.numpy(), wt.numpy())
    with pytest.raises(ValueError, match="Only tensors with 3, 4, or 5 dimensions are supported"):
        nn.init.dirac_(dg.zeros(2, 2))
