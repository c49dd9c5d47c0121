"""Views share memory and a version counter with their base; in-place ops either
give the right gradient or raise — never a silently wrong gradient."""
import numpy as np
import pytest

import distgrad as dg


def f64(*shape):
    return dg.randn(*shape, dtype=dg.float64)


# ------------------------------------------------------------------- views
@pytest.mark.parametrize("make", [
    lambda x: x.view(3, 4),
    lambda x: x.reshape(2, 6),
    lambda x: x.transpose(0, 1),
    lambda x: x.permute(1, 0),
    lambda x: x.unsqueeze(0),
    lambda x: x.unsqueeze(1).squeeze(1),
    lambda x: x.flatten(),
    lambda x: x.T,
    lambda x: x[1],
    lambda x: x[:, 1:3],
    lambda x: x[None, ..., ::2],
    lambda x: x.narrow(1, 1, 2),
    lambda x: x.split(2, dim=1)[1],
    lambda x: x.chunk(2, dim=0)[0],
    lambda x: x.unbind(0)[2],
])
def test_views_share_memory_and_version(make):
    base = dg.arange(12.0).reshape(4, 3).clone()
    v = make(base)
    assert np.shares_memory(v.numpy(), base.numpy())
    before = base._version
    v.add_(1.0)
    assert base._version == before + 1 == v._version
    v0 = v.detach().clone()
    base.mul_(2.0)
    assert v._version == base._version
    np.testing.assert_array_equal(v.numpy(), v0.numpy() * 2)


def test_expand_is_a_view_that_cannot_be_written():
    x = dg.ones(3, 1)
    e = x.expand(3, 4)
    assert np.shares_memory(e.numpy(), x.numpy())
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        e.add_(1.0)


def test_contiguity():
    x = dg.randn(2, 3, 4)
    y = x.permute(0, 2, 1)
    assert x.is_contiguous() and not y.is_contiguous()
    z = y.contiguous()
    assert z.is_contiguous() and not np.shares_memory(z.numpy(), y.numpy())
    assert x.contiguous() is x
    np.testing.assert_array_equal(z.numpy(), y.numpy())
    with pytest.raises(RuntimeError, match="Use .reshape"):
        y.view(-1)
    assert y.reshape(-1).shape == (24,)


def test_integer_tensor_indexing_copies():
    x = dg.arange(6.0)
    y = x[dg.tensor([0, 2, 2])]
    assert not np.shares_memory(y.numpy(), x.numpy())
    np.testing.assert_array_equal(y.numpy(), [0.0, 2.0, 2.0])


def test_view_gradients_flow_to_base():
    x = f64(4, 3).requires_grad_()
    (x.T[1] * dg.arange(4.0, dtype=dg.float64)).sum().backward()
    expected = np.zeros((4, 3))
    expected[:, 1] = np.arange(4.0)
    np.testing.assert_array_equal(x.grad.numpy(), expected)


# ------------------------------------------------------- in-place, no view
def test_inplace_on_leaf_that_requires_grad_raises_at_once():
    x = dg.ones(3, requires_grad=True)
    for op in (lambda: x.add_(1), lambda: x.mul_(2), lambda: x.zero_(), lambda: x.fill_(1.0),
               lambda: x.relu_(), lambda: x.clamp_(0, 1), lambda: x.copy_(dg.zeros(3)),
               lambda: x.sub_(1), lambda: x.div_(2), lambda: x.__setitem__(0, 5.0)):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            op()
    assert x._version == 0
    with dg.no_grad():
        x.mul_(2.0)  # allowed (this is how optimizers update parameters)
    assert x._version == 1
    np.testing.assert_array_equal(x.detach().numpy(), [2.0, 2.0, 2.0])


def test_inplace_on_nonleaf_gives_right_gradient():
    x = f64(5).requires_grad_()
    y = x * 3
    y.mul_(x)          # y = 3x^2
    y.add_(x, alpha=2)  # y = 3x^2 + 2x
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.detach().numpy() + 2)
    assert y.grad_fn.name() == "AddBackward0"


def test_modified_saved_tensor_raises_naming_op_and_versions():
    x = dg.randn(4, requires_grad=True)
    a = x * 1
    y = a ** 2
    a.add_(1.0)
    with pytest.raises(RuntimeError, match=r"PowBackward0, is at version 1; expected version 0"):
        y.sum().backward()


def test_modified_saved_output_raises():
    x = dg.randn(4, requires_grad=True)
    y = x.exp()
    z = y * 1
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="ExpBackward0"):
        (y + z).sum().backward()


def test_inplace_on_tensor_not_needed_for_backward_is_fine():
    x = f64(3).requires_grad_()
    y = x + 1  # AddBackward0 saves nothing
    y.mul_(2)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])


# ------------------------------------------------- in-place through a view
def test_inplace_through_view_routes_gradient_through_the_op():
    x = f64(3, 4).requires_grad_()
    w = f64(4).requires_grad_()
    a = x.clone()
    a[1].mul_(w)      # row 1 becomes x[1] * w
    (a * a).sum().backward()
    xd, wd = x.detach().numpy(), w.detach().numpy()
    expected_x = 2 * xd
    expected_x[1] = 2 * xd[1] * wd * wd
    np.testing.assert_allclose(x.grad.numpy(), expected_x)
    np.testing.assert_allclose(w.grad.numpy(), 2 * xd[1] ** 2 * wd)
    assert a.grad_fn.name() == "CopySlices"


def test_setitem_with_tensor_value_that_requires_grad():
    v = f64(2).requires_grad_()
    buf = dg.zeros(4, dtype=dg.float64)
    buf[1:3] = v * 2
    assert buf.requires_grad and buf.grad_fn.name() == "CopySlices"
    (buf * dg.arange(4.0, dtype=dg.float64)).sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [2.0, 4.0])


def test_setitem_with_index_tensor():
    x = f64(5).requires_grad_()
    y = x * 1
    idx = dg.tensor([0, 3])
    y[idx] = 0.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 1, 0, 1])
    np.testing.assert_array_equal(y.detach().numpy()[[0, 3]], [0, 0])


def test_base_modified_after_view_was_taken_updates_view_history():
    x = f64(3).requires_grad_()
    a = x * 2
    v = a[:2]
    a.mul_(3)        # v now shows 6x[:2]; its history must say so
    v.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0, 0.0])


def test_view_of_view_inplace():
    x = f64(2, 3, 4).requires_grad_()
    a = x.clone()
    v = a.transpose(0, 2)[1:3]
    v.mul_(5)
    a.sum().backward()
    expected = np.ones((2, 3, 4))
    expected[:, :, 1:3] = 5
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_inplace_on_view_of_leaf_raises():
    x = dg.ones(4, requires_grad=True)
    with pytest.raises(RuntimeError, match="view of a leaf Variable that requires grad"):
        x[:2].mul_(2)


def test_view_made_in_no_grad_then_modified_in_grad_mode_raises():
    x = dg.ones(4, requires_grad=True)
    a = x * 1
    with dg.no_grad():
        v = a[:2]
    with pytest.raises(RuntimeError, match="created in no_grad mode"):
        v.mul_(2)


def test_inplace_relu_and_clamp_gradients():
    x = dg.tensor([-1.0, 0.5, 2.0], dtype=dg.float64, requires_grad=True)
    y = x * 1
    y.relu_()
    z = x * 1
    z.clamp_(0.0, 1.0)
    (y + z).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 2.0, 1.0])


def test_inplace_int_result_cast_error():
    x = dg.tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="can't be cast"):
        x.add_(1.5)
    np.testing.assert_array_equal(x.numpy(), [1, 2, 3])


def test_detach_shares_version_counter():
    x = dg.ones(3, requires_grad=True)
    y = x.exp()
    d = y.detach()
    d.zero_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_data_does_not_share_version_counter():
    x = dg.ones(3, requires_grad=True)
    y = x * x
    x.data.mul_(2)  # bypasses autograd on purpose, as in PyTorch
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 4.0, 4.0])


def test_against_torch_copyslices():
    torch = pytest.importorskip("torch")
    xn = np.random.default_rng(1).standard_normal((3, 4))
    wn = np.random.default_rng(2).standard_normal(4)
    grads = []
    for lib in (dg, torch):
        x = lib.tensor(xn, requires_grad=True)
        w = lib.tensor(wn, requires_grad=True)
        a = x.clone()
        a[:, 1:3].mul_(w[1:3])
        a[0] = w * 2
        b = a.transpose(0, 1)
        b[2].exp_()
        (a.sin() * a).sum().backward()
        grads.append((x.grad.numpy(), w.grad.numpy()))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-12)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-12)


def test_graph_through_copyslices_is_freed_after_backward():
    x = f64(3).requires_grad_()
    w = f64(3).requires_grad_()
    a = x.clone()
    a[1:].mul_(w[1:])   # the multiplication saved w and the old view for backward
    y = a.sum()
    y.backward(retain_graph=True)
    y.backward()        # retained once: works
    np.testing.assert_array_equal(w.grad.numpy()[1:], 2 * x.detach().numpy()[1:])
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()
