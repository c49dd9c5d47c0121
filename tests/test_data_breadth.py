"""More of ``torch.utils.data`` in ``dg.data`` (= ``dg.utils.data``): IterableDataset and
the DataLoader over a stream, ChainDataset, StackDataset, get_worker_info,
default_convert, the samplers (WeightedRandomSampler, SubsetRandomSampler, the
argument checks), DistributedSampler's defaults and import paths (and on two real
ranks under mpiexec), random_split, Dataset + Dataset; and dg.set_num_threads &co.
Compared with PyTorch wherever the result is deterministic."""
import collections
import inspect
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import distgrad as dg
import distgrad.utils.data as U
from jobs import find_mpiexec, have_mpi
from distgrad.data import (BatchSampler, ChainDataset, ConcatDataset, DataLoader, Dataset, DistributedSampler,
                           RandomSampler, SequentialSampler, StackDataset, Subset,
                           SubsetRandomSampler, TensorDataset, WeightedRandomSampler, default_collate,
                           default_convert, get_worker_info, random_split)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def norm(v):
    """A library-neutral form of a (nested) batch: tensors become (values, dtype name)."""
    if isinstance(v, collections.abc.Mapping):
        return (type(v).__name__, {k: norm(x) for k, x in v.items()})
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return (type(v).__name__, [norm(x) for x in v])
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, [norm(x) for x in v])
    if hasattr(v, "detach"):
        return ("tensor", v.detach().numpy().tolist(), str(v.dtype).split(".")[-1], tuple(v.shape))
    if isinstance(v, np.ndarray):
        return ("ndarray", v.tolist(), str(v.dtype))
    return v


def raised(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        return type(e), str(e)
    return None


# ------------------------------------------------------------------ datasets used below
def make_stream(lib, n, with_len=True):
    """An IterableDataset of lib (dg.data or torch.utils.data) yielding 0..n-1."""
    base = lib.IterableDataset

    class Stream(base):
        def __init__(self):
            self.n = n
            self.seen_workers = []

        def __iter__(self):
            self.seen_workers.append(lib.get_worker_info())
            return iter(range(self.n))

    if with_len:
        Stream.__len__ = lambda self: self.n
    return Stream()


class Squares(Dataset):
    def __init__(self, n, arrays=False):
        self.n, self.arrays = n, arrays

    def __getitem__(self, i):
        if i >= self.n:
            raise IndexError(i)
        return (np.array([i, i * i]), float(i)) if self.arrays else i * i

    def __len__(self):
        return self.n


def tdata(torch):
    return torch.utils.data


# --------------------------------------------------------------------- module surface
def test_module_has_torch_utils_data_names(torch):
    want = {n for n in tdata(torch).__all__ if not n.startswith("_") and "DataPipe" not in n and n not in {
        "DataChunk", "argument_validation", "functional_datapipe", "guaranteed_datapipes_determinism",
        "non_deterministic", "runtime_validation", "runtime_validation_disabled"}}
    assert want <= set(dir(dg.data)), sorted(want - set(dir(dg.data)))
    assert set(dg.data.__all__) == want


def test_utils_data_is_data_and_its_submodules_are_the_same_objects():
    import distgrad.utils.data.distributed as ud
    import distgrad.utils.data.sampler as us
    from distgrad.data.sampler import DistributedSampler as old_path
    from distgrad.utils.data.distributed import DistributedSampler as D

    assert U is dg.data and dg.utils.data is dg.data
    assert ud is dg.data.distributed and us is dg.data.sampler
    assert D is DistributedSampler is U.DistributedSampler is dg.data.distributed.DistributedSampler is old_path
    assert sys.modules["distgrad.utils.data.distributed"] is sys.modules["distgrad.data.distributed"]


def test_dataloader_signature_is_torchs(torch):
    ours = inspect.signature(DataLoader).parameters
    theirs = inspect.signature(tdata(torch).DataLoader).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == \
        [(p.name, p.kind, p.default) for p in theirs.values()]
    for cls in ("WeightedRandomSampler", "SubsetRandomSampler", "StackDataset", "ChainDataset", "RandomSampler",
                "BatchSampler", "DistributedSampler"):
        o = inspect.signature(getattr(dg.data, cls)).parameters
        t = inspect.signature(getattr(tdata(torch), cls)).parameters
        assert [(p.name, p.kind, p.default) for p in o.values()] == \
            [(p.name, p.kind, p.default) for p in t.values()], cls


# ------------------------------------------------------------ IterableDataset + DataLoader
@pytest.mark.parametrize("n", [0, 1, 6, 7, 9])
@pytest.mark.parametrize("bs", [1, 3, 4, 10])
@pytest.mark.parametrize("drop_last", [False, True])
def test_stream_batches_match_torch(torch, n, bs, drop_last):
    ours = DataLoader(make_stream(dg.data, n), batch_size=bs, drop_last=drop_last)
    theirs = tdata(torch).DataLoader(make_stream(tdata(torch), n), batch_size=bs, drop_last=drop_last)
    got = [norm(b) for b in ours]
    assert got == [norm(b) for b in theirs]
    assert len(ours) == len(theirs)
    assert sum(len(b[1]) for b in got) == (n // bs * bs if drop_last else n)


def test_stream_without_batching_and_with_collate_fn(torch):
    class Pairs(dg.data.IterableDataset):
        def __iter__(self):
            yield from ((np.array([i, i + 1]), i, "s") for i in range(3))

    class TPairs(tdata(torch).IterableDataset):
        def __iter__(self):
            yield from ((np.array([i, i + 1]), i, "s") for i in range(3))

    # batch_size=None: each sample through default_convert (numpy -> tensor, tuple -> list)
    ours = list(DataLoader(Pairs(), batch_size=None))
    assert [norm(b) for b in ours] == [norm(b) for b in tdata(torch).DataLoader(TPairs(), batch_size=None)]
    assert isinstance(ours[0][0], dg.Tensor) and ours[0][1] == 0
    # batched with default_collate
    assert [norm(b) for b in DataLoader(Pairs(), batch_size=2)] == \
        [norm(b) for b in tdata(torch).DataLoader(TPairs(), batch_size=2)]
    # a collate_fn sees each list of samples
    seen = []
    out = list(DataLoader(make_stream(dg.data, 5), batch_size=2, collate_fn=lambda b: seen.append(b) or sum(b)))
    assert out == [1, 5, 4] and seen == [[0, 1], [2, 3], [4]]


def test_stream_is_read_once_per_pass_in_the_calling_process():
    ds = make_stream(dg.data, 5)
    loader = DataLoader(ds, batch_size=2)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3], [4]]
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3], [4]]  # a new iterator each pass
    assert ds.seen_workers == [None, None]
    assert get_worker_info() is None
    with pytest.warns(UserWarning, match="num_workers is ignored"):
        loader = DataLoader(ds, batch_size=2, num_workers=2)
    # torch without per-worker sharding would give each sample twice; here the stream is read whole once
    assert [i for b in loader for i in b.tolist()] == [0, 1, 2, 3, 4] and ds.seen_workers[-1] is None


def test_stream_that_ends_after_a_short_batch_is_not_read_again():
    class Flaky(dg.data.IterableDataset):
        """An iterator that yields again after saying StopIteration."""
        def __iter__(self):
            return self

        def __init__(self):
            self.items = [0, 1, 2, StopIteration, 3, 4]

        def __next__(self):
            x = self.items.pop(0) if self.items else StopIteration
            if x is StopIteration:
                raise StopIteration
            return x

    assert [b.tolist() for b in DataLoader(Flaky(), batch_size=2)] == [[0, 1], [2]]


def test_len_of_a_loader_over_a_stream(torch):
    for bs, dl in ((None, False), (1, False), (3, False), (3, True), (8, False)):
        ours = DataLoader(make_stream(dg.data, 7), batch_size=bs, drop_last=dl)
        theirs = tdata(torch).DataLoader(make_stream(tdata(torch), 7), batch_size=bs, drop_last=dl)
        assert len(ours) == len(theirs), (bs, dl)
    o = raised(len, DataLoader(make_stream(dg.data, 3, with_len=False)))
    t = raised(len, tdata(torch).DataLoader(make_stream(tdata(torch), 3, with_len=False)))
    assert o[0] is t[0] is TypeError


def test_map_style_without_batching_uses_default_convert(torch):
    ours = list(DataLoader(Squares(3, arrays=True), batch_size=None))
    theirs = list(tdata(torch).DataLoader(Squares(3, arrays=True), batch_size=None))
    assert [norm(b) for b in ours] == [norm(b) for b in theirs]
    assert isinstance(ours[1][0], dg.Tensor) and ours[1][0].tolist() == [1, 1]
    ours = list(DataLoader(Squares(4), batch_size=None, shuffle=True, generator=dg.Generator().manual_seed(0)))
    assert sorted(ours) == [0, 1, 4, 9]


def _errors(lib, torch_lib, make_ds, **kwargs):
    o = raised(lib.DataLoader, make_ds(lib), **kwargs)
    t = raised(torch_lib.DataLoader, make_ds(torch_lib), **kwargs)
    return o, t


@pytest.mark.parametrize("kwargs", [
    dict(shuffle=True), dict(sampler=[0, 1]), dict(batch_sampler=[[0, 1]]), dict(batch_size=0),
    dict(batch_size=None, drop_last=True), dict(shuffle=False), dict(num_workers=-1), dict(timeout=-1),
    dict(prefetch_factor=2), dict(persistent_workers=True), dict(multiprocessing_context="fork"),
], ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_argument_errors_for_a_stream_match_torch(torch, kwargs):
    o, t = _errors(dg.data, tdata(torch), lambda lib: make_stream(lib, 4), **kwargs)
    if t is None:
        assert o is None
        return
    assert o is not None and o[0] is t[0], (o, t)
    if "sampler" not in kwargs and "batch_sampler" not in kwargs:  # those print the sampler's repr
        assert o[1] == t[1]
    else:
        assert o[1].split("but got")[0] == t[1].split("but got")[0]


@pytest.mark.parametrize("kwargs", [
    dict(batch_size=None, drop_last=True), dict(sampler=[0], shuffle=True),
    dict(batch_sampler=[[0]], batch_size=2), dict(batch_sampler=[[0]], drop_last=True),
    dict(num_workers=-1), dict(timeout=-1), dict(prefetch_factor=2), dict(persistent_workers=True),
    dict(batch_size=0), dict(batch_size=2, drop_last=1),
], ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_argument_errors_for_a_map_dataset_match_torch(torch, kwargs):
    o, t = _errors(dg.data, tdata(torch), lambda lib: Squares(4), **kwargs)
    assert t is not None and o is not None and o[0] is t[0], (o, t)
    assert o[1] == t[1]


def test_batch_sampler_sets_batch_size_none_like_torch(torch):
    ours = DataLoader(Squares(5), batch_sampler=[[0, 1], [4]])
    theirs = tdata(torch).DataLoader(Squares(5), batch_sampler=[[0, 1], [4]])
    assert (ours.batch_size, ours.drop_last) == (theirs.batch_size, theirs.drop_last) == (None, False)
    assert [norm(b) for b in ours] == [norm(b) for b in theirs]


# ---------------------------------------------------------- ChainDataset / StackDataset / +
def test_chain_dataset_and_adding_streams(torch):
    a, b = make_stream(dg.data, 2), make_stream(dg.data, 3)
    chained = a + b
    assert type(chained) is ChainDataset and list(chained) == [0, 1, 0, 1, 2] and len(chained) == 5
    assert list(ChainDataset([a, b, a])) == [0, 1, 0, 1, 2, 0, 1]
    t = make_stream(tdata(torch), 2) + make_stream(tdata(torch), 3)
    assert [norm(x) for x in DataLoader(chained, batch_size=2)] == \
        [norm(x) for x in tdata(torch).DataLoader(t, batch_size=2)]
    with pytest.raises(AssertionError, match="ChainDataset only supports IterableDataset"):
        list(ChainDataset([a, Squares(2)]))
    with pytest.raises(AssertionError, match="ChainDataset only supports IterableDataset"):
        len(ChainDataset([Squares(2)]))
    with pytest.raises(AssertionError, match="ConcatDataset does not support IterableDataset"):
        ConcatDataset([Squares(2), a])


def test_dataset_add_is_concat(torch):
    both = Squares(3) + Squares(2)
    assert type(both) is ConcatDataset and len(both) == 5
    assert [both[i] for i in range(5)] == [0, 1, 4, 0, 1] == list(tdata(torch).ConcatDataset([Squares(3), Squares(2)]))
    three = both + Squares(1)
    assert type(three) is ConcatDataset and len(three) == 6 and three[-1] == 0 and three[2] == 4
    assert [b.tolist() for b in DataLoader(both, batch_size=2)] == [[0, 1], [4, 0], [1]]


def test_stack_dataset(torch):
    x = TensorDataset(dg.arange(4) * 10)
    tup = StackDataset(Squares(4), x)
    assert len(tup) == 4 and tup[2][0] == 4 and tup[2][1][0].item() == 20
    dct = StackDataset(sq=Squares(4), x=x)
    assert set(dct[3]) == {"sq", "x"} and dct[3]["sq"] == 9
    # __getitems__: the DataLoader gets whole batches; the columns match item by item
    assert [norm(s) for s in tup.__getitems__([3, 0])] == [norm(tup[3]), norm(tup[0])]
    assert [norm(s) for s in dct.__getitems__([1])] == [norm(dct[1])]
    tx = tdata(torch).TensorDataset(torch.arange(4) * 10)
    for ours, theirs in ((tup, tdata(torch).StackDataset(Squares(4), tx)),
                         (dct, tdata(torch).StackDataset(sq=Squares(4), x=tx))):
        assert [norm(b) for b in DataLoader(ours, batch_size=3)] == \
            [norm(b) for b in tdata(torch).DataLoader(theirs, batch_size=3)]
    for args, kwargs in (((Squares(2), Squares(3)), {}), ((), {"a": Squares(2), "b": Squares(3)}), ((), {}),
                         ((Squares(2),), {"b": Squares(2)})):
        o = raised(StackDataset, *args, **kwargs)
        t = raised(tdata(torch).StackDataset, *args, **kwargs)
        assert o is not None and o == t


# ------------------------------------------------------------------- default_convert
def test_default_convert_matches_torch(torch):
    P = collections.namedtuple("P", "x y")
    cases = [0, 1.5, "s", b"b", np.array([1, 2]), np.float32(2.5), np.int64(3), np.array(["a"]),
             (np.array([1.0]), 2), [np.array([1]), "x"], {"k": np.array([1.5])}, P(np.array(0), 1),
             collections.OrderedDict(a=np.array([1])), np.array(7), dg.tensor([1.0]), range(3)]
    for c in cases:
        t_in = torch.tensor([1.0]) if isinstance(c, dg.Tensor) else c
        assert norm(default_convert(c)) == norm(tdata(torch).default_convert(t_in)), c
    t = dg.tensor([1.0, 2.0])
    assert default_convert(t) is t
    a = np.array([1.0, 2.0])
    conv = default_convert(a)
    a[0] = 9.0  # as torch.as_tensor: shares the array's memory
    assert conv.tolist() == [9.0, 2.0]


def test_default_collate_more_cases_match_torch(torch):
    P = collections.namedtuple("P", "x y")
    cases = [[collections.OrderedDict(a=1, b=2.0), collections.OrderedDict(a=3, b=4.0)], [b"a", b"b"],
             [np.float32(1), np.float32(2)], [np.bool_(True), np.bool_(False)], [np.array(1.0), np.array(2.0)],
             [P(np.array([1]), "u"), P(np.array([2]), "v")], [[np.int32(1), 2.5], [np.int32(3), 4.5]],
             [(1, (2, 3.0)), (4, (5, 6.0))]]
    for c in cases:
        assert norm(default_collate(c)) == norm(tdata(torch).default_collate(c)), c
    for bad in ([np.array(["a"])], [object()], [None]):
        o, t = raised(default_collate, bad), raised(tdata(torch).default_collate, bad)
        assert o is not None and o == t, (o, t)


# ---------------------------------------------------------------------------- samplers
def test_weighted_random_sampler_argument_errors_match_torch(torch):
    W, TW = WeightedRandomSampler, tdata(torch).WeightedRandomSampler
    for args in (([1, 2], 0), ([1, 2], -1), ([1, 2], 2.0), ([1, 2], True), ([1, 2], 2, 1), ([[1, 2]], 1),
                 ([1, -1, 2], 2), ([0, 0, 0], 2), ([1, float("nan")], 2), ([1, float("inf")], 2),
                 ([1, 2], 3, False)):
        o = raised(lambda: list(W(*args)))
        t = raised(lambda: list(TW(*args)))
        assert o is not None and o == t, (args, o, t)
    s = W(dg.tensor([1.0, 2.0], dtype=dg.float32), 3)
    ts = TW(torch.tensor([1.0, 2.0]), 3)
    assert s.weights.dtype == dg.float64 and str(ts.weights.dtype) == "torch.float64"
    assert (len(s), s.num_samples, s.replacement) == (len(ts), ts.num_samples, ts.replacement) == (3, 3, True)


def test_weighted_random_sampler_with_replacement():
    w = [0.0, 1.0, 3.0, 0.0, 4.0]
    g = dg.Generator().manual_seed(0)
    draws = list(WeightedRandomSampler(w, 40000, generator=g))
    assert len(draws) == 40000 and set(draws) == {1, 2, 4}  # zero weights never drawn
    freq = np.bincount(draws, minlength=5) / len(draws)
    np.testing.assert_allclose(freq, np.array(w) / 8.0, atol=0.01)
    a = list(WeightedRandomSampler(w, 50, generator=dg.Generator().manual_seed(3)))
    b = list(WeightedRandomSampler(w, 50, generator=dg.Generator().manual_seed(3)))
    c = list(WeightedRandomSampler(w, 50, generator=dg.Generator().manual_seed(4)))
    assert a == b and a != c
    s = WeightedRandomSampler(w, 20, generator=dg.Generator().manual_seed(3))
    assert list(s) != list(s)  # a new draw on each pass
    dg.manual_seed(9)  # without a generator: the default one
    d = list(WeightedRandomSampler(w, 30))
    dg.manual_seed(9)
    assert list(WeightedRandomSampler(w, 30)) == d


def test_weighted_random_sampler_without_replacement():
    w = [5.0, 0.0, 1.0, 2.0, 0.0]
    g = dg.Generator().manual_seed(1)
    firsts, seconds = [], []
    for _ in range(4000):
        d = list(WeightedRandomSampler(w, 3, replacement=False, generator=g))
        assert len(set(d)) == 3 and set(d) == {0, 2, 3}  # the positive weights first, each once
        firsts.append(d[0])
        seconds.append(d[1])
    np.testing.assert_allclose(np.bincount(firsts, minlength=5) / 4000, np.array(w) / 8.0, atol=0.025)
    # second draw given the first was index 0: proportional to the rest, 1:2
    after0 = [s for f, s in zip(firsts, seconds) if f == 0]
    assert abs(after0.count(3) / len(after0) - 2 / 3) < 0.04
    everything = list(WeightedRandomSampler(w, 5, replacement=False, generator=g))
    assert sorted(everything) == [0, 1, 2, 3, 4] and set(everything[3:]) == {1, 4}  # zero weights last


def test_weighted_random_sampler_in_a_dataloader():
    loader = DataLoader(Squares(4), batch_size=5,
                        sampler=WeightedRandomSampler([0, 0, 1, 0], 10, generator=dg.Generator().manual_seed(0)))
    batches = [b.tolist() for b in loader]
    assert batches == [[4] * 5, [4] * 5] and len(loader) == 2


def test_subset_random_sampler(torch):
    idx = [10, 3, 7, 22, 5]
    s = SubsetRandomSampler(idx, generator=dg.Generator().manual_seed(0))
    a, b = list(s), list(s)
    assert sorted(a) == sorted(idx) and sorted(b) == sorted(idx) and len(s) == 5 and a != b
    assert list(SubsetRandomSampler(idx, generator=dg.Generator().manual_seed(0))) == a
    assert len(s) == len(tdata(torch).SubsetRandomSampler(idx))
    assert list(SubsetRandomSampler([], generator=dg.Generator())) == []
    orders = {tuple(SubsetRandomSampler(idx[:3], generator=dg.Generator().manual_seed(k))) for k in range(60)}
    assert len(orders) == 6  # every order of three turns up
    loader = DataLoader(Squares(30), batch_size=2, sampler=SubsetRandomSampler(idx))
    assert sorted(i for b in loader for i in b.tolist()) == sorted(i * i for i in idx)


def test_sampler_argument_errors_match_torch(torch):
    T = tdata(torch)
    for ours, theirs in (
        (lambda: BatchSampler(range(3), 2, 1), lambda: T.BatchSampler(range(3), 2, 1)),
        (lambda: BatchSampler(range(3), 0, False), lambda: T.BatchSampler(range(3), 0, False)),
        (lambda: BatchSampler(range(3), 2.0, False), lambda: T.BatchSampler(range(3), 2.0, False)),
        (lambda: RandomSampler(range(3), num_samples=0), lambda: T.RandomSampler(range(3), num_samples=0)),
        (lambda: RandomSampler([]), lambda: T.RandomSampler([])),
        (lambda: RandomSampler(range(3), replacement=1), lambda: T.RandomSampler(range(3), replacement=1)),
    ):
        o, t = raised(ours), raised(theirs)
        assert o is not None and o == t, (o, t)


def test_sequential_random_and_batch_samplers_match_torch(torch):
    T = tdata(torch)
    for n in (1, 5, 12):
        assert list(SequentialSampler(range(n))) == list(T.SequentialSampler(range(n)))
        for ns, rep in ((None, False), (3, False), (2 * n + 1, False), (7, True), (70, True)):
            ours = RandomSampler(range(n), replacement=rep, num_samples=ns, generator=dg.Generator().manual_seed(0))
            theirs = T.RandomSampler(range(n), replacement=rep, num_samples=ns)
            o = list(ours)
            assert len(o) == len(ours) == len(theirs) == len(list(theirs))
            assert all(0 <= i < n for i in o)
            if not rep:  # each full pass a permutation
                for k in range(len(o) // n):
                    assert sorted(o[k * n:(k + 1) * n]) == list(range(n))
        for bs in (1, 4, 5):
            for dl in (False, True):
                assert list(BatchSampler(SequentialSampler(range(n)), bs, dl)) == \
                    list(T.BatchSampler(T.SequentialSampler(range(n)), bs, dl))


# ------------------------------------------------------------------ DistributedSampler
def test_distributed_sampler_needs_the_process_group_like_torch(torch):
    import distgrad.distributed as dist

    assert not dist.is_initialized()
    for kwargs in ({}, {"num_replicas": 2}, {"rank": 0}):
        o = raised(DistributedSampler, Squares(4), **kwargs)
        t = raised(tdata(torch).DistributedSampler, Squares(4), **kwargs)
        assert o is not None and o == t, (kwargs, o, t)
        assert o[1] == "Default process group has not been initialized, please make sure to call init_process_group."
    assert list(DistributedSampler(Squares(4), num_replicas=1, rank=0, shuffle=False)) == [0, 1, 2, 3]


def test_distributed_sampler_defaults_come_from_the_default_group(monkeypatch):
    import distgrad.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 3)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 2)
    s = DistributedSampler(Squares(10), shuffle=False)
    assert (s.num_replicas, s.rank, len(s)) == (3, 2, 4) and list(s) == [2, 5, 8, 1]
    s = DistributedSampler(Squares(10), rank=0, shuffle=False)
    assert (s.num_replicas, s.rank) == (3, 0) and list(s) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval \[0, 1\]"):
        DistributedSampler(Squares(10), num_replicas=2)


@pytest.mark.parametrize("n,R", [(10, 2), (10, 3), (11, 4), (3, 5), (1, 3), (0, 2), (25, 6), (2, 7)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_sampler_matches_torch(torch, n, R, drop_last):
    """Unshuffled: the very same indices as PyTorch on every rank. Shuffled: PyTorch's
    lengths and rule (a disjoint cover padded from its start, or cut with drop_last),
    one permutation shared by all ranks, changing with the epoch, fixed by the seed."""
    TDS = tdata(torch).DistributedSampler
    for r in range(R):
        ours = DistributedSampler(Squares(n), num_replicas=R, rank=r, shuffle=False, drop_last=drop_last)
        theirs = TDS(Squares(n), num_replicas=R, rank=r, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs)
        assert (len(ours), ours.num_samples, ours.total_size) == (len(theirs), theirs.num_samples, theirs.total_size)

    def shares(seed, epoch):
        out = []
        for r in range(R):
            s = U.distributed.DistributedSampler(Squares(n), num_replicas=R, rank=r, seed=seed, drop_last=drop_last)
            s.set_epoch(epoch)
            out.append(list(s))
        return out

    per = TDS(Squares(n), num_replicas=R, rank=0, drop_last=drop_last).num_samples
    orders = []
    for epoch in range(3):
        sh = shares(5, epoch)
        assert all(len(s) == per for s in sh)
        full = [None] * (per * R)
        for r, s in enumerate(sh):
            full[r::R] = s
        if drop_last:
            assert len(set(full)) == len(full) and set(full) <= set(range(n))
        else:
            assert sorted(full[:n]) == list(range(n))  # a cover, each index once...
            assert full[n:] == (full[:n] * (R + 1))[:per * R - n]  # ...then the padding repeats its start
        assert shares(5, epoch) == sh  # the same seed and epoch: the same order on every rank
        orders.append(full)
    if n >= 4:
        assert orders[0] != orders[1] != orders[2] and shares(6, 0) != shares(5, 0)


# ------------------------------------------------------------------------- random_split
def test_random_split_with_a_generator(torch):
    ds = Squares(20)
    a = random_split(ds, [5, 15], generator=dg.Generator().manual_seed(0))
    b = random_split(ds, [5, 15], generator=dg.Generator().manual_seed(0))
    c = random_split(ds, [5, 15], generator=dg.Generator().manual_seed(1))
    assert [p.indices for p in a] == [p.indices for p in b] != [p.indices for p in c]
    assert sorted(a[0].indices + a[1].indices) == list(range(20)) and a[0].indices != list(range(5))
    assert all(isinstance(p, Subset) and p.dataset is ds for p in a)
    dg.manual_seed(3)  # without a generator: the default one
    d = random_split(ds, [10, 10])
    dg.manual_seed(3)
    assert [p.indices for p in random_split(ds, [10, 10])] == [p.indices for p in d]
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 7, 10, 11, 33):
        for fr in ([0.5, 0.5], [0.1, 0.2, 0.7], [0.33, 0.33, 0.34], [1.0], [0.25] * 4, [0.3, 0.3, 0.4]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "Length of split at index 0 is 0"
                ours = [len(p) for p in random_split(Squares(n), fr, generator=dg.Generator())]
                theirs = [len(p) for p in tdata(torch).random_split(Squares(n), fr, generator=g)]
            assert ours == theirs, (n, fr)
    for bad in ([3, 3], [0.5, 0.6], [-0.5, 1.5]):
        o = raised(random_split, Squares(10), bad, generator=dg.Generator())
        t = raised(tdata(torch).random_split, Squares(10), bad, generator=g)
        assert o is not None and o == t, (bad, o, t)


# ----------------------------------------------------------------------------- threads
@pytest.fixture
def restore_threads():
    before = dg.get_num_threads()
    yield
    dg.set_num_threads(before)


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_set_num_threads_changes_numpys_blas(restore_threads):
    assert _blas_threads(), "no BLAS library found behind numpy"
    assert dg.get_num_threads() == max(_blas_threads())
    dg.set_num_threads(1)
    assert dg.get_num_threads() == 1 and set(_blas_threads()) == {1}
    a = np.random.default_rng(0).standard_normal((64, 64))
    np.testing.assert_allclose(dg.tensor(a).matmul(dg.tensor(a)).numpy(), a @ a, rtol=1e-12)
    dg.set_num_threads(3)  # more than the cores is allowed, as in PyTorch
    assert dg.get_num_threads() == 3 and set(_blas_threads()) == {3}


def test_thread_count_errors_match_torch(torch, restore_threads):
    before = (torch.get_num_threads(), torch.get_num_interop_threads())
    for fn in ("set_num_threads", "set_num_interop_threads"):
        for bad in (0, -2, 2.0, "2"):
            o, t = raised(getattr(dg, fn), bad), raised(getattr(torch, fn), bad)
            assert o is not None and o == t, (fn, bad, o, t)
    assert torch.get_num_threads() == before[0]


def test_interop_threads():
    n = dg.get_num_interop_threads()
    assert isinstance(n, int) and n >= 1
    dg.set_num_interop_threads(5)
    try:
        assert dg.get_num_interop_threads() == 5
    finally:
        dg.set_num_interop_threads(n)


def test_get_num_threads_reports_the_start_value_from_the_environment():
    code = "import distgrad as dg; print(dg.get_num_threads()); dg.set_num_threads(2); print(dg.get_num_threads())"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = REPO
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "2"]


# ------------------------------------------------------ two real ranks under mpiexec
@pytest.mark.skipif(not have_mpi(),
                    reason='multi-rank tests need mpiexec and mpi4py (pip install -e ".[dev]")')
def test_distributed_sampler_on_two_ranks_with_the_default_group():
    from jobs import LAUNCHER_VARS, kill_tree

    script = os.path.join(REPO, "tests", "mpi", "scripts", "distributed_sampler.py")
    args = [find_mpiexec(), "-n", "2", sys.executable, script]
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARS)}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        proc.communicate()
        pytest.fail("mpiexec -n 2 distributed_sampler.py did not finish in 90 s; killed it", pytrace=False)
    what = f"exit status {proc.returncode}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}"
    assert proc.returncode == 0, what
    for r in range(2):
        assert f"rank {r}: distributed_sampler OK (2 ranks)" in out, what
