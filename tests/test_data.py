"""``dg.data``: TensorDataset, DataLoader, default_collate and the samplers, with
``torch.utils.data``'s semantics (compared with it where it is installed)."""
import collections
import math

import numpy as np
import pytest

import distgrad as dg
from distgrad.data import (BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler,
                           SequentialSampler, Subset, TensorDataset, default_collate, random_split)


def arr(t):
    return t.detach().numpy()


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def squares(n=10):
    return TensorDataset(dg.arange(n), dg.arange(n) * 2.0)


class Range(Dataset):
    def __init__(self, n):
        self.n = n

    def __getitem__(self, i):
        return i

    def __len__(self):
        return self.n


# --------------------------------------------------------------- TensorDataset
def test_tensor_dataset():
    x = dg.randn(6, 3)
    y = dg.arange(6)
    ds = TensorDataset(x, y)
    assert len(ds) == 6
    a, b = ds[2]
    np.testing.assert_array_equal(arr(a), arr(x)[2])
    assert b.item() == 2
    assert isinstance(ds[0], tuple) and len(ds[0]) == 2
    assert ds.tensors[0] is x
    with pytest.raises(ValueError):
        TensorDataset(dg.zeros(3), dg.zeros(4))


def test_subset_and_random_split():
    ds = Range(10)
    sub = Subset(ds, [7, 2, 5])
    assert len(sub) == 3 and [sub[i] for i in range(3)] == [7, 2, 5]
    parts = random_split(ds, [3, 7], generator=dg.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [3, 7]
    assert sorted(parts[0].indices + parts[1].indices) == list(range(10))
    again = random_split(ds, [3, 7], generator=dg.Generator().manual_seed(0))
    assert again[0].indices == parts[0].indices
    fr = random_split(ds, [0.5, 0.5], generator=dg.Generator().manual_seed(1))
    assert [len(p) for p in fr] == [5, 5]
    with pytest.raises(ValueError):
        random_split(ds, [3, 3])


# ------------------------------------------------------------------ DataLoader
def test_dataloader_batches_in_order():
    dl = DataLoader(squares(10), batch_size=4)
    batches = list(dl)
    assert len(dl) == 3 and len(batches) == 3
    assert [arr(b[0]).tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [arr(b[1]).tolist() for b in batches] == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
    assert batches[0][0].dtype == dg.int64


def test_dataloader_drop_last():
    dl = DataLoader(squares(10), batch_size=4, drop_last=True)
    assert len(dl) == 2
    assert [arr(b[0]).tolist() for b in dl] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(DataLoader(squares(8), batch_size=4, drop_last=True)) == 2


def test_dataloader_default_batch_size_is_one():
    batches = list(DataLoader(squares(3)))
    assert len(batches) == 3 and tuple(batches[0][0].shape) == (1,)


def _order(loader):
    return [i for b in loader for i in arr(b[0]).tolist()]


def test_dataloader_shuffle_with_seeded_generator():
    ds = squares(20)
    a = _order(DataLoader(ds, batch_size=3, shuffle=True, generator=dg.Generator().manual_seed(42)))
    b = _order(DataLoader(ds, batch_size=3, shuffle=True, generator=dg.Generator().manual_seed(42)))
    c = _order(DataLoader(ds, batch_size=3, shuffle=True, generator=dg.Generator().manual_seed(43)))
    assert a == b
    assert a != c
    assert sorted(a) == list(range(20)) and sorted(c) == list(range(20))
    assert a != list(range(20))
    # one loader: each epoch is a new permutation drawn from its generator
    dl = DataLoader(ds, batch_size=3, shuffle=True, generator=dg.Generator().manual_seed(42))
    e1, e2 = _order(dl), _order(dl)
    assert e1 == a and e2 != e1 and sorted(e2) == list(range(20))


def test_dataloader_shuffle_follows_manual_seed_without_generator():
    ds = squares(20)
    dg.manual_seed(5)
    a = _order(DataLoader(ds, batch_size=4, shuffle=True))
    dg.manual_seed(5)
    b = _order(DataLoader(ds, batch_size=4, shuffle=True))
    assert a == b and sorted(a) == list(range(20))


def test_dataloader_custom_collate_fn():
    calls = []

    def collate(samples):
        calls.append(len(samples))
        return sum(int(x.item()) for x, _ in samples)

    dl = DataLoader(squares(7), batch_size=3, collate_fn=collate)
    assert list(dl) == [0 + 1 + 2, 3 + 4 + 5, 6]
    assert calls == [3, 3, 1]


def test_dataloader_batch_size_none_yields_single_samples():
    out = list(DataLoader(Range(4), batch_size=None))
    assert [int(o.item()) if isinstance(o, dg.Tensor) else o for o in out] == [0, 1, 2, 3]


def test_dataloader_with_batch_sampler_and_sampler():
    ds = Range(10)
    bs = BatchSampler(SequentialSampler(ds), 4, drop_last=False)
    out = [arr(b).tolist() for b in DataLoader(ds, batch_sampler=bs)]
    assert out == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    out = [arr(b).tolist() for b in DataLoader(ds, batch_size=5, sampler=[9, 8, 7, 6, 5, 4])]
    assert out == [[9, 8, 7, 6, 5], [4]]
    with pytest.raises(ValueError):
        DataLoader(ds, batch_sampler=bs, batch_size=3)
    with pytest.raises(ValueError):
        DataLoader(ds, sampler=[0, 1], shuffle=True)


def test_dataloader_matches_torch_without_shuffle(torch):
    from torch.utils.data import DataLoader as TDL
    from torch.utils.data import TensorDataset as TTD

    x = np.arange(22).reshape(11, 2)
    for bs, dl in ((3, False), (3, True), (4, True), (11, False), (20, True)):
        ours = [[arr(t).tolist() for t in b] for b in DataLoader(TensorDataset(dg.tensor(x)), bs, drop_last=dl)]
        theirs = [[t.tolist() for t in b] for b in TDL(TTD(torch.tensor(x)), bs, drop_last=dl)]
        assert ours == theirs
        assert len(DataLoader(TensorDataset(dg.tensor(x)), bs, drop_last=dl)) == len(
            TDL(TTD(torch.tensor(x)), bs, drop_last=dl))


# ------------------------------------------------------------- default_collate
def test_default_collate_tensors_numbers_dicts_lists():
    t = default_collate([dg.tensor([1.0, 2.0]), dg.tensor([3.0, 4.0])])
    np.testing.assert_array_equal(arr(t), [[1.0, 2.0], [3.0, 4.0]])
    ints = default_collate([1, 2, 3])
    assert ints.dtype == dg.int64 and arr(ints).tolist() == [1, 2, 3]
    bools = default_collate([True, False])
    assert bools.dtype == dg.bool and arr(bools).tolist() == [True, False]
    d = default_collate([{"a": 1, "b": dg.tensor([1.0])}, {"a": 2, "b": dg.tensor([2.0])}])
    assert set(d) == {"a", "b"}
    assert arr(d["a"]).tolist() == [1, 2] and arr(d["b"]).tolist() == [[1.0], [2.0]]
    lists = default_collate([[1, 2], [3, 4]])
    assert isinstance(lists, list) and [arr(v).tolist() for v in lists] == [[1, 3], [2, 4]]
    assert default_collate(["x", "y"]) == ["x", "y"]
    nd = default_collate([np.array([1.0, 2.0]), np.array([3.0, 4.0])])
    assert nd.dtype == dg.float64 and arr(nd).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    nested = default_collate([{"x": (1, {"y": 2})}, {"x": (3, {"y": 4})}])
    assert arr(nested["x"][0]).tolist() == [1, 3] and arr(nested["x"][1]["y"]).tolist() == [2, 4]
    with pytest.raises(RuntimeError):
        default_collate([[1, 2], [3]])


def test_default_collate_tuples_field_by_field():
    out = default_collate([(1, dg.tensor([0.5])), (2, dg.tensor([1.5]))])
    assert len(out) == 2
    assert arr(out[0]).tolist() == [1, 2]
    assert arr(out[1]).tolist() == [[0.5], [1.5]]
    x, y = out  # unpacks like torch's list


def test_default_collate_python_floats_are_float64():
    assert default_collate([1.0, 2.0]).dtype == dg.float64
    assert default_collate([np.float64(1.0), np.float64(2.5)]).dtype == dg.float64
    assert default_collate([{"b": 1.5}, {"b": 2.5}])["b"].dtype == dg.float64


def test_default_collate_tuple_batch_is_a_list_like_torch():
    assert isinstance(default_collate([(1, 2.0), (3, 4.0)]), list)


def test_default_collate_keeps_namedtuples():
    P = collections.namedtuple("P", "x y")
    out = default_collate([P(1, 2), P(3, 4)])
    assert isinstance(out, P) and arr(out.x).tolist() == [1, 3]


def test_default_collate_values_match_torch(torch):
    from torch.utils.data import default_collate as tc

    cases = [[1, 2, 3], [True, False], [[1, 2], [3, 4]], [{"a": 1, "b": 7}, {"a": 2, "b": 8}],
             [np.array([1.0, 2.0]), np.array([3.0, 4.0])], [(1, 2), (3, 4)]]

    def norm(v):
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if hasattr(v, "detach"):
            return (v.detach().numpy().tolist(), str(v.dtype).split(".")[-1])
        return v

    for c in cases:
        assert norm(default_collate(c)) == norm(tc(c)), c


# ------------------------------------------------------------------- samplers
def test_sequential_sampler():
    s = SequentialSampler(Range(5))
    assert list(s) == [0, 1, 2, 3, 4] and len(s) == 5


def test_random_sampler_permutation_and_seed():
    ds = Range(30)
    a = list(RandomSampler(ds, generator=dg.Generator().manual_seed(1)))
    b = list(RandomSampler(ds, generator=dg.Generator().manual_seed(1)))
    c = list(RandomSampler(ds, generator=dg.Generator().manual_seed(2)))
    assert a == b and a != c
    assert sorted(a) == list(range(30)) and a != list(range(30))
    assert len(RandomSampler(ds)) == 30


def test_random_sampler_num_samples_and_replacement():
    ds = Range(7)
    g = dg.Generator().manual_seed(0)
    s = RandomSampler(ds, num_samples=17, generator=g)
    out = list(s)
    assert len(s) == 17 and len(out) == 17
    assert sorted(out[:7]) == list(range(7)) and sorted(out[7:14]) == list(range(7))
    r = list(RandomSampler(ds, replacement=True, num_samples=200, generator=g))
    assert len(r) == 200 and set(r) == set(range(7))  # with replacement: repeats
    assert all(0 <= i < 7 for i in r)


def test_batch_sampler():
    bs = BatchSampler(SequentialSampler(Range(10)), 3, drop_last=False)
    assert list(bs) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]] and len(bs) == 4
    bs = BatchSampler(SequentialSampler(Range(10)), 3, drop_last=True)
    assert list(bs) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and len(bs) == 3
    rb = list(BatchSampler(RandomSampler(Range(10), generator=dg.Generator().manual_seed(0)), 4, False))
    assert [len(b) for b in rb] == [4, 4, 2] and sorted(sum(rb, [])) == list(range(10))
    with pytest.raises(ValueError):
        BatchSampler(SequentialSampler(Range(3)), 0, False)


def test_batch_sampler_matches_torch(torch):
    from torch.utils.data import BatchSampler as TBS

    for n in (0, 1, 9, 10, 11):
        for bs in (1, 3, 5, 12):
            for dl in (False, True):
                ours = BatchSampler(range(n), bs, dl) if n else BatchSampler([], bs, dl)
                theirs = TBS(range(n), bs, dl)
                assert list(ours) == list(theirs) and len(ours) == len(theirs)


# ---------------------------------------------------------- DistributedSampler
def _ranks(n, R, **kw):
    return [DistributedSampler(Range(n), num_replicas=R, rank=r, **kw) for r in range(R)]


def _interleave(lists):
    """The global index list the ranks were cut from (rank r takes items r, r+R, ...)."""
    R = len(lists)
    out = [None] * (R * len(lists[0]))
    for r, lst in enumerate(lists):
        out[r::R] = lst
    return out


CASES = [(10, 2), (10, 3), (11, 4), (3, 5), (7, 7), (1, 3), (20, 6)]


@pytest.mark.parametrize("n,R", CASES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_sampler_padding_covers_dataset(n, R, shuffle):
    samplers = _ranks(n, R, shuffle=shuffle, seed=3)
    lists = [list(s) for s in samplers]
    per = math.ceil(n / R)
    assert all(len(lst) == per == len(s) for lst, s in zip(lists, samplers))
    full = _interleave(lists)
    assert sorted(full[:n]) == list(range(n))  # every sample once ...
    pad = R * per - n
    expected_pad = (full[:n] * math.ceil(pad / n))[:pad] if pad else []
    assert full[n:] == expected_pad  # ... then padded by repeating the start
    if not shuffle:
        assert full[:n] == list(range(n))


@pytest.mark.parametrize("n,R", CASES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_sampler_drop_last_no_overlap(n, R, shuffle):
    samplers = _ranks(n, R, shuffle=shuffle, drop_last=True)
    lists = [list(s) for s in samplers]
    per = math.ceil((n - R) / R) if n % R else n // R
    assert all(len(lst) == per == len(s) for lst, s in zip(lists, samplers))
    flat = sum(lists, [])
    assert len(set(flat)) == len(flat)  # no overlap between ranks, no repeats
    assert len(flat) == per * R and len(flat) > n - R


def test_distributed_sampler_set_epoch_reshuffles_identically_on_all_ranks():
    n, R = 23, 3
    samplers = _ranks(n, R, shuffle=True, seed=7)
    orders = {}
    for epoch in (0, 1, 2):
        for s in samplers:
            s.set_epoch(epoch)
        lists = [list(s) for s in samplers]
        full = _interleave(lists)
        assert sorted(full[:n]) == list(range(n))  # all ranks cut one common permutation
        orders[epoch] = full
        assert [list(s) for s in samplers] == lists  # iterating again gives the same order
    assert orders[0] != orders[1] != orders[2] and orders[0] != orders[2]
    # the order depends only on (seed, epoch): a fresh set of samplers agrees
    fresh = _ranks(n, R, shuffle=True, seed=7)
    for s in fresh:
        s.set_epoch(1)
    assert _interleave([list(s) for s in fresh]) == orders[1]
    other = _ranks(n, R, shuffle=True, seed=8)
    assert _interleave([list(s) for s in other]) != orders[0]
    # without set_epoch the order does not change between passes
    s = _ranks(n, R, shuffle=True, seed=7)[0]
    assert list(s) == list(s)


def test_distributed_sampler_rejects_bad_rank():
    with pytest.raises(ValueError):
        DistributedSampler(Range(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError):
        DistributedSampler(Range(4), num_replicas=2, rank=-1)


def test_distributed_sampler_needs_a_process_group_or_explicit_replicas():
    """As PyTorch's: without a process group, num_replicas and rank must be given."""
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        DistributedSampler(Range(5), shuffle=False)
    s = DistributedSampler(Range(5), num_replicas=1, rank=0, shuffle=False)
    assert s.num_replicas == 1 and s.rank == 0 and list(s) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("n,R", CASES + [(0, 2), (5, 1)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_sampler_without_shuffle_equals_torch(torch, n, R, drop_last):
    from torch.utils.data import DistributedSampler as TDS

    for r in range(R):
        ours = DistributedSampler(Range(n), num_replicas=R, rank=r, shuffle=False, drop_last=drop_last)
        theirs = TDS(Range(n), num_replicas=R, rank=r, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs)
        assert len(ours) == len(theirs)
        assert ours.total_size == theirs.total_size


@pytest.mark.parametrize("n,R", CASES)
@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_sampler_with_shuffle_has_torch_lengths(torch, n, R, drop_last):
    from torch.utils.data import DistributedSampler as TDS

    for r in range(R):
        ours = DistributedSampler(Range(n), num_replicas=R, rank=r, drop_last=drop_last)
        theirs = TDS(Range(n), num_replicas=R, rank=r, drop_last=drop_last)
        assert len(list(ours)) == len(list(theirs)) == len(ours) == len(theirs)


def test_distributed_sampler_in_a_dataloader():
    n, R = 10, 3
    loaders = [DataLoader(squares(n), batch_size=2, sampler=s) for s in _ranks(n, R, shuffle=False)]
    per_rank = [_order(dl) for dl in loaders]
    assert per_rank == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]
    assert [len(dl) for dl in loaders] == [2, 2, 2]
