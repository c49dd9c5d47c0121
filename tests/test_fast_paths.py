"""Ops whose plain backward takes a fused array path (no graph to build) must agree
with the tensor-op formula used when create_graph=True."""
import numpy as np
import pytest

import distgrad as dg
import distgrad.nn.functional as F


def grads_both_ways(fn, inputs, seed=0):
    out = fn(*inputs)
    g = dg.tensor(np.random.default_rng(seed).standard_normal(out.shape))
    fast = dg.autograd.grad(fn(*inputs), inputs, g)
    slow = dg.autograd.grad(fn(*inputs), inputs, g, create_graph=True)
    return fast, slow


@pytest.mark.parametrize("affine", ["none", "weight", "both", "two_dims"])
def test_layer_norm_fused_backward_matches_graph_formula(affine):
    rng = np.random.default_rng(1)
    x = dg.tensor(rng.standard_normal((3, 4, 6)), requires_grad=True)
    w = dg.tensor(rng.standard_normal(6), requires_grad=True)
    b = dg.tensor(rng.standard_normal(6), requires_grad=True)
    if affine == "none":
        fast, slow = grads_both_ways(lambda x: F.layer_norm(x, (6,)), (x,))
    elif affine == "weight":
        fast, slow = grads_both_ways(lambda x, w: F.layer_norm(x, (6,), w), (x, w))
    elif affine == "both":
        fast, slow = grads_both_ways(lambda x, w, b: F.layer_norm(x, (6,), w, b), (x, w, b))
    else:
        fast, slow = grads_both_ways(lambda x: F.layer_norm(x, (4, 6)), (x,))
    for a, c in zip(fast, slow):
        assert not a.requires_grad
        np.testing.assert_allclose(a.numpy(), c.detach().numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_matches_its_formula(approximate):
    x = dg.tensor(np.linspace(-6, 6, 41), requires_grad=True)
    (g,) = dg.autograd.grad(F.gelu(x, approximate=approximate).sum(), x)
    xs = x.detach().numpy()
    if approximate == "tanh":
        k = np.sqrt(2 / np.pi)
        t = np.tanh(k * (xs + 0.044715 * xs ** 3))
        expected = 0.5 * (1 + t) + 0.5 * xs * (1 - t * t) * k * (1 + 3 * 0.044715 * xs ** 2)
    else:
        from math import erf

        cdf = 0.5 * (1 + np.array([erf(v / np.sqrt(2)) for v in xs]))
        expected = cdf + xs * np.exp(-xs ** 2 / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("op", ["tanh", "sigmoid", "relu"])
def test_activation_backward_ops_match_definition(op):
    x = dg.tensor(np.linspace(-3, 3, 13) + 0.05, requires_grad=True)
    (g,) = dg.autograd.grad(getattr(x, op)().sum(), x)
    xs = x.detach().numpy()
    expected = {"tanh": 1 - np.tanh(xs) ** 2,
                "sigmoid": np.exp(-xs) / (1 + np.exp(-xs)) ** 2,
                "relu": (xs > 0).astype(float)}[op]
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_causal_attention_masks_the_future():
    q = dg.randn(1, 2, 5, 4, dtype=dg.float64)
    v = dg.randn(1, 2, 5, 4, dtype=dg.float64)
    out = F.scaled_dot_product_attention(q, q, v, is_causal=True)
    v2 = v.clone()
    v2[..., 3:, :] = 100.0
    out2 = F.scaled_dot_product_attention(q, q, v2, is_causal=True)
    np.testing.assert_array_equal(out[..., :3, :].numpy(), out2[..., :3, :].numpy())
    assert not np.allclose(out[..., 3:, :].numpy(), out2[..., 3:, :].numpy())


# ---------------------------------------------- leaf gradients kept without a copy
def _shares(a, b):
    return np.shares_memory(a.detach().numpy(), b.detach().numpy())


def test_a_leaf_keeps_an_unshared_gradient_and_still_accumulates():
    lin = dg.nn.Linear(3, 4)
    x = dg.randn(5, 3)
    lin(x).sum().backward()
    first = lin.weight.grad.numpy().copy()
    np.testing.assert_allclose(first, np.tile(x.numpy().sum(0), (4, 1)), rtol=1e-12)
    lin(x).sum().backward()                     # accumulates in place into the kept array
    np.testing.assert_allclose(lin.weight.grad.numpy(), 2 * first, rtol=1e-12)


def test_a_gradient_delivered_to_two_leaves_is_not_shared():
    a, b = dg.randn(3, requires_grad=True), dg.randn(3, requires_grad=True)
    (a + b).sum().backward()
    assert not _shares(a.grad, b.grad)
    a.grad.mul_(5)
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(3))


def test_a_post_accumulate_hook_changing_a_grad_leaves_the_others_alone():
    a, b = dg.randn(2, 3, requires_grad=True), dg.randn(2, 3, requires_grad=True)
    a.register_post_accumulate_grad_hook(lambda p: p.grad.mul_(0))
    (a * 1 + b * 1).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.zeros((2, 3)))
    np.testing.assert_array_equal(b.grad.numpy(), np.ones((2, 3)))


def test_a_gradient_a_custom_function_keeps_is_copied():
    kept = []

    class Keep(dg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            out = g * 2
            kept.append(out)
            return out

    x = dg.randn(4, requires_grad=True)
    Keep.apply(x).sum().backward()
    assert not _shares(x.grad, kept[0])


def test_a_gradient_seen_by_a_tensor_hook_is_copied():
    seen = []
    x = dg.randn(4, requires_grad=True)
    y = x * 3
    y.register_hook(lambda g: seen.append(g))
    (y * 1).sum().backward()
    assert not _shares(x.grad, seen[0])
    np.testing.assert_array_equal(x.grad.numpy(), np.full(4, 3.0))
