"""Gradient checkpointing: ``dg.utils.checkpoint.checkpoint`` and ``checkpoint_sequential``
give gradients bit-identical to a run without checkpointing, and keep less in memory."""
import gc
import tracemalloc
import weakref

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn
from distgrad.autograd.graph import saved_tensors_hooks
from distgrad.utils.checkpoint import checkpoint, checkpoint_sequential


def arr(t):
    return t.detach().numpy()


def mlp(dropout=0.0, width=16, depth=3, dtype=dg.float64, seed=0):
    dg.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width, dtype=dtype), nn.GELU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, 4, dtype=dtype))
    return nn.Sequential(*layers)


def grads_of(model, x):
    out = [arr(x.grad).copy()] if x.grad is not None else []
    return out + [arr(p.grad).copy() for p in model.parameters()]


def assert_exact(a, b):
    assert len(a) == len(b) and len(a) > 0
    for u, v in zip(a, b):
        assert u.shape == v.shape
        assert np.array_equal(u, v), np.abs(u - v).max()


def run(model, x_np, forward, seed=123, use_grad_api=False):
    """Loss = sum(forward(model, x) ** 2); returns (loss value, gradients of x and params)."""
    model.zero_grad()
    x = dg.tensor(x_np, requires_grad=True)
    dg.manual_seed(seed)
    loss = (forward(model, x) ** 2).sum()
    if use_grad_api:
        gs = dg.autograd.grad(loss, [x, *model.parameters()])
        return loss.item(), [arr(g).copy() for g in gs]
    loss.backward()
    return loss.item(), grads_of(model, x)


X = np.random.default_rng(0).standard_normal((5, 16))


def plain(m, x):
    return m(x)


# ------------------------------------------------------------------ checkpoint
@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_gradients_exactly_equal(reentrant):
    m = mlp()
    ref = run(m, X, plain)
    got = run(m, X, lambda m, x: checkpoint(m, x, use_reentrant=reentrant))
    assert got[0] == ref[0]
    assert_exact(got[1], ref[1])


def test_checkpoint_of_part_of_a_model():
    m = mlp(depth=4)

    def fwd(m, x):
        h = checkpoint(m[:4], x, use_reentrant=False)
        return m[4:](h)

    ref = run(m, X, plain)
    got = run(m, X, fwd)
    assert_exact(got[1], ref[1])


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_with_dropout_restores_rng_state(reentrant):
    m = mlp(dropout=0.3)
    ref = run(m, X, plain, seed=7)
    got = run(m, X, lambda m, x: checkpoint(m, x, use_reentrant=reentrant), seed=7)
    assert got[0] == ref[0]
    assert_exact(got[1], ref[1])
    # dropout really drew a mask: a different seed gives different gradients
    other = run(m, X, plain, seed=8)
    assert not np.array_equal(other[1][1], ref[1][1])


def test_checkpoint_leaves_the_rng_where_an_uncheckpointed_run_leaves_it():
    m = mlp(dropout=0.3)
    run(m, X, plain, seed=7)
    after_plain = dg.rand(5).numpy()
    run(m, X, lambda m, x: checkpoint(m, x, use_reentrant=False), seed=7)
    after_ckpt = dg.rand(5).numpy()
    np.testing.assert_array_equal(after_ckpt, after_plain)


def test_checkpoint_without_preserving_rng_state_gives_other_masks():
    m = mlp(dropout=0.5)
    ref = run(m, X, plain, seed=7)
    got = run(m, X, lambda m, x: checkpoint(m, x, use_reentrant=False, preserve_rng_state=False), seed=7)
    assert got[0] == ref[0]  # the forward is the same
    # the recomputation drew different masks, so the gradients differ
    assert any(not np.array_equal(a, b) for a, b in zip(got[1], ref[1]))


def test_nested_checkpoints():
    m = mlp(depth=4, dropout=0.2)

    def inner(x):
        return m[3:6](x)

    def outer(x):
        h = m[:3](x)
        h = checkpoint(inner, h, use_reentrant=False)
        return m[6:9](h)

    def fwd(m, x):
        h = checkpoint(outer, x, use_reentrant=False)
        return m[9:](h)

    ref = run(m, X, plain, seed=3)
    got = run(m, X, fwd, seed=3)
    assert got[0] == ref[0]
    assert_exact(got[1], ref[1])


def test_checkpoint_with_kwargs():
    m = mlp()

    def fn(x, *, scale, shift=0.0):
        return m(x * scale + shift)

    ref = run(m, X, lambda m, x: fn(x, scale=1.5, shift=0.25))
    got = run(m, X, lambda m, x: checkpoint(fn, x, use_reentrant=False, scale=1.5, shift=0.25))
    assert got[0] == ref[0]
    assert_exact(got[1], ref[1])


def test_checkpoint_with_several_inputs_and_outputs():
    m1, m2 = mlp(seed=1), mlp(seed=2)
    y_np = np.random.default_rng(1).standard_normal((5, 16))

    def fn(a, b):
        return m1(a) + m2(b), a * b

    def compute(ck):
        for mod in (m1, m2):
            mod.zero_grad()
        a = dg.tensor(X, requires_grad=True)
        b = dg.tensor(y_np, requires_grad=True)
        o1, o2 = checkpoint(fn, a, b, use_reentrant=False) if ck else fn(a, b)
        ((o1 ** 2).sum() + o2.sum()).backward()
        return [arr(a.grad), arr(b.grad)] + [arr(p.grad).copy() for p in (*m1.parameters(), *m2.parameters())]

    assert_exact(compute(True), compute(False))


def test_checkpoint_works_with_autograd_grad():
    m = mlp(dropout=0.2)
    ref = run(m, X, plain, seed=5, use_grad_api=True)
    got = run(m, X, lambda m, x: checkpoint(m, x, use_reentrant=False), seed=5, use_grad_api=True)
    assert_exact(got[1], ref[1])
    assert all(p.grad is None for p in m.parameters())  # autograd.grad does not accumulate


def test_checkpoint_input_without_grad_still_gives_parameter_grads():
    m = mlp()
    x = dg.tensor(X)
    (m(x) ** 2).sum().backward()
    ref = [arr(p.grad).copy() for p in m.parameters()]
    m.zero_grad()
    out = checkpoint(m, x, use_reentrant=False)
    assert out.requires_grad
    (out ** 2).sum().backward()
    assert_exact([arr(p.grad) for p in m.parameters()], ref)


def test_parameter_used_inside_and_outside_a_checkpoint():
    dg.manual_seed(0)
    lin = nn.Linear(16, 16, dtype=dg.float64)
    fired = []
    lin.weight.register_post_accumulate_grad_hook(lambda p: fired.append(arr(p.grad).copy()))

    def fwd(ck):
        lin.zero_grad()
        x = dg.tensor(X, requires_grad=True)
        inner = (lambda t: lin(t).tanh())
        h = checkpoint(inner, x, use_reentrant=False) if ck else inner(x)
        loss = (lin(h) ** 2).sum() + (lin.weight ** 2).sum()  # the weight used outside too
        loss.backward()
        return [arr(x.grad), arr(lin.weight.grad).copy(), arr(lin.bias.grad).copy()]

    ref = fwd(False)
    assert len(fired) == 1
    got = fwd(True)
    assert len(fired) == 2  # exactly once per backward
    assert_exact(got, ref)
    np.testing.assert_array_equal(fired[1], got[1])  # the hook saw the final gradient
    # a second checkpointed backward fires it once more and gives the same gradient
    again = fwd(True)
    assert len(fired) == 3
    assert_exact(again, ref)


@pytest.mark.parametrize("forward", ["checkpoint", "sequential", "nested"])
def test_post_accumulate_hooks_fire_once_per_parameter_per_backward(forward):
    """What the distributed reducer relies on: one hook call per leaf per backward, after
    its gradient is final, also when segments are recomputed."""
    m = mlp(depth=4)
    counts = {n: 0 for n, _ in m.named_parameters()}
    final = {}
    for n, p in m.named_parameters():
        def hook(t, n=n):
            counts[n] += 1
            final[n] = arr(t.grad).copy()
        p.register_post_accumulate_grad_hook(hook)
    fwd = {
        "checkpoint": lambda m, x: checkpoint(m, x, use_reentrant=False),
        "sequential": lambda m, x: checkpoint_sequential(m, 3, x),
        "nested": lambda m, x: checkpoint(lambda y: m[4:](checkpoint(m[:4], y, use_reentrant=False)),
                                          x, use_reentrant=False),
    }[forward]
    for i in (1, 2):
        _, grads = run(m, X, fwd)
        assert all(c == i for c in counts.values()), counts
        for (n, p), g in zip(m.named_parameters(), grads[1:]):
            np.testing.assert_array_equal(final[n], g)


def test_retain_graph_allows_a_second_backward_with_same_gradients():
    m = mlp(dropout=0.3)
    x = dg.tensor(X, requires_grad=True)
    dg.manual_seed(11)
    loss = (checkpoint(m, x, use_reentrant=False) ** 2).sum()
    loss.backward(retain_graph=True)
    first = grads_of(m, x)
    m.zero_grad()
    x.grad = None
    loss.backward()
    assert_exact(grads_of(m, x), first)
    # and they equal the uncheckpointed gradients
    assert_exact(first, run(m, X, plain, seed=11)[1])


def test_second_backward_without_retain_graph_raises():
    m = mlp()
    x = dg.tensor(X, requires_grad=True)
    loss = (checkpoint(m, x, use_reentrant=False) ** 2).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_reentrant_rejects_kwargs():
    with pytest.raises(ValueError):
        checkpoint(lambda x, s: x * s, dg.ones(1, requires_grad=True), use_reentrant=True, s=2.0)


# ------------------------------------------------------------------- memory
def test_checkpoint_intercepts_saved_tensors():
    """An outer saved-tensor hook sees every saved tensor without checkpointing, and
    none of those inside the checkpointed segment with it."""
    m = mlp(depth=4)
    counts = {}
    for ck in (False, True):
        packed = []
        with saved_tensors_hooks(lambda t: (packed.append(1), t)[1], lambda t: t):
            x = dg.tensor(X, requires_grad=True)
            out = checkpoint(m, x, use_reentrant=False) if ck else m(x)
            loss = (out ** 2).sum()
        loss.backward()
        counts[ck] = len(packed)
    assert counts[False] >= 9  # each Linear and GELU saves at least one tensor
    assert counts[True] <= 2  # only the ops outside the segment (the square)


def _retained_bytes(forward):
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        keep = forward()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return held, keep


def test_checkpoint_keeps_fewer_tensors_alive():
    m = mlp(width=256, depth=8)
    x = dg.tensor(np.random.default_rng(0).standard_normal((128, 256)), requires_grad=True)
    plain_bytes, keep1 = _retained_bytes(lambda: (m(x) ** 2).sum())
    ck_bytes, keep2 = _retained_bytes(lambda: (checkpoint(m, x, use_reentrant=False) ** 2).sum())
    act = 128 * 256 * 8  # one float64 activation
    assert plain_bytes > 10 * act  # every layer's activations are held...
    assert ck_bytes < 4 * act  # ...but only the inputs/outputs of the checkpointed segment
    keep2.backward()
    keep1.backward()


def test_checkpoint_sequential_keeps_fewer_tensors_alive():
    m = mlp(width=256, depth=8)
    x = dg.tensor(np.random.default_rng(0).standard_normal((128, 256)), requires_grad=True)
    plain_bytes, _ = _retained_bytes(lambda: (m(x) ** 2).sum())
    ck_bytes, keep = _retained_bytes(lambda: (checkpoint_sequential(m, 4, x) ** 2).sum())
    assert ck_bytes < 0.6 * plain_bytes
    keep.backward()


def tanh_stack(depth=16, width=256):
    dg.manual_seed(0)
    return nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width, dtype=dg.float64), nn.Tanh())])


def per_layer(m, x):
    """One checkpoint per Linear+Tanh pair."""
    for i in range(0, len(m), 2):
        x = checkpoint(m[i:i + 2], x, use_reentrant=False)
    return x


def _peak_bytes(step):
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        step()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("grads", ["allocated before", "allocated in backward"])
def test_per_layer_checkpointing_peaks_no_higher_than_no_checkpointing(grads):
    """Each block's input and recomputed values are freed once its backward has run,
    so recomputing one block at a time costs no more than keeping every activation,
    also while backward allocates the gradients (a first step)."""
    m = tanh_stack()
    x = dg.tensor(np.random.default_rng(0).standard_normal((128, 256)))

    def step(forward):
        (forward(m, x) ** 2).sum().backward()

    def peak(forward):
        if grads == "allocated in backward":
            m.zero_grad()
        return _peak_bytes(lambda: step(forward))

    step(plain)  # warm-up: with grads allocated before, later steps accumulate into them
    plain_peak, ck_peak = peak(plain), peak(per_layer)
    assert plain_peak > 16 * 128 * 256 * 8  # every layer's activation was held
    assert ck_peak <= 1.1 * plain_peak, (ck_peak, plain_peak)


class _Tanh(dg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.tanh()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * (1 - y * y)


def _scale_half_in_place(y, h):
    y[:, :8].mul_(h[:, :8])  # a view modified in place: the base's history gets a CopySlices
    return y.tanh()


BLOCKS = {  # Linear + Tanh, its saved tensors held by different kinds of nodes
    "built-in ops": lambda lin, h: lin(h).tanh(),
    "a custom Function": lambda lin, h: _Tanh.apply(lin(h)),
    "an in-place op on a view": lambda lin, h: _scale_half_in_place(lin(h), h),
}


@pytest.mark.parametrize("block", list(BLOCKS))
def test_block_inputs_are_freed_as_soon_as_the_block_backward_has_run(block):
    m = tanh_stack(depth=6, width=16)
    h = dg.tensor(X, requires_grad=True)
    outputs = []  # outputs[k] is the input of block k + 1
    for i in range(0, len(m), 2):
        h = checkpoint(BLOCKS[block], m[i], h, use_reentrant=False)
        outputs.append(weakref.ref(h))
    alive = []
    # The first layer's gradient is final once every later block's backward has run.
    m[0].weight.register_post_accumulate_grad_hook(
        lambda p: alive.append([r() is not None for r in outputs[:-1]]))
    loss = (h ** 2).sum()
    del h
    loss.backward()
    assert alive == [[False] * 5]


def test_a_partly_used_recomputation_is_freed_without_the_garbage_collector():
    """Only the second layer's backward runs, so the recomputed first-layer values are
    never unpacked; they must not sit in a reference cycle once the graph is gone."""
    m = tanh_stack(depth=2, width=16)
    made = []

    def body(x):
        h = m[:2](x)
        made.append(weakref.ref(h))
        return m[2:](h)

    x = dg.tensor(X, requires_grad=True)
    gc.disable()
    try:
        out = checkpoint(body, x, use_reentrant=False)
        dg.autograd.grad((out ** 2).sum(), [m[2].weight])
        del out
        assert [r() is None for r in made] == [True, True]  # the forward's and the recomputation's
    finally:
        gc.enable()


# ------------------------------------------------------ checkpoint_sequential
@pytest.mark.parametrize("segments", [1, 2, 3, 7])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_checkpoint_sequential_gradients_exactly_equal(segments, dropout):
    m = mlp(dropout=dropout)
    ref = run(m, X, plain, seed=9)
    got = run(m, X, lambda m, x: checkpoint_sequential(m, segments, x, use_reentrant=False), seed=9)
    assert got[0] == ref[0]
    assert_exact(got[1], ref[1])


def test_checkpoint_sequential_default_and_list_of_functions():
    m = mlp(dropout=0.25)
    ref = run(m, X, plain, seed=9)
    assert_exact(run(m, X, lambda m, x: checkpoint_sequential(m, 2, x), seed=9)[1], ref[1])
    assert_exact(run(m, X, lambda m, x: checkpoint_sequential(list(m), 3, x), seed=9)[1], ref[1])


def test_checkpoint_sequential_reentrant():
    m = mlp(dropout=0.25)
    ref = run(m, X, plain, seed=9)
    got = run(m, X, lambda m, x: checkpoint_sequential(m, 3, x, use_reentrant=True), seed=9)
    assert_exact(got[1], ref[1])


def test_checkpoint_sequential_works_with_autograd_grad():
    m = mlp()
    ref = run(m, X, plain, use_grad_api=True)
    got = run(m, X, lambda m, x: checkpoint_sequential(m, 3, x), use_grad_api=True)
    assert_exact(got[1], ref[1])


def test_checkpoint_sequential_rejects_bad_segments():
    m = mlp()
    with pytest.raises(ValueError):
        checkpoint_sequential(m, 0, dg.tensor(X))
    with pytest.raises(ValueError):
        checkpoint_sequential(m, len(m) + 1, dg.tensor(X))


def test_checkpoint_sequential_matches_torch_semantics():
    """Same segmentation as torch: the result and gradients equal torch's for a model of
    the same weights."""
    torch = pytest.importorskip("torch")
    from torch.utils.checkpoint import checkpoint_sequential as tcs

    m = mlp(depth=3)
    tm = torch.nn.Sequential(*[
        torch.nn.Linear(l.in_features, l.out_features).double() if isinstance(l, nn.Linear) else torch.nn.GELU()
        for l in m])
    with torch.no_grad():
        for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
            assert n == tn
            tp.copy_(torch.from_numpy(arr(p).copy()))
    _, ours = run(m, X, lambda m, x: checkpoint_sequential(m, 3, x))
    xt = torch.tensor(X, requires_grad=True)
    (tcs(tm, 3, xt, use_reentrant=False) ** 2).sum().backward()
    theirs = [xt.grad.numpy()] + [p.grad.numpy() for p in tm.parameters()]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reentrant", [False, True])
def test_plain_backward_detects_an_input_modified_in_place(reentrant):
    """Reference behaviour without checkpointing: the engine's version check raises."""
    lin = nn.Linear(3, 3)
    h = dg.randn(2, 3, requires_grad=True) * 2
    out = lin(h)
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (out ** 2).sum().backward()


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_input_modified_in_place_raises(reentrant):
    dg.manual_seed(0)
    lin = nn.Linear(3, 3)
    h = dg.randn(2, 3, requires_grad=True) * 2
    out = checkpoint(lin, h, use_reentrant=reentrant)
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (out ** 2).sum().backward()


def _exp_doubled_in_place(x):
    t = x.exp()  # saves its output
    t.mul_(2.0)
    return t


def _tanh_half_doubled_in_place(lin, h):
    y = lin(h).tanh()  # saves its output
    y[:, :8].mul_(2.0)
    return y.sum(-1)


def _half_doubled(lin, h):
    scale = dg.tensor(np.r_[np.full(8, 2.0), np.ones(8)])
    return (lin(h).tanh() * scale).sum(-1)


def _saved_input_grads(fn, ck):
    dg.manual_seed(0)
    lin = nn.Linear(16, 16, dtype=dg.float64)
    x = dg.tensor(X, requires_grad=True)
    out = checkpoint(fn, lin, x, use_reentrant=False) if ck else fn(lin, x)
    (out ** 2).sum().backward()
    return [arr(x.grad), arr(lin.weight.grad), arr(lin.bias.grad)]


MODIFIED_AFTER_THE_LAST_SAVE = {  # (in place, the same computed out of place)
    "exp doubled": (lambda lin, x: _exp_doubled_in_place(lin(x)), lambda lin, x: lin(x).exp() * 2.0),
    "half of a tanh doubled through a view": (_tanh_half_doubled_in_place, _half_doubled),
}


@pytest.mark.parametrize("case", list(MODIFIED_AFTER_THE_LAST_SAVE))
def test_a_saved_tensor_modified_in_place_after_the_last_save_gets_correct_gradients(case):
    """Without checkpointing backward refuses (the saved value changed); the recomputation
    stops once it has every saved tensor, so it gives them as they were saved, and the
    gradients are those of the same function written out of place (as PyTorch's)."""
    in_place, out_of_place = MODIFIED_AFTER_THE_LAST_SAVE[case]
    with pytest.raises(RuntimeError, match="is at version 1; expected version 0"):
        _saved_input_grads(in_place, ck=False)
    assert_exact(_saved_input_grads(in_place, ck=True), _saved_input_grads(out_of_place, ck=False))


def test_gradients_with_a_saved_tensor_modified_after_the_last_save_match_torch():
    torch = pytest.importorskip("torch")
    from torch.utils.checkpoint import checkpoint as tcheckpoint

    ours = _saved_input_grads(_tanh_half_doubled_in_place, ck=True)
    dg.manual_seed(0)
    w, b = (arr(p).copy() for p in nn.Linear(16, 16, dtype=dg.float64).parameters())
    lin = torch.nn.Linear(16, 16).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    x = torch.tensor(X, requires_grad=True)
    (tcheckpoint(_tanh_half_doubled_in_place, lin, x, use_reentrant=False) ** 2).sum().backward()
    for a, t in zip(ours, [x.grad, lin.weight.grad, lin.bias.grad]):
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-12, atol=1e-14)


def _exp_doubled_then_used(x):
    t = x.exp()
    t.mul_(2.0)
    return t * x  # saves t again, after the change: the recomputation changes it too


def _exp_doubled_then_a_later_save(x):
    t = x.exp()
    t.mul_(2.0)
    return t.sum() + (x * x).sum()


@pytest.mark.parametrize("fn", [_exp_doubled_then_used, _exp_doubled_then_a_later_save])
def test_a_saved_tensor_modified_in_place_before_a_later_save_raises_the_version_error(fn):
    """The recomputation must run past the change to reach the later save, so the value exp
    saved is no longer there: backward raises the error it raises without checkpointing
    (PyTorch silently uses the changed value)."""
    errors = []
    for ck in (False, True):
        x = dg.tensor(X, requires_grad=True)
        out = checkpoint(fn, x, use_reentrant=False) if ck else fn(x)
        with pytest.raises(RuntimeError) as e:
            out.sum().backward()
        errors.append(str(e.value))
    assert errors[1] == errors[0]
    assert "saved by ExpBackward0, is at version 1; expected version 0 instead" in errors[1]


def test_a_tensor_the_function_saved_modified_in_place_after_the_forward_raises():
    """A weight used inside and updated before backward: the recomputation would see the new
    weight, the forward used the old one. Backward raises as without checkpointing (PyTorch
    silently uses the new weight)."""
    errors = []
    for ck in (False, True):
        dg.manual_seed(0)
        lin = nn.Linear(16, 16, dtype=dg.float64)
        x = dg.tensor(X, requires_grad=True)
        out = checkpoint(lin, x, use_reentrant=False) if ck else lin(x)
        v = lin.weight._version
        with dg.no_grad():
            lin.weight.mul_(0.5)
        with pytest.raises(RuntimeError) as e:
            (out ** 2).sum().backward()
        errors.append(str(e.value))
    assert errors[1] == errors[0]
    assert f"is at version {v + 1}; expected version {v} instead" in errors[1]


# ------------------------------------------------------------ double backward
def second_order(model, forward, second="backward", seed=4):
    """g = d loss / dx with create_graph, then the gradients of sum(g ** 2)."""
    model.zero_grad()
    x = dg.tensor(X, requires_grad=True)
    dg.manual_seed(seed)
    loss = (forward(model, x) ** 2).sum()
    g, = dg.autograd.grad(loss, x, create_graph=True)
    if second == "autograd.grad":
        gs = dg.autograd.grad((g ** 2).sum(), [x, *model.parameters()])
        return [arr(g).copy()] + [arr(t).copy() for t in gs]
    (g ** 2).sum().backward()
    return [arr(g).copy()] + grads_of(model, x)


@pytest.mark.parametrize("second", ["backward", "autograd.grad"])
def test_double_backward_through_a_checkpoint_equals_no_checkpointing(second):
    m = mlp(dropout=0.2)
    ref = second_order(m, plain, second)
    got = second_order(m, lambda m, x: checkpoint(m, x, use_reentrant=False), second)
    assert_exact(got, ref)


def test_double_backward_through_nested_checkpoints_equals_no_checkpointing():
    m = mlp(depth=4, dropout=0.2)

    def fwd(m, x):
        def outer(y):
            h = checkpoint(m[3:6], m[:3](y), use_reentrant=False)
            return m[6:9](h)
        return m[9:](checkpoint(outer, x, use_reentrant=False))

    assert_exact(second_order(m, fwd), second_order(m, plain))


def test_double_backward_twice_with_retain_graph_then_a_first_order_backward():
    """Each pass over the checkpointed nodes recomputes them again."""
    def passes(forward):
        m = mlp(dropout=0.2)
        x = dg.tensor(X, requires_grad=True)
        dg.manual_seed(6)
        loss = (forward(m, x) ** 2).sum()
        g, = dg.autograd.grad(loss, x, create_graph=True)
        out = [arr(g).copy()]
        for _ in range(2):
            out += list(map(arr, dg.autograd.grad((g ** 2).sum(), [x, *m.parameters()], retain_graph=True)))
        loss.backward()
        return out + grads_of(m, x)

    ref = passes(plain)
    n = 1 + len(list(mlp().parameters()))
    assert_exact(ref[1:1 + n], ref[1 + n:1 + 2 * n])  # the two second-order passes agree
    assert_exact(passes(lambda m, x: checkpoint(m, x, use_reentrant=False)), ref)


def test_double_backward_through_a_checkpoint_matches_torch():
    torch = pytest.importorskip("torch")
    from torch.utils.checkpoint import checkpoint as tcheckpoint

    def run(lib, ckpt):
        x = lib.tensor(X, requires_grad=True)
        fn = lambda t: (t.sin() * t).exp().tanh()
        loss = (ckpt(fn, x, use_reentrant=False) ** 2).sum()
        g, = lib.autograd.grad(loss, x, create_graph=True)
        (g ** 2).sum().backward()
        return [g.detach().numpy().copy(), x.grad.numpy().copy()]

    for a, b in zip(run(dg, checkpoint), run(torch, tcheckpoint)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
