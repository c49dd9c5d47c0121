"""The training objective a config names (``train.loss``), with the checks that the
model's output and the targets fit it, and accuracy where it means something.

Classes are along the last dimension of the output (``(batch, classes)`` or, for
sequence models, ``(batch, time, classes)``). A mismatch is an error that names
the loss, both shapes and dtypes and the usual fix, because a loss that quietly
broadcasts, or a cross-entropy over a single class (always 0), trains nothing
and still reports success.
"""
from __future__ import annotations

from ..dtype import bool as bool_
from ..nn import functional as F
from ..tensor import Tensor
from .models import import_object

BUILT_IN = ("cross_entropy", "mse", "l1", "smooth_l1", "bce_with_logits")
_ELEMENTWISE = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}


class LossMismatch(ValueError):
    """The model's output and the targets do not fit ``train.loss``."""


def _desc(t) -> str:
    return f"shape {list(t.shape)} and dtype {t.dtype}"


class Objective:
    """``objective(output, target) -> (loss, count, correct)``: the mean loss, how
    many values it averages (to weight evaluation batches) and the number of
    correct predictions (None where accuracy means nothing)."""

    def __init__(self, name: str):
        self.name = name
        self.custom = None if name in BUILT_IN else import_object(name, "train.loss")
        if self.custom is not None and not callable(self.custom):
            raise ValueError(f"train.loss {name!r} is not callable: give a function (output, target) -> loss")

    @property
    def has_accuracy(self) -> bool:
        return self.name in ("cross_entropy", "bce_with_logits")

    def __call__(self, out, y):
        if self.custom is not None:
            return self._custom(out, y)
        if self.name == "cross_entropy":
            return self._cross_entropy(out, y)
        if self.name == "bce_with_logits":
            return self._bce(out, y)
        return self._elementwise(out, y)

    def _fail(self, out, y, why: str, fix: str):
        raise LossMismatch(
            f"train.loss = {self.name!r}: the model's output has {_desc(out)} and the targets "
            f"have {_desc(y)}: {why}. {fix}")

    def _cross_entropy(self, out, y):
        if out.dim() < 2:
            self._fail(out, y, "cross-entropy needs class scores along the output's last dimension",
                       "For regression use train.loss = 'mse' (or 'l1', 'smooth_l1').")
        classes = out.shape[-1]
        if classes < 2:
            self._fail(out, y, "cross-entropy over one class is always 0, so nothing would be learned",
                       "For regression use train.loss = 'mse' (or 'l1', 'smooth_l1'); for a "
                       "yes/no target, 'bce_with_logits'.")
        if y.dtype.is_floating_point:
            if tuple(y.shape) != tuple(out.shape):
                self._fail(out, y, "float targets are read as class probabilities, which need the "
                           "output's shape", "Give integer class indices of shape "
                           f"{list(out.shape[:-1])}, or probabilities of shape {list(out.shape)}.")
            flat_out, flat_y = out.reshape(-1, classes), y.reshape(-1, classes)
            loss = F.cross_entropy(flat_out, flat_y)
            correct = (flat_out.argmax(-1) == flat_y.argmax(-1)).sum()
            return loss, flat_out.shape[0], correct
        if y.dtype == bool_:
            self._fail(out, y, "targets must be integer class indices", "Convert them to int64.")
        if tuple(y.shape) != tuple(out.shape[:-1]):
            self._fail(out, y, f"integer targets must be class indices of shape {list(out.shape[:-1])}",
                       "Check the dataset's targets and the model's output layer.")
        flat_out, flat_y = out.reshape(-1, classes), y.reshape(-1)
        loss = F.cross_entropy(flat_out, flat_y)
        return loss, flat_y.shape[0], (flat_out.argmax(-1) == flat_y).sum()

    def _same_shape_float(self, out, y):
        if tuple(y.shape) != tuple(out.shape):
            self._fail(out, y, "the output and the targets must have the same shape (a loss that "
                       "broadcasts them compares every output with every target)",
                       "Reshape the targets in the dataset, or the output in the model.")
        if not y.dtype.is_floating_point:
            y = y.to(out.dtype)
        return y

    def _elementwise(self, out, y):
        y = self._same_shape_float(out, y)
        return _ELEMENTWISE[self.name](out, y), y.numel(), None

    def _bce(self, out, y):
        y = self._same_shape_float(out, y)
        lo, hi = float(y.min().item()), float(y.max().item())
        if lo < 0 or hi > 1:
            self._fail(out, y, f"binary cross-entropy needs targets in [0, 1], got values in [{lo:g}, {hi:g}]",
                       "Use 0/1 labels or probabilities.")
        loss = F.binary_cross_entropy_with_logits(out, y)
        return loss, y.numel(), ((out > 0) == (y > 0.5)).sum()

    def _custom(self, out, y):
        loss = self.custom(out, y)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            what = f"a tensor of shape {list(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
            raise LossMismatch(f"train.loss = {self.name!r} returned {what}; it must return the "
                               "mean loss as a one-element tensor")
        if not loss.dtype.is_floating_point:
            raise LossMismatch(f"train.loss = {self.name!r} returned a {loss.dtype} tensor; a loss "
                               "must be floating point to be differentiated")
        return loss.reshape(()), (y.shape[0] if y.dim() else 1), None
