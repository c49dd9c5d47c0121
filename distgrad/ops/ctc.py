"""The connectionist temporal classification loss (``F.ctc_loss``), as PyTorch's.

The forward (alpha) recursion runs in log space over the blank-extended targets
(blank, l1, blank, l2, ..., blank), all samples at once, one step per time frame,
built from differentiable ops, so its gradient is autograd's. PyTorch's own CTC
backward returns ``exp(log_probs) - posterior`` with respect to ``log_probs`` (the
gradient with respect to the logits when ``log_probs`` is a ``log_softmax``); the
true gradient with respect to ``log_probs`` is ``-posterior``. The two agree after
``log_softmax``, which is how CTC is used; they differ for log-probabilities that do
not come from one.
"""
from __future__ import annotations

import numpy as np

from ..autograd.grad_mode import no_grad
from ._util import Tensor, _wrap, array_module

_NEG_INF = -np.inf


def _lse(*terms):
    """log(sum(exp(terms))) elementwise, -inf where every term is -inf, with finite
    gradients everywhere (no 0/0 where all terms are -inf)."""
    with no_grad():
        m = terms[0].detach()
        for t in terms[1:]:
            m = m.maximum(t.detach())
        empty = m == _NEG_INF
        m = m.masked_fill(empty, 0.0)
    s = None
    for t in terms:
        e = (t - m).exp()
        s = e if s is None else s + e
    s = s.masked_fill(empty, 1.0)
    return (s.log() + m).masked_fill(empty, _NEG_INF)


def _lengths(v, n, what):
    if isinstance(v, Tensor):
        v = v.detach().cpu().numpy().reshape(-1).tolist()
    v = [int(x) for x in v]
    if len(v) != n:
        raise RuntimeError(f"ctc_loss: expected {what} to have {n} elements (the batch size), got {len(v)}")
    return v


def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """CTC loss of ``log_probs`` (T, N, C) (or (T, C)) against ``targets`` ((N, S)
    padded, or 1-D concatenated), PyTorch's ``F.ctc_loss``."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    unbatched = log_probs.dim() == 2
    if unbatched:
        log_probs = log_probs.unsqueeze(1)
        if isinstance(targets, Tensor) and targets.dim() == 1:
            targets = targets.unsqueeze(0)
    if log_probs.dim() != 3:
        raise RuntimeError(f"ctc_loss: log_probs must be (T, N, C) or (T, C), got {list(log_probs.shape)}")
    T, N, C = log_probs.shape
    if not 0 <= blank < C:
        raise RuntimeError(f"ctc_loss: blank must be in label range [0, {C}), got {blank}")
    in_len = _lengths(input_lengths, N, "input_lengths")
    tg_len = _lengths(target_lengths, N, "target_lengths")
    tg = np.asarray(targets.detach().cpu().numpy() if isinstance(targets, Tensor) else targets, dtype=np.int64)
    if tg.ndim == 1:          # concatenated targets
        if tg.size != sum(tg_len):
            raise RuntimeError(f"ctc_loss: concatenated targets hold {tg.size} labels but target_lengths sum to "
                               f"{sum(tg_len)}")
        offsets = np.concatenate([[0], np.cumsum(tg_len)])
        rows = [tg[offsets[i]:offsets[i + 1]] for i in range(N)]
    else:
        if tg.shape[0] != N:
            raise RuntimeError(f"ctc_loss: targets have batch size {tg.shape[0]}, log_probs {N}")
        rows = []
        for i in range(N):
            if tg_len[i] > tg.shape[1]:
                raise RuntimeError(f"ctc_loss: target length {tg_len[i]} of sample {i} exceeds the targets' "
                                   f"second dim {tg.shape[1]}")
            rows.append(tg[i, :tg_len[i]])
    for i in range(N):
        if not 0 <= in_len[i] <= T:
            raise RuntimeError(f"ctc_loss: input length {in_len[i]} of sample {i} must be in [0, {T}]")
        if tg_len[i] < 0:
            raise RuntimeError(f"ctc_loss: target length of sample {i} is negative ({tg_len[i]})")
        if len(rows[i]) and (rows[i].min() < 0 or rows[i].max() >= C or (rows[i] == blank).any()):
            raise RuntimeError(f"ctc_loss: the targets of sample {i} must be labels in [0, {C}) other than the "
                               f"blank ({blank})")
    L = max(tg_len) if N else 0
    S = 2 * L + 1
    ext = np.full((N, S), blank, dtype=np.int64)
    for i, r in enumerate(rows):
        ext[i, 1:2 * len(r):2] = r
    skip = np.zeros((N, S), dtype=bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    xp = array_module(log_probs._data)
    ext_t = _wrap(xp.asarray(ext))
    lp = log_probs.gather(2, ext_t.unsqueeze(0).expand(T, N, S))          # (T, N, S)
    dt = log_probs._data.dtype
    neg = _wrap(xp.full((N, 1), _NEG_INF, dt))
    no_skip = _wrap(xp.asarray(~skip))
    start = np.full((N, S), _NEG_INF)
    start[:, 0] = 0.0
    start[[i for i in range(N) if tg_len[i] > 0], 1] = 0.0
    frames = np.asarray(in_len)
    empty = np.full((N, S), _NEG_INF)
    empty[:, 0] = 0.0                     # no frames: only the empty labelling, with probability 1
    alpha = (lp[0] + _wrap(xp.asarray(start.astype(dt)))).where(
        _wrap(xp.asarray((frames > 0)[:, None])), _wrap(xp.asarray(empty.astype(dt))))
    for t in range(1, T):
        a1 = alpha
        a2 = _shift(alpha, 1, neg)
        a3 = _shift(alpha, 2, neg).masked_fill(no_skip, _NEG_INF)
        new = _lse(a1, a2, a3) + lp[t]
        live = _wrap(xp.asarray((t < frames)[:, None]))
        alpha = new.where(live, alpha)
    ends = np.asarray([2 * n for n in tg_len])
    last = alpha.gather(1, _wrap(xp.asarray(ends[:, None])))
    before = alpha.gather(1, _wrap(xp.asarray(np.maximum(ends - 1, 0)[:, None])))
    before = before.masked_fill(_wrap(xp.asarray((ends == 0)[:, None])), _NEG_INF)
    loss = -_lse(last, before).reshape(N)
    if zero_infinity:
        loss = loss.masked_fill(loss.detach() == np.inf, 0.0)
    if reduction == "none":
        return loss.squeeze(0) if unbatched else loss
    if reduction == "sum":
        return loss.sum()
    denom = _wrap(xp.asarray(np.maximum(np.asarray(tg_len), 1).astype(dt)))
    return (loss / denom).mean()


def _shift(alpha, k, neg):
    """``alpha`` moved ``k`` states to the right along dim 1, -inf entering."""
    from .shape import cat

    n, states = alpha.shape
    if k >= states:
        return neg.expand(n, states)
    return cat([neg.expand(n, k), alpha[:, :-k]], 1)
