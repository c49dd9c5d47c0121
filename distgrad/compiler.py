"""``distgrad.compile`` and ``distgrad.compiler``: PyTorch's graph compiler entry points.

distgrad runs eagerly: every op executes when it is called (on the GPU, CuPy and
distgrad's fused kernels). ``compile`` therefore returns the module or function it is
given, unchanged, after checking its arguments as PyTorch does, so code written for
``torch.compile`` runs as it would with ``disable=True``.
"""
from __future__ import annotations

MODES = ("default", "lite", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
BACKENDS = ("inductor", "eager", "aot_eager", "cudagraphs")


class InvalidBackend(RuntimeError):
    def __init__(self, name):
        super().__init__(f"Invalid backend: {name!r}, see `distgrad.compiler.list_backends()` "
                         "for available backends.")


def list_backends(exclude_tags=("debug", "experimental")) -> list:
    return sorted(BACKENDS)


def compile(model=None, *, fullgraph: bool = False, dynamic: bool | None = None,
            backend="inductor", mode: str | None = None, options: dict | None = None,
            disable: bool = False, **kwargs):
    """Return ``model`` unchanged (distgrad runs eagerly; see the module docstring).

    Works as ``compile(model)``, ``@compile`` and ``@compile(mode=...)``. As in
    PyTorch: ``mode`` must be one of ``MODES`` when the backend is 'inductor', ``mode``
    and ``options`` exclude each other, an unknown backend name raises
    ``InvalidBackend``, and ``model`` must be callable."""
    if backend is None:
        backend = "inductor"
    if mode is not None and options is not None:
        raise RuntimeError("Either mode or options can be specified, but both can't be specified at the same time.")
    if isinstance(backend, str):
        if backend not in BACKENDS:
            raise InvalidBackend(backend)
        if backend == "inductor" and mode is not None and mode not in MODES:
            raise RuntimeError(f"Unrecognized mode={mode}, should be one of: {', '.join(MODES)}")
    elif not callable(backend):
        raise InvalidBackend(backend)

    if model is None:
        def fn(model):
            if model is None:
                raise RuntimeError("Model can't be None")
            return compile(model, fullgraph=fullgraph, dynamic=dynamic, backend=backend, mode=mode,
                           options=options, disable=disable, **kwargs)
        return fn
    if not callable(model):
        raise AssertionError(f"A callable function is expected, but {type(model)} is provided.")
    return model


def disable(fn=None, recursive: bool = True, *, reason=None):
    """``compiler.disable``: a no-op decorator (nothing is ever compiled)."""
    if fn is None:
        return lambda f: f
    return fn


def is_compiling() -> bool:
    return False


is_dynamo_compiling = is_compiling


def reset() -> None:
    """Nothing to reset: nothing is compiled or cached."""
