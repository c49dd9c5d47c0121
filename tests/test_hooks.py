"""Hooks: tensor gradient hooks, post-accumulate-grad hooks (what the distributed
reducer is built on), saved-tensor hooks, and grad_fn (node) hooks."""
import contextlib

import numpy as np
import pytest

import distgrad as dg


def vals(t):
    return t.detach().numpy().tolist()


# ------------------------------------------------------------- Tensor.register_hook
def test_leaf_hook_called_with_gradient():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(vals(g)))
    (x * dg.tensor([3.0, 4.0])).sum().backward()
    assert seen == [[3.0, 4.0]]
    assert vals(x.grad) == [3.0, 4.0]


def test_leaf_hook_may_replace_gradient():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: g * 10)
    (x * 3).sum().backward()
    assert vals(x.grad) == [30.0, 30.0]


def test_leaf_hook_sees_the_sum_of_all_paths_once():
    x = dg.tensor(2.0, requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.item()))
    (x * x + x * 3 + x).backward()
    assert seen == [2 * 2.0 + 3 + 1]


def test_non_leaf_hook_called_and_may_replace_gradient():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    seen = []

    def hook(g):
        seen.append(vals(g))
        return g + 1

    y.register_hook(hook)
    (y * y).sum().backward()
    assert seen == [[6.0, 12.0]]
    assert vals(x.grad) == [3 * 7.0, 3 * 13.0]  # the replacement flows upstream


def test_non_leaf_hook_sees_the_sum_of_all_paths_once():
    x = dg.tensor(1.0, requires_grad=True)
    y = x * 2
    seen = []
    y.register_hook(lambda g: seen.append(g.item()))
    (y * y + y * 5).backward()
    assert seen == [2 * 2.0 + 5]


def test_several_hooks_run_in_registration_order_and_chain():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    log = []
    x.register_hook(lambda g: log.append(("a", vals(g))))
    x.register_hook(lambda g: log.append(("b", vals(g))) or g * 2)
    x.register_hook(lambda g: log.append(("c", vals(g))))
    x.register_hook(lambda g: log.append(("d", vals(g))) or g + 1)
    (x * 1).sum().backward()
    assert log == [("a", [1.0, 1.0]), ("b", [1.0, 1.0]), ("c", [2.0, 2.0]), ("d", [2.0, 2.0])]
    assert vals(x.grad) == [3.0, 3.0]


def test_non_leaf_hooks_order():
    x = dg.tensor([1.0], requires_grad=True)
    y = x * 1
    log = []
    y.register_hook(lambda g: log.append(1) or g * 3)
    y.register_hook(lambda g: log.append(2) or g + 1)
    y.sum().backward()
    assert log == [1, 2]
    assert vals(x.grad) == [4.0]


def test_handle_remove():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    log = []
    x.register_hook(lambda g: log.append(1))
    h2 = x.register_hook(lambda g: log.append(2) or g * 2)
    x.register_hook(lambda g: log.append(3))
    (x * 1).sum().backward()
    h2.remove()
    h2.remove()  # removing twice is harmless
    (x * 1).sum().backward()
    assert log == [1, 2, 3, 1, 3]
    assert vals(x.grad) == [3.0, 3.0]  # 2 from the first backward, 1 from the second


def test_handle_remove_on_non_leaf_and_as_context_manager():
    x = dg.tensor([1.0], requires_grad=True)
    y = x * 2
    log = []
    h = y.register_hook(lambda g: log.append("y"))
    h.remove()
    with x.register_hook(lambda g: log.append("x")):
        (y * 1).sum().backward(retain_graph=True)
    (y * 1).sum().backward()
    assert log == ["x"]


def test_hook_with_create_graph_gets_differentiable_gradient():
    x = dg.tensor(2.0, requires_grad=True)
    y = x ** 3
    seen = []
    y.register_hook(lambda g: seen.append(g.requires_grad))
    (g,) = dg.autograd.grad(y * y, x, create_graph=True)
    assert seen == [True]
    assert g.requires_grad


def test_leaf_hook_fires_in_autograd_grad_and_changes_result():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(vals(g)) or g * 10)
    (g,) = dg.autograd.grad((x * 2).sum(), x)
    assert seen == [[2.0, 2.0]]
    assert vals(g) == [20.0, 20.0]
    assert x.grad is None


def test_retained_grad_sees_hook_replacement():
    x = dg.tensor([1.0, 1.0], requires_grad=True)
    y = x * 2
    y.retain_grad()               # registered before the hook ...
    y.register_hook(lambda g: g * 10)
    y.sum().backward()
    assert vals(y.grad) == [10.0, 10.0]  # ... still sees its result, as in PyTorch
    assert vals(x.grad) == [20.0, 20.0]


@pytest.mark.parametrize("where", ["leaf", "non_leaf"])
def test_hook_changing_shape_is_an_error(where):
    x = dg.ones(2, requires_grad=True)
    t = x if where == "leaf" else x * 2
    t.register_hook(lambda g: dg.ones(3))
    with pytest.raises(RuntimeError, match="changed the size"):
        (t * 1).sum().backward()


def test_tensor_hooks_match_torch():
    torch = pytest.importorskip("torch")

    def run(lib):
        log = []
        x = lib.tensor([1.0, -2.0, 0.5], dtype=lib.float64, requires_grad=True)
        a = x.exp()
        b = a * x
        c = b.tanh() + a
        for name, t in (("x", x), ("a", a), ("b", b), ("c", c)):
            t.register_hook(lambda g, name=name: log.append((name, g.numpy().copy())))
        b.register_hook(lambda g: g * 2)
        (c * c).sum().backward()
        return [n for n, _ in log], [g for _, g in log] + [x.grad.numpy()]

    (dn, dv), (tn, tv) = run(dg), run(torch)
    assert dn == tn == ["c", "b", "a", "x"]
    for a, b in zip(dv, tv):
        np.testing.assert_allclose(a, b, rtol=1e-12)


# ------------------------------------------------- post-accumulate-grad hooks
def test_post_accumulate_hook_fires_once_after_grad_is_final():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    log = []
    x.register_post_accumulate_grad_hook(lambda t: log.append((t is x, vals(t.grad))))
    # x is used on many paths; the hook fires once, with the total
    (x * x + x.exp() * 0 + x + (x * 2) * 3).sum().backward()
    assert log == [(True, [2 * 1.0 + 1 + 6, 2 * 2.0 + 1 + 6])]


def test_post_accumulate_hook_sees_accumulated_grad():
    x = dg.tensor([1.0], requires_grad=True)
    log = []
    x.register_post_accumulate_grad_hook(lambda t: log.append(vals(t.grad)))
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    assert log == [[2.0], [5.0]]


def test_post_accumulate_hook_runs_after_tensor_hooks():
    x = dg.tensor([1.0], requires_grad=True)
    log = []
    x.register_post_accumulate_grad_hook(lambda t: log.append(("post", vals(t.grad))))
    x.register_hook(lambda g: log.append(("pre", vals(g))) or g * 4)
    (x * 1).sum().backward()
    assert log == [("pre", [1.0]), ("post", [4.0])]


def test_post_accumulate_hook_can_step_like_an_optimizer():
    w = dg.tensor([1.0, 2.0], requires_grad=True)

    def step(p):
        with dg.no_grad():
            p.sub_(0.5 * p.grad)
        p.grad = None

    w.register_post_accumulate_grad_hook(step)
    (w * w).sum().backward()
    assert vals(w) == [0.0, 0.0]
    assert w.grad is None


def test_post_accumulate_hook_not_fired_by_autograd_grad():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    log = []
    x.register_post_accumulate_grad_hook(lambda t: log.append("post"))
    dg.autograd.grad((x * 2).sum(), x)
    assert log == [] and x.grad is None
    (x * 2).sum().backward(inputs=[x])  # backward(inputs=...) does accumulate: fires
    assert log == ["post"]


def test_post_accumulate_hook_not_fired_for_unused_leaf():
    x = dg.tensor([1.0], requires_grad=True)
    z = dg.tensor([1.0], requires_grad=True)
    log = []
    z.register_post_accumulate_grad_hook(lambda t: log.append("z"))
    (x * 2).sum().backward()
    assert log == []
    w = dg.tensor([1.0], requires_grad=True)
    w.register_post_accumulate_grad_hook(lambda t: log.append("w"))
    (x * w).sum().backward(inputs=[x])  # w is in the graph but not an input
    assert log == []


def test_post_accumulate_hook_remove():
    x = dg.tensor([1.0], requires_grad=True)
    log = []
    h = x.register_post_accumulate_grad_hook(lambda t: log.append(1))
    (x * 2).sum().backward()
    h.remove()
    (x * 2).sum().backward()
    assert log == [1]


def test_post_accumulate_hook_on_non_leaf_is_an_error():
    x = dg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)


def _mlp_hook_order(lib):
    gen = np.random.default_rng(0)
    mk = lambda *s: lib.tensor(gen.standard_normal(s).astype(np.float32), requires_grad=True)  # noqa: E731
    params = {"W1": mk(3, 8), "b1": mk(8), "W2": mk(8, 8), "b2": mk(8), "W3": mk(8, 1), "b3": mk(1)}
    log = []
    for name, p in params.items():
        p.register_post_accumulate_grad_hook(lambda t, name=name: log.append(name))
    X = lib.tensor(gen.standard_normal((5, 3)).astype(np.float32))
    h = (X @ params["W1"] + params["b1"]).relu()
    h = (h @ params["W2"] + params["b2"]).tanh()
    out = h @ params["W3"] + params["b3"]
    (out * out).mean().backward()
    return log


def test_post_accumulate_hooks_fire_in_reverse_order_of_use():
    assert _mlp_hook_order(dg) == ["b3", "W3", "b2", "W2", "b1", "W1"]


def test_post_accumulate_hooks_each_fire_before_earlier_layers_run():
    """A leaf's hook fires as soon as its gradient is final, not at the end of backward
    (what lets the reducer overlap communication with backward)."""
    W1 = dg.tensor([[1.0, 2.0]], requires_grad=True)
    W2 = dg.tensor([[1.0], [-1.0]], requires_grad=True)
    log = []
    W2.register_post_accumulate_grad_hook(lambda t: log.append("W2 final"))
    h = dg.tensor([[1.0]]) @ W1
    h.register_hook(lambda g: log.append("layer1 grad"))
    (h @ W2).sum().backward()
    assert log == ["W2 final", "layer1 grad"]


def test_post_accumulate_hook_order_matches_torch():
    torch = pytest.importorskip("torch")
    assert _mlp_hook_order(dg) == _mlp_hook_order(torch)


# ------------------------------------------------------------ saved tensor hooks
def _graph(x, w):
    y = x * w               # saves x and w
    z = y.exp()             # saves its output
    return (z.sum() + (x ** 2).sum()) / 3.0


def test_saved_tensors_hooks_see_every_saved_tensor_and_unpack_in_backward():
    x = dg.tensor([0.5, -1.0], requires_grad=True)
    w = dg.tensor([2.0, 3.0], requires_grad=True)
    packed, unpacked = [], []

    def pack(t):
        packed.append(vals(t))
        return ("box", len(packed) - 1, t)

    def unpack(p):
        assert p[0] == "box"
        unpacked.append(p[1])
        return p[2]

    with dg.autograd.graph.saved_tensors_hooks(pack, unpack):
        loss = _graph(x, w)
    xs, ws = vals(x), vals(w)
    ys = [a * b for a, b in zip(xs, ws)]
    expected = [xs, ws, [pytest.approx(float(np.exp(np.float32(v)))) for v in ys], xs]
    for e in expected:  # x and w for mul, exp's output, x for pow (any order, any extras)
        assert e in packed, (e, packed)
    assert unpacked == []  # nothing unpacked before backward
    loss.backward()
    assert sorted(set(unpacked)) == list(range(len(packed)))  # every packed one is used
    ref_x = dg.tensor(xs, requires_grad=True)
    ref_w = dg.tensor(ws, requires_grad=True)
    _graph(ref_x, ref_w).backward()
    assert vals(x.grad) == vals(ref_x.grad) and vals(w.grad) == vals(ref_w.grad)


@pytest.mark.parametrize("kind", ["identity", "clone", "numpy_copy"])
def test_saved_tensors_hooks_identity_or_copy_keep_gradients(kind):
    rng = np.random.default_rng(1)
    xv, wv = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))

    def model(x, w):
        h = (x @ w).tanh()
        return (h * h.sigmoid()).sum() + (x.exp() * 0.1).sum()

    ref_x = dg.tensor(xv, requires_grad=True)
    ref_w = dg.tensor(wv, requires_grad=True)
    model(ref_x, ref_w).backward()

    pack, unpack = {
        "identity": (lambda t: t, lambda t: t),
        "clone": (lambda t: t.detach().clone(), lambda t: t),
        "numpy_copy": (lambda t: t.detach().numpy().copy(), lambda a: dg.tensor(a)),
    }[kind]
    x = dg.tensor(xv, requires_grad=True)
    w = dg.tensor(wv, requires_grad=True)
    with dg.autograd.graph.saved_tensors_hooks(pack, unpack):
        loss = model(x, w)
    loss.backward()
    np.testing.assert_array_equal(vals(x.grad), vals(ref_x.grad))
    np.testing.assert_array_equal(vals(w.grad), vals(ref_w.grad))


@pytest.mark.parametrize("kind", ["clone", "numpy_copy"])
def test_saved_tensors_hooks_that_copy_keep_second_order_gradients(kind):
    """With create_graph, an unpacked tensor joins the graph where the saved one stood (as
    in PyTorch), also when the hook gave back a copy: double backward is unchanged."""
    rng = np.random.default_rng(2)
    xv, wv = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    pack, unpack = {
        "clone": (lambda t: t.detach().clone(), lambda t: t),
        "numpy_copy": (lambda t: t.detach().numpy().copy(), lambda a: dg.tensor(a)),
    }[kind]

    def second_order(hooked):
        x = dg.tensor(xv, requires_grad=True)
        w = dg.tensor(wv, requires_grad=True)
        with dg.autograd.graph.saved_tensors_hooks(pack, unpack) if hooked else contextlib.nullcontext():
            h = (x @ w).tanh()
            loss = (h * h.sigmoid()).sum() + (x.exp() * w.sum()).sum()
        gx, gw = dg.autograd.grad(loss, [x, w], create_graph=True)
        ((gx ** 2).sum() + (gw ** 2).sum()).backward()
        return [vals(gx), vals(gw), vals(x.grad), vals(w.grad)]

    assert second_order(True) == second_order(False)


def test_saved_tensors_hooks_copy_protects_against_inplace_change():
    # a copying pack hook decouples the saved value from later in-place edits
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 1.0
    with dg.autograd.graph.saved_tensors_hooks(lambda t: t.detach().clone(), lambda t: t):
        y = h * h
    with dg.no_grad():
        h.add_(100.0)
    y.sum().backward()
    assert vals(x.grad) == [2.0, 4.0]


def test_saved_tensors_hooks_innermost_wins_and_exit_restores():
    log = []
    x = dg.tensor([1.0], requires_grad=True)
    outer = dg.autograd.graph.saved_tensors_hooks(lambda t: log.append("outer") or t, lambda t: t)
    inner = dg.autograd.graph.saved_tensors_hooks(lambda t: log.append("inner") or t, lambda t: t)
    with outer:
        with inner:
            x.exp()
        x.exp()
    x.exp()
    assert log == ["inner", "outer"]


def test_saved_tensors_hooks_apply_to_custom_function():
    log = []

    class Sq(dg.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return 2 * a * g

    x = dg.tensor([3.0], requires_grad=True)
    with dg.autograd.graph.saved_tensors_hooks(
            lambda t: log.append("pack") or t, lambda t: log.append("unpack") or t):
        y = Sq.apply(x)
    assert log == ["pack"]
    y.sum().backward()
    assert log == ["pack", "unpack"]
    assert vals(x.grad) == [6.0]


def test_saved_tensors_hooks_not_used_under_no_grad():
    log = []
    x = dg.tensor([1.0], requires_grad=True)
    with dg.autograd.graph.saved_tensors_hooks(lambda t: log.append("p") or t, lambda t: t):
        with dg.no_grad():
            x.exp() * x
    assert log == []


def test_disable_saved_tensors_hooks():
    log = []
    x = dg.tensor([1.0], requires_grad=True)
    with dg.autograd.graph.saved_tensors_hooks(lambda t: log.append("p") or t, lambda t: t):
        with dg.autograd.graph.disable_saved_tensors_hooks("no hooks here"):
            y = x.exp()
        z = x.exp()
    assert log == ["p"]
    (y + z).sum().backward()
    assert vals(x.grad) == pytest.approx([2 * np.e])


def test_saved_tensors_hooks_match_torch_gradients():
    torch = pytest.importorskip("torch")

    def run(lib):
        x = lib.tensor([0.5, -1.0], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([2.0, 3.0], dtype=lib.float64, requires_grad=True)
        n = [0, 0]

        def pack(t):
            n[0] += 1
            return t

        def unpack(t):
            n[1] += 1
            return t

        with lib.autograd.graph.saved_tensors_hooks(pack, unpack):
            loss = _graph(x, w)
        loss.backward()
        return vals(x.grad), vals(w.grad), n[0] > 0 and n[1] > 0

    assert run(dg) == run(torch)


# --------------------------------------------------------------- node hooks
def test_grad_fn_register_prehook_and_hook():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    c = dg.tensor([3.0, 3.0])
    y = x * c
    log = []
    y.grad_fn.register_prehook(lambda go: log.append(("pre", [vals(g) for g in go])))
    y.grad_fn.register_hook(
        lambda gi, go: log.append(("post", [None if g is None else vals(g) for g in gi],
                                   [vals(g) for g in go])))
    (y * 2).sum().backward()
    assert log == [("pre", [[2.0, 2.0]]), ("post", [[6.0, 6.0], None], [[2.0, 2.0]])]


def test_grad_fn_hooks_may_replace_gradients():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    y.grad_fn.register_prehook(lambda go: (go[0] * 0 + 1,))
    y.grad_fn.register_hook(lambda gi, go: (gi[0] * 100,) + tuple(gi[1:]))
    (y * 2).sum().backward()
    assert vals(x.grad) == [300.0, 300.0]


def test_grad_fn_hook_remove():
    x = dg.tensor([1.0], requires_grad=True)
    y = x * 3
    log = []
    h1 = y.grad_fn.register_prehook(lambda go: log.append("pre"))
    h2 = y.grad_fn.register_hook(lambda gi, go: log.append("post"))
    h1.remove()
    h2.remove()
    y.sum().backward()
    assert log == [] and vals(x.grad) == [3.0]


def test_grad_fn_prehook_runs_after_tensor_hooks():
    x = dg.tensor([1.0], requires_grad=True)
    y = x * 3
    log = []
    y.grad_fn.register_prehook(lambda go: log.append(("node", vals(go[0]))))
    y.register_hook(lambda g: log.append(("tensor", vals(g))) or g * 2)
    y.sum().backward()
    assert log == [("tensor", [1.0]), ("node", [2.0])]
    assert vals(x.grad) == [6.0]


def test_node_hooks_match_torch():
    torch = pytest.importorskip("torch")

    def run(lib):
        log = []
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        w = lib.tensor([0.5, -1.0], requires_grad=True)
        y = x * w
        z = y.exp()
        z.grad_fn.register_prehook(lambda go: log.append(("exp pre", np.round(go[0].numpy(), 4).tolist())))
        y.grad_fn.register_hook(lambda gi, go: log.append(
            ("mul post", [np.round(g.numpy(), 4).tolist() for g in gi])))
        y.register_hook(lambda g: log.append(("y", np.round(g.numpy(), 4).tolist())))
        z.sum().backward()
        return log

    assert run(dg) == run(torch)
