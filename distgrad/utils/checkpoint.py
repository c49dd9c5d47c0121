"""Gradient checkpointing: keep only a segment's inputs in forward, recompute the
rest during backward.

The default (``use_reentrant=False``) is built on saved-tensor hooks: inside the
segment every tensor an op saves is replaced by a placeholder; the first time
backward unpacks one, the segment runs again (with the RNG states it had, the CPU
generator's and each GPU's, so dropout draws the same mask) until it has saved them
all, and they fill the placeholders. The original graph is the one backward walks (also the second time,
with create_graph), so gradients are bit-identical to a run without checkpointing
and each parameter's gradient is accumulated once. A recomputed value must be at
the version its original was when saved; otherwise backward raises the version
error it raises without checkpointing.
"""
from __future__ import annotations

from ..autograd.function import Function, _SavedTensorModified, _version_error
from ..autograd.grad_mode import enable_grad
from ..autograd.graph import saved_tensors_hooks
from ..autograd import engine
from .. import random as _random
from ..amp import autocast_mode
from ..tensor import Tensor


def _rng_states(args, kwargs) -> tuple:
    """The CPU generator's state and the GPU generators' (those of the GPUs the inputs
    are on included, as PyTorch stashes the inputs' devices' states)."""
    from ..backend import is_device_array

    devices = {a._data.device.id for a in list(args) + list(kwargs.values())
               if isinstance(a, Tensor) and is_device_array(a._data)}
    return _random.get_all_states(devices)


def _versions(args) -> list:
    return [(a, a._vc[0]) for a in args if isinstance(a, Tensor)]


def _check_versions(versions, who: str) -> None:
    """Recomputing from an input that was modified in place would give silently wrong
    gradients: refuse, as backward does for any saved tensor."""
    for t, v in versions:
        if t._vc[0] != v:
            raise _version_error(_Named(who), t._data, t._vc[0], v)


class _Named:
    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


class _StopRecomputation(Exception):
    """Raised once the recomputation has every saved tensor: the rest of the function
    is not needed, and running it could modify them in place (as PyTorch's early stop)."""


class _Recomputation:
    """One checkpointed call: what is needed to run it again, and its saved tensors.

    Only the nodes that saved into it hold it (through ``unpack``), and each lets go
    once its backward has run, so a segment's inputs are freed as soon as they are
    no longer needed; with retain_graph the nodes keep it for the next backward."""

    def __init__(self, function, args, kwargs, rng_state):
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.versions = _versions(list(args) + list(kwargs.values()))
        self.rng_state = rng_state
        self.autocast = autocast_mode.snapshot()   # recomputed under the autocast state of its forward
        self.saved = []       # (shape, dtype, version) of each tensor saved in forward, in order
        self.storage = {}

    def pack(self, t):
        self.saved.append((t._data.shape, t._data.dtype, t._vc[0]))
        return len(self.saved) - 1

    def unpack(self, i):
        if i not in self.storage:
            self._recompute()
        t = self.storage.pop(i)
        expected = self.saved[i][2]
        if t._vc[0] != expected:
            # Modified in place after it was saved: by the function itself, before its
            # last saved tensor, or (one not made inside it) since the forward.
            raise _SavedTensorModified(t._data, t._vc[0], expected)
        return t

    def _recompute(self):
        _check_versions(self.versions, "checkpoint (an input of the checkpointed function)")
        storage = {}

        def pack(t):
            # Bare values: the forward's nodes join them to the original graph, and a
            # recomputed tensor's own graph would refer back to ``storage`` (a cycle).
            storage[len(storage)] = t.detach()
            if len(storage) == len(self.saved):
                raise _StopRecomputation
            return len(storage) - 1

        current = _random.get_all_states() if self.rng_state is not None else None
        try:
            if self.rng_state is not None:
                _random.set_all_states(self.rng_state)
            with enable_grad(), autocast_mode.restored(self.autocast), \
                    saved_tensors_hooks(pack, storage.__getitem__):
                self.function(*self.args, **self.kwargs)
        except _StopRecomputation:
            pass
        finally:
            if current is not None:
                _random.set_all_states(current)
        if len(storage) != len(self.saved) or any(
            (t._data.shape, t._data.dtype) != m[:2] for t, m in zip(storage.values(), self.saved)
        ):
            raise RuntimeError(
                "checkpoint: the recomputed forward saved different tensors than the original "
                f"({len(storage)} instead of {len(self.saved)}, or of other shapes or dtypes). The "
                "checkpointed function must run the same ops on recomputation: avoid control flow "
                "that depends on global state, and keep preserve_rng_state=True when it uses random ops."
            )
        self.storage = storage


def checkpoint(function, *args, use_reentrant: bool | None = False, context_fn=None,
               determinism_check: str = "default", debug: bool = False,
               preserve_rng_state: bool = True, **kwargs):
    """Run ``function(*args, **kwargs)`` keeping only its inputs for backward, and
    recompute its intermediate values when backward needs them."""
    if use_reentrant:
        if kwargs:
            raise ValueError("checkpoint: keyword arguments are only supported with use_reentrant=False")
        return _CheckpointFunction.apply(function, preserve_rng_state, *args)
    frame = _Recomputation(function, args, kwargs, _rng_states(args, kwargs) if preserve_rng_state else None)
    with saved_tensors_hooks(frame.pack, frame.unpack):
        return function(*args, **kwargs)


class _CheckpointFunction(Function):
    """The reentrant variant: forward without a graph, backward recomputes the segment
    and runs a nested backward through it (it cannot serve autograd.grad)."""

    @staticmethod
    def forward(ctx, run_function, preserve_rng_state, *args):
        ctx.run_function = run_function
        ctx.rng_state = _rng_states(args, {}) if preserve_rng_state else None
        ctx.autocast = autocast_mode.snapshot()
        ctx.inputs = args
        ctx.input_versions = _versions(args)
        return run_function(*args)

    @staticmethod
    def backward(ctx, *grad_outputs):
        _check_versions(ctx.input_versions, "checkpoint (an input of the checkpointed function)")
        inputs = tuple(
            a.detach().requires_grad_(a.requires_grad) if isinstance(a, Tensor) else a for a in ctx.inputs
        )
        current = _random.get_all_states() if ctx.rng_state is not None else None
        try:
            if ctx.rng_state is not None:
                _random.set_all_states(ctx.rng_state)
            with enable_grad(), autocast_mode.restored(ctx.autocast):
                outputs = ctx.run_function(*inputs)
        finally:
            if current is not None:
                _random.set_all_states(current)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs)
                 if isinstance(o, Tensor) and o.requires_grad and g is not None]
        if not pairs:
            raise RuntimeError("checkpoint: none of the outputs of the checkpointed function requires grad")
        engine.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None) + tuple(
            a.grad if isinstance(a, Tensor) and a.requires_grad else None for a in inputs
        )


def checkpoint_sequential(functions, segments: int, input, use_reentrant: bool | None = False, **kwargs):
    """Split ``functions`` (a Sequential or a list) into ``segments`` runs and checkpoint
    all but the last, as ``torch.utils.checkpoint.checkpoint_sequential``."""
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError(f"checkpoint_sequential: unexpected keyword arguments {sorted(kwargs)}")
    from ..nn.modules.container import Sequential

    if isinstance(functions, Sequential):
        functions = list(functions.children())
    functions = list(functions)
    if segments <= 0 or segments > len(functions):
        raise ValueError(f"checkpoint_sequential: segments must be in [1, {len(functions)}], got {segments}")

    def run(start, end):
        def forward(x):
            for j in range(start, end + 1):
                x = functions[j](x)
            return x
        return forward

    size = len(functions) // segments
    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(run(start, end), input, use_reentrant=use_reentrant, preserve_rng_state=preserve)
    return run(end + 1, len(functions) - 1)(input)


__all__ = ["checkpoint", "checkpoint_sequential"]
