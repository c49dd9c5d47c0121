"""ZeRO stages 1 and 2 across real ranks against unsharded DDP training.

    mpiexec -n 2|3 python tests/mpi/scripts/zero_train.py OUT.json
    python tests/mpi/scripts/zero_train.py OUT.json          (a world of one)

Every rank trains the same MLP (two parameter groups, a LambdaLR schedule) for a few
steps on its own data, each step two microbatches (the first inside ``no_sync()``)
and gradient clipping by the global norm, with AdamW and with SGD + momentum, under
DistributedDataParallel with a plain optimizer (stage 0), a ZeroRedundancyOptimizer
(stage 1) and a ZeroRedundancyOptimizer with sharded gradients (stage 2). It checks
nothing itself: rank 0 writes what the test compares (tests/test_zero.py) as JSON:
per run the losses, the final parameters, every rank's optimizer-state bytes and
gradient facts, and the consolidated state dict; then a state-dict round trip; then
the memory of a wider MLP's training step at each stage (traced by tracemalloc, which
sees numpy's allocations): the peak within one step, and what DDP's buckets and the
``.grad`` tensors hold after backward.
"""
import contextlib
import json
import os
import sys
import tracemalloc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)  # run from a checkout without installing distgrad

import numpy as np  # noqa: E402

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
import distgrad.nn.functional as F  # noqa: E402
from distgrad import nn, optim  # noqa: E402
from distgrad.distributed.optim import ZeroRedundancyOptimizer, global_grad_norm, shard_gradients  # noqa: E402

STEPS = 4
ACCUM = 2
CLIP = 0.5
SMALL_BUCKETS = {"bucket_cap_mb": 0.0004, "first_bucket_cap_mb": 0.0002}
OPTIMIZERS = {
    "adamw": (optim.AdamW, {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8}),
    "sgd": (optim.SGD, {"lr": 5e-2, "momentum": 0.9}),
}


def make_model():
    dg.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 12), nn.Tanh(), nn.Linear(12, 3))


def groups(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]


def batch(rank, step, micro):
    rng = np.random.default_rng(1000 * rank + 10 * step + micro)
    x = rng.standard_normal((5, 6))
    return dg.tensor(x), dg.tensor(np.sin(x[:, :3]) * 3.0)


def state_bytes(opt):
    return int(sum(v._data.nbytes for s in opt.state.values() for v in s.values()
                   if isinstance(v, dg.Tensor) and v.ndim > 0))


def build(stage, name, buckets):
    model = make_model().double()
    ddp = dist.DistributedDataParallel(model, **buckets)
    cls, kw = OPTIMIZERS[name]
    if stage == 0:
        opt = cls(groups(model), **kw)
    else:
        opt = ZeroRedundancyOptimizer(groups(model), cls, **kw)
        if stage == 2:
            shard_gradients(ddp, opt)
    sched = optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, ddp, opt, sched


def train(stage, name, buckets, steps=STEPS, built=None, first=0):
    model, ddp, opt, sched = built or build(stage, name, buckets)
    rank = dist.get_rank()
    losses, grad_facts = [], []
    for step in range(first, first + steps):
        opt.zero_grad()
        total = 0.0
        for m in range(ACCUM):
            x, y = batch(rank, step, m)
            with (ddp.no_sync() if m < ACCUM - 1 else contextlib.nullcontext()):
                loss = F.mse_loss(ddp(x), y)
                (loss / ACCUM).backward()
            total += loss.item() / ACCUM
        params = list(model.parameters())
        have = [p.grad is not None for p in params]
        if stage == 2:
            norm = global_grad_norm(params)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        nn.utils.clip_grads_with_norm_(params, CLIP, norm)
        opt.step()
        sched.step()
        mean = np.asarray([total])
        dist.all_reduce(dg.from_numpy(mean))
        losses.append(float(mean[0]) / dist.get_world_size())
        grad_facts.append({"have_grad": have, "norm": float(norm.item())})
    return model, opt, sched, losses, grad_facts


def consolidated(opt, stage):
    if stage == 0:
        return opt.state_dict()
    opt.consolidate_state_dict(to=0)
    return opt.state_dict() if dist.get_rank() == 0 else None


def to_json(sd):
    if sd is None:
        return None
    return {"state": {str(k): {n: (v.numpy().tolist() if isinstance(v, dg.Tensor) else v) for n, v in s.items()}
                      for k, s in sd["state"].items()},
            "param_groups": sd["param_groups"]}


def everyone(obj):
    out = []
    dist.all_gather_object(out, obj)
    return out


def run(stage, name, buckets):
    model, opt, _, losses, facts = train(stage, name, buckets)
    local = opt.optim if stage else opt
    owners = [opt.owner(p) if stage else None for p in model.parameters()]
    return {
        "losses": losses,
        "params": [p.detach().numpy().tolist() for p in model.parameters()],
        "params_every_rank": everyone([p.detach().numpy().tolist() for p in model.parameters()]),
        "state_bytes": everyone(state_bytes(local)),
        "param_bytes": [int(p._data.nbytes) for p in model.parameters()],
        "grad_facts": everyone(facts),
        "owners": owners,
        "lr": [g["lr"] for g in opt.param_groups],
        "local_lr": [g["lr"] for g in local.param_groups],
        "state_dict": to_json(consolidated(opt, stage)),
    }


def round_trip(name):
    """Train 2 steps at stage 1, save the consolidated state dict, load it into a
    fresh stage-2 optimizer (and, on rank 0, into a plain one) and train 2 more:
    the losses must equal 4 uninterrupted steps. Also: state_dict() on a rank that
    did not consolidate raises."""
    model, opt, sched, first, _ = train(1, name, SMALL_BUCKETS, steps=2)
    opt.consolidate_state_dict(to=dist.get_world_size() - 1)
    not_there = None
    if dist.get_rank() != dist.get_world_size() - 1:
        try:
            opt.state_dict()
        except RuntimeError as e:
            not_there = str(e)
    opt.consolidate_state_dict(to=0)
    sd = opt.state_dict() if dist.get_rank() == 0 else None
    sd = everyone(sd)[0]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    built = build(2, name, SMALL_BUCKETS)
    built[0].load_state_dict(weights)
    built[2].load_state_dict(sd)
    built[3].load_state_dict(sched.state_dict())
    _, _, _, later, _ = train(2, name, SMALL_BUCKETS, steps=2, built=built, first=2)
    plain_ok = None
    if dist.get_rank() == 0:
        cls, kw = OPTIMIZERS[name]
        plain = cls(groups(make_model().double()), **kw)
        plain.load_state_dict(sd)
        plain_ok = len(plain.state)
    return {"losses": first + later, "not_consolidated_error": not_there, "plain_loaded_states": plain_ok}


def memory(stage):
    """A 4-layer float64 MLP of width 256 (each weight 512 KiB, one bucket each),
    SGD with momentum: tracemalloc's peak over the third step (the first two build
    the buckets and the optimizer state), and after that step's backward the bytes
    of ``.grad`` tensors and of the reducer's buffers."""
    was_tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    dg.manual_seed(1)
    model = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
                          nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 256)).double()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.6, first_bucket_cap_mb=0.6)
    params = list(model.parameters())
    if stage == 0:
        opt = optim.SGD(params, lr=1e-3, momentum=0.9)
    else:
        opt = ZeroRedundancyOptimizer(params, optim.SGD, lr=1e-3, momentum=0.9)
        if stage == 2:
            shard_gradients(ddp, opt)
    rng = np.random.default_rng(dist.get_rank())
    x, y = dg.tensor(rng.standard_normal((8, 256))), dg.tensor(rng.standard_normal((8, 256)))
    facts = {}
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        if step == 2:
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
        F.mse_loss(ddp(x), y).backward()
        if step == 2:
            facts["grad_bytes"] = int(sum(p.grad._data.nbytes for p in params if p.grad is not None))
            red = ddp.reducer
            facts["reducer_bytes"] = int(sum((b.buffer.nbytes if b.buffer is not None else 0)
                                             + (b.shard_out.nbytes if getattr(b, "shard_out", None) is not None else 0)
                                             for b in red.buckets))
            facts["buckets"] = len(red.buckets)
            facts["owned_bytes"] = int(sum(p._data.nbytes for p in params if stage == 0 or opt.owner(p) == dist.get_rank()))
        opt.step()
        if step == 2:
            current, peak = tracemalloc.get_traced_memory()
            facts["peak_bytes"] = int(peak)
            facts["step_start_bytes"] = int(start)
            facts["after_step_bytes"] = int(current)
    facts["param_bytes"] = int(sum(p._data.nbytes for p in params))
    del ddp, opt, model
    if not was_tracing:
        tracemalloc.stop()
    return everyone(facts)


def main():
    out_path = sys.argv[1]
    dist.init_process_group("mpi", timeout=60)
    result = {"world_size": dist.get_world_size(), "runs": {}, "round_trip": {}}
    for name in OPTIMIZERS:
        for bucket_name, buckets in (("small", SMALL_BUCKETS), ("default", {})):
            for stage in (0, 1, 2):
                result["runs"][f"{name}/{bucket_name}/{stage}"] = run(stage, name, buckets)
        result["round_trip"][name] = round_trip(name)
    result["memory"] = {str(stage): memory(stage) for stage in (0, 1, 2)}
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)
    print(f"rank {dist.get_rank()}: zero_train done", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
