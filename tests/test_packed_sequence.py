"""nn.utils.rnn (PackedSequence, pack/pad functions) and the recurrent layers on packed
input, against PyTorch where it is installed, and by their own definitions."""
import numpy as np
import pytest

import distgrad as dg
from distgrad.autograd import gradcheck, gradgradcheck
from distgrad.nn.utils import rnn as dgrnn

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(7)


def _copy_weights(dst, src):
    dst.load_state_dict({k: dg.tensor(v.detach().numpy()) for k, v in src.state_dict().items()})


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [[5, 3, 3, 1], [3, 5, 1, 3], [4, 4, 4, 4]])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_rnn_matches_torch(mode, bidirectional, lengths, batch_first):
    steps, batch, feat, hidden = 5, 4, 3, 6
    x = RNG.standard_normal((batch, steps, feat) if batch_first else (steps, batch, feat))
    nd = 2 if bidirectional else 1
    h0 = RNG.standard_normal((2 * nd, batch, hidden))
    sorted_ = lengths == sorted(lengths, reverse=True)
    tm = getattr(torch.nn, mode)(feat, hidden, num_layers=2, bidirectional=bidirectional,
                                 batch_first=batch_first).double()
    dm = getattr(dg.nn, mode)(feat, hidden, num_layers=2, bidirectional=bidirectional,
                              batch_first=batch_first).double()
    _copy_weights(dm, tm)
    results = []
    for lib, m in ((torch, tm), (dg, dm)):
        xt = lib.tensor(x, requires_grad=True)
        h = lib.tensor(h0, requires_grad=True)
        packed = lib.nn.utils.rnn.pack_padded_sequence(xt, lib.tensor(lengths), batch_first=batch_first,
                                                       enforce_sorted=sorted_)
        out, hn = m(packed, (h, h * 0.5) if mode == "LSTM" else h)
        assert type(out).__name__ == "PackedSequence"
        padded, lens = lib.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=7)
        hn0 = hn[0] if mode == "LSTM" else hn
        ((padded ** 2).sum() + (hn0 ** 3).sum()).backward()
        results.append([out.data, out.batch_sizes, padded, lens, hn0, xt.grad, h.grad, m.weight_hh_l0.grad,
                        m.weight_ih_l1.grad])
        if not sorted_:
            results[-1] += [out.sorted_indices, out.unsorted_indices]
    for t, d in zip(*results):
        assert tuple(t.shape) == tuple(d.shape)
        np.testing.assert_allclose(d.detach().numpy(), t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_pad_sequence_sides_and_unpad():
    seqs = [RNG.standard_normal((n, 2)) for n in (3, 1, 4)]
    for kw in ({}, {"batch_first": True}, {"padding_value": -1.5, "padding_side": "left"},
               {"batch_first": True, "padding_side": "left"}):
        t = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], **kw)
        d = dg.nn.utils.rnn.pad_sequence([dg.tensor(s) for s in seqs], **kw)
        np.testing.assert_array_equal(d.numpy(), t.numpy())
    padded = dg.nn.utils.rnn.pad_sequence([dg.tensor(s) for s in seqs])
    back = dg.nn.utils.rnn.unpad_sequence(padded, dg.tensor([3, 1, 4]))
    for s, b in zip(seqs, back):
        np.testing.assert_array_equal(b.numpy(), s)
    with pytest.raises(ValueError, match="padding_side"):
        dg.nn.utils.rnn.pad_sequence([dg.tensor(seqs[0])], padding_side="middle")
    with pytest.raises(RuntimeError, match="trailing size"):
        dg.nn.utils.rnn.pad_sequence([dg.zeros(2, 3), dg.zeros(2, 4)])


def test_pack_sequence_and_unpack_sequence_round_trip():
    seqs = [RNG.standard_normal((n, 3)) for n in (2, 5, 3)]
    t = torch.nn.utils.rnn.pack_sequence([torch.tensor(s) for s in seqs], enforce_sorted=False)
    d = dg.nn.utils.rnn.pack_sequence([dg.tensor(s) for s in seqs], enforce_sorted=False)
    np.testing.assert_array_equal(d.data.numpy(), t.data.numpy())
    assert d.batch_sizes.tolist() == t.batch_sizes.tolist() == [3, 3, 2, 1, 1]
    assert d.sorted_indices.tolist() == t.sorted_indices.tolist()
    assert d.unsorted_indices.tolist() == t.unsorted_indices.tolist()
    assert d.batch_sizes.dtype == dg.int64
    for s, u in zip(seqs, dg.nn.utils.rnn.unpack_sequence(d)):
        np.testing.assert_array_equal(u.numpy(), s)
    with pytest.raises(RuntimeError, match="sorted in decreasing order"):
        dg.nn.utils.rnn.pack_sequence([dg.tensor(s) for s in seqs])


def test_packed_sequence_tuple_and_conversions():
    p = dgrnn.pack_padded_sequence(dg.randn(3, 2, 4), [3, 2])
    data, batch_sizes, sorted_indices, unsorted_indices = p
    assert data is p.data and batch_sizes.tolist() == [2, 2, 1]
    assert sorted_indices is None and unsorted_indices is None
    assert p.float().data.dtype == dg.float32 and p.double().data.dtype == dg.float64
    assert p.to(dg.float64).batch_sizes is p.batch_sizes and not p.is_cuda
    q = dgrnn.PackedSequence(p.data, p.batch_sizes, dg.tensor([1, 0]))
    assert q.unsorted_indices.tolist() == [1, 0]
    perm = dg.tensor([2, 0, 3, 1])
    assert dgrnn.invert_permutation(perm).tolist() == torch.nn.utils.rnn.invert_permutation(
        torch.tensor([2, 0, 3, 1])).tolist()


def test_pack_errors_name_the_problem():
    x = dg.randn(4, 3, 2)
    with pytest.raises(RuntimeError, match="batch_size"):
        dgrnn.pack_padded_sequence(x, [4, 3])
    with pytest.raises(RuntimeError, match="greater than 0"):
        dgrnn.pack_padded_sequence(x, [4, 3, 0])
    with pytest.raises(RuntimeError, match="longest length is 6"):
        dgrnn.pack_padded_sequence(x, [6, 3, 1])
    with pytest.raises(ValueError, match="total_length"):
        dgrnn.pad_packed_sequence(dgrnn.pack_padded_sequence(x, [4, 3, 1]), total_length=2)
    lstm = dg.nn.LSTM(2, 5)
    p = dgrnn.pack_padded_sequence(x, [4, 3, 1])
    with pytest.raises(RuntimeError, match="Expected hidden\\[0\\] size \\(1, 3, 5\\)"):
        lstm(p, (dg.zeros(1, 2, 5), dg.zeros(1, 2, 5)))
    with pytest.raises(RuntimeError, match="input_size"):
        dg.nn.GRU(3, 5)(p)


def test_packed_rnn_gradients_of_every_order():
    lengths = [3, 1, 2]
    gru = dg.nn.GRU(2, 3, bidirectional=True).double()
    params = list(gru.parameters())

    def fn(x, h):
        packed = dgrnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, hn = gru(packed, h)
        padded, _ = dgrnn.pad_packed_sequence(out)
        return padded.tanh().sum(0) * 1.0, hn

    x = dg.randn(3, 3, 2, dtype=dg.float64, requires_grad=True)
    h = dg.randn(2, 3, 3, dtype=dg.float64, requires_grad=True)
    assert gradcheck(fn, (x, h))
    assert gradgradcheck(fn, (x, h))
    assert all(p.grad is None for p in params)


def test_ended_sequences_keep_their_state_and_padding_is_ignored():
    """An RNN on a packed batch gives each sequence what it gives that sequence alone."""
    lstm = dg.nn.LSTM(2, 4, num_layers=2, bidirectional=True).double()
    seqs = [dg.randn(n, 2, dtype=dg.float64) for n in (4, 2, 3)]
    with dg.no_grad():
        out, (hn, cn) = lstm(dgrnn.pack_sequence(seqs, enforce_sorted=False))
    padded, lens = dgrnn.pad_packed_sequence(out, padding_value=9.0)
    assert lens.tolist() == [4, 2, 3]
    for i, s in enumerate(seqs):
        with dg.no_grad():
            alone, (h1, c1) = lstm(s.unsqueeze(1))
        np.testing.assert_allclose(padded[: s.shape[0], i].numpy(), alone[:, 0].numpy(), rtol=1e-13, atol=1e-14)
        assert (padded[s.shape[0]:, i].numpy() == 9.0).all()
        np.testing.assert_allclose(hn[:, i].numpy(), h1[:, 0].numpy(), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(cn[:, i].numpy(), c1[:, 0].numpy(), rtol=1e-13, atol=1e-14)
