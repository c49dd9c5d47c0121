"""Breadth of ``distgrad.optim`` against PyTorch in float64: the optimizers added
beside SGD/Adam (Adamax, NAdam, RAdam, ASGD, Rprop, SparseAdam), PyTorch's keyword
arguments on every optimizer (``foreach``/``fused``/``capturable``/``differentiable``/
``maximize``...), state dicts with PyTorch's keys, and the schedulers (chainable forms,
MultiplicativeLR, ChainedScheduler, CyclicLR)."""
import copy
import inspect

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn, optim
from distgrad.optim import lr_scheduler

torch = pytest.importorskip("torch")
import torch.optim.lr_scheduler as tsched  # noqa: E402

TOL = dict(rtol=1e-12, atol=1e-12)
SHAPES = [(3, 4), (4,), ()]
STEPS = 12


def _data(seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in SHAPES]
    # a bias that flips sign every few steps, so Rprop's sign logic sees both cases
    grads = [[rng.standard_normal(s) + (0.4 if t % 3 else -0.3) for s in SHAPES] for t in range(steps)]
    return init, grads


def _groups(params, lr):
    return [{"params": params[:2]}, {"params": params[2:], "lr": lr * 0.5, "weight_decay": 0.03}]


def _build(lib, nnmod, cls, kw, init, groups):
    params = [nnmod.Parameter(lib.tensor(a.copy())) for a in init]
    opt = cls(_groups(params, kw.get("lr", 1e-2)) if groups else params, **kw)
    return params, opt


def _set_grads(lib, params, gs):
    for p, g in zip(params, gs):
        p.grad = lib.tensor(g)


def _state_np(opt, params):
    sd = opt.state_dict()["state"]
    return {k: {n: np.asarray(v.detach().numpy() if hasattr(v, "detach") else v, dtype=float)
                for n, v in s.items()} for k, s in sd.items()}


def _assert_same(a_params, a_opt, b_params, b_opt):
    for p, q in zip(a_params, b_params):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), **TOL)
    sa, sb = _state_np(a_opt, a_params), _state_np(b_opt, b_params)
    assert list(sa) == list(sb)
    for k in sb:
        assert set(sa[k]) == set(sb[k]), (k, set(sa[k]), set(sb[k]))
        for n in sb[k]:
            np.testing.assert_allclose(sa[k][n], sb[k][n], **TOL, err_msg=n)


CASES = [
    ("Adamax", dict(lr=0.02)),
    ("Adamax", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, maximize=True)),
    ("NAdam", dict(lr=0.02)),
    ("NAdam", dict(lr=0.02, weight_decay=0.1, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=0.02)),
    ("RAdam", dict(lr=0.02, betas=(0.8, 0.9), weight_decay=0.1)),  # rectified from step 6
    ("RAdam", dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("ASGD", dict(lr=0.05)),
    ("ASGD", dict(lr=0.05, lambd=0.01, alpha=0.6, t0=4, weight_decay=0.02, maximize=True)),
    ("Rprop", dict(lr=0.01)),
    ("Rprop", dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.08), maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, foreach=False, fused=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.2, maximize=True, foreach=True)),
    ("Adam", dict(lr=0.02, amsgrad=True, weight_decay=0.1, fused=False, capturable=False)),
    ("Adam", dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True, maximize=True, foreach=True)),
    ("AdamW", dict(lr=1e-2, betas=(0.9, 0.95), fused=False)),
    ("AdamW", dict(lr=1e-2, amsgrad=True, maximize=True, fused=True)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1, maximize=True, fused=False)),
    ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.01, maximize=True, foreach=True, capturable=False)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, maximize=True, foreach=False)),
]
IDS = [f"{c}-{i}" for i, (c, _) in enumerate(CASES)]


@pytest.mark.parametrize("groups", [False, True], ids=["one_group", "two_groups"])
@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_steps_match_torch(cls, kw, groups):
    init, grads = _data(1)
    a_params, a = _build(dg, nn, getattr(optim, cls), kw, init, groups)
    b_params, b = _build(torch, torch.nn, getattr(torch.optim, cls), kw, init, groups)
    moved = False
    for gs in grads:
        _set_grads(dg, a_params, gs)
        _set_grads(torch, b_params, gs)
        a.step()
        b.step()
        _assert_same(a_params, a, b_params, b)
        moved |= not np.allclose(a_params[0].detach().numpy(), init[0])
    assert moved
    ga, gb = a.state_dict()["param_groups"], b.state_dict()["param_groups"]
    assert [list(g) for g in ga] == [list(g) for g in gb]  # torch's keys, in torch's order
    for x, y in zip(ga, gb):
        for k in y:
            assert x[k] == y[k], k


@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_state_dict_round_trip_continues_as_torch(cls, kw):
    init, grads = _data(2)
    a_params, a = _build(dg, nn, getattr(optim, cls), kw, init, True)
    b_params, b = _build(torch, torch.nn, getattr(torch.optim, cls), kw, init, True)
    for gs in grads[:5]:
        _set_grads(dg, a_params, gs)
        _set_grads(torch, b_params, gs)
        a.step()
        b.step()
    sd = copy.deepcopy(a.state_dict())
    # a fresh optimizer over fresh parameters holding the same values
    c_params = [nn.Parameter(dg.tensor(p.detach().numpy().copy())) for p in a_params]
    c = getattr(optim, cls)(_groups(c_params, kw.get("lr", 1e-2)), **kw)
    c.load_state_dict(sd)
    # torch does the same round trip (loading casts 0-d float32 entries such as NAdam's
    # mu_product to the parameters' dtype, which later steps see)
    d_params = [torch.nn.Parameter(p.detach().clone()) for p in b_params]
    d = getattr(torch.optim, cls)(_groups(d_params, kw.get("lr", 1e-2)), **kw)
    d.load_state_dict(copy.deepcopy(b.state_dict()))
    _assert_same(c_params, c, d_params, d)
    for gs in grads[5:]:
        _set_grads(dg, c_params, gs)
        _set_grads(torch, d_params, gs)
        c.step()
        d.step()
        _assert_same(c_params, c, d_params, d)
    assert c.state_dict()["param_groups"][1]["lr"] == pytest.approx(kw.get("lr", 1e-2) * 0.5)


def test_maximize_ascends():
    for cls, kw in CASES:
        if not kw.get("maximize"):
            continue
        p = nn.Parameter(dg.tensor(np.array([1.0, -2.0])))
        opt = getattr(optim, cls)([p], **kw)
        for _ in range(3):
            opt.zero_grad()
            loss = -(p * p).sum()  # maximum at 0
            loss.backward()
            opt.step()
        assert float(-(p * p).sum()) > -5.0, cls


OPTIMIZERS = ["SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "RMSprop", "LBFGS", "Adamax", "NAdam", "RAdam",
              "ASGD", "Rprop", "SparseAdam"]


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_signature_matches_torch(cls):
    ours = inspect.signature(getattr(optim, cls).__init__).parameters
    theirs = inspect.signature(getattr(torch.optim, cls).__init__).parameters
    assert list(ours) == list(theirs)
    for name, tp in theirs.items():
        op = ours[name]
        assert op.kind == tp.kind, name
        if tp.default is not inspect.Parameter.empty:
            assert op.default == tp.default, name


FLAGS = [(c, f) for c in OPTIMIZERS if c not in ("LBFGS", "SparseAdam") for f in ("foreach", "fused", "capturable")
         if f in inspect.signature(getattr(torch.optim, c).__init__).parameters]


@pytest.mark.parametrize("cls,flag", FLAGS)
@pytest.mark.parametrize("value", [True, False])
def test_implementation_flags_are_accepted(cls, flag, value):
    p = nn.Parameter(dg.tensor(np.ones(3)))
    opt = getattr(optim, cls)([p], **{flag: value})
    assert opt.param_groups[0][flag] is value
    p.grad = dg.tensor(np.ones(3))
    opt.step()
    assert not np.allclose(p.detach().numpy(), 1.0)


@pytest.mark.parametrize("cls", [c for c in OPTIMIZERS if c not in ("LBFGS", "SparseAdam")])
def test_differentiable_is_refused_clearly(cls):
    p = nn.Parameter(dg.tensor(np.ones(3)))
    with pytest.raises(NotImplementedError, match="differentiable"):
        getattr(optim, cls)([p], differentiable=True)
    opt = getattr(optim, cls)([p], differentiable=False)
    assert opt.param_groups[0]["differentiable"] is False


@pytest.mark.parametrize("cls", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_fused_with_foreach_raises_as_torch(cls):
    p = nn.Parameter(dg.tensor(np.ones(3)))
    tp = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(RuntimeError) as theirs:
        getattr(torch.optim, cls)([tp], fused=True, foreach=True)
    with pytest.raises(RuntimeError) as ours:
        getattr(optim, cls)([p], fused=True, foreach=True)
    assert str(ours.value) == str(theirs.value)


INVALID = [
    ("SGD", dict(lr=-0.1)), ("SGD", dict(momentum=-0.5)), ("SGD", dict(weight_decay=-1.0)),
    ("SGD", dict(nesterov=True)),
    ("Adam", dict(lr=-1.0)), ("Adam", dict(eps=-1.0)), ("Adam", dict(betas=(1.0, 0.9))),
    ("Adam", dict(betas=(0.9, 1.5))), ("Adam", dict(weight_decay=-0.1)), ("Adam", dict(betas=(0, 0.9))),
    ("AdamW", dict(betas=(0.9, -0.1))),
    ("Adamax", dict(lr=-1.0)), ("Adamax", dict(eps=-1.0)), ("Adamax", dict(betas=(1.0, 0.9))),
    ("Adamax", dict(betas=(0.9, 1.0))), ("Adamax", dict(weight_decay=-1.0)),
    ("NAdam", dict(lr=-1.0)), ("NAdam", dict(momentum_decay=-1.0)), ("NAdam", dict(betas=(0.9, 2.0))),
    ("RAdam", dict(lr=-1.0)), ("RAdam", dict(eps=-1.0)), ("RAdam", dict(weight_decay=-1.0)),
    ("ASGD", dict(lr=-1.0)), ("ASGD", dict(weight_decay=-1.0)),
    ("Rprop", dict(lr=-1.0)), ("Rprop", dict(etas=(1.1, 1.2))), ("Rprop", dict(etas=(0.5, 0.9))),
    ("SparseAdam", dict(lr=0.0)), ("SparseAdam", dict(eps=0.0)), ("SparseAdam", dict(betas=(0.9, 1.0))),
    ("Adagrad", dict(lr_decay=-1.0)), ("Adadelta", dict(rho=1.5)), ("RMSprop", dict(alpha=-1.0)),
]


@pytest.mark.parametrize("cls,kw", INVALID, ids=[f"{c}-{i}" for i, (c, _) in enumerate(INVALID)])
def test_invalid_arguments_raise_torchs_error(cls, kw):
    with pytest.raises(Exception) as theirs:
        getattr(torch.optim, cls)([torch.nn.Parameter(torch.ones(2))], **kw)
    with pytest.raises(Exception) as ours:
        getattr(optim, cls)([nn.Parameter(dg.ones(2))], **kw)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


def test_sparse_adam_refuses_dense_gradients_as_torch():
    tp = torch.nn.Parameter(torch.ones(2))
    tp.grad = torch.ones(2)
    with pytest.raises(RuntimeError) as theirs:
        torch.optim.SparseAdam([tp]).step()
    p = nn.Parameter(dg.ones(2))
    opt = optim.SparseAdam([p])
    opt.step()  # no gradient: nothing to do
    p.grad = dg.ones(2)
    with pytest.raises(RuntimeError) as ours:
        opt.step()
    assert str(ours.value) == str(theirs.value)
    np.testing.assert_array_equal(p.detach().numpy(), [1.0, 1.0])


def test_lbfgs_still_matches_torch_signature_and_runs():
    p = nn.Parameter(dg.tensor(np.array([3.0, -1.0])))
    opt = optim.LBFGS([p], lr=1, max_iter=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((p - 1.0) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(p.detach().numpy(), [1.0, 1.0], atol=1e-6)


# ---------------------------------------------------------------- schedulers
def _opt(lib, nnmod, optmod, cls="SGD", **kw):
    params = [nnmod.Parameter(lib.zeros(1)), nnmod.Parameter(lib.zeros(1))]
    groups = [{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.02}]
    if cls == "SGD":
        kw.setdefault("momentum", 0.9)
    return getattr(optmod, cls)(groups, lr=0.1, **kw)


def _sched(kind, opt, S):
    if kind == "multiplicative":
        return S.MultiplicativeLR(opt, lr_lambda=lambda e: 0.95)
    if kind == "multiplicative_list":
        return S.MultiplicativeLR(opt, lr_lambda=[lambda e: 0.9, lambda e: 1.0 - 0.01 * e])
    if kind == "lambda":
        return S.LambdaLR(opt, lr_lambda=[lambda e: 0.9 ** e, lambda e: 1.0 / (e + 1)])
    if kind == "step":
        return S.StepLR(opt, step_size=3, gamma=0.5)
    if kind == "multistep":
        return S.MultiStepLR(opt, milestones=[2, 5, 5, 9], gamma=0.3)
    if kind == "constant":
        return S.ConstantLR(opt, factor=0.25, total_iters=4)
    if kind == "linear":
        return S.LinearLR(opt, start_factor=0.2, end_factor=0.9, total_iters=6)
    if kind == "exponential":
        return S.ExponentialLR(opt, gamma=0.9)
    if kind == "polynomial":
        return S.PolynomialLR(opt, total_iters=8, power=2.0)
    if kind == "cosine":
        return S.CosineAnnealingLR(opt, T_max=5, eta_min=0.001)  # past T_max: cosine comes back up
    if kind == "sequential":
        return S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=3),
                                    S.ExponentialLR(opt, gamma=0.8)], milestones=[4])
    if kind == "chained":
        return S.ChainedScheduler([S.ConstantLR(opt, factor=0.5, total_iters=3),
                                   S.ExponentialLR(opt, gamma=0.9)])
    if kind == "chained_cosine":
        return S.ChainedScheduler([S.CosineAnnealingLR(opt, T_max=6), S.StepLR(opt, 4, gamma=0.5)], optimizer=opt)
    if kind == "cyclic":
        return S.CyclicLR(opt, base_lr=0.01, max_lr=[0.1, 0.05], step_size_up=4)
    if kind == "cyclic_triangular2":
        return S.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=5, mode="triangular2",
                          base_momentum=0.7, max_momentum=0.95)
    if kind == "cyclic_exp_range":
        return S.CyclicLR(opt, base_lr=[0.01, 0.02], max_lr=0.1, step_size_up=3, mode="exp_range", gamma=0.9)
    if kind == "cyclic_scale_fn":
        return S.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2, scale_fn=lambda x: 1 / (1 + 0.1 * x),
                          scale_mode="iterations", cycle_momentum=False)
    raise ValueError(kind)


SCHED_KINDS = ["multiplicative", "multiplicative_list", "lambda", "step", "multistep", "constant", "linear",
               "exponential", "polynomial", "cosine", "sequential", "chained", "chained_cosine", "cyclic",
               "cyclic_triangular2", "cyclic_exp_range", "cyclic_scale_fn"]


def _trace(opt, s, n):
    out = []
    for _ in range(n):
        opt.step()
        s.step()
        g = opt.param_groups
        out.append([x["lr"] for x in g] + list(s.get_last_lr())
                   + [x.get("momentum", x.get("betas", (0,))[0]) for x in g])
    return out


@pytest.mark.parametrize("kind", SCHED_KINDS)
def test_scheduler_sequence_matches_torch(kind):
    opt = _opt(dg, nn, optim)
    topt = _opt(torch, torch.nn, torch.optim)
    s, ts = _sched(kind, opt, lr_scheduler), _sched(kind, topt, tsched)
    assert s.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-12)
    a, b = _trace(opt, s, 25), _trace(topt, ts, 25)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert len({round(r[0], 12) for r in a}) > 1  # the schedule does move


@pytest.mark.parametrize("kind", ["cyclic", "cyclic_triangular2"])
def test_cyclic_momentum_on_adam_betas(kind):
    opt = _opt(dg, nn, optim, "Adam")
    topt = _opt(torch, torch.nn, torch.optim, "Adam")
    s, ts = _sched(kind, opt, lr_scheduler), _sched(kind, topt, tsched)
    a, b = _trace(opt, s, 12), _trace(topt, ts, 12)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert opt.param_groups[0]["betas"][1] == 0.999
    assert len({r[-1] for r in a}) > 2


def test_cyclic_momentum_needs_momentum():
    p = nn.Parameter(dg.zeros(1))
    with pytest.raises(ValueError, match="momentum or beta1"):
        lr_scheduler.CyclicLR(optim.Adagrad([p]), 0.01, 0.1)
    with pytest.raises(ValueError, match="mode is invalid"):
        lr_scheduler.CyclicLR(optim.SGD([p], momentum=0.9), 0.01, 0.1, mode="nope")


@pytest.mark.parametrize("kind", SCHED_KINDS)
def test_scheduler_state_dict_round_trip(kind):
    opt = _opt(dg, nn, optim)
    s = _sched(kind, opt, lr_scheduler)
    _trace(opt, s, 7)
    osd, ssd = copy.deepcopy(opt.state_dict()), copy.deepcopy(s.state_dict())
    assert "optimizer" not in ssd
    rest = _trace(opt, s, 10)
    opt2 = _opt(dg, nn, optim)
    s2 = _sched(kind, opt2, lr_scheduler)
    opt2.load_state_dict(osd)
    s2.load_state_dict(ssd)
    np.testing.assert_allclose(_trace(opt2, s2, 10), rest, rtol=1e-15)


@pytest.mark.parametrize("kind", ["multiplicative", "lambda", "chained", "sequential", "cyclic", "step"])
def test_scheduler_state_dict_keys_match_torch(kind):
    opt, topt = _opt(dg, nn, optim), _opt(torch, torch.nn, torch.optim)
    s, ts = _sched(kind, opt, lr_scheduler), _sched(kind, topt, tsched)
    _trace(opt, s, 3)
    _trace(topt, ts, 3)
    a, b = s.state_dict(), ts.state_dict()
    assert set(a) <= set(b) | {"_is_initial", "_get_lr_called_within_step"}
    assert a["_last_lr"] == pytest.approx(b["_last_lr"], rel=1e-12)
    if "last_epoch" in b:
        assert a["last_epoch"] == b["last_epoch"]


def test_callable_object_lambda_state_is_saved():
    class Decay:
        def __init__(self, rate):
            self.rate = rate

        def __call__(self, e):
            return self.rate ** e

    opt = _opt(dg, nn, optim)
    s = lr_scheduler.LambdaLR(opt, Decay(0.5))
    sd = s.state_dict()
    assert sd["lr_lambdas"] == [{"rate": 0.5}, {"rate": 0.5}]
    opt2 = _opt(dg, nn, optim)
    s2 = lr_scheduler.LambdaLR(opt2, [Decay(0.1), Decay(0.2)])
    s2.load_state_dict(sd)
    assert [f.rate for f in s2.lr_lambdas] == [0.5, 0.5]


def test_step_with_epoch_uses_closed_form_and_warns():
    opt, topt = _opt(dg, nn, optim), _opt(torch, torch.nn, torch.optim)
    s, ts = lr_scheduler.StepLR(opt, 2, 0.5), tsched.StepLR(topt, 2, 0.5)
    with pytest.warns(UserWarning):
        s.step(5)
    with pytest.warns(UserWarning):
        ts.step(5)
    assert s.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-15)
    assert s.get_last_lr() == pytest.approx([0.1 * 0.25, 0.02 * 0.25])


def test_verbose_is_gone_as_in_torch():
    opt = _opt(dg, nn, optim)
    with pytest.raises(TypeError):
        tsched.StepLR(_opt(torch, torch.nn, torch.optim), 2, verbose=True)
    with pytest.raises(TypeError):
        lr_scheduler.StepLR(opt, 2, verbose=True)


def test_chained_scheduler_rejects_plateau_and_other_optimizer():
    opt, other = _opt(dg, nn, optim), _opt(dg, nn, optim)
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        lr_scheduler.ChainedScheduler([lr_scheduler.ReduceLROnPlateau(opt)])
    with pytest.raises(ValueError, match="same optimizer"):
        lr_scheduler.ChainedScheduler([lr_scheduler.StepLR(opt, 2), lr_scheduler.StepLR(other, 2)])
    with pytest.raises(TypeError, match="lr_lambda should be a function"):
        lr_scheduler.MultiplicativeLR(opt, lr_lambda=0.5)


# ---------------------------------------------------------------- swa_utils
def _pair_models():
    torch.manual_seed(0)
    b = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)).double()
    a = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        p._data[...] = q.numpy()
    return a, b


def _swa_kwargs(kind):
    from distgrad.optim import swa_utils as DS
    from torch.optim import swa_utils as TS

    if kind == "ema_multi":
        return dict(multi_avg_fn=DS.get_ema_multi_avg_fn(0.9)), dict(multi_avg_fn=TS.get_ema_multi_avg_fn(0.9))
    if kind == "ema_fn":
        return dict(avg_fn=DS.get_ema_avg_fn(0.8)), dict(avg_fn=TS.get_ema_avg_fn(0.8))
    if kind == "swa_multi":
        return dict(multi_avg_fn=DS.get_swa_multi_avg_fn()), dict(multi_avg_fn=TS.get_swa_multi_avg_fn())
    if kind == "buffers":
        return dict(use_buffers=True), dict(use_buffers=True)
    return {}, {}


@pytest.mark.parametrize("kind", ["swa", "swa_multi", "ema_multi", "ema_fn", "buffers"])
def test_averaged_model_matches_torch(kind):
    from distgrad.optim import swa_utils as DS
    from torch.optim import swa_utils as TS

    rng = np.random.default_rng(3)
    a, b = _pair_models()
    ka, kb = _swa_kwargs(kind)
    A, B = DS.AveragedModel(a, **ka), TS.AveragedModel(b, **kb)
    for _ in range(4):
        for p, q in zip(a.parameters(), b.parameters()):
            d = rng.standard_normal(tuple(q.shape))
            p._data += d
            with torch.no_grad():
                q += torch.tensor(d)
        x = rng.standard_normal((5, 3))
        a(dg.tensor(x))
        b(torch.tensor(x))
        A.update_parameters(a)
        B.update_parameters(b)
    sa, sb = A.state_dict(), B.state_dict()
    assert list(sa) == list(sb)
    for k in sb:
        np.testing.assert_allclose(np.asarray(sa[k].detach().numpy(), float), sb[k].numpy().astype(float),
                                   rtol=1e-12, atol=1e-12, err_msg=k)
    assert int(A.n_averaged.item()) == 4
    assert not np.allclose(sa["module.0.weight"].numpy(), a.state_dict()["0.weight"].numpy())
    x = rng.standard_normal((2, 3))
    A.eval()
    B.eval()
    np.testing.assert_allclose(A(dg.tensor(x)).detach().numpy(), B(torch.tensor(x)).detach().numpy(), **TOL)

    loader = [rng.standard_normal((5, 3)) for _ in range(3)]
    DS.update_bn([dg.tensor(v) for v in loader], A)
    TS.update_bn([torch.tensor(v) for v in loader], B)
    assert not A.training
    for k in ("module.1.running_mean", "module.1.running_var"):
        np.testing.assert_allclose(A.state_dict()[k].numpy(), B.state_dict()[k].numpy(), **TOL)


def test_averaged_model_rejects_both_functions():
    from distgrad.optim import swa_utils as DS

    with pytest.raises(AssertionError):
        DS.AveragedModel(nn.Linear(2, 2), avg_fn=DS.get_swa_avg_fn(), multi_avg_fn=DS.get_swa_multi_avg_fn())
    with pytest.raises(ValueError, match="Invalid decay"):
        DS.get_ema_multi_avg_fn(1.5)


@pytest.mark.parametrize("strategy,epochs", [("cos", 4), ("linear", 3), ("cos", 0)])
def test_swalr_matches_torch(strategy, epochs):
    from distgrad.optim import swa_utils as DS
    from torch.optim import swa_utils as TS

    opt, topt = _opt(dg, nn, optim), _opt(torch, torch.nn, torch.optim)
    s = DS.SWALR(opt, [0.05, 0.01], anneal_epochs=epochs, anneal_strategy=strategy)
    ts = TS.SWALR(topt, [0.05, 0.01], anneal_epochs=epochs, anneal_strategy=strategy)
    a, b = _trace(opt, s, 8), _trace(topt, ts, 8)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert a[-1][:2] == pytest.approx([0.05, 0.01])
    sd = s.state_dict()
    assert "anneal_func" not in sd and sd["_anneal_strategy"] == strategy
    with pytest.raises(ValueError, match="anneal_strategy"):
        DS.SWALR(opt, 0.05, anneal_strategy="step")
