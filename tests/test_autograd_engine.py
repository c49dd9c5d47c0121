"""The autograd engine (DESIGN.md, "The engine"): graph walk, accumulation,
retain/create graph, ``autograd.grad``, graph structure, leaves and detach,
execution order, custom ``Function`` and gradcheck.

Tests that cross-check against PyTorch call ``pytest.importorskip("torch")``;
everything else runs without it.
"""
import gc
import weakref

import numpy as np
import pytest

import distgrad as dg


def arr(t):
    return t.detach().numpy()


def bits(t):
    a = np.ascontiguousarray(arr(t))
    return a.view(np.uint8).tobytes()


# ------------------------------------------------------------- deep graphs
def test_100k_op_chain_backward_without_recursion_error():
    x = dg.tensor(1.5, dtype=dg.float64, requires_grad=True)
    y = x
    for _ in range(50_000):
        y = y * 2.0   # 100,000 ops in all; the exact product is 1
        y = y * 0.5
    y.backward()
    assert x.grad.item() == 1.0
    del y
    gc.collect()


def test_deep_chain_autograd_grad_and_free_without_backward():
    x = dg.tensor([0.5, -0.25], requires_grad=True)
    y = x
    for _ in range(20_000):
        y = y + 0.0
    (g,) = dg.autograd.grad(y.sum(), x)
    assert arr(g).tolist() == [1.0, 1.0]
    z = x
    for _ in range(20_000):
        z = z * 1.0
    del z  # dropping a deep graph that was never run must not recurse either
    gc.collect()


# ------------------------------------------------------------- determinism
def _diamond_graph(seed=0):
    rng = np.random.default_rng(seed)
    x = dg.tensor(rng.standard_normal(257).astype(np.float32), requires_grad=True)
    ws = [dg.tensor(rng.standard_normal(257).astype(np.float32), requires_grad=True)
          for _ in range(3)]
    h = x
    for k in range(12):
        # every level fans out into many paths that are summed again
        a = h.sin() * ws[k % 3]
        b = h.cos() * h
        c = (h * 0.3).tanh()
        d = a * b + b * c + c * a + h
        h = d / (1.0 + d * d).sqrt()
    loss = (h * h).sum() + h.sum() * x.sum() + (x * ws[0]).exp().mean()
    return x, ws, loss


def test_same_graph_gives_bit_identical_grads():
    results = []
    for _ in range(3):
        x, ws, loss = _diamond_graph()
        loss.backward()
        results.append([bits(x.grad)] + [bits(w.grad) for w in ws])
    assert results[0] == results[1] == results[2]


def test_same_graph_run_twice_with_retain_graph_is_bit_identical():
    x, ws, loss = _diamond_graph(1)
    g1 = dg.autograd.grad(loss, [x] + ws, retain_graph=True)
    g2 = dg.autograd.grad(loss, [x] + ws, retain_graph=True)
    loss.backward()
    assert [bits(g) for g in g1] == [bits(g) for g in g2]
    assert bits(g1[0]) == bits(x.grad)


def test_diamond_grads_match_torch():
    torch = pytest.importorskip("torch")
    x, ws, loss = _diamond_graph(2)
    loss.backward()

    rng = np.random.default_rng(2)
    tx = torch.tensor(rng.standard_normal(257).astype(np.float32), requires_grad=True)
    tws = [torch.tensor(rng.standard_normal(257).astype(np.float32), requires_grad=True)
           for _ in range(3)]
    h = tx
    for k in range(12):
        a = h.sin() * tws[k % 3]
        b = h.cos() * h
        c = (h * 0.3).tanh()
        d = a * b + b * c + c * a + h
        h = d / (1.0 + d * d).sqrt()
    ((h * h).sum() + h.sum() * tx.sum() + (tx * tws[0]).exp().mean()).backward()
    np.testing.assert_allclose(arr(x.grad), tx.grad.numpy(), rtol=2e-4, atol=2e-5)
    for w, tw in zip(ws, tws):
        np.testing.assert_allclose(arr(w.grad), tw.grad.numpy(), rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------- accumulation
def test_grad_accumulates_across_backward_calls():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    g1 = x.grad
    assert arr(g1).tolist() == [2.0, 4.0]
    (x * 3).sum().backward()
    assert arr(x.grad).tolist() == [5.0, 7.0]
    assert x.grad is g1  # accumulated in place, as PyTorch does without create_graph
    x.grad = None
    (x * 3).sum().backward()
    assert arr(x.grad).tolist() == [3.0, 3.0]


def test_leaf_used_on_many_paths_sums_once():
    x = dg.tensor(3.0, requires_grad=True)
    y = x * x + x * 2 + x.exp() * 0 + x
    y.backward()
    assert x.grad.item() == 2 * 3.0 + 2 + 1


def test_first_grad_is_not_aliased_to_the_incoming_gradient():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    gout = dg.tensor([1.0, 1.0])
    (x + 0).backward(gout)   # the gradient reaching x is gout itself
    gout.mul_(100)
    assert arr(x.grad).tolist() == [1.0, 1.0]
    (x + 0).backward(dg.tensor([1.0, 1.0]))
    assert arr(x.grad).tolist() == [2.0, 2.0]
    assert arr(gout).tolist() == [100.0, 100.0]


def test_retain_graph_allows_second_backward():
    x = dg.tensor(2.0, requires_grad=True)
    y = (x * x).exp()
    y.backward(retain_graph=True)
    g = x.grad.item()
    y.backward(retain_graph=True)
    assert x.grad.item() == pytest.approx(2 * g)
    y.backward()  # the last one may free
    assert x.grad.item() == pytest.approx(3 * g)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_graph_is_released_after_backward():
    class Save(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x, big):
            ctx.save_for_backward(big)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            (big,) = ctx.saved_tensors
            return g * 2, None

    x = dg.tensor([1.0], requires_grad=True)
    big = dg.ones(1000)
    ref = weakref.ref(big)
    y = Save.apply(x, big)
    del big
    gc.collect()
    assert ref() is not None  # kept alive by the graph
    y.sum().backward()
    gc.collect()
    assert ref() is None      # released by backward although y is still alive
    assert y.grad_fn is not None


# --------------------------------------------------- higher-order gradients
def test_third_derivative_of_x4():
    x = dg.tensor(2.0, dtype=dg.float64, requires_grad=True)
    y = x ** 4
    (g1,) = dg.autograd.grad(y, x, create_graph=True)
    (g2,) = dg.autograd.grad(g1, x, create_graph=True)
    (g3,) = dg.autograd.grad(g2, x, create_graph=True)
    (g4,) = dg.autograd.grad(g3, x)
    assert [g1.item(), g2.item(), g3.item(), g4.item()] == [32.0, 48.0, 48.0, 24.0]
    assert g3.requires_grad and not g4.requires_grad


def test_higher_order_of_transcendental_functions():
    x = dg.tensor([0.3, -1.2, 2.0], dtype=dg.float64, requires_grad=True)
    g = x.sin().sum()
    derivs = []
    for _ in range(4):
        (g,) = dg.autograd.grad(g.sum(), x, create_graph=True)
        derivs.append(arr(g))
    xn = arr(x)
    np.testing.assert_allclose(derivs[0], np.cos(xn))
    np.testing.assert_allclose(derivs[1], -np.sin(xn))
    np.testing.assert_allclose(derivs[2], -np.cos(xn))
    np.testing.assert_allclose(derivs[3], np.sin(xn))


def test_mixed_partials_and_hessian_vector_product():
    x = dg.tensor([1.0, 2.0], dtype=dg.float64, requires_grad=True)
    y = dg.tensor([3.0, -1.0], dtype=dg.float64, requires_grad=True)
    f = (x * x * y).sum() + (x * y.exp()).sum()
    gx, gy = dg.autograd.grad(f, [x, y], create_graph=True)
    # d/dy (2xy + e^y) = 2x + e^y
    v = dg.tensor([1.0, 1.0], dtype=dg.float64)
    (hxy,) = dg.autograd.grad(gx, y, grad_outputs=v)
    np.testing.assert_allclose(arr(hxy), 2 * arr(x) + np.exp(arr(y)))


def test_backward_with_create_graph_gives_differentiable_grad():
    x = dg.tensor(2.0, dtype=dg.float64, requires_grad=True)
    (x ** 3).backward(create_graph=True)
    assert x.grad.item() == 12.0
    assert x.grad.requires_grad
    (gg,) = dg.autograd.grad(x.grad, x)
    assert gg.item() == 12.0


def test_without_create_graph_grad_has_no_history():
    x = dg.tensor(2.0, requires_grad=True)
    (g,) = dg.autograd.grad(x ** 3, x)
    assert not g.requires_grad and g.grad_fn is None
    (x ** 3).backward()
    assert not x.grad.requires_grad


# ------------------------------------------------------------ autograd.grad
def test_grad_with_grad_outputs():
    x = dg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    (g,) = dg.autograd.grad(y, x, grad_outputs=dg.tensor([1.0, 0.5, -1.0]))
    assert arr(g).tolist() == [2.0, 2.0, -6.0]
    assert x.grad is None


def test_grad_allow_unused_returns_none():
    x = dg.tensor(1.0, requires_grad=True)
    z = dg.tensor(1.0, requires_grad=True)
    gx, gz = dg.autograd.grad(x * 2, [x, z], allow_unused=True)
    assert gx.item() == 2.0 and gz is None
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        dg.autograd.grad(x * 2, [x, z])


def test_grad_materialize_grads_gives_zeros():
    x = dg.tensor(1.0, requires_grad=True)
    z = dg.tensor([[1.0, 2.0]], requires_grad=True)
    gx, gz = dg.autograd.grad(x * 2, [x, z], materialize_grads=True)
    assert gx.item() == 2.0
    assert tuple(gz.shape) == (1, 2) and arr(gz).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError):
        dg.autograd.grad(x * 2, [x, z], materialize_grads=True, allow_unused=False)


def test_grad_multiple_outputs_and_inputs():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    w = dg.tensor([3.0, -1.0], requires_grad=True)
    o1 = x * w
    o2 = (x * x).sum()
    gx, gw = dg.autograd.grad([o1, o2], [x, w], grad_outputs=[dg.tensor([1.0, 10.0]), None])
    assert arr(gx).tolist() == [3.0 + 2.0, -10.0 + 4.0]
    assert arr(gw).tolist() == [1.0, 20.0]
    assert x.grad is None and w.grad is None


def test_grad_non_leaf_inputs():
    w = dg.tensor([1.0, 2.0], requires_grad=True)
    h = w * 3
    loss = (h * h).sum()
    gh, gw = dg.autograd.grad(loss, [h, w])
    assert arr(gh).tolist() == [6.0, 12.0]
    assert arr(gw).tolist() == [18.0, 36.0]


def test_grad_does_not_run_unneeded_branches():
    w = dg.tensor([1.0], requires_grad=True)
    v = dg.tensor([1.0], requires_grad=True)
    ran = []
    a = w * 2
    b = v * 3
    b.register_hook(lambda g: ran.append("b"))
    a.register_hook(lambda g: ran.append("a"))
    dg.autograd.grad((a + b).sum(), [w])
    assert ran == ["a"]
    assert v.grad is None and w.grad is None


def test_backward_inputs_accumulates_only_into_those():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    w = dg.tensor([3.0, 4.0], requires_grad=True)
    loss = (x * w).sum()
    loss.backward(inputs=[w])
    assert x.grad is None
    assert arr(w.grad).tolist() == [1.0, 2.0]
    loss2 = (x * w).sum()
    loss2.backward(inputs=[x, w])
    assert arr(x.grad).tolist() == [3.0, 4.0]
    assert arr(w.grad).tolist() == [2.0, 4.0]


def test_backward_inputs_non_leaf():
    w = dg.tensor([1.0, 2.0], requires_grad=True)
    h = w * 3
    (h * h).sum().backward(inputs=[h])
    assert arr(h.grad).tolist() == [6.0, 12.0]
    assert w.grad is None


def test_autograd_backward_function():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    dg.autograd.backward([x * 2, x * x], [dg.ones(2), dg.ones(2)])
    assert arr(x.grad).tolist() == [4.0, 6.0]


def test_autograd_grad_matches_torch():
    torch = pytest.importorskip("torch")

    def run(lib):
        x = lib.tensor([1.0, 2.0, -0.5], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([0.3, -2.0, 1.5], dtype=lib.float64, requires_grad=True)
        h = (x * w).tanh()
        o1, o2 = h * x, (h.exp() * w).sum()
        g = lib.autograd.grad([o1, o2], [x, w, h],
                              grad_outputs=[lib.tensor([1.0, -1.0, 2.0], dtype=lib.float64), None],
                              create_graph=True)
        hv = lib.autograd.grad(g[0].sum() + g[1].sum(), [x, w])
        return [t.detach().numpy() for t in g + hv]

    for a, b in zip(run(dg), run(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------- retain_grad
def test_retain_grad_on_non_leaf():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    h.retain_grad()
    assert h.retains_grad and not x.retains_grad
    (h * h).sum().backward(retain_graph=True)
    assert arr(h.grad).tolist() == [4.0, 8.0]
    (h * h).sum().backward()
    assert arr(h.grad).tolist() == [8.0, 16.0]  # accumulates like a leaf


def test_retain_grad_sees_all_paths():
    x = dg.tensor(1.0, requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h + h * 2 + h).backward()
    assert h.grad.item() == 2 * 3 + 2 + 1
    assert x.grad.item() == 3 * (2 * 3 + 2 + 1)


def test_non_leaf_grad_without_retain_warns():
    x = dg.tensor(1.0, requires_grad=True)
    h = x * 2
    h.backward()
    with pytest.warns(UserWarning, match="retain_grad"):
        assert h.grad is None


# ----------------------------------------------------------- graph structure
def test_next_functions_structure():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    w = dg.tensor([3.0, 4.0], requires_grad=True)
    c = dg.tensor([5.0, 6.0])
    y = x * w
    (fx, nx), (fw, nw) = y.grad_fn.next_functions
    assert fx.name() == "AccumulateGrad" and fw.name() == "AccumulateGrad"
    assert fx.variable is x and fw.variable is w
    assert nx == nw == 0
    z = (y + c).sum()
    (add_fn, _), = z.grad_fn.next_functions
    assert add_fn.name() == "AddBackward0"
    assert add_fn.next_functions[0] == (y.grad_fn, 0)
    assert add_fn.next_functions[1] == (None, 0)  # c does not require grad
    # one AccumulateGrad per leaf, shared by every use of the leaf
    assert (x * 3).grad_fn.next_functions[0][0] is fx
    assert x.grad_fn is None and x.is_leaf


def test_next_functions_match_torch():
    torch = pytest.importorskip("torch")

    def structure(lib):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        c = lib.tensor([5.0, 6.0])
        out = ((x * c + x.exp()).sum() * (c @ x)).tanh()
        seen, todo = [], [out.grad_fn]
        while todo:
            fn = todo.pop()
            nxt = [(None if f is None else f.name().split("::")[-1], n)
                   for f, n in fn.next_functions]
            seen.append((fn.name().split("::")[-1], nxt))
            todo.extend(f for f, _ in fn.next_functions if f is not None)
        return seen

    assert structure(dg) == structure(torch)


# ------------------------------------------------------ leaves and detaching
def test_is_leaf_and_requires_grad_():
    x = dg.tensor([1.0, 2.0])
    assert x.is_leaf and not x.requires_grad
    y = x * 2
    assert y.is_leaf  # nothing requires grad: no history
    r = x.requires_grad_()
    assert r is x and x.requires_grad and x.is_leaf
    z = x * 2
    assert not z.is_leaf and z.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad
    assert z.requires_grad  # already-built history is unaffected
    z2 = (x * 2)
    assert z2.requires_grad is False
    assert z.requires_grad_() is z  # True on a non-leaf is allowed (no-op)


def test_detach_shares_memory_and_version_counter():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    v = y._version
    d.add_(1.0)
    assert arr(y).tolist() == [3.0, 5.0]
    assert y._version == d._version == v + 1
    e = x.detach()
    with dg.no_grad():
        e.mul_(10)
    assert arr(x).tolist() == [10.0, 20.0]
    assert x._version == e._version


def test_detach_version_bump_breaks_saved_tensor():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 1.0
    y = h * h  # saves h
    h.detach().zero_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_detach_shares_memory_0d():
    x = dg.tensor(2.0, requires_grad=True)
    y = x * 3
    d = y.detach()
    d.add_(1.0)
    assert y.item() == 7.0


def test_detach_():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    r = y.detach_()
    assert r is y
    assert not y.requires_grad and y.is_leaf and y.grad_fn is None
    assert arr(y).tolist() == [2.0, 4.0]
    (y * x).sum().backward()
    assert arr(x.grad).tolist() == [2.0, 4.0]  # no gradient through y


def test_detach_of_view_in_place_raises():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    v = (x * 2)[0:1]
    with pytest.raises(RuntimeError, match="detach"):
        v.detach_()


# ------------------------------------------------------------ execution order
def _order_graph(lib, log):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    p = x * 2          # created 1st
    q = x * 3          # 2nd
    r = q * 5          # 3rd
    s = p * 7          # 4th
    for name, t in (("p", p), ("q", q), ("r", r), ("s", s)):
        t.register_hook(lambda g, name=name: log.append(name))
    x.register_hook(lambda g: log.append("x"))
    return (r + s).sum()


def test_most_recently_created_ready_node_runs_first():
    log = []
    _order_graph(dg, log).backward()
    # after the add, r (3rd) and s (4th) are ready: s first; then p (1st) and r: r;
    # then q; then p; x only once everything reaching it has been summed
    assert log == ["s", "r", "q", "p", "x"]


def test_execution_order_matches_torch():
    torch = pytest.importorskip("torch")
    a, b = [], []
    _order_graph(dg, a).backward()
    _order_graph(torch, b).backward()
    assert a == b


def test_execution_order_two_siblings():
    log = []
    x = dg.tensor(1.0, requires_grad=True)
    a = x * 2
    b = x * 3
    a.register_hook(lambda g: log.append("a"))
    b.register_hook(lambda g: log.append("b"))
    (a + b).backward()
    assert log == ["b", "a"]
    log.clear()
    (b + a).backward()  # the order of the operands does not matter, creation order does
    assert log == ["b", "a"]


# ------------------------------------------------------------ custom Function
class Cube(dg.autograd.Function):
    """Backward written with tensor ops, so it can be differentiated again."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x ** 2


def test_function_save_for_backward_and_saved_tensors():
    seen = {}

    class Mul(dg.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b, None)
            return a * b

        @staticmethod
        def backward(ctx, g):
            a, b, nothing = ctx.saved_tensors
            seen["saved"] = (a, b, nothing)
            return g * b, g * a

    a = dg.tensor([1.0, 2.0], requires_grad=True)
    b = dg.tensor([3.0, 4.0], requires_grad=True)
    out = Mul.apply(a, b)
    assert out.grad_fn.name() == "MulBackward"
    assert not out.is_leaf and out.requires_grad
    out.sum().backward()
    assert seen["saved"][0] is a and seen["saved"][1] is b and seen["saved"][2] is None
    assert arr(a.grad).tolist() == [3.0, 4.0]
    assert arr(b.grad).tolist() == [1.0, 2.0]


def test_function_forward_runs_without_grad():
    class Probe(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            Probe.mode = dg.is_grad_enabled()
            y = x * 2
            Probe.inner_has_history = y.grad_fn is not None
            return y

        @staticmethod
        def backward(ctx, g):
            return g * 2

    Probe.apply(dg.tensor([1.0], requires_grad=True))
    assert Probe.mode is False and Probe.inner_has_history is False


def test_function_needs_input_grad_and_none_for_non_tensor_args():
    seen = {}

    class Scale(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x, y, k):
            seen["fwd"] = ctx.needs_input_grad
            ctx.k = k
            return x * y * k

        @staticmethod
        def backward(ctx, g):
            seen["bwd"] = ctx.needs_input_grad
            return g * ctx.k, None, None  # None for y (no grad needed) and for k

    x = dg.tensor([1.0, 2.0], requires_grad=True)
    y = dg.tensor([3.0, 4.0])
    Scale.apply(x, y, 5.0).sum().backward()
    assert seen["fwd"] == (True, False, False)
    assert seen["bwd"] == (True, False, False)
    assert arr(x.grad).tolist() == [5.0, 5.0]
    assert y.grad is None


def test_function_without_inputs_requiring_grad_records_nothing():
    out = Cube.apply(dg.tensor([2.0]))
    assert out.grad_fn is None and not out.requires_grad
    with dg.no_grad():
        out = Cube.apply(dg.tensor([2.0], requires_grad=True))
    assert out.grad_fn is None and not out.requires_grad


def test_function_mark_non_differentiable():
    class SortWithIndex(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            idx = dg.tensor(np.argsort(x.detach().numpy()))
            vals = x[idx]
            ctx.mark_non_differentiable(idx)
            ctx.save_for_backward(idx)
            ctx.n = x.shape[0]
            return vals, idx

        @staticmethod
        def backward(ctx, g_vals, g_idx):
            (idx,) = ctx.saved_tensors
            out = dg.zeros(ctx.n)
            out[idx] = g_vals
            return out

    x = dg.tensor([3.0, 1.0, 2.0], requires_grad=True)
    vals, idx = SortWithIndex.apply(x)
    assert vals.requires_grad and not idx.requires_grad and idx.grad_fn is None
    assert arr(vals).tolist() == [1.0, 2.0, 3.0]
    (vals * dg.tensor([1.0, 10.0, 100.0])).sum().backward()
    assert arr(x.grad).tolist() == [100.0, 1.0, 10.0]


def test_function_multiple_outputs():
    seen = {}

    class Split(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            seen["g"] = (arr(g1).tolist(), arr(g2).tolist())
            return g1 * 2 + g2 * 3

    x = dg.tensor([1.0, 2.0], requires_grad=True)
    a, b = Split.apply(x)
    assert a.grad_fn is b.grad_fn
    (a.sum() + 10 * b.sum()).backward()
    assert arr(x.grad).tolist() == [32.0, 32.0]
    x.grad = None
    a, b = Split.apply(x)
    a.sum().backward()  # b unused: its gradient is materialized as zeros
    assert seen["g"] == ([1.0, 1.0], [0.0, 0.0])
    assert arr(x.grad).tolist() == [2.0, 2.0]


def test_function_set_materialize_grads_false():
    seen = {}

    class Split(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(False)
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            seen["g2"] = g2
            return g1 * 2

    x = dg.tensor([1.0], requires_grad=True)
    a, _ = Split.apply(x)
    a.sum().backward()
    assert seen["g2"] is None
    assert arr(x.grad).tolist() == [2.0]


def test_function_returning_input_unchanged():
    class Identity(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 5

    x = dg.tensor([1.0, 2.0], requires_grad=True)
    y = Identity.apply(x)
    assert y is not x and x.is_leaf and y.grad_fn is not None
    y.sum().backward()
    assert arr(x.grad).tolist() == [5.0, 5.0]


def test_function_double_backward_through_tensor_op_backward():
    x = dg.tensor([2.0, -1.0], dtype=dg.float64, requires_grad=True)
    y = Cube.apply(x)
    (g,) = dg.autograd.grad(y.sum(), x, create_graph=True)
    assert arr(g).tolist() == [12.0, 3.0]
    assert g.requires_grad
    (gg,) = dg.autograd.grad(g.sum(), x)
    assert arr(gg).tolist() == [12.0, -6.0]


def test_function_once_differentiable_first_order():
    class Sq(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        @dg.autograd.once_differentiable
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            assert not dg.is_grad_enabled()
            return 2 * x * g

    x = dg.tensor([1.0, 3.0], requires_grad=True)
    Sq.apply(x).sum().backward()
    assert arr(x.grad).tolist() == [2.0, 6.0]
    (g,) = dg.autograd.grad(Sq.apply(x).sum(), x, create_graph=True)
    assert arr(g).tolist() == [2.0, 6.0]
    with pytest.raises(RuntimeError):
        dg.autograd.grad(g.sum(), x)  # cannot be differentiated twice


def test_function_once_differentiable_error_names_it():
    class Sq(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        @dg.autograd.once_differentiable
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    # The incoming gradient requires grad, so the result must too, and
    # differentiating it again must name the decorator (as PyTorch does).
    x = dg.tensor([1.0, 3.0], requires_grad=True)
    v = dg.ones(2, requires_grad=True)
    (g,) = dg.autograd.grad(Sq.apply(x), x, grad_outputs=v, create_graph=True)
    assert g.requires_grad
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


def test_function_mark_dirty():
    class AddOneInplace(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.add_(1)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, g):
            return g

    w = dg.tensor([1.0, 2.0], requires_grad=True)
    h = w * 2
    v = h._version
    y = AddOneInplace.apply(h)
    assert y is h and h._version > v
    assert arr(h).tolist() == [3.0, 5.0]
    (y * y).sum().backward()
    assert arr(w.grad).tolist() == [12.0, 20.0]


def test_custom_function_matches_torch():
    torch = pytest.importorskip("torch")

    def run(lib):
        class F(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, k):
                ctx.save_for_backward(x)
                ctx.k = k
                return x.sin() * k, x * x

            @staticmethod
            def backward(ctx, g1, g2):
                (x,) = ctx.saved_tensors
                return g1 * x.cos() * ctx.k + 2 * x * g2, None

        x = lib.tensor([0.5, -1.0, 2.0], dtype=lib.float64, requires_grad=True)
        a, b = F.apply(x, 3.0)
        (g,) = lib.autograd.grad((a * b).sum(), x, create_graph=True)
        (gg,) = lib.autograd.grad(g.sum(), x)
        return g.detach().numpy(), gg.numpy()

    for a, b in zip(run(dg), run(torch)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


# ----------------------------------------------------------------- gradcheck
class WrongSquare(dg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        # wrong on the last element only: 2x everywhere, 5x at the end
        scale = dg.full(tuple(x.shape), 2.0, dtype=x.dtype)
        scale[-1] = 5.0
        return g * scale * x


class FirstOrderOnly(dg.autograd.Function):
    """Right first derivative; its backward detaches x, so the second is wrong."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x.detach() ** 2


def _x(n=4):
    return dg.tensor(np.linspace(-1.0, 1.5, n), dtype=dg.float64, requires_grad=True)


def test_gradcheck_true_for_correct_functions():
    x = _x()
    w = dg.tensor(np.array([[0.5, -1.0], [2.0, 0.3], [1.0, 1.0], [-0.2, 0.7]]),
                  dtype=dg.float64, requires_grad=True)
    assert dg.autograd.gradcheck(Cube.apply, (x,)) is True
    assert dg.autograd.gradcheck(lambda a, b: (a.exp() @ b).tanh(), (x, w)) is True
    assert dg.autograd.gradcheck(lambda a: (a.sin(), (a * a).sum()), (x,)) is True


def test_gradgradcheck_true_for_correct_functions():
    x = _x()
    assert dg.autograd.gradgradcheck(Cube.apply, (x,)) is True
    assert dg.autograd.gradgradcheck(lambda a: (a.sin() * a).exp(), (x,)) is True


def test_gradcheck_error_names_worst_element():
    x = _x()
    with pytest.raises(dg.autograd.GradcheckError) as ei:
        dg.autograd.gradcheck(WrongSquare.apply, (x,))
    msg = str(ei.value)
    assert isinstance(ei.value, RuntimeError)
    assert "Jacobian mismatch for output 0 with respect to input 0" in msg
    assert "numerical" in msg and "analytical" in msg
    # the last element is the only wrong one: output[3] / input[3]
    assert "worst element" in msg
    assert "flat[3]" in msg
    assert "flat[0]" not in msg and "flat[1]" not in msg and "flat[2]" not in msg


def test_gradcheck_raise_exception_false_returns_false():
    x = _x()
    assert dg.autograd.gradcheck(WrongSquare.apply, (x,), raise_exception=False) is False


def test_gradgradcheck_catches_wrong_second_derivative():
    x = _x()
    assert dg.autograd.gradcheck(FirstOrderOnly.apply, (x,)) is True
    with pytest.raises(dg.autograd.GradcheckError):
        dg.autograd.gradgradcheck(FirstOrderOnly.apply, (x,))
    assert dg.autograd.gradgradcheck(FirstOrderOnly.apply, (x,), raise_exception=False) is False


def test_gradcheck_does_not_touch_inputs():
    x = _x()
    before = arr(x).copy()
    dg.autograd.gradcheck(Cube.apply, (x,))
    np.testing.assert_array_equal(arr(x), before)
    assert x.grad is None
