"""Variable-length sequences for the recurrent layers: ``PackedSequence`` and the
functions that make and undo it, with PyTorch's names, signatures and layout.

A packed sequence holds the time steps of a batch of sequences sorted by
decreasing length, one after the other: step ``t`` contributes the first
``batch_sizes[t]`` sequences' elements. ``sorted_indices`` maps the packed order
to the caller's batch order (``None`` when the caller's batch was already sorted),
and ``unsorted_indices`` is its inverse. Everything is built from differentiable
ops (slicing, cat, stack, index_select), so gradients of every order pass through.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from ... import dtype as _dt
from ...ops.creation import full, tensor
from ...ops.shape import cat, stack
from ...tensor import Tensor

__all__ = ["PackedSequence", "invert_permutation", "pack_padded_sequence", "pad_packed_sequence",
           "pad_sequence", "unpad_sequence", "pack_sequence", "unpack_sequence"]

_PackedSequenceBase = namedtuple("PackedSequence", ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])


def invert_permutation(permutation):
    """The inverse of a 1-D permutation tensor (None stays None)."""
    if permutation is None:
        return None
    idx = np.asarray(permutation.detach().cpu().numpy(), dtype=np.int64)
    inv = np.empty_like(idx)
    inv[idx] = np.arange(idx.size, dtype=np.int64)
    return tensor(inv, dtype=_dt.int64, device=permutation.device)


class PackedSequence(_PackedSequenceBase):
    """The packed steps of a batch of variable-length sequences (see the module's text).
    Made by ``pack_padded_sequence`` or ``pack_sequence``; accepted by ``nn.RNN``,
    ``nn.LSTM`` and ``nn.GRU``, which return their output packed the same way."""

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices)
        if batch_sizes is not None:
            if batch_sizes.device.type != "cpu":
                raise ValueError(
                    "batch_sizes should always be on CPU. Instances of PackedSequence should never be created "
                    "manually. They should be instantiated by functions like pack_sequence and "
                    "pack_padded_sequences in nn.utils.rnn.")
            return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)
        if not isinstance(data, (list, tuple)) or len(data) != 2:
            raise TypeError("PackedSequence(data, batch_sizes, ...): batch_sizes is required")
        return super().__new__(cls, data[0], data[1], sorted_indices, unsorted_indices)

    def _map(self, fn):
        """The same packing with ``fn`` applied to ``data`` (indices follow its device)."""
        data = fn(self.data)
        if data is self.data:
            return self
        move = (lambda t: None if t is None else t.to(device=data.device))
        return type(self)(data, self.batch_sizes, move(self.sorted_indices), move(self.unsorted_indices))

    def to(self, *args, **kwargs):
        return self._map(lambda d: d.to(*args, **kwargs))

    def cuda(self, *args, **kwargs):
        return self._map(lambda d: d.cuda(*args, **kwargs))

    def cpu(self, *args, **kwargs):
        return self._map(lambda d: d.cpu(*args, **kwargs))

    def pin_memory(self):
        return self

    def is_pinned(self) -> bool:
        return False

    def double(self):
        return self.to(dtype=_dt.float64)

    def float(self):
        return self.to(dtype=_dt.float32)

    def half(self):
        return self.to(dtype=_dt.float16)

    def bfloat16(self):
        return self.to(dtype=_dt.bfloat16)

    def long(self):
        return self.to(dtype=_dt.int64)

    def int(self):
        return self.to(dtype=_dt.int32)

    def short(self):
        return self.to(dtype=_dt.int16)

    def char(self):
        return self.to(dtype=_dt.int8)

    def byte(self):
        return self.to(dtype=_dt.uint8)

    @property
    def is_cuda(self) -> bool:
        return self.data.is_cuda


def _lengths_list(lengths, what="lengths"):
    if isinstance(lengths, Tensor):
        if lengths.dim() != 1:
            raise RuntimeError(f"'{what}' should be a 1D tensor, got a {lengths.dim()}D tensor")
        return [int(v) for v in lengths.detach().cpu().numpy().tolist()]
    try:
        return [int(v) for v in lengths]
    except TypeError:
        raise TypeError(f"'{what}' should be a 1D CPU int64 tensor or a list of ints, "
                        f"got {type(lengths).__name__}") from None


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (T, B, *) (or (B, T, *) with ``batch_first``) of sequences
    whose lengths are ``lengths``. With ``enforce_sorted`` the lengths must be in
    decreasing order; otherwise the batch is sorted here and the order is remembered."""
    lens = _lengths_list(lengths)
    batch_dim = 0 if batch_first else 1
    if input.dim() < 2:
        raise RuntimeError(f"pack_padded_sequence: expected an input of at least 2 dims (T, B, *), "
                           f"got {input.dim()}D")
    if input.numel() == 0:
        raise RuntimeError("Cannot pack empty tensors.")
    batch = input.shape[batch_dim]
    if len(lens) != batch:
        raise RuntimeError(f"Expected `len(lengths)` to be equal to batch_size, but got {len(lens)} "
                           f"(batch_size={batch})")
    if enforce_sorted:
        if any(a < b for a, b in zip(lens, lens[1:])):
            raise RuntimeError(
                "`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can "
                "pass `enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this "
                "requirement if you do not need ONNX exportability.")
        sorted_indices = None
    else:
        order = sorted(range(batch), key=lambda i: -lens[i])   # stable, as a descending sort
        sorted_indices = tensor(order, dtype=_dt.int64, device=input.device)
        lens = [lens[i] for i in order]
        input = input.index_select(batch_dim, sorted_indices)
    if lens[-1] <= 0:
        raise RuntimeError("Length of all samples has to be greater than 0, but found an element in 'lengths' "
                           "that is <= 0")
    steps = input.shape[1 - batch_dim]
    if lens[0] > steps:
        raise RuntimeError(f"pack_padded_sequence: the longest length is {lens[0]} but the input has only "
                           f"{steps} time steps (dim {1 - batch_dim} of input of size {list(input.shape)})")
    if batch_first:
        input = input.transpose(0, 1)
    batch_sizes = [sum(1 for n in lens if n > t) for t in range(lens[0])]
    data = cat([input[t, :b] for t, b in enumerate(batch_sizes)], 0)
    return PackedSequence(data, tensor(batch_sizes, dtype=_dt.int64), sorted_indices, None)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Undo ``pack_padded_sequence``: (padded, lengths), the batch back in the caller's
    order, ``padding_value`` after each sequence's end, padded to ``total_length``
    steps when given."""
    data, batch_sizes = sequence.data, _lengths_list(sequence.batch_sizes, "batch_sizes")
    steps = len(batch_sizes)
    if total_length is not None:
        if total_length < steps:
            raise ValueError("Expected total_length to be at least the length of the longest sequence in input, "
                             f"but got total_length={total_length} and max sequence length being {steps}")
        steps = total_length
    batch = batch_sizes[0]
    rows, offset = [], 0
    for b in batch_sizes:
        chunk = data[offset:offset + b]
        offset += b
        if b < batch:
            chunk = cat([chunk, full((batch - b,) + tuple(data.shape[1:]), padding_value, dtype=data.dtype,
                                     device=data.device)], 0)
        rows.append(chunk)
    for _ in range(steps - len(batch_sizes)):
        rows.append(full((batch,) + tuple(data.shape[1:]), padding_value, dtype=data.dtype, device=data.device))
    padded = stack(rows, 0)
    lengths = [sum(1 for b in batch_sizes if b > i) for i in range(batch)]
    if sequence.unsorted_indices is not None:
        padded = padded.index_select(1, sequence.unsorted_indices)
        order = _lengths_list(sequence.unsorted_indices, "unsorted_indices")
        lengths = [lengths[i] for i in order]
    if batch_first:
        padded = padded.transpose(0, 1)
    return padded, tensor(lengths, dtype=_dt.int64)


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack tensors of shapes (L_i, *) into one (T, B, *) tensor ((B, T, *) with
    ``batch_first``), T the longest L_i, padding with ``padding_value`` on
    ``padding_side`` ('right' or 'left')."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    if isinstance(sequences, Tensor):
        sequences = sequences.unbind(0)
    sequences = list(sequences)
    if not sequences:
        raise RuntimeError("received an empty list of sequences")
    trailing = tuple(sequences[0].shape[1:])
    for i, s in enumerate(sequences):
        if s.dim() < 1 or tuple(s.shape[1:]) != trailing:
            raise RuntimeError(f"pad_sequence: every sequence must have the trailing size {list(trailing)}; "
                               f"sequence {i} has size {list(s.shape)}")
    longest = max(s.shape[0] for s in sequences)
    padded = []
    for s in sequences:
        extra = longest - s.shape[0]
        if extra:
            fill = full((extra,) + trailing, padding_value, dtype=s.dtype, device=s.device)
            s = cat([s, fill] if padding_side == "right" else [fill, s], 0)
        padded.append(s)
    return stack(padded, 0 if batch_first else 1)


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The list of sequences of a padded batch, each cut to its length."""
    if not batch_first:
        padded_sequences = padded_sequences.transpose(0, 1)
    return [seq[:n] for seq, n in zip(padded_sequences, _lengths_list(lengths))]


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of tensors of shapes (L_i, *)."""
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences):
    """The list of sequences of a packed batch, in the caller's order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)
