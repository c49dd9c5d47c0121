"""The reducer: bucketed all-reduce of gradients, overlapped with backward.

Parameters are grouped into buckets (reverse registration order at first, then the
order in which their gradients actually became final, taken from rank 0 so every
rank agrees). Each parameter's post-accumulate-grad hook copies its finished
gradient into its bucket's flat buffer; when a bucket is complete it is handed to
a communication thread, always in bucket-index order, so ranks never pair
different buckets in one collective. The communication thread sits inside MPI
while the Python thread goes on with backward (mpi4py releases the GIL in MPI
calls, numpy in its kernels), so the all-reduce really progresses meanwhile. A
final callback of the backward pass waits for every bucket and writes the
averaged gradients back into ``.grad``.
"""
from __future__ import annotations

import collections
import itertools
import os
import queue
import threading
import time

from .. import profiler
from ..autograd.engine import queue_callback
from ..backend import array_module
from ..tensor import _wrap
from . import monitor
from .comm import SUM


class _Bucket:
    """One bucket's flat buffer and bookkeeping.

    ``shard`` (ZeRO stage 2: ``(owners, world size, rank)``, ``owners[i]`` the rank
    that keeps parameter ``i``'s gradient) lays the buffer out as one segment per
    rank, in rank order, each holding its owner's gradients (``counts``: their
    lengths), so the bucket is reduce-scattered as it is, without padding; such a
    buffer exists only from the bucket's first gradient until its reduce-scatter
    ends, and afterwards ``shard_out`` holds this rank's segment."""

    def __init__(self, index: int, param_ids: list, params: list, shard=None):
        self.index = index
        self.param_ids = param_ids
        first = params[param_ids[0]]
        self.xp = array_module(first._data)
        self.dtype = first._data.dtype
        self.offsets = {}
        self.sharded = shard is not None
        if shard is None:
            total = 0
            for i in param_ids:
                self.offsets[i] = (total, params[i]._data.size)
                total += params[i]._data.size
            self.buffer = self.xp.zeros(total, self.dtype)
        else:
            owners, size, rank = shard
            self.counts = [0] * size
            at = {}
            for i in param_ids:
                at[i] = self.counts[owners[i]]
                self.counts[owners[i]] += params[i]._data.size
            starts = [sum(self.counts[:r]) for r in range(size)]
            for i in param_ids:
                self.offsets[i] = (starts[owners[i]] + at[i], params[i]._data.size)
            self.mine = [(i, at[i], params[i]._data.size) for i in param_ids if owners[i] == rank]
            total = sum(self.counts)
            self.buffer = None    # made at the bucket's first gradient, freed after its reduce-scatter
        self.nbytes = total * self.dtype.itemsize
        self.shard_out = None
        self.scale = self.dtype.type(1.0)
        self.pending = len(param_ids)
        self.done = threading.Event()
        self.error = None
        self.ready = None      # for a GPU buffer: an event after which it holds its values
        self.is_last = False
        self.started_at = self.done_at = None   # its all-reduce on the communication thread

    def writable(self):
        """The flat buffer, made now for a sharded bucket (every element of it is
        written: each parameter's slot by its gradient or by zeros)."""
        if self.buffer is None:
            self.buffer = self.xp.empty(sum(self.counts), self.dtype)
        return self.buffer

    def reset(self) -> None:
        self.pending = len(self.param_ids)
        self.done.clear()
        self.error = None
        self.ready = None
        self.started_at = self.done_at = None
        if self.sharded:
            self.buffer = self.shard_out = None


class GradBucket:
    """What a DDP communication hook receives (PyTorch's ``GradBucket``): a flat buffer
    holding the gradients of some parameters, to be reduced; the hook returns a Future
    of the reduced buffer."""

    def __init__(self, bucket: _Bucket, params: list):
        self._bucket = bucket
        self._params = [params[i] for i in bucket.param_ids]
        self._buffer = _wrap(bucket.buffer)

    def index(self) -> int:
        return self._bucket.index

    def buffer(self):
        return self._buffer

    def gradients(self) -> list:
        """Each parameter's gradient, as a view of the buffer."""
        out = []
        for i, p in zip(self._bucket.param_ids, self._params):
            off, n = self._bucket.offsets[i]
            out.append(self._buffer[off:off + n].view(p.shape))
        return out

    def parameters(self) -> list:
        return list(self._params)

    def is_last(self) -> bool:
        return self._bucket.is_last

    def set_buffer(self, buffer) -> None:
        self._bucket.buffer[...] = buffer._data.reshape(-1)


def _ready_event(buffer):
    """An event recorded now on the current GPU stream, for a GPU buffer (None for a host one)."""
    from ..backend import is_device_array

    if not is_device_array(buffer):
        return None
    import cupy

    with cupy.cuda.Device(buffer.device.id):
        event = cupy.cuda.Event(disable_timing=True)
        event.record(cupy.cuda.get_current_stream())
    return event


def run_comm_hook(comm, state, hook, params, bucket: _Bucket) -> None:
    """Run a comm hook on ``bucket``, its collectives on ``comm``, and put the reduced
    values it returns into the bucket."""
    from . import group

    if bucket.ready is not None:
        bucket.ready.synchronize()
    with group.collectives_on(comm):
        out = hook(state, GradBucket(bucket, params))
        out = out.wait() if hasattr(out, "wait") else out
    if isinstance(out, (list, tuple)):
        if len(out) != 1:
            raise RuntimeError(f"a DDP communication hook's future must hold one tensor (the reduced "
                               f"bucket), got a list of {len(out)}")
        out = out[0]
    data = getattr(out, "_data", None)
    if data is None or data.size != bucket.buffer.size:
        raise RuntimeError(
            f"a DDP communication hook must return a Future of the reduced bucket: a tensor of "
            f"{bucket.buffer.size} elements; got {type(out).__name__}"
            + ("" if data is None else f" of {data.size} elements"))
    if data is not bucket.buffer:
        bucket.buffer[...] = data.reshape(-1)


PROGRESS_CALLS = 16   # per wake-up of the communication thread (see _CommThread._progress)
MAX_IN_FLIGHT = 4     # collectives the communication thread keeps going at once
WAKEUPS_PER_BUCKET = 24                 # the adaptive sleep: a bucket's last duration / this ...
POLL_MIN_S, POLL_MAX_S = 20e-6, 2e-3    # ... within these bounds
FIRST_POLL_S = 100e-6                   # a bucket not reduced before
_WAKE = object()                        # queued to end the thread's sleep


def poll_setting(value: str | None) -> float | None:
    """``DISTGRAD_COMM_POLL_US``: None for "auto" (unset), else the fixed sleep in
    seconds (0: blocking collectives)."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    try:
        us = float(value)
    except ValueError:
        us = -1.0
    if not us >= 0:
        raise ValueError(f"DISTGRAD_COMM_POLL_US={value!r}: expected 'auto', 0 (blocking collectives) or the "
                         "microseconds the communication thread sleeps between progress calls")
    return us * 1e-6


class _CommThread:
    """Runs the buckets' all-reduces on its own communicator, in bucket order, with up
    to ``MAX_IN_FLIGHT`` of them in flight at once.

    MPI libraries wait by spinning, which takes a core away from backward. So while
    backward runs, the thread starts each bucket's all-reduce non-blocking as soon as
    it is handed one (a bucket handed over during a sleep ends the sleep) and drives
    those in flight with sleeps between bursts of progress calls (any progress call
    drives them all); once the main thread has nothing left but to wait (``hurry``),
    it waits in MPI, which drives them flat out. Keeping several in flight means the
    next bucket's collective does not wait for this thread to notice that the last
    one ended: on a GPU stream it is queued right behind it. (Over a 1 Gbit/s TCP link
    it measured no different from one at a time: there the wire rarely idles between
    buckets.)

    The sleep adapts to each bucket: its collective's duration at the last step
    divided by ``WAKEUPS_PER_BUCKET`` (between ``POLL_MIN_S`` and ``POLL_MAX_S``), so
    a small bucket or a fast link is polled often and a large bucket on a slow link
    rarely, where every wake-up costs backward a little CPU and the kernel's socket
    buffers keep the wire busy in between (on 2 ranks over a 1 Gbit/s link a fixed
    100 us sleep took backward 20-25 % longer, a 3 ms one about 10 %, with the same
    wire time). ``DISTGRAD_COMM_POLL_US`` fixes the sleep instead (microseconds; 0:
    each collective is waited for in MPI as soon as it starts, one at a time). The
    sleeps may differ between ranks. A registered comm hook runs here, one bucket at
    a time, after those in flight have ended.
    """

    def __init__(self, comm):
        self.comm = comm
        self.fixed_poll = poll_setting(os.environ.get("DISTGRAD_COMM_POLL_US"))
        self.took = {}         # (bucket index, bytes) -> seconds its last collective took
        self.hook = None       # (state, hook, params): a registered comm hook
        self.eager = threading.Event()
        self.queue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="distgrad-reducer", daemon=True)
        self.thread.start()

    def submit(self, bucket: _Bucket) -> None:
        self.queue.put(bucket)

    def hurry(self) -> None:
        """Backward is over: wait in MPI from now on (wakes the thread if it sleeps)."""
        self.eager.set()
        self.queue.put(_WAKE)

    def _run(self):
        flight = collections.deque()   # [bucket, request, profiler span], in bucket order
        drain = False                  # take whatever else is queued before progressing
        while True:
            item = _WAKE
            if len(flight) < MAX_IN_FLIGHT:
                try:
                    if not flight:
                        item = self.queue.get()
                    elif drain or self.eager.is_set():
                        item = self.queue.get_nowait()
                    else:   # the sleep between bursts, ended early by a new bucket
                        item = self.queue.get(timeout=self.poll_for(flight[0][0]))
                except queue.Empty:
                    pass
            elif not self.eager.is_set():
                time.sleep(self.poll_for(flight[0][0]))
            if item is None:
                return
            drain = item is not _WAKE
            if drain:
                self._take(item, flight)
            else:
                self._progress(flight, wait=self.eager.is_set())

    def _take(self, bucket: _Bucket, flight) -> None:
        if self.hook is not None:
            self._finish_all(flight)
            self._hooked(bucket)
            return
        self._start(bucket, flight)
        if self.poll_for(bucket) <= 0:
            self._finish_all(flight)

    def _start(self, bucket: _Bucket, flight) -> None:
        bucket.started_at = time.perf_counter()
        span = self._span(bucket)
        try:
            if bucket.sharded:
                req = self.comm.ireduce_scatter(bucket.buffer, SUM, bucket.ready, bucket.counts)
            else:
                req = self.comm.iallreduce_(bucket.buffer, SUM, bucket.ready)
        except BaseException as e:  # reported by the thread waiting for this bucket
            self._end(bucket, span, e)
            return
        flight.append([bucket, req, span])

    def _progress(self, flight, wait: bool) -> None:
        """Finish the buckets in flight that are done, in order, after up to
        ``PROGRESS_CALLS`` progress calls (with ``wait``, after waiting in MPI for the
        first). Over TCP one call moves one segment of a large message (some 64 KiB),
        so one call per wake-up caps the rate at a segment per sleep, and a thread that
        backward keeps off the core wakes late; a burst per wake-up keeps the wire
        busy with few wake-ups."""
        calls = 0
        while flight:
            bucket, req, span = flight[0]
            try:
                if wait:
                    req.wait()
                    done, wait = True, False
                elif calls < PROGRESS_CALLS:
                    calls += 1
                    done = req.test()
                else:
                    return
            except BaseException as e:
                # The collectives after a failed one cannot pair up any more.
                while flight:
                    failed, _, failed_span = flight.popleft()
                    self._end(failed, failed_span, e)
                return
            if done:
                flight.popleft()
                self._end(bucket, span, None, req)

    def _finish_all(self, flight) -> None:
        while flight:
            self._progress(flight, wait=True)

    def _end(self, bucket: _Bucket, span, error, req=None) -> None:
        if error is None:
            self.took[(bucket.index, bucket.nbytes)] = time.perf_counter() - bucket.started_at
            if bucket.sharded:   # this rank's segment is all it keeps of the bucket
                bucket.shard_out = req.result
                bucket.buffer = None
        bucket.error = error
        if span is not None:
            span.__exit__(None, None, None)
        bucket.done_at = time.perf_counter()
        bucket.done.set()

    def _span(self, bucket: _Bucket):
        prof = profiler.current()
        if prof is None:
            return None
        what = "reduce-scatter" if bucket.sharded else "all-reduce"
        span = profiler._Range(prof, f"DDP: {what} bucket {bucket.index}", "ddp",
                               {"bucket": bucket.index, "bytes": int(bucket.nbytes)})
        span.__enter__()
        return span

    def _hooked(self, bucket: _Bucket) -> None:
        bucket.started_at = time.perf_counter()
        span = self._span(bucket)
        try:
            run_comm_hook(self.comm, *self.hook, bucket)
        except BaseException as e:  # reported by the thread waiting for this bucket
            self._end(bucket, span, e)
            return
        self._end(bucket, span, None)

    def poll_for(self, bucket: _Bucket) -> float:
        """Seconds to sleep between bursts of progress calls on ``bucket``'s collective."""
        if self.fixed_poll is not None:
            return self.fixed_poll
        last = self.took.get((bucket.index, bucket.nbytes))
        if last is None:
            return FIRST_POLL_S
        return min(POLL_MAX_S, max(POLL_MIN_S, last / WAKEUPS_PER_BUCKET))

    def close(self) -> None:
        self.queue.put(None)


def overlap_figures(buckets, walk_end: float, all_done: float) -> dict | None:
    """How much of one backward's communication ran while backward still computed:
    ``comm_s`` (how long the communication thread had a collective in flight),
    ``hidden_s`` (the part of it before backward's graph walk ended), ``hidden_share``
    (their ratio) and ``wait_s`` (from the walk's end until every bucket was reduced:
    what backward's end waited for communication). None when no bucket went through
    the communication thread."""
    spans = sorted((b.started_at, b.done_at) for b in buckets if b.started_at is not None and b.done_at is not None)
    if not spans:
        return None
    merged = [list(spans[0])]   # collectives in flight together count once
    for start, end in spans[1:]:
        if start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    comm = sum(max(0.0, end - start) for start, end in merged)
    hidden = sum(max(0.0, min(end, walk_end) - start) for start, end in merged)
    return {"comm_s": comm, "hidden_s": hidden, "hidden_share": hidden / comm if comm > 0 else 1.0,
            "wait_s": max(0.0, all_done - walk_end)}


class Reducer:
    def __init__(self, params: list, names: list, comm, bucket_cap_bytes: int,
                 first_bucket_bytes: int, find_unused_parameters: bool, timeout: float | None,
                 grad_views: bool = False):
        self.params = params
        self.names = names
        self.comm = comm
        self.size = comm.size
        self.bucket_cap_bytes = bucket_cap_bytes
        self.first_bucket_bytes = first_bucket_bytes
        self.find_unused = find_unused_parameters
        self.timeout = timeout
        self.grad_views = grad_views
        self.index = {id(p): i for i, p in enumerate(params)}
        self.sync = True
        self.active = False
        self.used_unsynced = set()  # parameters that got gradients inside no_sync()
        self.step = 0
        self.rebuilt = False
        self.ready_order = []
        self.worker = _CommThread(comm.dup()) if self.size > 1 else None
        self.hook_in_process = None   # a comm hook in a world of one: run where the bucket is ready
        self.owners = None            # ZeRO stage 2: the rank keeping each parameter's gradient
        self._build(list(reversed(range(len(params)))))
        self.handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in params]

    # ---------------------------------------------------------------- buckets
    def _build(self, order: list) -> None:
        # The first bucket is small so the wire starts early (as PyTorch's). So are the
        # last ones: what is still on the wire when the graph walk ends is backward's
        # exposed tail, so from the end of ``order`` the caps grow from the first
        # bucket's size, doubling, to the full cap (the last gradients' bucket leaves
        # right after them instead of waiting for a whole cap's worth).
        front = self._group(order, itertools.repeat(self.first_bucket_bytes))[:1]
        rest = order[len(front[0]):] if front else []
        tapered = (max(1, self.first_bucket_bytes) << k for k in itertools.count())
        caps = (max(1, min(c, self.bucket_cap_bytes)) for c in tapered)
        groups = front + [g[::-1] for g in reversed(self._group(rest[::-1], caps))]
        shard = None if self.owners is None else (self.owners, self.size, self.comm.rank)
        self.buckets = [_Bucket(k, ids, self.params, shard) for k, ids in enumerate(groups)]
        self.buckets[-1].is_last = True
        self._set_scales()
        self.where = {i: b for b in self.buckets for i in b.param_ids}

    def _group(self, order: list, caps) -> list:
        """``order`` cut into groups of one dtype, each within the next cap from ``caps``
        (a tensor larger than its cap makes a group alone). A tiny tensor (a bias, a
        norm's scale) that would overflow a group rides with it instead of opening one
        of its own, and a group of tiny tensors takes the next tensor whatever its size: its gradient is ready right next to its neighbour's, and a bucket of
        a few KiB costs a collective's latency between the large ones while adding
        almost nothing to the wire."""
        groups, cur, cur_bytes, cap = [], [], 0, next(caps)
        for i in order:
            data = self.params[i]._data
            tiny = (data.nbytes <= cap // 64 and cur_bytes + data.nbytes <= max(cap, cur_bytes) + cap // 16
                    or cur_bytes <= cap // 64)
            if cur and (data.dtype != self.params[cur[0]]._data.dtype
                        or (cur_bytes + data.nbytes > cap and not tiny)):
                groups.append(cur)
                cur, cur_bytes, cap = [], 0, next(caps)
            cur.append(i)
            cur_bytes += data.nbytes
        if cur:
            groups.append(cur)
        return groups

    def _set_scales(self) -> None:
        # Without a hook, gradients are divided by the world size on the way in (so the
        # sum is the mean); a hook gets them as they are and averages itself, as in PyTorch.
        hooked = self.worker is not None and self.worker.hook is not None
        for b in self.buckets:
            b.scale = b.dtype.type(1.0 if hooked else 1.0 / self.size)

    def register_comm_hook(self, state, hook) -> None:
        if self.owners is not None:
            raise RuntimeError(
                f"DistributedDataParallel (rank {self.comm.rank}): the gradients are sharded (ZeRO stage 2), "
                "and sharding reduce-scatters the buckets itself; a communication hook cannot be registered")
        if self.worker is None:
            self.hook_in_process = (state, hook)
        else:
            self.worker.hook = (state, hook, self.params)
        self._set_scales()

    last_overlap = None   # overlap_figures of the last synchronized backward (with a comm thread)

    def overlap_report(self) -> tuple:
        """(bytes of buckets whose all-reduce finished before the last backward's graph
        walk ended, total bytes): how much communication really ran during backward."""
        early = sum(b.nbytes for b in self.buckets
                    if b.done_at is not None and b.done_at <= getattr(self, "walk_ended_at", 0.0))
        return early, sum(b.nbytes for b in self.buckets)

    def bucket_names(self) -> list:
        """The parameter names in each bucket, in all-reduce order."""
        return [[self.names[i] for i in b.param_ids] for b in self.buckets]

    # ------------------------------------------------------------- backward
    def _begin(self) -> None:
        monitor.at("backward")
        self.active = True
        self.marked = [False] * len(self.params)
        if not self.rebuilt:
            self.ready_order = []  # a failed first step must not leave a partial order
        for b in self.buckets:
            b.reset()
        self.next_launch = 0
        if self.worker is not None:
            self.worker.eager.clear()
        queue_callback(self._finalize, outermost=True)

    def _on_grad(self, p) -> None:
        if not self.sync:
            self.used_unsynced.add(self.index[id(p)])
            return
        if not self.active:
            self._begin()
        i = self.index[id(p)]
        if self.marked[i]:
            raise RuntimeError(
                f"DistributedDataParallel: parameter '{self.names[i]}' received its gradient twice "
                "in one backward pass; this happens with reentrant checkpointing of shared "
                "parameters (use use_reentrant=False) or when a loss is backpropagated twice"
            )
        self._mark(i, p.grad._data)
        if self.owners is not None:
            p._grad = None   # sharded: the bucket has it now; the owner gets the average back

    def _mark(self, i: int, grad) -> None:
        self.marked[i] = True
        if not self.rebuilt:
            self.ready_order.append(i)
        b = self.where[i]
        off, n = b.offsets[i]
        slot = b.writable()[off:off + n]
        if grad is None:
            slot[...] = 0
        else:
            # Divided by the world size on the way in, so the sum is the average
            # (one pass over the gradient instead of two).
            array_module(slot).multiply(grad.reshape(-1), b.scale, out=slot)
        b.pending -= 1
        if b.pending == 0:
            b.ready = _ready_event(b.buffer)
            profiler.instant(f"DDP: bucket {b.index} ready", "ddp", bucket=b.index, bytes=int(b.nbytes))
            self._launch_ready()

    def _launch_ready(self) -> None:
        # Strictly in bucket-index order: a bucket ready early waits for its predecessors.
        while self.next_launch < len(self.buckets) and self.buckets[self.next_launch].pending == 0:
            b = self.buckets[self.next_launch]
            if self.worker is None:
                if self.hook_in_process is not None:
                    self._hook_here(b)
                b.done.set()
            else:
                self.worker.submit(b)
            self.next_launch += 1

    def _finalize(self) -> None:
        try:
            missing = [i for i, m in enumerate(self.marked) if not m]
            if missing and not self.find_unused:
                shown = ", ".join(f"'{self.names[i]}'" for i in missing[:10])
                more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
                raise RuntimeError(
                    f"DistributedDataParallel (rank {self.comm.rank}, step {self.step}): these "
                    f"parameters received no gradient in this backward pass: {shown}{more}. Every "
                    "parameter must take part in computing the loss; if some do not, pass "
                    "find_unused_parameters=True to DistributedDataParallel."
                )
            used = [m or i in self.used_unsynced for i, m in enumerate(self.marked)]
            for i in missing:
                # Gradients accumulated under no_sync() still count; else this rank adds zeros.
                g = self.params[i]._grad if i in self.used_unsynced else None
                self._mark(i, None if g is None else g._data)
            self.walk_ended_at = time.perf_counter()
            if self.worker is not None:
                self.worker.hurry()  # backward is over: communication may take the core
            if self.find_unused:  # the same on every rank, so the collective pairs up
                used = self._globally_used(used)
            waiting = profiler.span("DDP: wait for the buckets", "ddp")
            waiting.__enter__()
            # Each bucket is written back as soon as it is reduced: copying the early
            # ones hides behind the all-reduce of the last.
            for b in self.buckets:
                what = (f"DistributedDataParallel's all-reduce of gradient bucket {b.index} of "
                        f"{len(self.buckets)} (synchronized backward #{self.step + 1})")
                monitor.wait(b.done, what, ("bucket", self.step, b.index), self.timeout)
                if b.error is not None:
                    raise RuntimeError(
                        f"DistributedDataParallel (rank {self.comm.rank}): the all-reduce of bucket "
                        f"{b.index} in step {self.step} failed: {b.error}"
                    ) from b.error
                self._write_back(b, used)
            waiting.__exit__(None, None, None)
            done = [b.done_at for b in self.buckets if b.done_at is not None]
            self.last_overlap = overlap_figures(self.buckets, self.walk_ended_at,
                                                max(done) if done else time.perf_counter())
            self._drop_unkept()
            if not self.rebuilt:
                self._rebuild()
        finally:
            self.active = False
            self.used_unsynced = set()
            self.step += 1

    def _hook_here(self, b: _Bucket) -> None:
        """A world of one still runs a registered hook (a compression hook rounds)."""
        state, hook = self.hook_in_process
        try:
            run_comm_hook(self.comm, state, hook, self.params, b)
        except BaseException as e:  # reported when backward waits for the bucket
            b.error = e

    def _globally_used(self, used: list) -> list:
        """Which parameters got a gradient on some rank (one small all-reduce)."""
        if self.size == 1:
            return used
        import numpy as np

        from .group import run_with_timeout

        mask = np.asarray(used, dtype=np.int32)
        run_with_timeout(lambda: self.comm.allreduce_(mask, "max"), f"the unused-parameter check of step {self.step}")
        return [bool(m) for m in mask]

    def _write_back(self, b: _Bucket, used: list) -> None:
        """Bucket ``b``'s averaged gradients into ``.grad`` (copied, or, with
        ``grad_views``, the bucket's own memory); a parameter no rank used keeps its
        ``.grad``. A sharded bucket gives its owned parameters views of this rank's
        segment (a new array at every step) and lets it go."""
        if b.sharded:
            for i, at, n in b.mine:
                if used[i]:
                    p = self.params[i]
                    p._grad = _wrap(b.shard_out[at:at + n].reshape(p._data.shape))
            b.shard_out = None
            return
        for i in b.param_ids:
            if not used[i]:
                continue
            p = self.params[i]
            off, n = b.offsets[i]
            avg = b.buffer[off:off + n].reshape(p._data.shape)
            if self.grad_views:
                p._grad = _wrap(avg)
            elif p._grad is None:
                p._grad = _wrap(avg.copy())
            else:
                p._grad._data[...] = avg
                p._grad._vc[0] += 1

    def shard(self, owners: list) -> None:
        """Gradient sharding (ZeRO stage 2): ``owners[i]`` is the rank that keeps
        parameter ``i``'s gradient. From the next synchronized backward each bucket is
        reduce-scattered instead of all-reduced, exists only while its gradients are
        gathered and reduced, and each gradient leaves ``.grad`` as soon as its bucket
        has it; after backward a rank holds the averaged gradients of its own
        parameters only (the others' ``.grad`` are None)."""
        if self.active:
            raise RuntimeError("DistributedDataParallel: gradients cannot be sharded during a backward pass")
        if len(owners) != len(self.params) or any(not 0 <= r < self.size for r in owners):
            raise ValueError(f"Reducer.shard: expected an owning rank in [0, {self.size}) for each of the "
                             f"{len(self.params)} parameters")
        self.owners = list(owners)
        self._build([i for b in self.buckets for i in b.param_ids])

    def _drop_unkept(self) -> None:
        if self.owners is not None:
            me = self.comm.rank
            for i, p in enumerate(self.params):
                if self.owners[i] != me:
                    p._grad = None

    def _rebuild(self) -> None:
        """Re-bucket once, by the order gradients became ready on rank 0."""
        from .group import run_with_timeout

        seen = list(dict.fromkeys(self.ready_order))
        order = seen + [i for i in reversed(range(len(self.params))) if i not in set(seen)]
        order = run_with_timeout(lambda: self.comm.broadcast_object(order, 0), "the DDP bucket rebuild")
        self.rebuilt = True
        self.ready_order = []
        if order != [i for b in self.buckets for i in b.param_ids]:
            self._build(order)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        if self.worker is not None:
            self.worker.close()
