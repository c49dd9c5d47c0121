"""TorchScript-compatible entry points, as ``torch.jit``.

distgrad runs every program eagerly, so there is nothing to compile: ``script`` and
``trace`` return the module or function they are given (as ``distgrad.compile`` does),
and the decorators ``ignore``/``unused``/``export`` leave functions unchanged. Programs
written for TorchScript therefore run as plain Python. A scripted archive cannot be
written or read: ``jit.save``/``jit.load`` raise ``NotImplementedError``; save the
model's ``state_dict()`` with ``distgrad.save`` instead.
"""
from __future__ import annotations

import contextlib

__all__ = ["Attribute", "Final", "ScriptFunction", "ScriptModule", "annotate", "export",
           "fork", "freeze", "ignore", "interface", "is_scripting", "is_tracing", "load",
           "optimize_for_inference", "save", "script", "script_if_tracing", "trace",
           "trace_module", "unused", "wait"]

_SAVE_MSG = ("distgrad.jit.{name}: distgrad runs models eagerly and has no TorchScript archive "
             "format; save the model's state_dict() with distgrad.save(model.state_dict(), path) "
             "and load it into a freshly built model with model.load_state_dict(distgrad.load(path))")


class ScriptModule:
    """Placeholder type: ``script`` returns the original module, never an instance of this."""


class ScriptFunction:
    """Placeholder type: ``script`` returns the original function, never an instance of this."""


def script(obj, optimize=None, _frames_up=0, _rcb=None, example_inputs=None):
    """Return ``obj`` itself: distgrad executes modules and functions eagerly."""
    return obj


def trace(func, example_inputs=None, optimize=None, check_trace=True, check_inputs=None,
          check_tolerance=1e-5, strict=True, _force_outplace=False, _module_class=None,
          _compilation_unit=None, example_kwarg_inputs=None, _store_inputs=True):
    """Return ``func`` itself (no graph is recorded; the example inputs are not run)."""
    return func


def trace_module(mod, inputs=None, *args, **kwargs):
    return mod


def script_if_tracing(fn):
    return fn


def ignore(drop=False, **kwargs):
    """Decorator (with or without arguments) that leaves the function unchanged."""
    if callable(drop):
        return drop

    def decorator(fn):
        return fn

    return decorator


def unused(fn):
    return fn


def export(fn):
    return fn


def interface(obj):
    return obj


def is_scripting() -> bool:
    """Always False: code never runs under TorchScript in distgrad."""
    return False


def is_tracing() -> bool:
    return False


def annotate(the_type, the_value):
    return the_value


def freeze(mod, preserved_attrs=None, optimize_numerics=True):
    return mod


def optimize_for_inference(mod, other_methods=None):
    return mod


def fork(func, *args, **kwargs):
    """Run ``func`` now; the returned future's ``wait`` gives its result."""
    return _Future(func(*args, **kwargs))


def wait(future):
    return future.wait()


class _Future:
    def __init__(self, value):
        self._value = value

    def wait(self):
        return self._value


class Attribute:
    def __new__(cls, value, type=None):
        return value


class _FinalType:
    def __getitem__(self, item):
        return item


Final = _FinalType()


def save(m, f, _extra_files=None):
    raise NotImplementedError(_SAVE_MSG.format(name="save"))


def load(f, map_location=None, _extra_files=None, _restore_shapes=False):
    raise NotImplementedError(_SAVE_MSG.format(name="load"))


@contextlib.contextmanager
def optimized_execution(should_optimize):
    yield


