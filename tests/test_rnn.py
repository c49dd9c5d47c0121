"""Recurrent layers against PyTorch with the same weights: outputs, final states and the
gradients of every parameter, the input and the initial states, in float64 and float32;
state-dict keys, reprs, initialization, eval-mode dropout, double backward and errors."""
import math

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn

TOL = {"float64": (1e-10, 1e-12), "float32": (1e-5, 1e-6)}


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(4321)


def arr(t):
    return t.detach().cpu().numpy() if hasattr(t, "cpu") else t.detach().numpy()


def close(a, b, dtype):
    a, b = arr(a), arr(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def flatten(out):
    """(output, h) / (output, (h, c)) / h / (h, c) -> flat list of tensors."""
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flatten(o)]
    return [out]


def pair(dg_cls, t_cls, dtype, *args, **kwargs):
    """A torch module and a distgrad one holding the torch module's weights (via numpy)."""
    import torch

    tm = t_cls(*args, **kwargs).to(getattr(torch, dtype))
    dm = dg_cls(*args, **kwargs)
    dm.to(getattr(dg, dtype))
    assert list(dm.state_dict()) == list(tm.state_dict())
    dm.load_state_dict({k: dg.tensor(v.detach().numpy().copy()) for k, v in tm.state_dict().items()})
    return dm, tm


def compare(dm, tm, x, hx, dtype, rng):
    """Same forward (all outputs) and same gradients for parameters, input and states."""
    import torch

    np_dt = np.dtype(dtype)
    xd = dg.tensor(x.astype(np_dt), requires_grad=True)
    xt = torch.tensor(x.astype(np_dt), requires_grad=True)
    if hx is None:
        hd = ht = None
        hd_leaves, ht_leaves = [], []
    elif isinstance(hx, tuple):
        hd = tuple(dg.tensor(h.astype(np_dt), requires_grad=True) for h in hx)
        ht = tuple(torch.tensor(h.astype(np_dt), requires_grad=True) for h in hx)
        hd_leaves, ht_leaves = list(hd), list(ht)
    else:
        hd = dg.tensor(hx.astype(np_dt), requires_grad=True)
        ht = torch.tensor(hx.astype(np_dt), requires_grad=True)
        hd_leaves, ht_leaves = [hd], [ht]
    od = flatten(dm(xd, hd))
    ot = flatten(tm(xt, ht))
    assert len(od) == len(ot)
    lossd, losst = 0, 0
    for a, b in zip(od, ot):
        close(a, b, dtype)
        assert str(a.dtype).split(".")[-1] == dtype
        g = rng.standard_normal(tuple(b.shape)).astype(np_dt)
        lossd = lossd + (a * dg.tensor(g)).sum()
        losst = losst + (b * torch.tensor(g)).sum()
    lossd.backward()
    losst.backward()
    close(xd.grad, xt.grad, dtype)
    for a, b in zip(hd_leaves, ht_leaves):
        close(a.grad, b.grad, dtype)
    pd, pt = dict(dm.named_parameters()), dict(tm.named_parameters())
    assert list(pd) == list(pt)
    for n in pt:
        assert pd[n].grad is not None, n
        close(pd[n].grad, pt[n].grad, dtype)
    return od, ot


DTYPES = ["float64", "float32"]


# ----------------------------------------------------------------------- cells
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["RNNCell", "RNNCell-relu", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("with_h", [False, True])
@pytest.mark.parametrize("batched", [True, False])
def test_cell_parity(torch, rng, kind, bias, dtype, with_h, batched):
    name, _, nl = kind.partition("-")
    kwargs = {"bias": bias}
    if nl:
        kwargs["nonlinearity"] = nl
    dm, tm = pair(getattr(nn, name), getattr(torch.nn, name), dtype, 4, 6, **kwargs)
    bshape = (3,) if batched else ()
    x = rng.standard_normal(bshape + (4,))
    hx = None
    if with_h:
        hx = rng.standard_normal(bshape + (6,))
        if name == "LSTMCell":
            hx = (hx, rng.standard_normal(bshape + (6,)))
    compare(dm, tm, x, hx, dtype, rng)


# ------------------------------------------------------------------ sequences
def seq_shape(batched, batch_first, T=5, B=3):
    if not batched:
        return (T,)
    return (B, T) if batch_first else (T, B)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["RNN", "RNN-relu", "LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_h", [False, True])
@pytest.mark.parametrize("batched", [True, False])
def test_sequence_parity(torch, rng, kind, dtype, bidirectional, batch_first, with_h, batched):
    name, _, nl = kind.partition("-")
    kwargs = dict(num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    if nl:
        kwargs["nonlinearity"] = nl
    dm, tm = pair(getattr(nn, name), getattr(torch.nn, name), dtype, 4, 5, **kwargs)
    x = rng.standard_normal(seq_shape(batched, batch_first) + (4,))
    hx = None
    if with_h:
        L = 2 * (2 if bidirectional else 1)
        hshape = (L, 3, 5) if batched else (L, 5)
        hx = rng.standard_normal(hshape)
        if name == "LSTM":
            hx = (hx, rng.standard_normal(hshape))
    compare(dm, tm, x, hx, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_sequence_no_bias_three_layers(torch, rng, kind, dtype):
    dm, tm = pair(getattr(nn, kind), getattr(torch.nn, kind), dtype, 3, 4, num_layers=3, bias=False,
                  bidirectional=True)
    compare(dm, tm, rng.standard_normal((6, 2, 3)), None, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_h", [False, True])
def test_lstm_proj_size(torch, rng, dtype, bidirectional, with_h):
    dm, tm = pair(nn.LSTM, torch.nn.LSTM, dtype, 4, 6, num_layers=2, proj_size=3,
                  bidirectional=bidirectional, batch_first=True)
    L = 2 * (2 if bidirectional else 1)
    hx = (rng.standard_normal((L, 2, 3)), rng.standard_normal((L, 2, 6))) if with_h else None
    compare(dm, tm, rng.standard_normal((2, 5, 4)), hx, dtype, rng)
    assert repr(dm) == repr(tm)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_dropout_eval_is_identity_and_train_is_not(torch, rng, kind):
    dm, tm = pair(getattr(nn, kind), getattr(torch.nn, kind), "float64", 4, 5, num_layers=3, dropout=0.5)
    dm.eval()
    tm.eval()
    compare(dm, tm, rng.standard_normal((5, 2, 4)), None, "float64", rng)
    # training mode: dropout between layers changes the output, and gradients still flow
    dm.train()
    x = dg.tensor(rng.standard_normal((5, 2, 4)), requires_grad=True)
    dm.eval()
    ref = arr(dm(x)[0])
    dm.train()
    dg.manual_seed(0)
    out = dm(x)[0]
    assert not np.allclose(arr(out), ref)
    out.sum().backward()
    assert x.grad is not None and np.isfinite(arr(x.grad)).all()


def test_dropout_warning_and_validation():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        nn.GRU(3, 4, dropout=0.2)
    with pytest.raises(ValueError, match="dropout should be a number"):
        nn.LSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        nn.RNN(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="proj_size has to be smaller"):
        nn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        nn.RNN(3, 4, nonlinearity="gelu")


# ------------------------------------------------------- structure and repr
CONFIGS = [
    ((3, 4), {}),
    ((3, 4, 2), {}),
    ((3, 4), dict(num_layers=3, bias=False, batch_first=True, dropout=0.25, bidirectional=True)),
    ((3, 4), dict(bidirectional=True)),
]


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_state_dict_keys_shapes_and_repr(torch, kind, cfg):
    args, kwargs = CONFIGS[cfg]
    dm, tm = getattr(nn, kind)(*args, **kwargs), getattr(torch.nn, kind)(*args, **kwargs)
    sd, st = dm.state_dict(), tm.state_dict()
    assert list(sd) == list(st)
    for k in st:
        assert tuple(sd[k].shape) == tuple(st[k].shape), k
    assert repr(dm) == repr(tm)
    # a torch state dict loads strictly
    dm.load_state_dict({k: dg.tensor(v.numpy().copy()) for k, v in st.items()})
    for k in st:
        np.testing.assert_array_equal(arr(dm.state_dict()[k]), st[k].numpy())
    dm.flatten_parameters()
    assert len(dm.all_weights) == len(tm.all_weights)


def test_rnn_positional_nonlinearity_and_repr(torch):
    dm, tm = nn.RNN(3, 4, 2, "relu"), torch.nn.RNN(3, 4, 2, "relu")
    assert dm.nonlinearity == tm.nonlinearity == "relu"
    assert repr(dm) == repr(tm)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("kwargs", [{}, {"bias": False}])
def test_cell_state_dict_and_repr(torch, kind, kwargs):
    dm, tm = getattr(nn, kind)(3, 4, **kwargs), getattr(torch.nn, kind)(3, 4, **kwargs)
    assert list(dm.state_dict()) == list(tm.state_dict())
    for k, v in tm.state_dict().items():
        assert tuple(dm.state_dict()[k].shape) == tuple(v.shape)
    assert repr(dm) == repr(tm)
    if kind == "RNNCell":
        a, b = nn.RNNCell(3, 4, nonlinearity="relu"), torch.nn.RNNCell(3, 4, nonlinearity="relu")
        assert repr(a) == repr(b)


@pytest.mark.parametrize("mod", [lambda: nn.LSTM(3, 16, 2, bidirectional=True), lambda: nn.GRUCell(3, 16),
                                 lambda: nn.RNN(3, 16)])
def test_initialization_bounds(mod):
    m = mod()
    bound = 1 / math.sqrt(16)
    for n, p in m.named_parameters():
        a = arr(p)
        assert a.min() >= -bound and a.max() <= bound, n
        assert a.std() > bound / 4, n  # not constant
    assert str(next(m.parameters()).dtype).endswith("float32")


def test_factory_kwargs_dtype():
    m = nn.GRU(3, 4, dtype=dg.float64)
    assert all(str(p.dtype).endswith("float64") for p in m.parameters())


# --------------------------------------------------------------- double backward
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_double_backward_matches_torch(torch, rng, kind):
    dm, tm = pair(getattr(nn, kind), getattr(torch.nn, kind), "float64", 3, 4, num_layers=2,
                  bidirectional=True)
    x = rng.standard_normal((4, 2, 3))
    xd = dg.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    (gd,) = dg.autograd.grad((dm(xd)[0] ** 2).sum(), xd, create_graph=True)
    (gt,) = torch.autograd.grad((tm(xt)[0] ** 2).sum(), xt, create_graph=True)
    close(gd, gt, "float64")
    (gd ** 2).sum().backward()
    (gt ** 2).sum().backward()
    close(xd.grad, xt.grad, "float64")
    for (n, p), (_, q) in zip(dm.named_parameters(), tm.named_parameters()):
        close(p.grad, q.grad, "float64")


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_double_backward_matches_torch(torch, rng, kind):
    dm, tm = pair(getattr(nn, kind), getattr(torch.nn, kind), "float64", 3, 4)
    x = rng.standard_normal((2, 3))
    xd = dg.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    (gd,) = dg.autograd.grad(sum((o ** 3).sum() for o in flatten(dm(xd))), xd, create_graph=True)
    (gt,) = torch.autograd.grad(sum((o ** 3).sum() for o in flatten(tm(xt))), xt, create_graph=True)
    close(gd, gt, "float64")
    gd.sum().backward()
    gt.sum().backward()
    close(xd.grad, xt.grad, "float64")


# ----------------------------------------------------------------------- errors
def test_errors():
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D"):
        nn.GRU(3, 4)(dg.zeros(2, 2, 2, 3))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        nn.RNN(3, 4)(dg.zeros(5, 2, 2))
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        nn.RNN(3, 4)(dg.zeros(5, 2, 3), dg.zeros(1, 3, 4))
    with pytest.raises(RuntimeError, match="Expected hidden\\[1\\] size"):
        nn.LSTM(3, 4)(dg.zeros(5, 2, 3), (dg.zeros(1, 2, 4), dg.zeros(1, 2, 5)))
    with pytest.raises(RuntimeError, match="hx should also be 2-D"):
        nn.GRU(3, 4)(dg.zeros(5, 3), dg.zeros(1, 1, 4))
    with pytest.raises(RuntimeError, match="hx should also be 3-D"):
        nn.GRU(3, 4)(dg.zeros(5, 1, 3), dg.zeros(1, 4))
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D"):
        nn.GRUCell(3, 4)(dg.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="Expected hx\\[1\\] to be 1D or 2D"):
        nn.LSTMCell(3, 4)(dg.zeros(2, 3), (dg.zeros(2, 4), dg.zeros(1, 2, 4)))
