"""``distgrad.futures``: PyTorch's ``torch.futures.Future``, the value a DDP
communication hook returns, and what ``Work.get_future()`` gives."""
from __future__ import annotations

import threading

__all__ = ["Future", "collect_all", "wait_all"]


class Future:
    """A value that will be set once; ``wait()`` blocks until then and returns it
    (raising the exception it was failed with, if any). ``then(fn)`` gives a new
    Future holding ``fn(self)`` once this one is done."""

    def __init__(self, *, devices=None):
        self._done = threading.Event()
        self._value = None
        self._error = None
        self._callbacks = []
        self._lock = threading.Lock()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value

    def value(self):
        """The value of a completed Future (an error if it is not completed yet)."""
        if not self.done():
            raise RuntimeError("Future.value(): the future is not completed yet; call wait() first")
        if self._error is not None:
            raise self._error
        return self._value

    def _complete(self, value=None, error=None) -> None:
        with self._lock:
            if self._done.is_set():
                raise RuntimeError("Future can only be marked completed once (set_result or set_exception "
                                   "was already called)")
            self._value, self._error = value, error
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)

    def set_result(self, result) -> None:
        self._complete(value=result)

    def set_exception(self, result) -> None:
        if not isinstance(result, BaseException):
            raise TypeError(f"set_exception expects an exception, got {type(result).__name__}")
        self._complete(error=result)

    def add_done_callback(self, callback) -> None:
        """Run ``callback(self)`` once done (at once if already done)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def then(self, callback) -> "Future":
        nxt = Future()

        def run(fut):
            try:
                nxt.set_result(callback(fut))
            except BaseException as e:  # handed to whoever waits on the chained future
                nxt.set_exception(e)

        self.add_done_callback(run)
        return nxt


def collect_all(futures) -> Future:
    """A Future of the list of ``futures``, done when all of them are."""
    futures = list(futures)
    out = Future()
    if not futures:
        out.set_result([])
        return out
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_):
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            out.set_result(futures)

    for f in futures:
        f.add_done_callback(one_done)
    return out


def wait_all(futures) -> list:
    """Wait for every Future and return their values."""
    return [f.wait() for f in futures]
