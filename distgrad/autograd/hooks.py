"""Handles returned by hook registration."""
import itertools

_ids = itertools.count()


class RemovableHandle:
    """Returned by ``register_*hook``; ``remove()`` unregisters the hook."""

    __slots__ = ("_store", "id")

    def __init__(self, store: dict, hook):
        self.id = next(_ids)
        self._store = store
        store[self.id] = hook

    def remove(self) -> None:
        self._store.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
