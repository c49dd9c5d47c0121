"""Reverse-mode automatic differentiation: the engine, Function, grad modes, checks."""
from . import graph
from .engine import backward, grad
from .function import Function, FunctionCtx, Node, once_differentiable
from .grad_mode import (enable_grad, inference_mode, is_grad_enabled,
                        is_inference_mode_enabled, no_grad, set_grad_enabled)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck

__all__ = [
    "Function", "FunctionCtx", "GradcheckError", "Node", "backward", "enable_grad", "grad",
    "gradcheck", "gradgradcheck", "graph", "inference_mode", "is_grad_enabled",
    "is_inference_mode_enabled", "no_grad", "once_differentiable", "set_grad_enabled",
]
from . import functional  # noqa: E402
from .variable import Variable  # noqa: E402

__all__ += ["Variable", "functional"]
