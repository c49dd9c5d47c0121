"""DistributedSampler across real ranks, with num_replicas and rank taken from the
default process group.

    mpiexec -n 2 python tests/mpi/scripts/distributed_sampler.py

Every rank builds its sampler with no num_replicas/rank, gathers every rank's
indices (all_gather_object) and checks, for several dataset sizes, with and without
shuffle and drop_last, over three epochs: the shares are equally long (PyTorch's
lengths), cover the dataset (only the padding repeats indices; with drop_last they
are disjoint), equal the interleaving rule without shuffle, are cut from one common
permutation with shuffle (the same on every rank, new each epoch), and reach the
same indices through a DataLoader. Each rank prints "rank R: distributed_sampler OK
(W ranks)"; a failed check raises, which ends the job with a non-zero status.
"""
import math
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)  # run from a checkout without installing distgrad

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
from distgrad.utils.data import DataLoader, TensorDataset  # noqa: E402
from distgrad.utils.data.distributed import DistributedSampler  # noqa: E402


def everyone(obj):
    out = []
    dist.all_gather_object(out, obj)
    return out


def check(n, shuffle, drop_last, rank, world):
    ds = TensorDataset(dg.arange(n))
    sampler = DistributedSampler(ds, shuffle=shuffle, seed=11, drop_last=drop_last)
    assert (sampler.num_replicas, sampler.rank) == (world, rank), (sampler.num_replicas, sampler.rank)
    per = math.ceil((n - world) / world) if drop_last and n % world else math.ceil(n / world)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        mine = list(sampler)
        via_loader = [i for (b,) in DataLoader(ds, batch_size=3, sampler=sampler) for i in b.tolist()]
        assert via_loader == mine, f"DataLoader gave {via_loader}, the sampler {mine}"
        shares = everyone(mine)
        what = f"n={n} shuffle={shuffle} drop_last={drop_last} epoch={epoch}: {shares}"
        assert all(len(s) == per == len(sampler) for s in shares), what
        full = [None] * (per * world)
        for r, s in enumerate(shares):
            full[r::world] = s  # the one list every rank cut its share from
        if drop_last:
            flat = sum(shares, [])
            assert len(set(flat)) == len(flat), "ranks overlap: " + what
            assert set(flat) <= set(range(n)) and len(flat) > n - world, what
        else:
            assert sorted(full[:n]) == list(range(n)), "not a cover of the dataset: " + what
            assert full[n:] == (full[:n] * math.ceil(world * per / n))[:per * world - n], what
        if not shuffle:
            assert full == (list(range(n)) * 2)[:per * world], what
        orders.append(full)
    if shuffle and n > 3:
        assert orders[0] != orders[1] != orders[2], f"set_epoch did not reshuffle: {orders}"
    elif not shuffle:
        assert orders[0] == orders[1] == orders[2]


def main():
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    for n in (10, 11, 1, 17):
        for shuffle in (False, True):
            for drop_last in (False, True):
                check(n, shuffle, drop_last, rank, world)
    dist.barrier()
    print(f"rank {rank}: distributed_sampler OK ({world} ranks)", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
