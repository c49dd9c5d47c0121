"""BatchNorm1d/2d, GroupNorm and their functionals against PyTorch with the same
weights: forward values, the gradients of the input and the parameters, running
statistics over several training steps, eval mode, state_dict, and a gradcheck."""
import numpy as np
import pytest

import distgrad as dg
import distgrad.nn.functional as F
from distgrad import nn
from distgrad.autograd import gradcheck

TOL = {"float64": (1e-10, 1e-12), "float32": (1e-5, 1e-5)}


def arr(t):
    return t.detach().numpy()


def close(a, b, dtype="float64"):
    rtol, atol = TOL[dtype]
    a = a if isinstance(a, np.ndarray) else arr(a)
    b = b if isinstance(b, np.ndarray) else b.detach().numpy()
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(4321)


def _pair(torch, dg_cls, t_cls, args, kwargs, dtype, rng):
    ours = dg_cls(*args, **kwargs)
    theirs = t_cls(*args, **kwargs)
    if dtype == "float64":
        ours.double()
        theirs.double()
    with dg.no_grad(), torch.no_grad():
        for (n, p), (tn, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert n == tn
            p.copy_(dg.tensor(rng.standard_normal(tuple(p.shape)).astype(dtype)))
            tp.copy_(torch.from_numpy(arr(p).copy()))
    return ours, theirs


def _step(torch, ours, theirs, x, rng, dtype):
    """One forward/backward under a random upstream gradient; compares output and grads."""
    xd = dg.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    yd, yt = ours(xd), theirs(xt)
    close(yd, yt, dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    yd.backward(dg.tensor(g))
    yt.backward(torch.tensor(g))
    close(xd.grad, xt.grad, dtype)
    for (n, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        close(p.grad, tp.grad, dtype)
        p.grad = None
        tp.grad = None


def _check_buffers(ours, theirs, dtype):
    sd, st = ours.state_dict(), theirs.state_dict()
    assert list(sd) == list(st)
    for k in sd:
        if k == "num_batches_tracked":
            assert sd[k].dtype == dg.int64
            assert int(sd[k].item()) == int(st[k].item())
        else:
            close(sd[k], st[k], dtype)


SHAPES = [("BatchNorm1d", (8, 3)), ("BatchNorm1d", (5, 3, 7)), ("BatchNorm2d", (4, 3, 5, 6))]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,shape", SHAPES)
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False}, {"momentum": 0.3, "eps": 1e-3},
                                    {"bias": False}])
def test_batchnorm_train_eval_parity(torch, rng, dtype, name, shape, kwargs):
    ours, theirs = _pair(torch, getattr(nn, name), getattr(torch.nn, name), (3,), kwargs, dtype, rng)
    for _ in range(4):
        x = (rng.standard_normal(shape) * 2.0 + 0.5).astype(dtype)
        _step(torch, ours, theirs, x, rng, dtype)
        _check_buffers(ours, theirs, dtype)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal(shape).astype(dtype)
    _step(torch, ours, theirs, x, rng, dtype)
    _check_buffers(ours, theirs, dtype)
    assert int(ours.num_batches_tracked.item()) == 4


@pytest.mark.parametrize("name,shape", SHAPES)
def test_batchnorm_no_running_stats(torch, rng, name, shape):
    ours, theirs = _pair(torch, getattr(nn, name), getattr(torch.nn, name), (3,),
                         {"track_running_stats": False}, "float64", rng)
    assert ours.running_mean is None and ours.running_var is None and ours.num_batches_tracked is None
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]
    x = rng.standard_normal(shape)
    _step(torch, ours, theirs, x, rng, "float64")
    ours.eval()
    theirs.eval()
    _step(torch, ours, theirs, x, rng, "float64")  # batch statistics in eval as well


def test_state_dict_roundtrip_and_keys(torch, rng):
    ours, theirs = _pair(torch, nn.BatchNorm2d, torch.nn.BatchNorm2d, (3,), {}, "float64", rng)
    for _ in range(2):
        _step(torch, ours, theirs, rng.standard_normal((2, 3, 4, 4)), rng, "float64")
    assert list(ours.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    fresh = nn.BatchNorm2d(3).double()
    fresh.load_state_dict(ours.state_dict())
    _check_buffers(fresh, theirs, "float64")
    seq = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    tseq = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    assert list(seq.state_dict()) == list(tseq.state_dict())
    assert [n for n, _ in seq.named_buffers()] == [n for n, _ in tseq.named_buffers()]


def test_repr_and_reset(torch):
    for kw in ({}, {"momentum": None, "affine": False}, {"track_running_stats": False, "eps": 1e-3}):
        assert repr(nn.BatchNorm1d(4, **kw)) == repr(torch.nn.BatchNorm1d(4, **kw))
        assert repr(nn.BatchNorm2d(4, **kw)) == repr(torch.nn.BatchNorm2d(4, **kw))
    assert repr(nn.GroupNorm(2, 4)) == repr(torch.nn.GroupNorm(2, 4))
    m = nn.BatchNorm1d(3)
    m(dg.randn(4, 3))
    m.reset_running_stats()
    assert arr(m.running_mean).tolist() == [0.0] * 3 and arr(m.running_var).tolist() == [1.0] * 3
    assert int(m.num_batches_tracked.item()) == 0


def test_dimension_errors():
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\)"):
        nn.BatchNorm1d(3)(dg.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(3)(dg.randn(2, 3, 4))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm1d(3)(dg.randn(1, 3))
    with pytest.raises(RuntimeError, match="running_mean should contain 3 elements not 2"):
        F.batch_norm(dg.randn(4, 3), dg.zeros(2), dg.ones(2))
    with pytest.raises(ValueError, match=r"num_channels \(6\) must be divisible by num_groups \(4\)"):
        nn.GroupNorm(4, 6)
    with pytest.raises(RuntimeError, match="Expected number of channels in input to be divisible by num_groups"):
        F.group_norm(dg.randn(2, 6, 4), 4)


@pytest.mark.parametrize("training", [True, False])
def test_functional_batch_norm(torch, rng, training):
    x = rng.standard_normal((4, 3, 5))
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    rmd, rvd, rmt, rvt = dg.tensor(rm), dg.tensor(rv), torch.tensor(rm), torch.tensor(rv)
    yd = F.batch_norm(dg.tensor(x), rmd, rvd, dg.tensor(w), dg.tensor(b), training, 0.2, 1e-4)
    yt = torch.nn.functional.batch_norm(torch.tensor(x), rmt, rvt, torch.tensor(w), torch.tensor(b),
                                        training, 0.2, 1e-4)
    close(yd, yt)
    close(rmd, rmt)
    close(rvd, rvt)
    # training without running statistics
    yd = F.batch_norm(dg.tensor(x), None, None, training=True)
    yt = torch.nn.functional.batch_norm(torch.tensor(x), None, None, training=True)
    close(yd, yt)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("groups,shape", [(1, (2, 6, 5)), (3, (2, 6, 5)), (6, (3, 6, 4, 4)), (2, (4, 6))])
@pytest.mark.parametrize("affine", [True, False])
def test_groupnorm_parity(torch, rng, dtype, groups, shape, affine):
    ours, theirs = _pair(torch, nn.GroupNorm, torch.nn.GroupNorm, (groups, 6), {"affine": affine, "eps": 1e-4},
                         dtype, rng)
    _step(torch, ours, theirs, (rng.standard_normal(shape) * 3 + 1).astype(dtype), rng, dtype)
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_batch_norm(rng, training):
    x = dg.tensor(rng.standard_normal((4, 3, 2)), requires_grad=True)
    w = dg.tensor(rng.standard_normal(3), requires_grad=True)
    b = dg.tensor(rng.standard_normal(3), requires_grad=True)
    rm, rv = dg.tensor(rng.standard_normal(3)), dg.tensor(rng.random(3) + 0.5)
    assert gradcheck(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.0),
                     (x, w, b))


def test_gradcheck_group_norm(rng):
    x = dg.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    w = dg.tensor(rng.standard_normal(4), requires_grad=True)
    b = dg.tensor(rng.standard_normal(4), requires_grad=True)
    assert gradcheck(lambda x, w, b: F.group_norm(x, 2, w, b), (x, w, b))


def test_double_backward_batch_norm(torch, rng):
    x = rng.standard_normal((5, 3))
    w = rng.standard_normal(3)
    xd, wd = dg.tensor(x, requires_grad=True), dg.tensor(w, requires_grad=True)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yd = F.batch_norm(xd, None, None, wd, training=True)
    yt = torch.nn.functional.batch_norm(xt, None, None, wt, training=True)
    (gd,) = dg.autograd.grad((yd ** 3).sum(), xd, create_graph=True)
    (gt,) = torch.autograd.grad((yt ** 3).sum(), xt, create_graph=True)
    close(gd, gt)
    (hd,) = dg.autograd.grad((gd * gd).sum(), wd)
    (ht,) = torch.autograd.grad((gt * gt).sum(), wt)
    close(hd, ht)
