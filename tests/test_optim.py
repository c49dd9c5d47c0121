"""Optimizers, learning-rate schedulers and gradient clipping against PyTorch (float64)
and against the update formulas of PyTorch's documentation written in numpy."""
import copy
import math

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn, optim
from distgrad.optim import lr_scheduler

TOL = dict(rtol=1e-12, atol=1e-12)
SHAPES = [(3, 4), (4,), ()]
STEPS = 5


def arr(t):
    return t.detach().numpy()


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _init_and_grads(seed=0, shapes=SHAPES, steps=STEPS):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
    return init, grads


def run_dg(opt_cls, kw, init, grads, groups=None):
    params = [nn.Parameter(dg.tensor(a.copy())) for a in init]
    opt = opt_cls(params if groups is None else groups(params), **kw)
    history = []
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = None if g is None else dg.tensor(g)
        opt.step()
        history.append([arr(p).copy() for p in params])
    return params, opt, history


def run_torch(torch, opt_cls, kw, init, grads, groups=None):
    params = [torch.nn.Parameter(torch.tensor(a.copy())) for a in init]
    opt = opt_cls(params if groups is None else groups(params), **kw)
    history = []
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = None if g is None else torch.tensor(g)
        opt.step()
        history.append([p.detach().numpy().copy() for p in params])
    return params, opt, history


def assert_histories_equal(a, b, tol=TOL):
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b):
        for x, y in zip(step_a, step_b):
            np.testing.assert_allclose(x, y, **tol)


# ----------------------------------------------- numpy references (torch's docs)
def ref_sgd(init, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
            maximize=False):
    params = [a.copy() for a in init]
    bufs = [None] * len(params)
    out = []
    for gs in grads:
        for i, g in enumerate(gs):
            g = -g if maximize else g.copy()
            if weight_decay:
                g = g + weight_decay * params[i]
            if momentum:
                if bufs[i] is None:
                    bufs[i] = g.copy()
                else:
                    bufs[i] = momentum * bufs[i] + (1 - dampening) * g
                g = g + momentum * bufs[i] if nesterov else bufs[i]
            params[i] = params[i] - lr * g
        out.append([p.copy() for p in params])
    return out


def ref_adam(init, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             decoupled=False, maximize=False):
    b1, b2 = betas
    params = [a.copy() for a in init]
    m = [np.zeros_like(a) for a in init]
    v = [np.zeros_like(a) for a in init]
    vmax = [np.zeros_like(a) for a in init]
    out = []
    for t, gs in enumerate(grads, 1):
        for i, g in enumerate(gs):
            g = -g if maximize else g
            if weight_decay:
                if decoupled:
                    params[i] = params[i] * (1 - lr * weight_decay)
                else:
                    g = g + weight_decay * params[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mhat = m[i] / (1 - b1 ** t)
            if amsgrad:
                vmax[i] = np.maximum(vmax[i], v[i])
                vhat = vmax[i] / (1 - b2 ** t)
            else:
                vhat = v[i] / (1 - b2 ** t)
            params[i] = params[i] - lr * mhat / (np.sqrt(vhat) + eps)
        out.append([p.copy() for p in params])
    return out


SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "dampening": dict(lr=0.05, momentum=0.8, dampening=0.3),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, momentum=0.5, weight_decay=0.01),
    "maximize": dict(lr=0.1, momentum=0.9, maximize=True),
    "all": dict(lr=0.03, momentum=0.7, weight_decay=0.1, nesterov=True, maximize=True),
}

ADAM_CASES = {
    "plain": dict(lr=0.01),
    "betas_eps": dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
    "weight_decay": dict(lr=0.01, weight_decay=0.1),
    "amsgrad": dict(lr=0.01, amsgrad=True),
    "amsgrad_wd": dict(lr=0.01, amsgrad=True, weight_decay=0.05),
    "maximize": dict(lr=0.01, maximize=True),
}


# ---------------------------------------------------------------------- SGD
@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd_matches_reference(case):
    init, grads = _init_and_grads()
    _, _, hist = run_dg(optim.SGD, SGD_CASES[case], init, grads)
    assert_histories_equal(hist, ref_sgd(init, grads, **SGD_CASES[case]))


@pytest.mark.parametrize("case", list(SGD_CASES))
def test_sgd_matches_torch(torch, case):
    init, grads = _init_and_grads()
    _, _, a = run_dg(optim.SGD, SGD_CASES[case], init, grads)
    _, _, b = run_torch(torch, torch.optim.SGD, SGD_CASES[case], init, grads)
    assert_histories_equal(a, b)


def test_sgd_invalid_arguments():
    p = [nn.Parameter(dg.zeros(1))]
    with pytest.raises(ValueError):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError):
        optim.SGD(p, lr=0.1, nesterov=True)  # nesterov needs momentum
    with pytest.raises(ValueError):
        optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)


# --------------------------------------------------------------------- Adam
@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_matches_reference(case):
    init, grads = _init_and_grads()
    _, _, hist = run_dg(optim.Adam, ADAM_CASES[case], init, grads)
    assert_histories_equal(hist, ref_adam(init, grads, **ADAM_CASES[case]))


@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adamw_matches_reference(case):
    init, grads = _init_and_grads(1)
    kw = dict(ADAM_CASES[case])
    kw.setdefault("weight_decay", 0.01)  # AdamW's default
    _, _, hist = run_dg(optim.AdamW, ADAM_CASES[case], init, grads)
    assert_histories_equal(hist, ref_adam(init, grads, decoupled=True, **kw))


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_adam_matches_torch(torch, cls, case):
    init, grads = _init_and_grads(2)
    _, _, a = run_dg(getattr(optim, cls), ADAM_CASES[case], init, grads)
    _, _, b = run_torch(torch, getattr(torch.optim, cls), ADAM_CASES[case], init, grads)
    assert_histories_equal(a, b)


def test_adamw_default_weight_decay_differs_from_adam():
    init, grads = _init_and_grads()
    _, o, a = run_dg(optim.AdamW, dict(lr=0.1), init, grads)
    _, _, b = run_dg(optim.Adam, dict(lr=0.1), init, grads)
    assert o.param_groups[0]["weight_decay"] == 0.01
    assert not np.allclose(a[-1][0], b[-1][0])


def test_adam_first_step_moves_by_lr():
    p = nn.Parameter(dg.tensor([1.0, -2.0, 3.0], dtype=dg.float64))
    opt = optim.Adam([p], lr=0.5)
    p.grad = dg.tensor([10.0, -0.001, 3.0], dtype=dg.float64)
    opt.step()
    np.testing.assert_allclose(arr(p), [0.5, -1.5, 2.5], rtol=1e-4)


# -------------------------------------------------------------- param groups
def _two_groups(params):
    return [{"params": params[:1], "lr": 0.5}, {"params": params[1:], "momentum": 0.0}]


def test_param_groups_with_different_lr():
    init, grads = _init_and_grads()
    params, opt, hist = run_dg(optim.SGD, dict(lr=0.1, momentum=0.9), init, grads, groups=_two_groups)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.0]
    ref0 = ref_sgd(init[:1], [g[:1] for g in grads], lr=0.5, momentum=0.9)
    ref1 = ref_sgd(init[1:], [g[1:] for g in grads], lr=0.1)
    assert_histories_equal(hist, [a + b for a, b in zip(ref0, ref1)])


@pytest.mark.parametrize("cls,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("AdamW", dict(lr=0.01))])
def test_param_groups_match_torch(torch, cls, kw):
    init, grads = _init_and_grads(3)
    _, _, a = run_dg(getattr(optim, cls), kw, init, grads, groups=_two_groups)
    _, _, b = run_torch(torch, getattr(torch.optim, cls), kw, init, grads, groups=_two_groups)
    assert_histories_equal(a, b)


def test_add_param_group_and_duplicates():
    a, b = nn.Parameter(dg.zeros(1)), nn.Parameter(dg.zeros(1))
    opt = optim.SGD([a], lr=0.1, momentum=0.5)
    opt.add_param_group({"params": b, "lr": 0.2})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["momentum"] == 0.5
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError):
        optim.SGD([a * 2], lr=0.1)  # non-leaf
    with pytest.raises(TypeError):
        optim.SGD(a, lr=0.1)  # a tensor, not an iterable of tensors


# ----------------------------------------------------------------- zero_grad
def test_optimizer_zero_grad():
    lin = nn.Linear(3, 2)
    opt = optim.SGD(lin.parameters(), lr=0.1)
    lin(dg.randn(4, 3)).sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in lin.parameters())
    lin(dg.randn(4, 3)).sum().backward()
    g = lin.weight.grad
    opt.zero_grad(set_to_none=False)
    assert lin.weight.grad is g
    np.testing.assert_array_equal(arr(g), np.zeros((2, 3)))


def test_step_after_zero_grad_none_does_nothing():
    p = nn.Parameter(dg.ones(2))
    opt = optim.AdamW([p], lr=0.1)
    opt.step()
    np.testing.assert_array_equal(arr(p), np.ones(2))
    assert len(opt.state) == 0


# ---------------------------------------------------------- frozen parameters
@pytest.mark.parametrize("cls,kw", [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
                                    ("Adam", dict(lr=0.1, weight_decay=0.1)),
                                    ("AdamW", dict(lr=0.1))])
def test_frozen_parameters_are_not_updated(cls, kw):
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    net[0].requires_grad_(False)
    before = [arr(p).copy() for p in net[0].parameters()]
    trained_before = arr(net[1].weight).copy()
    opt = getattr(optim, cls)(net.parameters(), **kw)
    for _ in range(3):
        opt.zero_grad()
        net(dg.randn(5, 3)).pow(2).sum().backward()
        opt.step()
    for p, b in zip(net[0].parameters(), before):
        assert p.grad is None
        np.testing.assert_array_equal(arr(p), b)
    assert not np.array_equal(arr(net[1].weight), trained_before)
    assert all(id(p) not in {id(q) for q in opt.state} for p in net[0].parameters())


def test_parameter_without_grad_in_a_later_step_is_left_alone(torch):
    init, grads = _init_and_grads(4)
    grads[2][0] = None  # no gradient for the first parameter at step 3
    grads[3][1] = None
    for cls, kw in (("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.1, weight_decay=0.1))):
        _, _, a = run_dg(getattr(optim, cls), kw, init, grads)
        _, _, b = run_torch(torch, getattr(torch.optim, cls), kw, init, grads)
        assert_histories_equal(a, b)
        np.testing.assert_array_equal(a[2][0], a[1][0])


# ------------------------------------------------------- optimizer state dict
@pytest.mark.parametrize("cls,kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                    ("Adam", dict(lr=0.01, amsgrad=True)),
                                    ("AdamW", dict(lr=0.01, weight_decay=0.1))])
def test_state_dict_round_trip_continues_identically(cls, kw):
    init, grads = _init_and_grads(5, steps=6)
    params, opt, _ = run_dg(getattr(optim, cls), kw, init, grads[:3])
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sd["param_groups"][0]["params"] == [0, 1, 2]
    # a fresh optimizer over copies of the parameters, loaded from the state dict
    params2 = [nn.Parameter(p.detach().clone()) for p in params]
    opt2 = getattr(optim, cls)(params2, lr=123.0)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == kw["lr"]
    for gs in grads[3:]:
        for ps, o in ((params, opt), (params2, opt2)):
            for p, g in zip(ps, gs):
                p.grad = dg.tensor(g)
            o.step()
    for a, b in zip(params, params2):
        np.testing.assert_array_equal(arr(a), arr(b))


def test_state_dict_load_is_a_copy():
    init, grads = _init_and_grads(6)
    params, opt, _ = run_dg(optim.Adam, dict(lr=0.1), init, grads[:2])
    sd = opt.state_dict()
    saved = arr(sd["state"][0]["exp_avg"]).copy()
    params2 = [nn.Parameter(p.detach().clone()) for p in params]
    opt2 = optim.Adam(params2, lr=0.1)
    opt2.load_state_dict(sd)
    for p, g in zip(params2, grads[2]):
        p.grad = dg.tensor(g)
    opt2.step()
    np.testing.assert_array_equal(arr(opt.state[params[0]]["exp_avg"]), saved)


def test_load_state_dict_rejects_mismatched_groups():
    a = nn.Parameter(dg.zeros(2))
    b = nn.Parameter(dg.zeros(2))
    sd = optim.SGD([a, b], lr=0.1).state_dict()
    with pytest.raises(ValueError):
        optim.SGD([a], lr=0.1).load_state_dict(sd)


@pytest.mark.parametrize("cls,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01)),
                                    ("Adam", dict(lr=0.01, amsgrad=True))])
@pytest.mark.parametrize("groups", [None, _two_groups], ids=["one_group", "two_groups"])
def test_state_dict_layout_matches_torch(torch, cls, kw, groups):
    init, grads = _init_and_grads(7)
    _, a, _ = run_dg(getattr(optim, cls), kw, init, grads, groups=groups)
    _, b, _ = run_torch(torch, getattr(torch.optim, cls), kw, init, grads, groups=groups)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa["state"]) == list(sb["state"])
    for k in sb["state"]:
        assert set(sa["state"][k]) == set(sb["state"][k])
        for name, v in sb["state"][k].items():
            np.testing.assert_allclose(np.asarray(arr(sa["state"][k][name]), dtype=float),
                                       v.detach().numpy().astype(float), **TOL)
    assert [g["params"] for g in sa["param_groups"]] == [g["params"] for g in sb["param_groups"]]
    for ga, gb in zip(sa["param_groups"], sb["param_groups"]):
        for key in ga:
            if key != "params" and key in gb:
                assert ga[key] == gb[key], key


# ---------------------------------------------------------------- schedulers
def _make(kind, lib, nnmod, optmod, sched):
    params = [nnmod.Parameter(lib.zeros(1)), nnmod.Parameter(lib.zeros(1))]
    opt = optmod.SGD([{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.02}], lr=0.1)
    if kind == "step":
        s = sched.StepLR(opt, step_size=3, gamma=0.5)
    elif kind == "cosine":
        s = sched.CosineAnnealingLR(opt, T_max=6, eta_min=0.001)
    elif kind == "linear":
        s = sched.LinearLR(opt, start_factor=0.2, end_factor=0.9, total_iters=4)
    elif kind == "lambda_single":
        s = sched.LambdaLR(opt, lr_lambda=lambda e: 1.0 / (1 + 0.5 * e))
    elif kind == "lambda":
        s = sched.LambdaLR(opt, lr_lambda=[lambda e: 0.9 ** e, lambda e: 1.0 / (e + 1)])
    elif kind == "sequential":
        warm = sched.LinearLR(opt, start_factor=0.1, total_iters=3)
        cos = sched.CosineAnnealingLR(opt, T_max=5)
        s = sched.SequentialLR(opt, [warm, cos], milestones=[3])
    else:
        raise ValueError(kind)
    return opt, s


def _ours(kind):
    return _make(kind, dg, nn, optim, lr_scheduler)


def _lrs(opt, s, n):
    seq = [[g["lr"] for g in opt.param_groups]]
    last = [list(s.get_last_lr())]
    for _ in range(n):
        opt.step()
        s.step()
        seq.append([g["lr"] for g in opt.param_groups])
        last.append(list(s.get_last_lr()))
    return seq, last


KINDS = ["step", "cosine", "linear", "lambda", "lambda_single", "sequential"]

EXPECTED = {
    "step": lambda e: [0.1 * 0.5 ** (e // 3), 0.02 * 0.5 ** (e // 3)],
    "cosine": lambda e: [0.001 + (b - 0.001) * (1 + math.cos(math.pi * e / 6)) / 2 for b in (0.1, 0.02)],
    "linear": lambda e: [b * (0.2 + 0.7 * min(e, 4) / 4) for b in (0.1, 0.02)],
    "lambda": lambda e: [0.1 * 0.9 ** e, 0.02 / (e + 1)],
    "lambda_single": lambda e: [b / (1 + 0.5 * e) for b in (0.1, 0.02)],
    "sequential": lambda e: ([b * (0.1 + 0.9 * e / 3) for b in (0.1, 0.02)] if e < 3 else
                             [b * (1 + math.cos(math.pi * (e - 3) / 5)) / 2 for b in (0.1, 0.02)]),
}


@pytest.mark.parametrize("kind", KINDS)
def test_scheduler_closed_form(kind):
    opt, s = _ours(kind)
    seq, last = _lrs(opt, s, 14 if kind != "sequential" else 8)
    for e, (lrs, ll) in enumerate(zip(seq, last)):
        np.testing.assert_allclose(lrs, EXPECTED[kind](e), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ll, lrs, rtol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
def test_scheduler_matches_torch(torch, kind):
    import torch.optim.lr_scheduler as tsched

    opt, s = _ours(kind)
    topt, ts = _make(kind, torch, torch.nn, torch.optim, tsched)
    a, al = _lrs(opt, s, 20)
    b, bl = _lrs(topt, ts, 20)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(al, bl, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
def test_scheduler_state_dict_round_trip(kind):
    opt, s = _ours(kind)
    _lrs(opt, s, 4)
    osd, ssd = copy.deepcopy(opt.state_dict()), copy.deepcopy(s.state_dict())
    rest, _ = _lrs(opt, s, 6)
    opt2, s2 = _ours(kind)
    opt2.load_state_dict(osd)
    s2.load_state_dict(ssd)
    assert s2.last_epoch == ssd["last_epoch"]
    assert s2.get_last_lr() == rest[0]
    rest2, _ = _lrs(opt2, s2, 6)
    np.testing.assert_allclose(rest2, rest, rtol=1e-15)


def test_scheduler_state_dict_excludes_optimizer():
    opt, s = _ours("lambda")
    sd = s.state_dict()
    assert "optimizer" not in sd and "last_epoch" in sd and "base_lrs" in sd


def test_scheduler_sets_initial_lr_and_requires_it_when_resuming():
    opt, s = _ours("step")
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.02]
    p = nn.Parameter(dg.zeros(1))
    fresh = optim.SGD([p], lr=0.1)
    with pytest.raises(KeyError):
        lr_scheduler.StepLR(fresh, 2, last_epoch=3)


def test_sequential_lr_rejects_wrong_milestones():
    opt, _ = _ours("step")
    a = lr_scheduler.LinearLR(opt, total_iters=2)
    b = lr_scheduler.StepLR(opt, 2)
    with pytest.raises(ValueError):
        lr_scheduler.SequentialLR(opt, [a, b], milestones=[2, 4])


# ------------------------------------------------------------ gradient clipping
def _grads_params(lib, mod, grads):
    ps = [mod.Parameter(lib.zeros(g.shape, dtype=lib.float64)) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = lib.tensor(g)
    return ps


def _clip_grads(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, 4)), rng.standard_normal(5), rng.standard_normal(())]


@pytest.mark.parametrize("norm_type", [2, 1, math.inf, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_against_numpy(norm_type, max_norm):
    grads = _clip_grads()
    ps = _grads_params(dg, nn, grads)
    flat = np.concatenate([g.ravel() for g in grads])
    total = np.abs(flat).max() if norm_type == math.inf else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    out = nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    assert isinstance(out, dg.Tensor) and out.dim() == 0
    np.testing.assert_allclose(out.item(), total, rtol=1e-12)
    coef = max_norm / (total + 1e-6)
    for p, g in zip(ps, grads):
        expected = g * coef if coef < 1 else g
        np.testing.assert_allclose(arr(p.grad), expected, rtol=1e-12, atol=1e-15)
    if max_norm > total:  # not clipped: untouched, bit for bit
        for p, g in zip(ps, grads):
            np.testing.assert_array_equal(arr(p.grad), g)
    else:
        clipped = np.concatenate([arr(p.grad).ravel() for p in ps])
        new = np.abs(clipped).max() if norm_type == math.inf else (
            (np.abs(clipped) ** norm_type).sum() ** (1 / norm_type))
        np.testing.assert_allclose(new, max_norm, rtol=1e-5)


@pytest.mark.parametrize("norm_type", [2, 1, math.inf, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(torch, norm_type, max_norm):
    grads = _clip_grads(1)
    ours, theirs = _grads_params(dg, nn, grads), _grads_params(torch, torch.nn, grads)
    a = nn.utils.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    b = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    np.testing.assert_allclose(a.item(), b.item(), rtol=1e-12)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(arr(p.grad), q.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("norm_type", [2, 1, math.inf])
def test_clip_grad_norm_float32_matches_torch(torch, norm_type):
    grads = [g.astype(np.float32) for g in _clip_grads(4)]
    ours = [nn.Parameter(dg.zeros(g.shape)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = dg.tensor(g), torch.tensor(g)
    a = nn.utils.clip_grad_norm_(ours, 0.5, norm_type=norm_type)
    b = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type=norm_type)
    assert a.dtype == dg.float32
    np.testing.assert_allclose(a.item(), b.item(), rtol=1e-6)
    for p, q in zip(ours, theirs):
        assert p.grad.dtype == dg.float32
        np.testing.assert_allclose(arr(p.grad), q.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_clip_grad_norm_skips_missing_grads_and_accepts_one_tensor():
    a = nn.Parameter(dg.tensor([3.0, 4.0], dtype=dg.float64))
    b = nn.Parameter(dg.zeros(2))
    a.grad = dg.tensor([3.0, 4.0], dtype=dg.float64)
    assert nn.utils.clip_grad_norm_([a, b], 1.0).item() == pytest.approx(5.0)
    assert b.grad is None
    np.testing.assert_allclose(arr(a.grad), [0.6, 0.8], rtol=1e-6)
    c = nn.Parameter(dg.tensor([6.0, 8.0], dtype=dg.float64))
    c.grad = dg.tensor([6.0, 8.0], dtype=dg.float64)
    assert nn.utils.clip_grad_norm_(c, 5.0).item() == pytest.approx(10.0)
    np.testing.assert_allclose(arr(c.grad), [3.0, 4.0], rtol=1e-6)


def test_clip_grad_norm_error_if_nonfinite():
    a = nn.Parameter(dg.zeros(2))
    a.grad = dg.tensor([float("inf"), 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_([a], 1.0, error_if_nonfinite=True)


def test_clip_grad_value():
    grads = _clip_grads(2)
    ps = _grads_params(dg, nn, grads)
    assert nn.utils.clip_grad_value_(ps, 0.5) is None
    for p, g in zip(ps, grads):
        np.testing.assert_array_equal(arr(p.grad), np.clip(g, -0.5, 0.5))


def test_clip_grad_value_matches_torch(torch):
    grads = _clip_grads(3)
    ours, theirs = _grads_params(dg, nn, grads), _grads_params(torch, torch.nn, grads)
    nn.utils.clip_grad_value_(ours, 0.3)
    torch.nn.utils.clip_grad_value_(theirs, 0.3)
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(arr(p.grad), q.grad.numpy())


# ------------------------------------------------------------------ training
def test_training_loop_decreases_loss():
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    x = dg.randn(64, 4)
    y = (x * dg.tensor([1.0, -2.0, 0.5, 3.0])).sum(1, keepdim=True)
    opt = optim.AdamW(model.parameters(), lr=0.02)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
