"""``gradcheck`` and ``gradgradcheck``: compare analytical gradients with central
finite differences, as ``torch.autograd.gradcheck`` does (in its slow mode)."""
from __future__ import annotations

import warnings

import numpy as np
from ..dtype import kind_of as _kind_of

from ..backend import to_numpy
from ..tensor import Tensor, _wrap
from .engine import grad as _grad
from .grad_mode import enable_grad


class GradcheckError(RuntimeError):
    """Raised by gradcheck when a gradient disagrees with finite differences."""


def _as_tuple(x):
    return x if isinstance(x, tuple) else tuple(x) if isinstance(x, list) else (x,)


def _diff_outputs(outputs):
    return [o for o in outputs if isinstance(o, Tensor) and _kind_of(o._data.dtype) == "f"]


def _numerical(func, inputs, diff_idx, n_out_elems, eps):
    """Jacobians d(outputs)/d(inputs[i]) by central differences, one per (input, output)."""
    jac = {}
    for i in diff_idx:
        x = inputs[i]
        flat = x._data.reshape(-1)  # a view: perturbing it perturbs the input
        if not np.shares_memory(flat, x._data):
            raise GradcheckError(f"gradcheck: input {i} is not contiguous; pass x.contiguous()")
        cols = []
        for j in range(flat.size):
            orig = flat[j].item()
            flat[j] = orig + eps
            with enable_grad():  # func may itself differentiate (gradgradcheck)
                plus = [to_numpy(o._data).astype(np.float64).reshape(-1).copy()
                        for o in _diff_outputs(_as_tuple(func(*inputs)))]
            flat[j] = orig - eps
            with enable_grad():
                minus = [to_numpy(o._data).astype(np.float64).reshape(-1).copy()
                         for o in _diff_outputs(_as_tuple(func(*inputs)))]
            flat[j] = orig
            cols.append([(p - m) / (2 * eps) for p, m in zip(plus, minus)])
        for k, n in enumerate(n_out_elems):
            jac[(k, i)] = (np.stack([c[k] for c in cols], axis=1) if cols
                           else np.zeros((n, 0)))
    return jac


def _analytical(outputs, inputs, diff_idx):
    jac = {}
    for k, out in enumerate(outputs):
        rows = {i: [] for i in diff_idx}
        n = out._data.size
        for j in range(n):
            seed = np.zeros(n, dtype=out._data.dtype)
            seed[j] = 1
            go = _wrap(seed.reshape(out._data.shape))
            if not out.requires_grad:
                gs = [None] * len(diff_idx)
            else:
                gs = _grad(out, [inputs[i] for i in diff_idx], go, retain_graph=True, allow_unused=True)
            for i, g in zip(diff_idx, gs):
                rows[i].append(
                    np.zeros(inputs[i]._data.size) if g is None
                    else to_numpy(g._data).astype(np.float64).reshape(-1)
                )
        for i in diff_idx:
            jac[(k, i)] = np.stack(rows[i], axis=0) if rows[i] else np.zeros((0, inputs[i]._data.size))
    return jac


def _fail(msg, raise_exception):
    if raise_exception:
        raise GradcheckError(msg)
    return False


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              nondet_tol=0.0, check_undefined_grad=True, check_grad_dtypes=False,
              check_batched_grad=False, check_backward_ad=True, fast_mode=False, masked=None) -> bool:
    """Check the gradients of ``func`` at ``inputs`` against central finite differences
    (use float64 inputs). Returns True, or raises ``GradcheckError`` naming the worst
    element (or returns False with ``raise_exception=False``)."""
    inputs = _as_tuple(inputs)
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not diff_idx:
        raise ValueError("gradcheck expects at least one input tensor to require gradient, but none of the them have requires_grad=True.")
    for i in diff_idx:
        if inputs[i]._data.dtype != np.float64:
            warnings.warn(
                f"Input #{i} requires gradient and is not a double precision floating point. "
                "This check will likely fail if all the inputs are not of double precision "
                "floating point.", UserWarning, stacklevel=2)
    with enable_grad():
        outputs = _diff_outputs(_as_tuple(func(*inputs)))
        analytical = _analytical(outputs, inputs, diff_idx)
        again = _analytical(outputs, inputs, diff_idx)
    for key, a in analytical.items():
        if np.abs(a - again[key]).max(initial=0.0) > nondet_tol:
            return _fail(
                f"Backward is not reentrant, i.e., running backward with same input and "
                f"grad_output multiple times gives different values, although analytical "
                f"gradient matches numerical gradient. The tolerance for nondeterminism was "
                f"{nondet_tol}. (output {key[0]}, input {key[1]})", raise_exception)
    numerical = _numerical(func, inputs, diff_idx, [o._data.size for o in outputs], eps)
    for (k, i), n in numerical.items():
        a = analytical[(k, i)]
        if a.shape != n.shape:
            return _fail(f"gradcheck: Jacobian shapes differ for output {k}, input {i}: "
                         f"analytical {a.shape}, numerical {n.shape}", raise_exception)
        bad = np.abs(a - n) > atol + rtol * np.abs(n)
        if bad.any():
            err = np.where(bad, np.abs(a - n), -1.0)
            r, c = np.unravel_index(np.argmax(err), err.shape)
            return _fail(
                f"Jacobian mismatch for output {k} with respect to input {i},\n"
                f"numerical:{_fmt(n)}\nanalytical:{_fmt(a)}\n\n"
                f"The worst element: d output[{k}].flat[{r}] / d input[{i}].flat[{c}] is "
                f"{a[r, c]!r} analytically but {n[r, c]!r} numerically (difference "
                f"{abs(a[r, c] - n[r, c]):.3g}, allowed {atol + rtol * abs(n[r, c]):.3g}; "
                f"{int(bad.sum())} of {bad.size} elements out of tolerance).",
                raise_exception)
    return True


def _fmt(m):
    return "tensor(" + np.array2string(m, precision=4, separator=", ", prefix="tensor(") + ")"


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  gen_non_contig_grad_outputs=False, raise_exception=True, nondet_tol=0.0,
                  check_undefined_grad=True, check_grad_dtypes=False, check_batched_grad=False,
                  check_fwd_over_rev=False, check_rev_over_rev=True, fast_mode=False,
                  masked=False) -> bool:
    """Check second derivatives: gradcheck of the function that maps (inputs,
    grad_outputs) to the gradients of ``func`` built with ``create_graph=True``."""
    inputs = _as_tuple(inputs)
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    with enable_grad():
        outputs = _diff_outputs(_as_tuple(func(*inputs)))
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = tuple(
            _wrap(rng.standard_normal(o._data.shape).astype(o._data.dtype)).requires_grad_()
            for o in outputs
        )
    grad_outputs = _as_tuple(grad_outputs)
    n_in = len(inputs)

    def first_derivatives(*args):
        ins, gos = args[:n_in], args[n_in:]
        outs = _diff_outputs(_as_tuple(func(*ins)))
        pairs = [(o, g) for o, g in zip(outs, gos) if o.requires_grad]
        if not pairs:
            return ()
        grads = _grad([o for o, _ in pairs], [ins[i] for i in diff_idx], [g for _, g in pairs],
                      create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_derivatives, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception, nondet_tol=nondet_tol)
