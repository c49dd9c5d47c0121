"""F.ctc_loss / nn.CTCLoss against PyTorch: values and the gradients reaching the logits
through log_softmax, for padded and concatenated targets, repeated labels, empty
targets, short inputs, every reduction and zero_infinity; unbatched input; errors."""
import numpy as np
import pytest

import distgrad as dg
from distgrad.autograd import gradcheck

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(21)
T, N, C = 12, 4, 6
X = RNG.standard_normal((T, N, C))
PADDED = np.array([[1, 2, 2, 3], [4, 1, 1, 1], [5, 5, 1, 1], [2, 3, 4, 1]])
LENGTHS = [4, 1, 3, 0]


def _run(lib, fn, targets, input_lengths, target_lengths, weights=None, **kw):
    x = lib.tensor(X, requires_grad=True)
    loss = fn(lib, x.log_softmax(2), lib.tensor(targets), input_lengths, target_lengths, **kw)
    total = (loss * lib.tensor(weights)).sum() if weights is not None else loss.sum()
    total.backward()
    return loss.detach().numpy(), x.grad.numpy()


def _functional(lib, lp, tg, il, tl, **kw):
    return lib.nn.functional.ctc_loss(lp, tg, il, tl, **kw)


def _module(lib, lp, tg, il, tl, **kw):
    return lib.nn.CTCLoss(**kw)(lp, tg, il, tl)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("fn", [_functional, _module], ids=["F", "module"])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_ctc_matches_torch(reduction, fn, layout):
    targets = PADDED if layout == "padded" else np.concatenate([r[:n] for r, n in zip(PADDED, LENGTHS)])
    weights = np.arange(1.0, N + 1) if reduction == "none" else None
    lengths = [12, 7, 10, 3]
    got = [_run(lib, fn, targets, lib.tensor(lengths), lib.tensor(LENGTHS), weights, reduction=reduction)
           for lib in (dg, torch)]
    np.testing.assert_allclose(got[0][0], got[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[0][1], got[1][1], rtol=1e-11, atol=1e-12)


def test_impossible_alignments_and_zero_infinity():
    lengths = [3, 7, 10, 0]          # sample 0 needs at least 5 frames for "1 2 2 3"
    for zi in (False, True):
        got = [_run(lib, _functional, PADDED, tuple(lengths), tuple(LENGTHS), reduction="none", zero_infinity=zi)
               for lib in (dg, torch)]
        assert got[0][0][0] == got[1][0][0] == (0.0 if zi else np.inf)
        assert got[0][0][3] == got[1][0][3] == 0.0      # no frames and an empty target: probability 1
        np.testing.assert_allclose(got[0][0][1:], got[1][0][1:], rtol=1e-12)
        if zi:
            np.testing.assert_allclose(got[0][1], got[1][1], rtol=1e-11, atol=1e-12)
            assert (got[0][1][:, 0] == 0).all()
        else:   # PyTorch's gradient of an infinite loss is NaN; distgrad's is zero
            assert np.isnan(got[1][1][:3, 0]).all() and (got[0][1][:, 0] == 0).all()


def test_unbatched_input_and_gradcheck():
    x = RNG.standard_normal((6, 4))
    d = dg.nn.functional.ctc_loss(dg.tensor(x).log_softmax(1), dg.tensor([1, 3]), (6,), (2,))
    t = torch.nn.functional.ctc_loss(torch.tensor(x).log_softmax(1), torch.tensor([1, 3]), (6,), (2,))
    np.testing.assert_allclose(d.item(), t.item(), rtol=1e-12)
    xs = dg.tensor(RNG.standard_normal((5, 2, 4)), requires_grad=True)
    assert gradcheck(lambda a: dg.nn.functional.ctc_loss(a.log_softmax(2), dg.tensor([[1, 2], [3, 3]]), (5, 4),
                                                           (2, 2), reduction="sum"), (xs,))


def test_errors_name_the_problem():
    lp = dg.randn(5, 2, 4).log_softmax(2)
    with pytest.raises(RuntimeError, match="blank"):
        dg.nn.functional.ctc_loss(lp, dg.tensor([[1, 0]]).expand(2, 2), (5, 5), (2, 2))
    with pytest.raises(RuntimeError, match="input length 6"):
        dg.nn.functional.ctc_loss(lp, dg.tensor([[1, 2], [1, 2]]), (6, 5), (2, 2))
    with pytest.raises(RuntimeError, match="concatenated targets hold 3"):
        dg.nn.functional.ctc_loss(lp, dg.tensor([1, 2, 3]), (5, 5), (2, 2))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        dg.nn.functional.ctc_loss(lp, dg.tensor([[1, 2], [1, 2]]), (5, 5), (2, 2), reduction="avg")
