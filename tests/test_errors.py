"""Error messages are part of the API (DESIGN.md, "The engine").

Each test asserts the exception type PyTorch raises in the same situation and a
phrase of the message that says what was wrong and, where there is a usual fix,
what to do. ``test_*_matches_torch`` tests check the type against PyTorch itself
when it is installed.
"""
import pytest

import distgrad as dg


def raises(exc, *phrases):
    """pytest.raises that also checks every phrase (plain text) is in the message."""
    class _Ctx:
        def __enter__(self):
            self.cm = pytest.raises(exc)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *a):
            r = self.cm.__exit__(*a)
            if not r:  # another exception type: let it propagate unchanged
                return r
            msg = str(self.info.value)
            for p in phrases:
                assert p in msg, f"{p!r} not in message: {msg!r}"
            return r
    return _Ctx()


# ------------------------------------------------------------------ backward
def test_backward_non_scalar_without_gradient():
    x = dg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    with raises(RuntimeError, "grad can be implicitly created only for scalar outputs") as ei:
        y.backward()
    msg = str(ei.value)
    # says how to fix it: pass a gradient, or reduce first
    assert "gradient" in msg and ("sum()" in msg or "gradient=" in msg)
    assert x.grad is None
    y.backward(dg.ones(3))  # the fix
    assert x.grad.tolist() == [2.0, 2.0, 2.0]


def test_autograd_grad_non_scalar_without_grad_outputs():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "grad can be implicitly created only for scalar outputs"):
        dg.autograd.grad(x * 2, x)


def test_backward_gradient_of_wrong_shape():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "Mismatch in shape", "[3]", "[2]"):
        (x * 2).backward(dg.ones(3))


def test_backward_twice_without_retain_graph():
    x = dg.tensor(2.0, requires_grad=True)
    y = (x * x).exp()
    y.backward()
    with raises(RuntimeError, "backward through the graph a second time", "retain_graph=True"):
        y.backward()


def test_autograd_grad_twice_without_retain_graph():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    y = (x ** 2).sum()
    dg.autograd.grad(y, x)
    with raises(RuntimeError, "retain_graph=True"):
        dg.autograd.grad(y, x)


def test_saved_tensors_after_free():
    class Keep(dg.autograd.Function):
        ctx = None

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            Keep.ctx = ctx
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    x = dg.tensor([1.0], requires_grad=True)
    Keep.apply(x).sum().backward()
    with raises(RuntimeError, "already been freed", "retain_graph=True"):
        Keep.ctx.saved_tensors


def test_backward_of_tensor_without_graph():
    x = dg.tensor(2.0)
    with raises(RuntimeError, "does not require grad and does not have a grad_fn") as ei:
        (x ** 2).backward()
    assert "requires_grad" in str(ei.value)  # the fix: requires_grad=True


def test_grad_of_input_that_does_not_require_grad():
    w = dg.tensor(3.0, requires_grad=True)
    x = dg.tensor(2.0)  # requires_grad=False
    y = w * x
    with raises(RuntimeError, "does not require grad"):
        dg.autograd.grad(y, x)


def test_grad_of_unused_input_says_allow_unused():
    x = dg.tensor(1.0, requires_grad=True)
    z = dg.tensor(1.0, requires_grad=True)
    with raises(RuntimeError, "not have been used in the graph", "allow_unused=True"):
        dg.autograd.grad(x * 2, [x, z])


def test_backward_inputs_empty():
    x = dg.tensor(1.0, requires_grad=True)
    with raises(RuntimeError, "cannot be empty"):
        (x * 2).backward(inputs=[])


# ------------------------------------------------------------------- in-place
def test_inplace_on_leaf_requiring_grad():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "leaf Variable that requires grad", "in-place operation") as ei:
        x.add_(1)
    msg = str(ei.value)
    assert "add_" in msg  # names the op
    assert "no_grad" in msg or "clone" in msg  # says what to do
    assert x.tolist() == [1.0, 2.0] and x._version == 0  # nothing was written


@pytest.mark.parametrize("op", [
    lambda x: x.mul_(2), lambda x: x.zero_(), lambda x: x.fill_(1.0),
    lambda x: x.__setitem__(0, 5.0), lambda x: x.copy_(dg.zeros(2)),
])
def test_every_inplace_form_on_leaf_raises(op):
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "leaf Variable that requires grad"):
        op(x)
    assert x.tolist() == [1.0, 2.0]


def test_inplace_on_view_of_leaf():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "view of a leaf Variable that requires grad"):
        x[0].mul_(2)


def test_inplace_on_leaf_allowed_under_no_grad():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with dg.no_grad():
        x.add_(1)
    assert x.tolist() == [2.0, 3.0]
    assert x.requires_grad and x.is_leaf


def test_modified_saved_tensor_names_op_and_versions():
    w = dg.tensor([1.0, 2.0], requires_grad=True)
    h = w * 1.0
    y = h ** 2          # PowBackward0 saves h at version 0
    h.add_(1.0)         # version 1
    h.mul_(3.0)         # version 2
    with raises(RuntimeError, "modified by an inplace operation") as ei:
        y.sum().backward()
    msg = str(ei.value)
    assert "PowBackward0" in msg
    assert "version 2" in msg and "version 0" in msg
    assert "[2]" in msg  # the shape of the modified tensor
    assert "clone" in msg or "out-of-place" in msg


def test_modified_saved_output_names_op_and_versions():
    w = dg.tensor([1.0, 2.0], requires_grad=True)
    h = w.exp()         # ExpBackward0 saves its own output
    h.mul_(2.0)
    with raises(RuntimeError, "modified by an inplace operation", "ExpBackward0",
                "version 1", "version 0"):
        h.sum().backward()


def test_modified_saved_tensor_of_custom_function():
    class Sq(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    w = dg.tensor([1.0, 2.0], requires_grad=True)
    h = w + 0
    y = Sq.apply(h)
    h.add_(1)
    with raises(RuntimeError, "modified by an inplace operation", "SqBackward",
                "version 1", "version 0"):
        y.sum().backward()


# ------------------------------------------------------------- shape mismatch
@pytest.mark.parametrize("op, name", [
    (lambda a, b: a + b, "add"), (lambda a, b: a * b, "mul"),
    (lambda a, b: a - b, "sub"), (lambda a, b: a / b, "div"),
])
def test_binary_op_shape_mismatch(op, name):
    a, b = dg.ones(2, 3), dg.ones(4, 5)
    with raises(RuntimeError, "must match the size of tensor b", "[2, 3]", "[4, 5]", name):
        op(a, b)


def _shapes_in(msg, s1, s2):
    fmt = lambda s: (str(list(s)), "x".join(map(str, s)))  # noqa: E731
    return any(f in msg for f in fmt(s1)) and any(f in msg for f in fmt(s2))


def test_matmul_shape_mismatch():
    with raises(RuntimeError, "cannot be multiplied") as ei:
        dg.ones(2, 3) @ dg.ones(4, 5)
    assert _shapes_in(str(ei.value), (2, 3), (4, 5))
    with raises(RuntimeError, "cannot be multiplied") as ei:
        dg.matmul(dg.ones(2, 2, 3), dg.ones(2, 4, 5))
    assert _shapes_in(str(ei.value), (2, 2, 3), (2, 4, 5))


def test_mm_shape_mismatch():
    with raises(RuntimeError, "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"):
        dg.mm(dg.ones(2, 3), dg.ones(4, 5))


def test_bmm_shape_mismatch():
    with raises(RuntimeError, "bmm", "[2, 3, 4]", "[2, 5, 6]"):
        dg.bmm(dg.ones(2, 3, 4), dg.ones(2, 5, 6))


def test_bmm_shape_mismatch_type():
    with raises(RuntimeError, "bmm", "Expected size for first two dimensions of batch2"):
        dg.bmm(dg.ones(2, 3, 4), dg.ones(2, 5, 6))
    with raises(RuntimeError, "3D"):
        dg.bmm(dg.ones(2, 3), dg.ones(3, 3))


def test_cat_shape_mismatch_names_op_and_shapes():
    with raises(RuntimeError, "cat", "[2, 3]", "[2, 4]"):
        dg.cat([dg.ones(2, 3), dg.ones(2, 4)])


def test_cat_shape_mismatch_type():
    with raises(RuntimeError, "Sizes of tensors must match except in dimension 0",
                "Expected size 3 but got size 4 for tensor number 1"):
        dg.cat([dg.ones(2, 3), dg.ones(2, 4)])
    with raises(RuntimeError, "same number of dimensions"):
        dg.cat([dg.ones(2, 3), dg.ones(3)])


def test_stack_shape_mismatch():
    with raises(RuntimeError, "stack", "[2]", "[3]"):
        dg.stack([dg.ones(2), dg.ones(3)])


def test_matmul_dtype_mismatch():
    with raises(RuntimeError, "same dtype") as ei:
        dg.ones(2, 3) @ dg.ones(3, 4, dtype=dg.float64)
    msg = str(ei.value)
    assert "matmul" in msg
    assert "float32" in msg and "float64" in msg
    with raises(RuntimeError, "same dtype", "bmm"):
        dg.bmm(dg.ones(1, 2, 3), dg.ones(1, 3, 3, dtype=dg.float64))


def test_matmul_0d():
    with raises(RuntimeError, "at least 1D", "0D"):
        dg.matmul(dg.tensor(1.0), dg.ones(2))


# ------------------------------------------------------------ custom Function
class _TooMany(dg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2, g


class _TooFew(dg.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        return x * y

    @staticmethod
    def backward(ctx, g):
        return g


class _BadShape(dg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return dg.ones(3)


class _NotTensor(dg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return 3.0


def test_function_too_many_gradients():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "_TooManyBackward", "incorrect number of gradients",
                "expected 1, got 2"):
        _TooMany.apply(x).sum().backward()


def test_function_too_few_gradients():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    y = dg.tensor([3.0, 4.0], requires_grad=True)
    with raises(RuntimeError, "incorrect number of gradients", "expected 2, got 1"):
        _TooFew.apply(x, y).sum().backward()


def test_function_extra_none_gradients_are_allowed():
    class ExtraNone(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2, None, None

    x = dg.tensor([1.0, 2.0], requires_grad=True)
    ExtraNone.apply(x).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_function_wrongly_shaped_gradient():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "_BadShapeBackward", "invalid gradient at index 0", "[3]", "[2]"):
        _BadShape.apply(x).sum().backward()


def test_function_non_tensor_gradient():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "float"):
        _NotTensor.apply(x).sum().backward()


def test_function_non_tensor_gradient_message():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(Exception, match="float") as ei:
        _NotTensor.apply(x).sum().backward()
    assert "Tensor or None" in str(ei.value)


def test_function_gradient_for_non_tensor_input():
    class Scale(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            return x * k

        @staticmethod
        def backward(ctx, g):
            return g * 2, dg.ones(1)

    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "position 1", "not a Tensor"):
        Scale.apply(x, 2.0).sum().backward()


def test_save_for_backward_non_tensor():
    class Bad(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x, 3)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(TypeError, match="save_for_backward can only save tensors"):
        Bad.apply(dg.tensor([1.0], requires_grad=True))


# ------------------------------------------------------------ inference mode
def test_inference_tensor_saved_for_backward():
    with dg.inference_mode():
        t = dg.ones(2)
    w = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "Inference tensors cannot be saved for backward", "clone"):
        w * t  # mul saves both operands
    (w + t).sum().backward()  # add saves nothing: allowed, as in PyTorch
    assert w.grad.tolist() == [1.0, 1.0]
    (w * t.clone()).sum().backward()  # the fix
    assert w.grad.tolist() == [2.0, 2.0]


def test_inference_tensor_saved_by_custom_function():
    class Sq(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x, c):
            ctx.save_for_backward(c)
            return x * c

        @staticmethod
        def backward(ctx, g):
            (c,) = ctx.saved_tensors
            return g * c, None

    with dg.inference_mode():
        c = dg.ones(2)
    with raises(RuntimeError, "Inference tensors cannot be saved for backward"):
        Sq.apply(dg.tensor([1.0, 2.0], requires_grad=True), c)


def test_inference_tensor_inplace_outside_inference_mode():
    with dg.inference_mode():
        t = dg.ones(2)
    with raises(RuntimeError, "Inplace update to inference tensor outside InferenceMode",
                "clone"):
        t.add_(1)
    assert t.tolist() == [1.0, 1.0]


# ------------------------------------------------------------- tensor misuse
@pytest.mark.parametrize("dtype", [dg.int64, dg.int32, dg.bool])
def test_requires_grad_on_integer_tensor(dtype):
    with raises(RuntimeError, "only Tensors of floating point"):
        dg.tensor([1, 2], dtype=dtype, requires_grad=True)
    t = dg.tensor([1, 2], dtype=dtype)
    with raises(RuntimeError, "only Tensors of floating point"):
        t.requires_grad_()
    with raises(RuntimeError, "only Tensors of floating point"):
        t.requires_grad = True
    assert t.requires_grad is False


def test_item_on_multi_element_tensor():
    with raises(RuntimeError, "a Tensor with 3 elements cannot be converted to Scalar"):
        dg.tensor([1.0, 2.0, 3.0]).item()
    assert dg.tensor([[5.0]]).item() == 5.0


def test_bool_of_multi_element_tensor():
    with raises(RuntimeError, "ambiguous"):
        bool(dg.tensor([1.0, 2.0]))


def test_numpy_on_tensor_requiring_grad():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "Can't call numpy() on Tensor that requires grad",
                "tensor.detach().numpy()"):
        x.numpy()
    with raises(RuntimeError, "requires grad"):
        (x * 2).numpy()
    assert x.detach().numpy().tolist() == [1.0, 2.0]


def test_requires_grad_false_on_non_leaf():
    x = dg.tensor([1.0], requires_grad=True)
    with raises(RuntimeError, "only change requires_grad flags of leaf variables", "detach()"):
        (x * 2).requires_grad_(False)


def test_hooks_on_tensor_without_grad():
    with raises(RuntimeError, "doesn't require gradient"):
        dg.tensor([1.0]).register_hook(lambda g: g)
    with raises(RuntimeError, "requires_grad=False"):
        dg.tensor([1.0]).retain_grad()


def test_post_accumulate_hook_on_non_leaf():
    x = dg.tensor([1.0], requires_grad=True)
    with raises(RuntimeError, "post accumulate grad hooks cannot be registered on non-leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_assigned_grad_of_wrong_shape():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    with raises(RuntimeError, "different size", "(3,)", "(2,)"):
        x.grad = dg.ones(3)


# ------------------------------------------------------------ against PyTorch
CASES = {
    "nonscalar": lambda lib: (lib.tensor([1.0, 2.0], requires_grad=True) * 2).backward(),
    "twice": lambda lib: [y := lib.tensor(2.0, requires_grad=True).exp(), y.backward(), y.backward()],
    "nograd_input": lambda lib: lib.autograd.grad(
        lib.tensor(2.0, requires_grad=True) * lib.tensor(3.0), lib.tensor(3.0)),
    "leaf_inplace": lambda lib: lib.tensor([1.0], requires_grad=True).add_(1),
    "version": lambda lib: [h := lib.tensor([1.0], requires_grad=True) * 1, y := h ** 2,
                            h.add_(1), y.sum().backward()],
    "broadcast": lambda lib: lib.ones(2, 3) + lib.ones(4, 5),
    "mm": lambda lib: lib.mm(lib.ones(2, 3), lib.ones(4, 5)),
    "bmm": lambda lib: lib.bmm(lib.ones(2, 3, 4), lib.ones(2, 5, 6)),
    "cat": lambda lib: lib.cat([lib.ones(2, 3), lib.ones(2, 4)]),
    "matmul_dtype": lambda lib: lib.ones(2, 3) @ lib.ones(3, 4, dtype=lib.float64),
    "int_requires_grad": lambda lib: lib.tensor([1, 2], requires_grad=True),
    "item": lambda lib: lib.tensor([1.0, 2.0]).item(),
    "numpy": lambda lib: lib.tensor([1.0], requires_grad=True).numpy(),
    "inference_saved": lambda lib: _inference_saved(lib),
    "inference_inplace": lambda lib: _inference_inplace(lib),
    "too_many": lambda lib: _custom(lib, lambda g: (g, g)),
    "bad_shape": lambda lib: _custom(lib, lambda g: lib.ones(3)),
}


def _inference_saved(lib):
    with lib.inference_mode():
        t = lib.ones(2)
    return lib.ones(2, requires_grad=True) * t


def _inference_inplace(lib):
    with lib.inference_mode():
        t = lib.ones(2)
    t.add_(1)


def _custom(lib, bwd):
    class F(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return bwd(g)

    F.apply(lib.ones(2, requires_grad=True)).sum().backward()


@pytest.mark.parametrize("case", sorted(CASES))
def test_exception_type_matches_torch(case):
    torch = pytest.importorskip("torch")
    with pytest.raises(Exception) as t_ei:
        CASES[case](torch)
    with pytest.raises(Exception) as d_ei:
        CASES[case](dg)
    assert type(d_ei.value) is type(t_ei.value), (d_ei.value, t_ei.value)


# Phrases PyTorch users search for: distgrad's message contains PyTorch's own
# (key part of the) message.
TORCH_PHRASES = {
    "nonscalar": "grad can be implicitly created only for scalar outputs",
    "twice": "Trying to backward through the graph a second time",
    "nograd_input": "One of the differentiated Tensors does not require grad",
    "leaf_inplace": "a leaf Variable that requires grad is being used in an in-place operation",
    "version": "one of the variables needed for gradient computation has been modified by an "
               "inplace operation",
    "broadcast": "The size of tensor a (3) must match the size of tensor b (5) at "
                 "non-singleton dimension 1",
    "mm": "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)",
    "item": "a Tensor with 2 elements cannot be converted to Scalar",
    "numpy": "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.",
    "inference_saved": "Inference tensors cannot be saved for backward",
    "too_many": "returned an incorrect number of gradients (expected 1, got 2)",
    "bad_shape": "returned an invalid gradient at index 0 - got [3] but expected shape "
                 "compatible with [2]",
}


@pytest.mark.parametrize("case", sorted(TORCH_PHRASES))
def test_message_contains_torch_phrase(case):
    with pytest.raises(Exception) as ei:
        CASES[case](dg)
    assert TORCH_PHRASES[case] in str(ei.value)


def test_torch_phrases_are_torchs():
    torch = pytest.importorskip("torch")
    for case, phrase in TORCH_PHRASES.items():
        with pytest.raises(Exception) as ei:
            CASES[case](torch)
        assert phrase in str(ei.value), case
