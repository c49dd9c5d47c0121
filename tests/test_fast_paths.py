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
