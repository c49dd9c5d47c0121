"""The backward pass: a dependency-counted walk of the graph.

From the roots, count how many edges lead into each node; a node runs once every
incoming gradient has been summed into its buffer. Among ready nodes the most
recently created runs first (the reverse of forward order), and a leaf's
AccumulateGrad runs the moment it is ready, so its post-accumulate hooks fire as
early as possible. No recursion, and the same graph always gives the same bits.
"""
from __future__ import annotations

import sys
from heapq import heappop, heappush
from numbers import Number

import numpy as np

from ..backend import array_module
from ..tensor import Tensor, _wrap
from .function import edge
from .grad_mode import state as _state


def _as_tuple(x) -> tuple:
    if isinstance(x, Tensor):
        return (x,)
    return tuple(x)


def _make_grads(outputs: tuple, grads, what: str) -> list:
    if grads is None:
        grads = (None,) * len(outputs)
    else:
        grads = _as_tuple(grads) if not isinstance(grads, Number) else (grads,)
    if len(grads) != len(outputs):
        raise RuntimeError(
            f"{what}: got {len(grads)} gradients for {len(outputs)} outputs; pass one per output"
        )
    result = []
    for i, (out, g) in enumerate(zip(outputs, grads)):
        if not isinstance(out, Tensor):
            raise TypeError(f"{what}: output {i} is a {type(out).__name__}, expected a Tensor")
        if g is None:
            if out.requires_grad and out._data.size != 1:
                raise RuntimeError(
                    "grad can be implicitly created only for scalar outputs; output "
                    f"{i} has shape {list(out._data.shape)}: pass gradient= (a tensor of that "
                    "shape), or reduce the output first, e.g. out.sum().backward()"
                )
            g = _wrap(array_module(out._data).ones_like(out._data))
        elif isinstance(g, Number):
            g = _wrap(array_module(out._data).full(out._data.shape, g, out._data.dtype))
        elif g._data.shape != out._data.shape:
            raise RuntimeError(
                f"Mismatch in shape: grad_output[{i}] has a shape of {list(g._data.shape)} and "
                f"output[{i}] has a shape of {list(out._data.shape)}."
            )
        result.append(g)
    return result


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False,
             grad_variables=None, inputs=None) -> None:
    """Compute the gradients of ``tensors`` and accumulate them into leaves' ``.grad``."""
    if grad_variables is not None:
        grad_tensors = grad_variables
    tensors = _as_tuple(tensors)
    grads = _make_grads(tensors, grad_tensors, "backward")
    if retain_graph is None:
        retain_graph = create_graph
    if inputs is not None:
        inputs = _as_tuple(inputs)
        if not inputs:
            raise RuntimeError("'inputs' argument to backward() cannot be empty.")
        for i, t in enumerate(inputs):
            if not t.requires_grad:
                raise RuntimeError(f"backward: inputs[{i}] does not require grad")
    captured = _run(tensors, grads, retain_graph, create_graph, inputs, accumulate=True)
    if inputs is not None:
        for t, g in zip(inputs, captured):
            if g is not None and t.grad_fn is not None:
                _store_grad(t, g, create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         only_inputs=True, allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """Return the gradients of ``outputs`` with respect to ``inputs`` (nothing is
    accumulated into ``.grad``)."""
    if is_grads_batched:
        raise NotImplementedError("autograd.grad: is_grads_batched=True is not supported")
    if allow_unused is None:
        allow_unused = materialize_grads
    if materialize_grads and not allow_unused:
        raise ValueError("Expected allow_unused to be True or not passed when materialize_grads=True")
    outputs = _as_tuple(outputs)
    inputs = _as_tuple(inputs)
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"autograd.grad: inputs[{i}] is a {type(t).__name__}, expected a Tensor")
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    grads = _make_grads(outputs, grad_outputs, "autograd.grad")
    if retain_graph is None:
        retain_graph = create_graph
    result = _run(outputs, grads, retain_graph, create_graph, inputs, accumulate=False)
    for i, g in enumerate(result):
        if g is None:
            if materialize_grads:
                t = inputs[i]
                result[i] = _wrap(array_module(t._data).zeros_like(t._data))
            elif not allow_unused:
                raise RuntimeError(
                    "One of the differentiated Tensors appears to not have been used in the "
                    "graph. Set allow_unused=True if this is the desired behavior."
                )
    return tuple(result)


def _run(roots, grads, retain_graph, create_graph, inputs, accumulate):
    """Backward runs outside autocast, whatever region it is called in (the backward
    formulas compute in the dtypes the forward recorded)."""
    from ..amp import autocast_mode

    from .. import profiler

    active = autocast_mode._active[0]
    autocast_mode._active[0] = False
    try:
        prof = profiler.current()
        if prof is None:
            return _walk(roots, grads, retain_graph, create_graph, inputs, accumulate)
        with profiler.span("autograd::backward", "cpu_op"):
            return _walk(roots, grads, retain_graph, create_graph, inputs, accumulate,
                         prof if prof.record_autograd_nodes else None)
    finally:
        if active:
            autocast_mode._refresh()


def _timed_backward(prof, fn, *buf):
    """``fn.backward(*buf)`` as a range of the profiler's trace, named as PyTorch's."""
    from ..profiler import _Range

    with _Range(prof, f"autograd::engine::evaluate_function: {type(fn).__name__}", "autograd"):
        return fn.backward(*buf)


def _walk(roots, grads, retain_graph, create_graph, inputs, accumulate, timed=None):
    root_edges = []
    for i, t in enumerate(roots):
        if t.grad_fn is None and not t._requires_grad:
            raise RuntimeError(
                f"element {i} of tensors does not require grad and does not have a grad_fn; "
                "create the leaves with requires_grad=True (or call .requires_grad_()) before "
                "computing the output"
            )
        root_edges.append(edge(t))
    root_nodes = {fn: None for fn, _ in root_edges}

    # Count the edges into every node reachable from the roots.
    deps = {}
    stack = list(root_nodes)
    while stack:
        fn = stack.pop()
        for nxt, _ in fn.next_functions:
            if nxt is not None:
                c = deps.get(nxt)
                if c is None:
                    deps[nxt] = 1
                    if nxt not in root_nodes:
                        stack.append(nxt)
                else:
                    deps[nxt] = c + 1

    captures = None
    needed = None
    if inputs is not None:
        captures = {}
        for k, t in enumerate(inputs):
            fn, nr = edge(t)
            captures.setdefault(fn, []).append((k, nr))
        needed = _prune(deps, root_nodes, captures, accumulate)
    captured = [None] * (len(inputs) if inputs is not None else 0)

    buffers = {}
    for (fn, nr), g in zip(root_edges, grads):
        _add_to_buffer(buffers, fn, nr, g)
    ready = []
    for fn in root_nodes:
        if not deps.get(fn) and (needed is None or fn in needed):
            heappush(ready, (-fn._seq, fn))

    plain = captures is None
    prev = _state.enabled
    _state.enabled = create_graph
    _callbacks.append([])
    try:
        fn = None
        while True:
            # ``fn`` may already hold the next node (the newest ready one), saving the heap.
            if fn is None:
                if not ready:
                    break
                fn = heappop(ready)[1]
            buf = buffers.pop(fn, None)
            nexts = fn.next_functions
            if fn._slow:
                # Accumulators, nodes with hooks, nodes with several outputs.
                if fn._is_accumulator:
                    if not plain and fn in captures:
                        buf = _leaf_hooks(fn.variable, buf)
                        for k, _ in captures[fn]:
                            captured[k] = buf
                        if not accumulate:
                            fn = None
                            continue
                    _accumulate(fn.variable, buf, create_graph)
                    fn = None
                    continue
                if fn._has_hooks:
                    buf = _pre_hooks(fn, buf)
            if not plain:
                if fn in captures:
                    for k, nr in captures[fn]:
                        captured[k] = buf if fn._nout == 1 else buf[nr]
                if not any(n in needed for n, _ in nexts):
                    fn = None
                    continue
            if timed is not None:   # under a profiler recording each node
                res = (None if buf is None or (fn._nout != 1 and all(g is None for g in buf)) else
                       _timed_backward(timed, fn, buf) if fn._nout == 1 else _timed_backward(timed, fn, *buf))
            elif fn._nout == 1:
                res = None if buf is None else fn.backward(buf)
            elif all(g is None for g in buf):
                res = None
            else:
                res = fn.backward(*buf)
            if res is None:
                res = (None,) * len(nexts)
            elif type(res) is not tuple:
                res = (res,)
            if fn._slow and fn._node_post_hooks:
                res = _post_hooks(fn, res, buf)
            if not retain_graph and fn._saved:
                fn._release()
            meta = fn._meta
            cand = None
            i = -1
            for nxt, nr in nexts:
                i += 1
                if nxt is None or (not plain and nxt not in needed):
                    continue
                g = res[i]
                if g is not None:
                    if meta is not None:
                        m = meta[i]
                        if m is not None and (g._data.shape != m[0] or g._data.dtype != m[1]):
                            g = _validate(fn, i, g, m)
                    if nxt._nout == 1:
                        old = buffers.get(nxt)
                        if old is None:
                            buffers[nxt] = g
                        elif create_graph:
                            buffers[nxt] = old + g
                        else:  # the buffer is the engine's own: no op to record
                            buffers[nxt] = _wrap(old._data + g._data)
                    else:
                        _add_to_buffer(buffers, nxt, nr, g)
                d = deps[nxt] - 1
                if d:
                    deps[nxt] = d
                elif nxt._is_accumulator and (plain or nxt not in captures):
                    gb = buffers.pop(nxt, None)
                    # The leaf may keep this gradient's memory instead of a copy when
                    # nothing else can see it: it came straight from a built-in backward
                    # (no hooks) and only this loop holds it (res, g and gb).
                    owned = (gb is g and g is not None and not fn._slow and fn._fresh_grads
                             and _refcount(g) <= _OWN_REFS)
                    _accumulate(nxt.variable, gb, create_graph, owned)
                    gb = None
                elif cand is None:
                    cand = nxt
                elif nxt._seq > cand._seq:
                    heappush(ready, (-cand._seq, cand))
                    cand = nxt
                else:
                    heappush(ready, (-nxt._seq, nxt))
            if cand is not None and ready and -ready[0][0] > cand._seq:
                heappush(ready, (-cand._seq, cand))
                cand = None
            fn = cand
        callbacks = _callbacks[-1]
        while callbacks:  # a callback may queue another
            callbacks.pop(0)()
    finally:
        _callbacks.pop()
        _state.enabled = prev
    return captured


# One list of final callbacks per backward in progress (backward can nest).
_callbacks: list = []


def queue_callback(callback, outermost: bool = False) -> None:
    """Run ``callback()`` once the backward pass now running has finished its graph
    walk (before ``backward()`` returns); with ``outermost``, once the outermost of
    nested backward passes (e.g. reentrant checkpointing) has. The distributed
    reducer waits for its all-reduces this way."""
    if not _callbacks:
        raise RuntimeError("Final callbacks can only be installed during backward pass.")
    _callbacks[0 if outermost else -1].append(callback)


def _prune(deps, root_nodes, captures, accumulate):
    """The nodes on a path from the roots to a captured input; ``deps`` is recounted
    over those alone, so nothing else runs."""
    nodes = sorted(set(deps) | set(root_nodes), key=lambda n: n._seq)
    needed = set()
    for fn in nodes:  # inputs of a node always precede it in creation order
        if fn in captures or any(n in needed for n, _ in fn.next_functions):
            needed.add(fn)
    deps.clear()
    for fn in needed:
        for nxt, _ in fn.next_functions:
            if nxt in needed:
                deps[nxt] = deps.get(nxt, 0) + 1
    return needed


def _add_to_buffer(buffers, fn, nr, g):
    if fn._nout == 1:
        old = buffers.get(fn)
        buffers[fn] = g if old is None else old + g
    else:
        buf = buffers.get(fn)
        if buf is None:
            buf = buffers[fn] = [None] * fn._nout
        buf[nr] = g if buf[nr] is None else buf[nr] + g


def _validate(fn, i, g, meta):
    if meta is None:
        return g
    shape, dtype = meta[0], meta[1]
    if g._data.shape != shape:
        g = _sum_to(fn, i, g, shape)
    if g._data.dtype != dtype:
        g = g.to(dtype=_dtype_of(dtype))
    return g


def _dtype_of(npd):
    from ..dtype import from_numpy_dtype

    return from_numpy_dtype(npd)


def _sum_to(fn, i, g, shape):
    """Undo broadcasting: sum ``g`` down to its input's ``shape``."""
    try:
        return g.sum_to_size(shape)
    except RuntimeError:
        raise RuntimeError(
            f"Function {fn.name()} returned an invalid gradient at index {i} - got "
            f"{list(g._data.shape)} but expected shape compatible with {list(shape)}"
        ) from None


def _hooked(h, g):
    """Run tensor hook ``h`` on ``g``; a replacement must keep the gradient's shape."""
    r = h(g)
    if r is None:
        return g
    if r._data.shape != g._data.shape:
        raise RuntimeError(
            f"hook '{getattr(h, '__name__', h)}' has changed the size of value: the gradient "
            f"has shape {list(g._data.shape)} but the hook returned {list(r._data.shape)}"
        )
    return r


def _leaf_hooks(v, g):
    if g is not None and v._hooks:
        for h in tuple(v._hooks.values()):
            g = _hooked(h, g)
    return g


def _accumulate(v, g, create_graph, owned=False):
    if v._hooks:
        g = _leaf_hooks(v, g)
        owned = False
    if g is None:
        return
    _store_grad(v, g, create_graph, owned)
    if v._post_acc_hooks:
        for h in tuple(v._post_acc_hooks.values()):
            h(v)


_refcount = sys.getrefcount


def _own_refs() -> int:
    """What ``_refcount`` reports for an object held only as the engine loop holds an
    unshared gradient (in a tuple and two locals), measured here rather than assumed,
    since interpreters count temporaries differently."""
    g = object()
    res = (None, g)
    gb = g
    n = _refcount(g)
    del res, gb
    return n


_OWN_REFS = _own_refs()


def _stealable(arr) -> bool:
    """An array a leaf's ``.grad`` may take over: it owns its memory, is contiguous and
    writable, and no other tensor or view refers to it."""
    return (arr.base is None and arr.flags.c_contiguous
            and (type(arr) is not np.ndarray or arr.flags.writeable) and _refcount(arr) <= 3)


def _store_grad(v, g, create_graph, owned=False):
    old = v._grad
    if old is None:
        if create_graph:
            v._grad = g
        elif owned and _stealable(g._data):
            v._grad = _wrap(g._data)
        else:  # a copy: the incoming gradient may be shared with other tensors
            v._grad = _wrap(g._data.copy())
    elif create_graph or old._requires_grad:
        v._grad = old + g
    else:
        old._data += g._data
        old._vc[0] += 1


def _pre_hooks(fn, buf):
    if fn._pre_hooks:
        for nr, hooks in fn._pre_hooks.items():
            for h in tuple(hooks.values()):
                g = buf if fn._nout == 1 else buf[nr]
                if g is None:
                    continue
                r = _hooked(h, g)
                if fn._nout == 1:
                    buf = r
                else:
                    buf[nr] = r
    if fn._node_pre_hooks:
        grads = (buf,) if fn._nout == 1 else tuple(buf)
        for h in tuple(fn._node_pre_hooks.values()):
            r = h(grads)
            if r is not None:
                grads = tuple(r)
        buf = grads[0] if fn._nout == 1 else list(grads)
    if fn._retained:
        for nr, ref in fn._retained.items():
            t = ref()
            g = buf if fn._nout == 1 else buf[nr]
            if t is not None and g is not None:
                if t._grad is None:
                    t._grad = g if _state.enabled else _wrap(g._data.copy())
                else:
                    t._grad = t._grad + g
    return buf


def _post_hooks(fn, res, buf):
    outs = (buf,) if fn._nout == 1 else tuple(buf)
    for h in tuple(fn._node_post_hooks.values()):
        r = h(res, outs)
        if r is not None:
            res = tuple(r)
    return res
