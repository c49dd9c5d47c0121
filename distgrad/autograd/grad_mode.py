"""Grad modes: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, ``inference_mode``.

Each works as a context manager and as a decorator, as in PyTorch.
"""
from __future__ import annotations

import functools
import inspect


class _State:
    __slots__ = ("enabled", "inference")

    def __init__(self):
        self.enabled = True
        self.inference = False


# Read on every op, so it is one attribute on one object.
state = _State()


def is_grad_enabled() -> bool:
    return state.enabled


def is_inference_mode_enabled() -> bool:
    return state.inference


class _Mode:
    """Base of the grad-mode context managers; subclasses set ``_target``."""

    def __call__(self, fn):
        if inspect.isclass(fn):
            raise TypeError(f"{type(self).__name__} decorates functions, not classes")
        if inspect.isgeneratorfunction(fn):
            return self._wrap_generator(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.clone():
                return fn(*args, **kwargs)
        return wrapper

    def _wrap_generator(self, fn):
        """Each step of the generator runs in the mode; the caller, between steps, does not."""

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            gen = fn(*args, **kwargs)
            try:
                with self.clone():
                    response = gen.send(None)
                while True:
                    try:
                        request = yield response
                    except GeneratorExit:
                        with self.clone():
                            gen.close()
                        raise
                    except BaseException as e:
                        with self.clone():
                            response = gen.throw(e)
                    else:
                        with self.clone():
                            response = gen.send(request)
            except StopIteration as e:
                return e.value
        return gen_wrapper

    def clone(self):
        return self.__class__()

    def __enter__(self):
        self._prev = (state.enabled, state.inference)
        self._apply()
        return None

    def __exit__(self, *exc):
        state.enabled, state.inference = self._prev
        return False


class _BareDecorator(_Mode):
    """Allows ``@no_grad`` without parentheses, as PyTorch 2 does."""

    def __new__(cls, orig_func=None):
        if orig_func is not None and callable(orig_func):
            return cls()(orig_func)
        return super().__new__(cls)

    def __init__(self, orig_func=None):
        pass


class no_grad(_BareDecorator):
    def _apply(self):
        state.enabled = False


class enable_grad(_BareDecorator):
    def _apply(self):
        state.enabled = True


class set_grad_enabled(_Mode):
    """Sets grad mode at construction (like PyTorch, it works as a plain call too)."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self._prev = (state.enabled, state.inference)
        state.enabled = self.mode

    def clone(self):
        return set_grad_enabled(self.mode)

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        state.enabled, state.inference = self._prev
        return False

    def __call__(self, fn):
        state.enabled, state.inference = self._prev
        return super().__call__(fn)


class inference_mode(_Mode):
    """No graph is recorded, and tensors made here can never be saved for backward."""

    def __init__(self, mode: bool = True):
        self.mode = mode

    def __new__(cls, mode=True):
        # Allows the bare decorator form ``@inference_mode``.
        if callable(mode):
            return cls(True)(mode)
        return super().__new__(cls)

    def clone(self):
        return inference_mode(self.mode)

    def _apply(self):
        if self.mode:
            state.enabled = False
            state.inference = True
        else:
            state.enabled = True
            state.inference = False
