"""Saved-tensor hooks: control how the graph stores the tensors backward needs.

Inside ``saved_tensors_hooks(pack, unpack)``, every tensor an op saves for backward
is passed to ``pack`` and only its result is kept; backward calls ``unpack`` on it
to get the tensor back. Gradient checkpointing is built on this.
"""
from __future__ import annotations

# The innermost active (pack, unpack) pair is last.
hooks_stack: list = []


class saved_tensors_hooks:
    def __init__(self, pack_hook, unpack_hook):
        self.pack_hook = pack_hook
        self.unpack_hook = unpack_hook

    def __enter__(self):
        hooks_stack.append((self.pack_hook, self.unpack_hook))
        return self

    def __exit__(self, *exc):
        hooks_stack.pop()
        return False


class disable_saved_tensors_hooks:
    """Inside this context, saved tensors are stored as they are, ignoring any hooks."""

    def __init__(self, error_message: str = ""):
        self.error_message = error_message

    def __enter__(self):
        self._saved = hooks_stack[:]
        hooks_stack.clear()
        return self

    def __exit__(self, *exc):
        hooks_stack[:] = self._saved
        return False


def get_gradient_edge(tensor):
    """The (node, output index) pair that gradients of ``tensor`` flow into."""
    from .function import edge

    return edge(tensor)
