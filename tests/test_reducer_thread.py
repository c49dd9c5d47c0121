"""The reducer's bucket layout and its communication thread, in one process.

The thread is driven here by a communicator whose collectives end when a test says
so, which is the only way to pin down what is in flight at a given moment; the real
collectives (MPICH, several ranks, small and large buckets) run in
tests/mpi/test_ddp_mpi.py."""
import contextlib
import threading
import time
import types

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn
from distgrad.distributed import comm as C
from distgrad.distributed import reducer as R

MiB = 1 << 20


def mlp(width, depth, dtype=None):
    layers = [nn.Linear(256, width), nn.Tanh()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Tanh()]
    layers += [nn.Linear(width, 10)]
    model = nn.Sequential(*layers)
    return model if dtype is None else model.to(dtype)


def reducer_for(params, cap, first):
    names = [f"p{i}" for i in range(len(params))]
    return R.Reducer(params, names, C.SingleProcessCommunicator(), int(cap), int(first), False, None)


def layout(r):
    return [(b.param_ids, b.nbytes) for b in r.buckets]


@pytest.mark.parametrize("width,depth,cap_mb", [(512, 24, 4), (512, 24, 25), (1024, 8, 4), (256, 40, 1),
                                                 (512, 24, 0.25)])
def test_buckets_taper_toward_the_end_and_keep_every_parameter_once(width, depth, cap_mb):
    params = list(mlp(width, depth).parameters())
    cap, first = cap_mb * MiB, min(1.0, cap_mb) * MiB
    r = reducer_for(params, cap, first)
    order = list(reversed(range(len(params))))
    assert [i for b in r.buckets for i in b.param_ids] == order       # nothing lost, nothing moved
    largest = lambda b: max(params[i]._data.nbytes for i in b.param_ids)  # noqa: E731
    slack = lambda c: c // 16  # noqa: E731  (what a tiny tensor may add)
    # The first bucket: within the first cap (or a single tensor with its tiny neighbours).
    b0 = r.buckets[0]
    assert b0.nbytes <= max(first, largest(b0)) + slack(first)
    # From the end: caps first, 2 first, 4 first, ... up to the full cap.
    for k, b in enumerate(reversed(r.buckets[1:])):
        c = min(first * 2 ** k, cap)
        assert b.nbytes <= max(c, largest(b)) + slack(c), (k, b.nbytes, c)
    # The last bucket leaves right after the last gradients: at most the first cap, or
    # its one large tensor.
    last = r.buckets[-1]
    assert last.nbytes <= max(first, largest(last)) + slack(first)
    # No bucket after the first is made of tiny tensors only.
    for b in r.buckets[1:]:
        assert b.nbytes > min(cap, first) // 64, [params[i].shape for i in b.param_ids]


def test_a_large_cap_no_longer_leaves_most_gradients_for_the_end():
    """With PyTorch's default cap (25 MiB) this 22.6 MiB model used to be one 1 MiB
    bucket and one 22.5 MiB bucket, all of it on the wire after backward ended."""
    params = list(mlp(512, 24).parameters())
    r = reducer_for(params, 25 * MiB, MiB)
    sizes = [b.nbytes / MiB for b in r.buckets]
    assert len(sizes) >= 5 and sizes[-1] <= 1.01 and sizes[-2] <= 2.01 and sizes[-3] <= 4.01
    assert sizes[1:] == sorted(sizes[1:], reverse=True)


def test_bucket_layout_edge_cases():
    # A first cap of zero: the last tensors each get a bucket, and building ends.
    params = list(mlp(64, 4).parameters())
    r = reducer_for(params, 4 * MiB, 0)
    assert [i for b in r.buckets for i in b.param_ids] == list(reversed(range(len(params))))
    assert len(r.buckets[-1].param_ids) == 1
    # Mixed dtypes never share a bucket.
    a = nn.Linear(64, 64)
    b = nn.Linear(64, 64).to(dg.float64)
    mixed = list(a.parameters()) + list(b.parameters())
    r = reducer_for(mixed, 4 * MiB, MiB)
    for bucket in r.buckets:
        assert len({mixed[i]._data.dtype for i in bucket.param_ids}) == 1
    # A bias is never a bucket of its own when its weight is next to it, even where the
    # weight alone overflows the cap.
    big = list(mlp(1024, 8).parameters())
    r = reducer_for(big, 2 * MiB, MiB)
    for bucket in r.buckets[1:]:
        assert any(big[i].dim() == 2 for i in bucket.param_ids)


# ------------------------------------------------------------- the thread
class _Req:
    def __init__(self, log, k):
        self.log, self.k = log, k
        self.finished = threading.Event()
        self.fail = None
        self.result = None
        self.tests = 0

    def test(self):
        self.tests += 1
        if self.fail is not None:
            raise self.fail
        return self.finished.is_set()

    def wait(self):
        self.log.append(("wait", self.k))
        if not self.finished.wait(10):
            raise TimeoutError(f"request {self.k} never finished")
        if self.fail is not None:
            raise self.fail


class _Comm(C.SingleProcessCommunicator):
    """Collectives that end when the test sets their request's ``finished``."""

    def __init__(self):
        self.log, self.reqs = [], {}

    def iallreduce_(self, arr, op=C.SUM, ready=None):
        k = int(arr[0])
        self.log.append(("start", k))
        self.reqs[k] = _Req(self.log, k)
        return self.reqs[k]


def _bucket(k):
    b = types.SimpleNamespace(index=k, nbytes=8, buffer=np.array([float(k)]), ready=None, sharded=False,
                              started_at=None, done_at=None, error=None, done=threading.Event(), shard_out=None)
    return b


@contextlib.contextmanager
def comm_thread(monkeypatch, poll_us, nbuckets):
    """A communication thread on a ``_Comm``, ``nbuckets`` buckets handed to it."""
    monkeypatch.setenv("DISTGRAD_COMM_POLL_US", str(poll_us))
    comm = _Comm()
    t = R._CommThread(comm)
    try:
        buckets = [_bucket(k) for k in range(nbuckets)]
        for b in buckets:
            t.submit(b)
        yield comm, t, buckets
    finally:
        t.close()


def _until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.002)


def test_the_thread_keeps_several_collectives_in_flight_and_ends_them_in_order(monkeypatch):
    with comm_thread(monkeypatch, 200, R.MAX_IN_FLIGHT + 2) as (comm, t, buckets):
        _until(lambda: len(comm.reqs) == R.MAX_IN_FLIGHT)
        time.sleep(0.05)
        assert sorted(comm.reqs) == list(range(R.MAX_IN_FLIGHT))      # no more than that at once
        assert not any(b.done.is_set() for b in buckets)
        comm.reqs[1].finished.set()                                    # the second ends first ...
        time.sleep(0.05)
        assert not buckets[1].done.is_set()                            # ... but is reported after the first
        comm.reqs[0].finished.set()
        _until(lambda: buckets[1].done.is_set())
        assert buckets[0].done_at <= buckets[1].done_at
        _until(lambda: len(comm.reqs) == R.MAX_IN_FLIGHT + 2)         # two slots freed, two more started
        assert [k for what, k in comm.log if what == "start"] == list(range(R.MAX_IN_FLIGHT + 2))
        for req in comm.reqs.values():
            req.finished.set()
        for b in buckets:
            assert b.done.wait(5) and b.error is None
        assert all((b.index, b.nbytes) in t.took for b in buckets)


def test_a_failed_collective_fails_those_in_flight_behind_it(monkeypatch):
    with comm_thread(monkeypatch, 200, 3) as (comm, t, buckets):
        _until(lambda: len(comm.reqs) == 3)
        comm.reqs[0].finished.set()
        comm.reqs[1].fail = RuntimeError("peer rank 1 is gone")
        for b in buckets:
            assert b.done.wait(5)
        assert buckets[0].error is None
        assert "peer rank 1 is gone" in str(buckets[1].error) and buckets[2].error is buckets[1].error


def test_hurry_ends_the_sleep_and_waits_in_mpi(monkeypatch):
    """With a 2 s sleep between progress calls, the end of backward must not wait for it."""
    with comm_thread(monkeypatch, 2e6, 1) as (comm, t, (b,)):
        _until(lambda: 0 in comm.reqs and comm.reqs[0].tests >= 1)
        comm.reqs[0].finished.set()
        t0 = time.monotonic()
        t.hurry()
        assert b.done.wait(5)
        assert time.monotonic() - t0 < 1.0
        assert ("wait", 0) in comm.log


def test_blocking_setting_waits_for_each_collective_before_the_next(monkeypatch):
    with comm_thread(monkeypatch, 0, 3) as (comm, t, buckets):
        _until(lambda: 0 in comm.reqs)
        time.sleep(0.05)
        assert list(comm.reqs) == [0]                    # waiting in MPI for the first
        for k in range(3):
            _until(lambda: k in comm.reqs)
            comm.reqs[k].finished.set()
        for b in buckets:
            assert b.done.wait(5) and b.error is None
        assert comm.log == [("start", 0), ("wait", 0), ("start", 1), ("wait", 1), ("start", 2), ("wait", 2)]


def test_overlap_figures_count_collectives_in_flight_together_once():
    b = lambda s, e: types.SimpleNamespace(started_at=s, done_at=e)  # noqa: E731
    fig = R.overlap_figures([b(0.0, 4.0), b(1.0, 5.0), b(7.0, 9.0)], walk_end=8.0, all_done=9.0)
    assert fig["comm_s"] == pytest.approx(7.0)       # [0, 5] and [7, 9]
    assert fig["hidden_s"] == pytest.approx(6.0)     # [0, 5] and [7, 8]
    assert fig["wait_s"] == pytest.approx(1.0)
    assert R.overlap_figures([], 1.0, 2.0) is None
