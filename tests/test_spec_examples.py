"""Every code example of SPEC-autograd.md, run with ``import distgrad as dg`` in
place of ``import torch``.

Each test is named after the example's id in the spec (``python id="..."``).
Printed values are asserted exactly as the spec's comments show them (captured
with capsys). Examples that use undefined names (``model``, ``dataloader``,
``encoder``, ``compute_loss``, ``optimizer``...) run with small stand-ins built
from tensor ops, so that the semantics the example shows are still checked.
The ``text`` blocks of the spec (``0w0ht6``, ``ak2uiu``, ``4tms1q``) are
checked too, as statements about behaviour.
"""
import re

import numpy as np
import pytest

import distgrad as dg

HAS_NN = hasattr(dg, "nn")
needs_nn = pytest.mark.skipif(not HAS_NN, reason="dg.nn arrives with the modules issue")


def lines(capsys):
    return capsys.readouterr().out.splitlines()


# ---------------------------------------------------------------- stand-ins
class TinySGD:
    """Stand-in for ``optim.SGD``: the two calls the spec's training step makes."""

    def __init__(self, params, lr):
        self.params = list(params)
        self.lr = lr

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        with dg.no_grad():
            for p in self.params:
                if p.grad is not None:
                    p.sub_(self.lr * p.grad)


class TinyModel:
    """Stand-in for an ``nn.Module``: ``pred = X @ w + b``."""

    def __init__(self):
        self.w = dg.tensor([[0.5], [-1.0], [2.0]], requires_grad=True)
        self.b = dg.tensor([0.25], requires_grad=True)
        self.training = True

    def __call__(self, X):
        return X @ self.w + self.b

    def parameters(self):
        return [self.w, self.b]

    def named_parameters(self):
        return [("w", self.w), ("b", self.b)]

    def eval(self):
        self.training = False
        return self


def mse(pred, y):
    return ((pred - y) ** 2).mean()


def batch():
    X = dg.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0], [2.0, 0.5, -0.5], [1.0, 1.0, 1.0]])
    y = dg.tensor([[1.0], [0.0], [2.0], [-1.0]])
    return X, y


def mse_grads_by_hand(model, X, y):
    """d mse / d (w, b) computed with numpy, to check what backward fills in."""
    Xn, yn = X.numpy(), y.numpy()
    w, b = model.w.detach().numpy(), model.b.detach().numpy()
    r = Xn @ w + b - yn
    n = r.size
    return Xn.T @ (2 * r / n), (2 * r / n).sum(0)


# ------------------------------------------------------ Why autograd matters
def test_ql4don_training_step():
    # pred = model(X); loss = loss_fn(pred, y); optimizer.zero_grad(); loss.backward(); optimizer.step()
    model = TinyModel()
    loss_fn = mse
    optimizer = TinySGD(model.parameters(), lr=0.05)
    X, y = batch()
    model.w.grad = dg.full((3, 1), 100.0)  # stale gradient from an earlier step

    pred = model(X)
    loss = loss_fn(pred, y)
    gw, gb = mse_grads_by_hand(model, X, y)

    optimizer.zero_grad()
    loss.backward()
    np.testing.assert_allclose(model.w.grad.numpy(), gw, rtol=1e-5)
    np.testing.assert_allclose(model.b.grad.numpy(), gb, rtol=1e-5)
    w_before = model.w.detach().numpy().copy()
    optimizer.step()
    np.testing.assert_allclose(model.w.detach().numpy(), w_before - 0.05 * gw, rtol=1e-5)
    assert loss_fn(model(X), y).item() < loss.item()


def test_3tfj28_requires_grad_true():
    x = dg.tensor([1.0, 2.0], requires_grad=True)
    assert x.requires_grad is True
    assert dg.tensor([1.0, 2.0]).requires_grad is False
    assert (x * 2).requires_grad is True


# --------------------------------------------------------- Autograd in PyTorch
def test_5f2nkf_graph_of_y(capsys):
    x = dg.tensor(2.0, requires_grad=True)
    y = x ** 2 + 3 * x

    print(y)
    print(y.requires_grad)
    print(y.grad_fn)
    out = lines(capsys)
    assert out[0] == "tensor(10., grad_fn=<AddBackward0>)"
    assert out[1] == "True"
    assert re.fullmatch(r"<AddBackward0 object at 0x[0-9a-fA-F]+>", out[2]), out[2]


def test_3tsjuu_qe7lom_backward(capsys):
    x = dg.tensor(2.0, requires_grad=True)
    y = x ** 2 + 3 * x
    y.backward()
    print(x.grad)  # tensor(7.)
    assert lines(capsys) == ["tensor(7.)"]


# ---------------------------------------------------- Leaf and non-leaf tensors
def test_ttlt5h_53mhvu_0m6li6_leaves(capsys):
    x = dg.tensor(2.0, requires_grad=True)
    w = dg.tensor(3.0, requires_grad=True)

    y = w * x

    print(x.is_leaf)  # True
    print(w.is_leaf)  # True
    print(y.is_leaf)  # False
    assert lines(capsys) == ["True", "True", "False"]

    y.backward()

    print(x.grad)  # tensor(3.)
    print(w.grad)  # tensor(2.)
    with pytest.warns(UserWarning, match="retain_grad"):
        print(y.grad)  # usually None
    assert lines(capsys) == ["tensor(3.)", "tensor(2.)", "None"]


def test_1aapgv_retain_grad(capsys):
    x = dg.tensor(2.0, requires_grad=True)
    a = x ** 2
    a.retain_grad()

    y = 3 * a
    y.backward()

    print(a.grad)  # tensor(3.)
    assert lines(capsys) == ["tensor(3.)"]
    assert x.grad.item() == 12.0


# ------------------------------------------------------------- Dynamic graph
@pytest.mark.parametrize("start, expected", [(2.0, "tensor(4.)"), (-2.0, "tensor(-1.)")])
def test_ug0kec_dynamic_branch(capsys, start, expected):
    x = dg.tensor(start, requires_grad=True)

    if x.item() > 0:
        y = x ** 2
    else:
        y = -x

    y.backward()
    print(x.grad)  # tensor(4.) for x = 2
    assert lines(capsys) == [expected]
    assert y.grad_fn.name() == ("PowBackward0" if start > 0 else "NegBackward0")


def test_1eg7q3_fresh_graph_per_batch():
    model = TinyModel()
    loss_fn = mse
    optimizer = TinySGD(model.parameters(), lr=0.01)
    X, Y = batch()
    dataloader = [(X[:2], Y[:2]), (X[2:], Y[2:]), (X[1:3], Y[1:3])]

    nodes, losses = [], []
    for X, y in dataloader:
        pred = model(X)
        loss = loss_fn(pred, y)

        optimizer.zero_grad()
        gw, _ = mse_grads_by_hand(model, X, y)
        loss.backward()
        np.testing.assert_allclose(model.w.grad.numpy(), gw, rtol=1e-5)  # this batch only
        optimizer.step()
        nodes.append(loss.grad_fn)
        losses.append(loss)

    assert len({id(n) for n in nodes}) == 3  # a new graph every iteration
    # ... and each was freed by its backward
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        losses[0].backward()


# ------------------------------------------------------- Backward graph nodes
def test_0506ao_0w0ht6_node_names(capsys):
    x = dg.tensor(2.0, requires_grad=True)

    a = x + 1
    b = a ** 2
    c = b.mean()

    print(a.grad_fn)
    print(b.grad_fn)
    print(c.grad_fn)
    out = lines(capsys)
    # the spec's text block 0w0ht6: <AddBackward0> <PowBackward0> <MeanBackward0>
    for printed, name in zip(out, ["AddBackward0", "PowBackward0", "MeanBackward0"]):
        assert re.fullmatch(rf"<{name} object at 0x[0-9a-fA-F]+>", printed), printed
    assert [f"<{t.grad_fn.name()}>" for t in (a, b, c)] == [
        "<AddBackward0>", "<PowBackward0>", "<MeanBackward0>"]
    # the graph points backward: c -> b -> a -> x
    assert c.grad_fn.next_functions[0][0] is b.grad_fn
    assert b.grad_fn.next_functions[0][0] is a.grad_fn
    assert a.grad_fn.next_functions[0][0].variable is x


# -------------------------------------------------------------- Saved tensors
def test_ak2uiu_saved_tensors_lifecycle():
    """forward: compute outputs, save needed tensors; backward: load saved tensors,
    compute gradients, release graph."""
    events = []

    def pack(t):
        events.append(("save", tuple(t.shape)))
        return t

    def unpack(t):
        events.append(("load", tuple(t.shape)))
        return t

    x = dg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with dg.autograd.graph.saved_tensors_hooks(pack, unpack):
        y = (x ** 2).sum()
    assert events == [("save", (3,))]  # x ** 2 saves x
    y.backward()
    assert events == [("save", (3,)), ("load", (3,))]
    assert x.grad.tolist() == [2.0, 4.0, 6.0]
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()  # released


# -------------------------------------------------- Gradient accumulation
def test_rlk2z4_accumulation(capsys):
    x = dg.tensor(2.0, requires_grad=True)

    y1 = x ** 2
    y1.backward()

    print(x.grad)  # tensor(4.)

    y2 = 3 * x
    y2.backward()

    print(x.grad)  # tensor(7.)
    assert lines(capsys) == ["tensor(4.)", "tensor(7.)"]


def test_xidins_zero_grad_before_backward():
    model = TinyModel()
    optimizer = TinySGD(model.parameters(), lr=0.1)
    X, y = batch()
    mse(model(X), y).backward()  # a previous step's gradient
    loss = mse(model(X), y)
    gw, gb = mse_grads_by_hand(model, X, y)

    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    # the step used this loss's gradient only, not the sum of two
    np.testing.assert_allclose(model.b.grad.numpy(), gb, rtol=1e-5)
    np.testing.assert_allclose(model.w.grad.numpy(), gw, rtol=1e-5)


def test_coz7mt_microbatch_accumulation():
    model = TinyModel()
    optimizer = TinySGD(model.parameters(), lr=0.1)
    X, Y = batch()
    microbatches = [(X[:2], Y[:2]), (X[2:], Y[2:])]

    def compute_loss(mb):
        return mse(model(mb[0]), mb[1])

    gw, gb = mse_grads_by_hand(model, X, Y)  # the whole batch at once
    optimizer.zero_grad()

    for microbatch in microbatches:
        loss = compute_loss(microbatch)
        loss = loss / len(microbatches)
        loss.backward()

    np.testing.assert_allclose(model.w.grad.numpy(), gw, rtol=1e-5)
    np.testing.assert_allclose(model.b.grad.numpy(), gb, rtol=1e-5)
    optimizer.step()


# ----------------------------------------------- Disabling gradient tracking
def test_fwnm46_no_grad_eval():
    model = TinyModel()
    X, _ = batch()
    model.eval()

    with dg.no_grad():
        pred = model(X)

    assert model.training is False
    assert pred.requires_grad is False
    assert pred.grad_fn is None
    assert not pred.is_inference()
    # the same model outside no_grad builds a graph
    assert model(X).grad_fn is not None


def test_ufo6af_inference_mode():
    model = TinyModel()
    X, _ = batch()
    model.eval()

    with dg.inference_mode():
        pred = model(X)

    assert pred.requires_grad is False
    assert pred.grad_fn is None
    assert pred.is_inference()
    np.testing.assert_allclose(pred.numpy(), model(X).detach().numpy())
    # "less flexible if tensors later need to re-enter gradient-tracked computation"
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        pred * model.w.sum()


# ------------------------------------------------------------------ Detaching
def test_pjkhjz_detach(capsys):
    x = dg.tensor(2.0, requires_grad=True)

    y = x ** 2
    z = y.detach()

    print(y.requires_grad)  # True
    print(z.requires_grad)  # False
    assert lines(capsys) == ["True", "False"]
    assert z.item() == 4.0
    assert z.grad_fn is None and z.is_leaf


def test_pjkhjz_detach_shares_data():
    x = dg.tensor(2.0, requires_grad=True)
    y = x ** 2
    z = y.detach()
    z.add_(1.0)  # "shares data with the original tensor"
    assert y.item() == 5.0
    assert y._version == z._version == 1


def test_tqkfkk_detach_stops_flow(capsys):
    x = dg.tensor(2.0, requires_grad=True)

    y = x ** 2
    z = y.detach()
    loss = 3 * z

    print(loss.requires_grad)  # False
    assert lines(capsys) == ["False"]
    assert loss.grad_fn is None


def test_fhzw6j_accidental_detach():
    enc_w = dg.tensor([[1.0, -2.0], [0.5, 1.0]], requires_grad=True)
    dec_w = dg.tensor([[2.0], [-1.0]], requires_grad=True)

    def encoder(x):
        return (x @ enc_w).tanh()

    def decoder(h):
        return h @ dec_w

    loss_fn = mse
    x = dg.tensor([[1.0, 2.0], [3.0, -1.0]])
    target = dg.tensor([[0.5], [1.0]])

    h = encoder(x)
    h = h.detach()
    out = decoder(h)
    loss = loss_fn(out, target)
    loss.backward()

    assert enc_w.grad is None  # gradients cannot reach the encoder
    assert dec_w.grad is not None and np.abs(dec_w.grad.numpy()).sum() > 0

    # without the detach the encoder does get a gradient
    loss_fn(decoder(encoder(x)), target).backward()
    assert enc_w.grad is not None and np.abs(enc_w.grad.numpy()).sum() > 0


# ------------------------------------------------ backward() and autograd.grad
def test_ygc03h_backward(capsys):
    x = dg.tensor(2.0, requires_grad=True)

    y = x ** 3
    y.backward()

    print(x.grad)  # tensor(12.)
    assert lines(capsys) == ["tensor(12.)"]


def test_wulv1w_autograd_grad(capsys):
    x = dg.tensor(2.0, requires_grad=True)

    y = x ** 3
    grad_x = dg.autograd.grad(y, x)[0]

    print(grad_x)  # tensor(12.)
    print(x.grad)  # None
    assert lines(capsys) == ["tensor(12.)", "None"]


# ------------------------------------------------------ Higher-order derivatives
def test_8ts17p_second_derivative(capsys):
    x = dg.tensor(2.0, requires_grad=True)

    y = x ** 3
    dy_dx = dg.autograd.grad(y, x, create_graph=True)[0]

    d2y_dx2 = dg.autograd.grad(dy_dx, x)[0]

    print(dy_dx)    # tensor(12., grad_fn=<MulBackward0>)
    print(d2y_dx2)  # tensor(12.)
    assert lines(capsys) == ["tensor(12., grad_fn=<MulBackward0>)", "tensor(12.)"]


def test_jhlk6z_create_graph_records():
    x = dg.tensor(2.0, requires_grad=True)
    g_plain = dg.autograd.grad(x ** 3, x)[0]
    g_graph = dg.autograd.grad(x ** 3, x, create_graph=True)[0]
    assert g_plain.requires_grad is False and g_plain.grad_fn is None
    assert g_graph.requires_grad is True and g_graph.grad_fn is not None


# ----------------------------------------------------- Custom autograd functions
class Square(dg.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad_x = grad_output * 2 * x
        return grad_x


def test_ldqbgp_custom_function(capsys):
    x = dg.tensor(3.0, requires_grad=True)

    y = Square.apply(x)
    y.backward()

    print(x.grad)  # tensor(6.)
    assert lines(capsys) == ["tensor(6.)"]
    assert y.item() == 9.0


def test_2u4vef_gradcheck(capsys):
    from distgrad.autograd import gradcheck

    dg.manual_seed(0)
    x = dg.randn(3, dtype=dg.double, requires_grad=True)

    test = gradcheck(Square.apply, (x,))
    print(test)
    assert lines(capsys) == ["True"]


# ------------------------------------------------------------ In-place operations
def test_n4ba44_inplace_methods(capsys):
    x = dg.tensor([-2.0, 0.5])
    v0 = x._version
    r = x.add_(1)
    assert r is x
    x.relu_()
    print(x)
    assert lines(capsys) == ["tensor([0.0000, 1.5000])"]
    assert x._version == v0 + 2


def test_6cxlp1_inplace_on_saved_leaf_fails():
    dg.manual_seed(0)
    x = dg.randn(4, requires_grad=True)

    y = x ** 2
    # "This may fail": x is a leaf that requires grad, so it fails right here
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x.add_(1.0)
    loss = y.sum()
    loss.backward()  # x was not modified: backward still works
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy(), rtol=1e-6)


def test_6cxlp1_inplace_on_saved_nonleaf_fails_in_backward():
    dg.manual_seed(0)
    w = dg.randn(4, requires_grad=True)
    x = w * 1.0  # not a leaf: the in-place op itself is allowed

    y = x ** 2
    x.add_(1.0)

    loss = y.sum()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_cw9y67_out_of_place_is_safe():
    x = dg.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = x ** 2
    x2 = x + 1.0
    (y.sum() + (x2 * x2).sum()).backward()
    assert x2.tolist() == [2.0, -1.0, 4.0]
    assert x.grad.tolist() == [2 * 1 + 2 * 2, 2 * -2 + 2 * -1, 2 * 3 + 2 * 4]


# ---------------------------------------------- Views, copies and contiguity
def test_928u3l_view(capsys):
    x = dg.arange(6.0, requires_grad=True)
    y = x.view(2, 3)

    print(y)
    assert capsys.readouterr().out == (
        "tensor([[0., 1., 2.],\n        [3., 4., 5.]], grad_fn=<ViewBackward0>)\n")
    (y * dg.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_d3ffw2_5sb5we_contiguity(capsys):
    x = dg.randn(2, 3, 4)
    y = x.permute(0, 2, 1)

    print(y.is_contiguous())  # False
    assert lines(capsys) == ["False"]
    assert x.is_contiguous()
    assert tuple(y.shape) == (2, 4, 3)

    z = y.contiguous()
    assert z.is_contiguous()
    np.testing.assert_array_equal(z.numpy(), y.numpy())
    assert not np.shares_memory(z.numpy(), x.numpy())  # a copy


# ----------------------------------------------------------- Autograd and modules
@needs_nn
def test_b2roeg_parameters_require_grad(capsys):
    nn = dg.nn

    layer = nn.Linear(3, 4)

    print(layer.weight.requires_grad)  # True
    print(layer.bias.requires_grad)    # True
    assert lines(capsys) == ["True", "True"]
    assert isinstance(layer.weight, nn.Parameter)


@needs_nn
def test_z9vmrh_parameter_grads(capsys):
    nn = dg.nn
    layer = nn.Linear(3, 4)

    X = dg.randn(8, 3)
    Y = layer(X)
    loss = Y.sum()

    loss.backward()

    print(layer.weight.grad.shape)
    print(layer.bias.grad.shape)
    assert lines(capsys) == ["distgrad.Size([4, 3])", "distgrad.Size([4])"]
    assert layer.bias.grad.tolist() == [8.0] * 4


@needs_nn
def test_uhjxi5_freeze(capsys):
    nn = dg.nn
    layer = nn.Linear(3, 4)

    for param in layer.parameters():
        param.requires_grad = False

    out = layer(dg.randn(2, 3))
    assert out.requires_grad is False
    assert layer.weight.grad is None and layer.bias.grad is None


# ---------------------------------------------------------- Common autograd errors
def test_47hvl9_backward_without_graph():
    x = dg.tensor(2.0)
    y = x ** 2
    with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
        y.backward()


def test_v31xdx_the_fix(capsys):
    x = dg.tensor(2.0, requires_grad=True)
    y = x ** 2
    y.backward()
    print(x.grad)
    assert lines(capsys) == ["tensor(4.)"]


def test_x1f6os_backward_twice():
    x = dg.tensor(2.0, requires_grad=True)
    y = x ** 2

    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time") as ei:
        y.backward()
    assert "retain_graph=True" in str(ei.value)
    assert x.grad.item() == 4.0  # the failed call added nothing


def test_j7wxew_retain_graph(capsys):
    x = dg.tensor(2.0, requires_grad=True)
    y = x ** 2

    y.backward(retain_graph=True)
    y.backward()
    print(x.grad)
    assert lines(capsys) == ["tensor(8.)"]


def test_o91ryj_grad_is_none(capsys):
    class Model(TinyModel):
        def __init__(self):
            super().__init__()
            self.unused = dg.tensor([1.0], requires_grad=True)   # never used in forward
            self.frozen = dg.tensor([[1.0], [1.0], [1.0]])       # does not require grad

        def __call__(self, X):
            return X @ self.w + self.b + X @ self.frozen

        def named_parameters(self):
            return super().named_parameters() + [("unused", self.unused), ("frozen", self.frozen)]

    model = Model()
    X, y = batch()
    mse(model(X), y).backward()

    for name, param in model.named_parameters():
        if param.grad is None:
            print(name, "has no gradient")
    assert lines(capsys) == ["unused has no gradient", "frozen has no gradient"]


# -------------------------------------------------------------------- Mental model
def test_4tms1q_mental_model():
    """forward: run ops, build graph, save values; backward: start from a scalar loss,
    traverse, apply local rules, accumulate into leaves."""
    w = dg.tensor([1.0, 2.0], requires_grad=True)
    x = dg.tensor([3.0, -1.0])
    h = (w * x).exp()           # builds the graph, saves values
    loss = h.sum()              # a scalar loss
    assert loss.grad_fn.name() == "SumBackward0"
    assert h.grad_fn.name() == "ExpBackward0"
    loss.backward()
    expected = x.numpy() * np.exp(w.detach().numpy() * x.numpy())  # chain rule
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-6)
    loss2 = (w * x).exp().sum()
    loss2.backward()            # accumulates into the leaf
    np.testing.assert_allclose(w.grad.numpy(), 2 * expected, rtol=1e-6)


# -------------------------------------------------------------- against PyTorch
def test_spec_values_match_torch():
    torch = pytest.importorskip("torch")
    def run(lib):
        out = {}
        x = lib.tensor(2.0, requires_grad=True)
        y = x ** 2 + 3 * x
        y.backward()
        out["7"] = x.grad.item()
        x = lib.tensor(2.0, requires_grad=True)
        d1 = lib.autograd.grad(x ** 3, x, create_graph=True)[0]
        out["d1"] = (d1.item(), d1.grad_fn.name())
        out["d2"] = lib.autograd.grad(d1, x)[0].item()
        x = lib.tensor(2.0, requires_grad=True)
        a, b = x + 1, (x + 1) ** 2
        out["names"] = (a.grad_fn.name(), b.grad_fn.name(), b.mean().grad_fn.name())
        out["view"] = lib.arange(6.0, requires_grad=True).view(2, 3).grad_fn.name()
        return out

    assert run(dg) == run(torch)
    x = dg.arange(6.0, requires_grad=True)
    assert repr(x.view(2, 3)) == repr(torch.arange(6.0, requires_grad=True).view(2, 3))
