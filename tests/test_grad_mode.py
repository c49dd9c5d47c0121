"""Grad modes: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, ``inference_mode``,
``is_grad_enabled`` and ``is_inference_mode_enabled``, as context managers and as
decorators (functions and generator functions), nested, and restored on exceptions;
and what inference tensors may not do afterwards.
"""
import pytest

import distgrad as dg


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """Every test starts in the default mode and must leave it so."""
    assert dg.is_grad_enabled() and not dg.is_inference_mode_enabled()
    yield
    state = (dg.is_grad_enabled(), dg.is_inference_mode_enabled())
    dg.set_grad_enabled(True)
    if dg.is_inference_mode_enabled():
        dg.inference_mode(False).__enter__()  # leave inference mode for the next test
    assert state == (True, False), "the test leaked a grad mode"


def leaf():
    return dg.tensor([1.0, 2.0], requires_grad=True)


def mode():
    return dg.is_grad_enabled(), dg.is_inference_mode_enabled()


# ------------------------------------------------------------ context managers
def test_no_grad_context():
    x = leaf()
    with dg.no_grad() as r:
        assert r is None
        assert mode() == (False, False)
        y = x * 2
    assert mode() == (True, False)
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert not y.is_inference()
    assert (x * 2).requires_grad


def test_no_grad_keeps_requires_grad_of_new_leaves():
    with dg.no_grad():
        t = dg.ones(2, requires_grad=True)
    assert t.requires_grad and t.is_leaf


def test_enable_grad_inside_no_grad():
    x = leaf()
    with dg.no_grad():
        with dg.enable_grad():
            assert mode() == (True, False)
            y = x * 2
        assert mode() == (False, False)
        z = x * 2
    assert y.requires_grad and y.grad_fn is not None
    assert not z.requires_grad
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_set_grad_enabled_context_and_call():
    x = leaf()
    with dg.set_grad_enabled(False):
        assert not dg.is_grad_enabled()
        assert not (x * 2).requires_grad
        with dg.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not dg.is_grad_enabled()
    assert dg.is_grad_enabled()
    # as a plain call it sets the mode until changed again
    dg.set_grad_enabled(False)
    try:
        assert not dg.is_grad_enabled()
        assert not (x * 2).requires_grad
    finally:
        dg.set_grad_enabled(True)
    assert dg.is_grad_enabled()


def test_set_grad_enabled_takes_a_runtime_flag():
    x = leaf()
    for training in (True, False):
        with dg.set_grad_enabled(training):
            y = x * 2
        assert y.requires_grad is training


def test_inference_mode_context():
    x = leaf()
    with dg.inference_mode():
        assert mode() == (False, True)
        y = x * 2
        z = dg.ones(3)
    assert mode() == (True, False)
    assert not y.requires_grad and y.grad_fn is None
    assert y.is_inference() and z.is_inference()
    assert not x.is_inference()


def test_inference_mode_false_is_a_no_op_outside():
    with dg.inference_mode(False):
        assert mode() == (True, False)
        y = leaf() * 2
    assert y.requires_grad and not y.is_inference()


def test_inference_mode_false_inside_inference_mode():
    x = leaf()
    with dg.inference_mode():
        with dg.inference_mode(False):
            assert mode() == (True, False)
            y = x * 2
        assert mode() == (False, True)
    assert y.requires_grad and not y.is_inference()


def test_enable_grad_inside_inference_mode_records_nothing():
    x = leaf()
    with dg.inference_mode():
        with dg.enable_grad():
            assert mode() == (True, True)
            y = x * 2
    assert not y.requires_grad and y.is_inference()


def test_nested_modes_restore_in_order():
    seen = []
    with dg.no_grad():
        seen.append(mode())
        with dg.inference_mode():
            seen.append(mode())
            with dg.no_grad():
                seen.append(mode())
            seen.append(mode())
        seen.append(mode())
        with dg.set_grad_enabled(True):
            seen.append(mode())
        seen.append(mode())
    seen.append(mode())
    assert seen == [(False, False), (False, True), (False, True), (False, True),
                    (False, False), (True, False), (False, False), (True, False)]


@pytest.mark.parametrize("make", [
    lambda: dg.no_grad(), lambda: dg.enable_grad(), lambda: dg.set_grad_enabled(False),
    lambda: dg.inference_mode(), lambda: dg.inference_mode(False),
])
def test_exception_restores_state(make):
    with dg.no_grad():
        before = mode()
        with pytest.raises(ValueError):
            with make():
                raise ValueError("boom")
        assert mode() == before
    with pytest.raises(KeyError):
        with make():
            raise KeyError("boom")
    assert mode() == (True, False)


def test_context_manager_does_not_swallow_exceptions():
    with pytest.raises(ZeroDivisionError):
        with dg.no_grad():
            1 / 0


# --------------------------------------------------------------- decorators
def test_no_grad_decorator():
    x = leaf()

    @dg.no_grad()
    def f(t):
        """doc"""
        return t * 2, mode()

    y, m = f(x)
    assert m == (False, False)
    assert not y.requires_grad
    assert mode() == (True, False)
    assert f.__name__ == "f" and f.__doc__ == "doc"  # functools.wraps


def test_enable_grad_decorator():
    x = leaf()

    @dg.enable_grad()
    def f(t):
        return t * 2

    with dg.no_grad():
        y = f(x)
        assert not dg.is_grad_enabled()
    assert y.requires_grad


def test_set_grad_enabled_decorator():
    x = leaf()

    @dg.set_grad_enabled(False)
    def f(t):
        return t * 2, dg.is_grad_enabled()

    assert dg.is_grad_enabled()  # decorating does not change the mode
    y, enabled = f(x)
    assert enabled is False and not y.requires_grad
    assert dg.is_grad_enabled()


def test_inference_mode_decorator_with_and_without_parens():
    x = leaf()

    @dg.inference_mode()
    def f(t):
        return t * 2, mode()

    @dg.inference_mode
    def g(t):
        return t * 2, mode()

    @dg.inference_mode(False)
    def h(t):
        return t * 2, mode()

    for fn in (f, g):
        y, m = fn(x)
        assert m == (False, True) and y.is_inference() and not y.requires_grad
    y, m = h(x)
    assert m == (True, False) and y.requires_grad
    assert mode() == (True, False)


def test_no_grad_and_enable_grad_decorators_without_parens():
    x = leaf()

    @dg.no_grad
    def f(t):
        return t * 2

    @dg.enable_grad
    def g(t):
        return t * 2

    assert not f(x).requires_grad
    with dg.no_grad():
        assert g(x).requires_grad


def test_decorated_function_restores_state_on_exception():
    @dg.inference_mode()
    def f():
        raise RuntimeError("inside")

    @dg.no_grad()
    def g():
        raise RuntimeError("inside")

    for fn in (f, g):
        with pytest.raises(RuntimeError, match="inside"):
            fn()
        assert mode() == (True, False)


def test_decorated_function_nested_calls():
    @dg.enable_grad()
    def inner():
        return mode()

    @dg.no_grad()
    def outer():
        before = mode()
        got = inner()
        return before, got, mode()

    assert outer() == ((False, False), (True, False), (False, False))
    assert mode() == (True, False)


def test_decorator_is_reusable_and_recursive():
    @dg.no_grad()
    def depth(n):
        assert not dg.is_grad_enabled()
        return 0 if n == 0 else 1 + depth(n - 1)

    assert depth(5) == 5
    assert depth(3) == 3
    assert dg.is_grad_enabled()


def test_generator_runs_in_mode_and_returns_value():
    x = leaf()

    @dg.no_grad()
    def gen(n):
        for i in range(n):
            got = yield (x * i).requires_grad, dg.is_grad_enabled()
            assert got is None or got == i
        return "done"

    it = gen(3)
    assert list(it) == [(False, False)] * 3
    it = gen(2)
    assert next(it) == (False, False)
    assert it.send(0) == (False, False)
    with pytest.raises(StopIteration) as ei:
        it.send(None)
    assert ei.value.value == "done"


def test_generator_mode_does_not_leak_to_caller():
    @dg.no_grad()
    def gen():
        assert not dg.is_grad_enabled()
        yield 1
        assert not dg.is_grad_enabled()
        yield 2

    x = leaf()
    seen = []
    for v in gen():
        seen.append((v, dg.is_grad_enabled(), (x * 2).requires_grad))
    assert seen == [(1, True, True), (2, True, True)]


def _close_gen(lib, log):
    @lib.inference_mode()
    def gen():
        try:
            yield 1
            yield 2
        finally:
            log.append(("finally", lib.is_inference_mode_enabled()))

    it = gen()
    next(it)
    it.close()
    log.append(("after", lib.is_grad_enabled(), lib.is_inference_mode_enabled()))


def test_generator_close_runs_cleanup_and_restores_state():
    log = []
    _close_gen(dg, log)
    assert [e[0] for e in log] == ["finally", "after"]
    assert log[-1] == ("after", True, False)


def test_generator_close_runs_cleanup_in_mode():
    log = []
    _close_gen(dg, log)
    assert log[0] == ("finally", True)


def test_generator_throw_is_forwarded():
    @dg.no_grad()
    def gen2():
        try:
            yield 1
        except ValueError:
            yield ("caught", dg.is_grad_enabled())

    it = gen2()
    next(it)
    assert it.throw(ValueError) == ("caught", False)
    it.close()


def test_decorating_a_class_is_an_error_or_works():
    # PyTorch deprecates it; distgrad may refuse it outright, but never silently
    # decorates a class as if it were a function.
    try:
        @dg.no_grad()
        class A:
            """A class, not a function."""
    except TypeError as e:
        assert "class" in str(e)
        return
    assert isinstance(A, type)


# ------------------------------------------------------------- inference tensors
def test_inference_tensor_cannot_be_saved_for_backward_later():
    with dg.inference_mode():
        t = dg.tensor([1.0, 2.0]) * 3
    assert t.is_inference() and not t.requires_grad
    x = leaf()
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        x * t
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        dg.dot(x, t)  # the other operand is saved too
    with pytest.raises(RuntimeError, match="clone"):
        x * t[0:2]  # a view of an inference tensor is one too
    # the message's fix: clone to a normal tensor
    c = t.clone()
    assert not c.is_inference()
    (x * c).sum().backward()
    assert x.grad.tolist() == [3.0, 6.0]


def test_inference_tensor_allowed_where_nothing_saves_it():
    with dg.inference_mode():
        t = dg.ones(2)
    x = leaf()
    y = x + t  # add saves nothing
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]
    with dg.no_grad():
        z = x * t  # no graph: nothing is saved
    assert not z.requires_grad and not z.is_inference()


def test_inference_tensor_cannot_be_modified_in_place_outside_inference_mode():
    with dg.inference_mode():
        t = dg.ones(2)
        t.add_(1)  # fine inside
    assert t.tolist() == [2.0, 2.0]
    for op in (lambda: t.add_(1), lambda: t.mul_(2), lambda: t.zero_(),
               lambda: t.__setitem__(0, 5.0)):
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
            op()
    with dg.no_grad():  # no_grad is not inference mode
        with pytest.raises(RuntimeError, match="inference tensor"):
            t.add_(1)
    assert t.tolist() == [2.0, 2.0]
    with dg.inference_mode():
        t.add_(1)
    assert t.tolist() == [3.0, 3.0]


def test_normal_tensor_may_be_modified_inside_inference_mode():
    t = dg.ones(2)
    with dg.inference_mode():
        t.add_(1)
    assert t.tolist() == [2.0, 2.0] and not t.is_inference()


def test_views_and_detach_of_inference_tensor_are_inference():
    with dg.inference_mode():
        t = dg.ones(3)
    assert t[0:2].is_inference()
    assert t.detach().is_inference()
    assert not (t * 2).is_inference()  # computed outside: a normal tensor
    assert not t.clone().is_inference()


def test_requires_grad_on_inference_tensor_outside_inference_mode():
    with dg.inference_mode():
        t = dg.ones(2)
    with pytest.raises(RuntimeError, match="inference tensor"):
        t.requires_grad_()


def test_no_grad_tensors_are_not_inference_and_can_be_saved():
    with dg.no_grad():
        t = dg.ones(2) * 3
    x = leaf()
    (x * t).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]
    t.add_(1)  # and modified in place
    assert t.tolist() == [4.0, 4.0]


def test_backward_inside_no_grad_still_computes_gradients():
    x = leaf()
    y = (x * x).sum()
    with dg.no_grad():
        y.backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_grad_mode_inside_backward_follows_create_graph():
    seen = []
    x = leaf()
    y = x * 2
    y.register_hook(lambda g: seen.append(dg.is_grad_enabled()))
    y.sum().backward(retain_graph=True)
    y.sum().backward(create_graph=True)
    assert seen == [False, True]
    assert dg.is_grad_enabled()


# ------------------------------------------------------------- against PyTorch
def _modes(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    out = []

    def rec(tag):
        y = x * 2
        out.append((tag, lib.is_grad_enabled(), lib.is_inference_mode_enabled(),
                    y.requires_grad, y.is_inference()))

    rec("default")
    with lib.no_grad():
        rec("no_grad")
        with lib.enable_grad():
            rec("no_grad/enable_grad")
        with lib.set_grad_enabled(True):
            rec("no_grad/set(True)")
        with lib.inference_mode():
            rec("no_grad/inference")
    with lib.inference_mode():
        rec("inference")
        with lib.no_grad():
            rec("inference/no_grad")
    with lib.set_grad_enabled(False):
        rec("set(False)")
    rec("after")
    return out


def test_modes_match_torch():
    torch = pytest.importorskip("torch")
    assert _modes(dg) == _modes(torch)


def test_inference_errors_match_torch_types():
    torch = pytest.importorskip("torch")
    for lib in (torch, dg):
        with lib.inference_mode():
            t = lib.ones(2)
        x = lib.ones(2, requires_grad=True)
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            x * t
        with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
            t.add_(1)
