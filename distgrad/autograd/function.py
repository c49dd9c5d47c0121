"""Graph nodes and how ops record them.

A ``Node`` is a backward function (a tensor's ``grad_fn``). Ops call ``record`` to
wrap their output array in a tensor and, when grad mode is on and an input requires
grad, to attach a node that knows its inputs' edges and what it saved. Custom
``Function`` subclasses become nodes the same way.
"""
from __future__ import annotations

import itertools
import weakref

from ..backend import array_module, ndarray as _ndarray, normalize
from ..tensor import Tensor, _new, _refresh_view, _wrap
from . import graph
from .grad_mode import no_grad, state as _state
from .hooks import RemovableHandle

_next_seq = itertools.count().__next__
_NO_EDGE = (None, 0)


class _Output:
    """Marks, in ``saved``, the op's own output (stored without a reference cycle)."""

    def __repr__(self):
        return "OUTPUT"


OUTPUT = _Output()

_FREED = (
    "Trying to backward through the graph a second time (or directly access saved tensors "
    "after they have already been freed). Saved intermediate values of the graph are freed "
    "when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to "
    "backward through the graph a second time or if you need to access saved tensors after "
    "calling backward."
)


class Node:
    """A backward function. Subclasses define ``backward(self, grad)`` returning one
    gradient per edge in ``next_functions`` (a tuple, or a bare tensor for one edge)."""

    next_functions: tuple = ()
    args = None              # op-specific non-tensor values saved by the forward
    _seq = 0                 # creation order; the engine runs later nodes first
    _saved = ()              # tensors saved for backward; None once freed
    _versions = ()           # their versions when saved
    _unpack = None           # saved-tensor unpack hook, when they were packed
    _saved_edges = ()        # when packed: where each saved tensor's gradient flows
    _out_data = None         # the output's data when the op saved its own output
    _out_vc = None
    _meta = None             # per input (shape, dtype), kept for ops with several inputs
    _nout = 1                # number of outputs
    _slow = False            # the engine's generic path: accumulator, hooks or several outputs
    _has_hooks = False
    _pre_hooks = None        # tensor hooks of outputs: {output_nr: {id: fn}}
    _retained = None         # outputs that retain_grad(): {output_nr: weakref}
    _node_pre_hooks = None
    _node_post_hooks = None
    _is_accumulator = False
    _fresh_grads = True      # backward returns new tensors (or views/its input), never saved ones
    _metadata = None

    def name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        return f"<{self.name()} object at {hex(id(self))}>"

    def needs(self, i: int) -> bool:
        """Whether input ``i`` wants a gradient."""
        return self.next_functions[i][0] is not None

    @property
    def needs_input_grad(self) -> tuple:
        return tuple(fn is not None for fn, _ in self.next_functions)

    @property
    def metadata(self) -> dict:
        if self._metadata is None:
            self._metadata = {}
        return self._metadata

    # ------------------------------------------------------------ saved tensors
    @property
    def saved_tensors(self) -> list:
        saved = self._saved
        if saved is None:
            raise RuntimeError(_FREED)
        if self._unpack is not None:
            return self._unpacked()
        out = []
        for t, v in zip(saved, self._versions):
            if t is OUTPUT:
                vc = self._out_vc
                if vc[0] != v:
                    raise _version_error(self, self._out_data, vc[0], v)
                t = _new(Tensor)
                t._data = self._out_data
                t._vc = vc
                t._grad_fn = self
                t._requires_grad = True
            elif t._vc[0] != v:
                raise _version_error(self, t._data, t._vc[0], v)
            out.append(t)
        return out

    def _unpacked(self) -> list:
        """The saved tensors, through the unpack hook. In grad mode (create_graph) each
        one is joined to the graph where the saved tensor stood, as the tensor itself
        would be, so that a recomputed or copied value still gives second-order gradients."""
        unpack = self._unpack
        out = []
        for p, (fn, nr) in zip(self._saved, self._saved_edges):
            if p is None:
                out.append(None)
                continue
            try:
                t = unpack(p)
            except _SavedTensorModified as e:
                raise _version_error(self, e.data, e.current, e.expected) from None
            if fn is not None and _state.enabled:
                joined = _new(Tensor)
                joined._data = t._data
                joined._vc = t._vc
                joined._grad_fn = self if fn is OUTPUT else fn
                joined._output_nr = nr
                joined._requires_grad = True
                t = joined
            out.append(t)
        return out

    def _release(self) -> None:
        if self._saved:
            self._saved = None
            self._out_data = None
            if self._unpack is not None:
                # The hook can pin much more than the saved tensors: a checkpoint
                # frame with its inputs and recomputed values.
                self._unpack = None
                self._saved_edges = ()

    # ------------------------------------------------------------------- hooks
    def _register_tensor_prehook(self, nr: int, fn) -> RemovableHandle:
        if self._pre_hooks is None:
            self._pre_hooks = {}
        self._has_hooks = self._slow = True
        return RemovableHandle(self._pre_hooks.setdefault(nr, {}), fn)

    def _retain_grad(self, nr: int, ref) -> None:
        if self._retained is None:
            self._retained = {}
        self._has_hooks = self._slow = True
        self._retained[nr] = ref

    def register_prehook(self, fn) -> RemovableHandle:
        """``fn(grad_outputs)`` runs before this node; it may return new grad_outputs."""
        if self._node_pre_hooks is None:
            self._node_pre_hooks = {}
        self._has_hooks = self._slow = True
        return RemovableHandle(self._node_pre_hooks, fn)

    def register_hook(self, fn) -> RemovableHandle:
        """``fn(grad_inputs, grad_outputs)`` runs after this node; it may return new grad_inputs."""
        if self._node_post_hooks is None:
            self._node_post_hooks = {}
        self._has_hooks = self._slow = True
        return RemovableHandle(self._node_post_hooks, fn)

    def __call__(self, *grads):
        return self.backward(*grads)


class AccumulateGrad(Node):
    """The node of a leaf that requires grad: adds incoming gradients into ``.grad``."""

    _is_accumulator = True
    _slow = True

    def __init__(self, variable: Tensor):
        self.variable = variable
        self._seq = _next_seq()


class _SavedTensorModified(Exception):
    """Raised by an unpack hook when the tensor it would give back was modified in place
    after it was saved (checkpointing checks its recomputed values so); the node that
    saved it turns this into the version error that names the node."""

    def __init__(self, data, current: int, expected: int):
        super().__init__(data, current, expected)
        self.data, self.current, self.expected = data, current, expected


def _version_error(node: Node, data, current: int, expected: int) -> RuntimeError:
    return RuntimeError(
        "one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: [{data.dtype} tensor of shape {list(data.shape)}], saved by "
        f"{node.name()}, is at version {current}; expected version {expected} instead. "
        "Hint: use the out-of-place form of the operation that modified it (the method "
        "without the trailing '_', or build a new tensor instead of assigning into it), or "
        "call .clone() on the tensor before modifying it."
    )


def edge(t: Tensor) -> tuple:
    """Where the gradient of ``t`` goes: (node, output index), or (None, 0)."""
    fn = t._grad_fn
    if fn is not None:
        return (fn, t._output_nr)
    if not t._requires_grad:
        return _NO_EDGE
    ref = t._accumulator
    acc = None if ref is None else ref()
    if acc is None:
        acc = AccumulateGrad(t)
        t._accumulator = weakref.ref(acc)
    return (acc, 0)


def record(cls, data, inputs: tuple, saved: tuple = (), args=None) -> Tensor:
    """Wrap ``data`` as the output of an op on ``inputs``, recording a ``cls`` node.

    ``saved`` holds the tensors backward needs (``OUTPUT`` for the output itself);
    ``args`` anything else it needs (dims, scalars, shapes). This runs for every
    op, so the common one- and two-input cases are written out.
    """
    if type(data) is not _ndarray:
        data = normalize(data)
    out = _new(Tensor)
    out._data = data
    out._vc = [0]
    if not _state.enabled or _state.inference:
        if _state.inference:
            out._is_inference = True
        return out
    n = len(inputs)
    if n == 1:
        a = inputs[0]
        if a._base is not None and a._view_version != a._vc[0]:
            _refresh_view(a)
        if not a._requires_grad:
            return out
        fn = a._grad_fn
        node = _new(cls)
        node.next_functions = ((fn, a._output_nr) if fn is not None else edge(a),)
    elif n == 2:
        a, b = inputs
        if a._base is not None and a._view_version != a._vc[0]:
            _refresh_view(a)
        if b._base is not None and b._view_version != b._vc[0]:
            _refresh_view(b)
        if not (a._requires_grad or b._requires_grad):
            return out
        node = _new(cls)
        node.next_functions = (edge(a), edge(b))
        ad, bd = a._data, b._data
        # Input shapes and dtypes, to fix up gradients in the engine (broadcasting,
        # promotion); not needed when both match the output.
        if ad.shape != data.shape or bd.shape != data.shape or ad.dtype != data.dtype or bd.dtype != data.dtype:
            node._meta = ((ad.shape, ad.dtype), (bd.shape, bd.dtype))
    else:
        rg = False
        for t in inputs:
            if t._base is not None and t._view_version != t._vc[0]:
                _refresh_view(t)
            if t._requires_grad:
                rg = True
        if not rg:
            return out
        node = _new(cls)
        node.next_functions = tuple([edge(t) for t in inputs])
        node._meta = tuple([(t._data.shape, t._data.dtype) for t in inputs])
    node._seq = _next_seq()  # after the edges: a node is always newer than its inputs
    if args is not None:
        node.args = args
    if saved:
        _save(node, saved, out)
    out._grad_fn = node
    out._requires_grad = True
    return out


def record_multi(cls, datas, inputs, saved, diff, args=None):
    """The outputs of an op with several outputs sharing one ``cls`` node, whose backward
    takes one gradient per output (None for those that got none). ``saved`` may hold
    ``OUTPUT``, meaning all the differentiable outputs; ``diff`` marks those."""
    first = record(cls, datas[0], inputs, args=args)
    outs = [first] + [_wrap(d) for d in datas[1:]]
    node = first._grad_fn
    if node is None:
        if first._is_inference:
            for o in outs:
                o._is_inference = True
        return outs
    node._nout = len(outs)
    node._slow = True
    for i, (o, dif) in enumerate(zip(outs, diff)):
        if dif:
            o._grad_fn, o._output_nr, o._requires_grad = node, i, True
        elif i == 0:
            first._grad_fn, first._requires_grad = None, False
    expanded = []
    for s in saved:
        if s is OUTPUT:
            expanded += [o for o, dif in zip(outs, diff) if dif]
        else:
            expanded.append(s)
    if expanded:
        _save(node, tuple(expanded), first)
    return outs


def _save(node: Node, saved: tuple, out: Tensor) -> None:
    if graph.hooks_stack:
        _pack(node, saved, out)
        return
    versions = []
    for s in saved:
        if s is OUTPUT:
            node._out_data = out._data
            node._out_vc = out._vc
            versions.append(0)
        elif s._is_inference:
            raise RuntimeError(
                "Inference tensors cannot be saved for backward. To work around you can "
                "make a clone to get a normal tensor and use it in autograd."
            )
        else:
            versions.append(s._vc[0])
    node._saved = saved
    node._versions = versions


def _pack(node: Node, saved: tuple, out: Tensor = None) -> None:
    """Save through the innermost saved-tensor hooks: keep what ``pack`` returns and,
    for ``Node._unpacked``, where each tensor's gradient flows (``OUTPUT`` for the
    node's own outputs, which would otherwise make a reference cycle)."""
    pack, unpack = graph.hooks_stack[-1]
    packed, edges = [], []
    for s in saved:
        if s is None:
            packed.append(None)
            edges.append(_NO_EDGE)
            continue
        if s is OUTPUT:
            s, e = out, (OUTPUT, 0)
        else:
            if s._base is not None and s._view_version != s._vc[0]:
                _refresh_view(s)
            e = edge(s)
            if e[0] is node:
                e = (OUTPUT, e[1])
        packed.append(pack(s))
        edges.append(e)
    node._saved = tuple(packed)
    node._saved_edges = tuple(edges)
    node._unpack = unpack


def as_view(base: Tensor, out: Tensor, view_fn) -> Tensor:
    """Make ``out`` (sharing ``base``'s memory) a view: same version counter, and a
    way to replay it on ``base``'s root so in-place changes keep gradients right."""
    out._vc = base._vc
    out._view_version = base._vc[0]
    root = base._base
    if root is None:
        out._base = base
        out._view_fn = view_fn
    else:
        parent = base._view_fn
        out._base = root
        out._view_fn = lambda b: view_fn(parent(b))
        if base._view_nograd:
            out._view_nograd = True
    if not _state.enabled and out._base._requires_grad:
        out._view_nograd = True
    if base._is_inference:
        out._is_inference = True
    return out


# ------------------------------------------------------------------ Function
class FunctionCtx(Node):
    """The ``ctx`` of a custom Function; it is also the node in the graph."""

    needs_input_grad = ()
    _fresh_grads = False     # a user's backward may return tensors it keeps elsewhere
    _to_save = ()
    _non_differentiable = ()
    _dirty = ()
    materialize_grads = True
    _out_meta = ()

    def save_for_backward(self, *tensors) -> None:
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(
                    f"save_for_backward can only save tensors (or None), got {type(t).__name__}; "
                    "store other values as attributes of ctx"
                )
        self._to_save = tensors

    def mark_non_differentiable(self, *tensors) -> None:
        self._non_differentiable = tensors

    def mark_dirty(self, *tensors) -> None:
        self._dirty = tensors

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = value

    @property
    def saved_tensors(self) -> tuple:
        saved = self._saved
        if saved is None:
            raise RuntimeError(_FREED)
        if self._unpack is not None:
            return tuple(self._unpacked())
        out = []
        for t, v in zip(saved, self._versions):
            if t is not None and t._vc[0] != v:
                raise _version_error(self, t._data, t._vc[0], v)
            out.append(t)
        return tuple(out)

    def backward(self, *grads):
        if self.materialize_grads:
            grads = tuple(
                _zeros_like_meta(m) if g is None else g for g, m in zip(grads, self._out_meta)
            )
        result = self._forward_cls.backward(self, *grads)
        if not isinstance(result, tuple):
            result = (result,)
        n = len(self.next_functions)
        if len(result) != n:
            if len(result) > n and all(r is None for r in result[n:]):
                result = result[:n]
            else:
                raise RuntimeError(
                    f"function {self.name()} returned an incorrect number of gradients "
                    f"(expected {n}, got {len(result)}): backward must return one gradient "
                    "(or None) per argument of forward"
                )
        for i, (r, (fn, _)) in enumerate(zip(result, self.next_functions)):
            if r is not None and not isinstance(r, Tensor):
                raise RuntimeError(
                    f"function {self.name()} returned a gradient of type {type(r).__name__} "
                    f"at index {i}; expected a Tensor or None"
                )
            if r is not None and self._meta[i] is None:
                raise RuntimeError(
                    f"function {self.name()} returned a gradient different than None at position "
                    f"{i}, but the corresponding forward input was not a Tensor"
                )
        return result


def _zeros_like_meta(meta):
    shape, dtype, xp = meta
    return _wrap(xp.zeros(shape, dtype))


class _FunctionMeta(type):
    def __init__(cls, name, bases, attrs):
        super().__init__(name, bases, attrs)
        cls._backward_cls = type(f"{name}Backward", (FunctionCtx,), {"_forward_cls": cls})


class Function(metaclass=_FunctionMeta):
    """Base class of custom differentiable operations, as ``torch.autograd.Function``:
    define static ``forward(ctx, *args)`` and ``backward(ctx, *grad_outputs)`` and call
    ``YourFunction.apply(*args)``."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("You must implement the forward function for custom autograd.Function.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("You must implement the backward function for custom autograd.Function.")

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = _new(cls._backward_cls)
        recording = _state.enabled and not _state.inference and any(
            isinstance(a, Tensor) and a.requires_grad for a in args
        )
        ctx.needs_input_grad = tuple(
            recording and isinstance(a, Tensor) and a._requires_grad for a in args
        )
        separate_setup = cls.setup_context is not Function.setup_context
        with no_grad():
            if separate_setup:
                output = cls.forward(*args, **kwargs)
            else:
                output = cls.forward(ctx, *args, **kwargs)
        if separate_setup:
            cls.setup_context(ctx, args, output)
        is_tuple = isinstance(output, tuple)
        outputs = output if is_tuple else (output,)
        if not recording:
            return output
        ctx.next_functions = tuple(edge(a) if isinstance(a, Tensor) else _NO_EDGE for a in args)
        ctx._seq = _next_seq()
        ctx._meta = tuple(
            (a._data.shape, a._data.dtype) if isinstance(a, Tensor) else None for a in args
        )
        ctx._nout = len(outputs)
        if ctx._nout > 1:
            ctx._slow = True
        wrapped = []
        dirty = {id(t) for t in ctx._dirty}
        nondiff = {id(t) for t in ctx._non_differentiable}
        input_ids = {id(a) for a in args if isinstance(a, Tensor)}
        out_meta = []
        for nr, o in enumerate(outputs):
            if not isinstance(o, Tensor):
                wrapped.append(o)
                out_meta.append(None)
                continue
            out_meta.append((o._data.shape, o._data.dtype, array_module(o._data)))
            if id(o) in input_ids and id(o) not in dirty:
                o = o.detach()  # an input returned as-is becomes a new tensor in the graph
            if id(o) in nondiff:
                wrapped.append(o)
                continue
            if id(o) in dirty:
                o._vc[0] += 1
            o._grad_fn = ctx
            o._output_nr = nr
            o._requires_grad = True
            wrapped.append(o)
        ctx._out_meta = tuple(out_meta)
        if ctx._to_save:
            to_save = ctx._to_save
            ctx._to_save = ()
            if graph.hooks_stack:
                _pack(ctx, to_save)
            else:
                for t in to_save:
                    if t is not None and t._is_inference:
                        raise RuntimeError(
                            "Inference tensors cannot be saved for backward. To work around you "
                            "can make a clone to get a normal tensor and use it in autograd."
                        )
                ctx._saved = to_save
                ctx._versions = [None if t is None else t._vc[0] for t in to_save]
        return tuple(wrapped) if is_tuple else wrapped[0]


class _DelayedError(Node):
    """Stands where a gradient cannot be differentiated again; raises if backward reaches it."""

    def backward(self, g):
        raise RuntimeError(self.args)


def once_differentiable(fn):
    """Run a custom backward without recording a graph; differentiating its result
    again raises an error instead of giving a silently wrong (zero) gradient."""
    import functools

    @functools.wraps(fn)
    def wrapper(ctx, *grads):
        wants_graph = _state.enabled and any(isinstance(g, Tensor) and g.requires_grad for g in grads)
        with no_grad():
            result = fn(ctx, *grads)
        if not wants_graph:
            return result
        msg = "trying to differentiate twice a function that was marked with @once_differentiable"
        graph_inputs = tuple(g for g in grads if isinstance(g, Tensor) and g.requires_grad)
        outs = result if isinstance(result, tuple) else (result,)
        marked = tuple(
            record(_DelayedError, o._data, graph_inputs, args=msg) if isinstance(o, Tensor) else o
            for o in outs
        )
        return marked if isinstance(result, tuple) else marked[0]

    return wrapper
