"""Multi-rank tests of ``distgrad.distributed``: collectives and DistributedDataParallel.

Every test here is marked ``mpi``: pytest-mpi skips them in a plain ``pytest`` run; they
run on every rank under

    mpiexec -n 2 python -m pytest --with-mpi tests/mpi
    mpiexec -n 3 python -m pytest --with-mpi tests/mpi

(``tests/test_distributed.py`` does exactly that in a subprocess, with a timeout.)

Lockstep rule: every rank must issue the same collectives in the same order, or the
job hangs. So the tests do their collective work first and check locally afterwards,
inside ``all_ranks_agree()``, which gathers every rank's outcome and fails on every
rank when any rank failed (a failure on one rank alone would leave the others waiting
in the next test's collectives).
"""
import contextlib

import numpy as np
import pytest

pytest.importorskip("pytest_mpi", reason="the multi-rank tests need the pytest-mpi plugin")

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
import distgrad.nn.functional as F  # noqa: E402
from distgrad import nn  # noqa: E402
from distgrad.utils.checkpoint import checkpoint  # noqa: E402

DDP = dist.DistributedDataParallel
TOL = {dg.float64: dict(rtol=1e-12, atol=1e-12), dg.float32: dict(rtol=1e-5, atol=1e-5)}
DTYPES = [pytest.param(dg.float64, id="f64"), pytest.param(dg.float32, id="f32")]
# Tiny caps so that nearly every parameter gets a bucket of its own.
SMALL_BUCKETS = dict(bucket_cap_mb=0.0004, first_bucket_cap_mb=0.0002)


# ------------------------------------------------------------------- helpers
def world():
    """Join the process group once per process; return (rank, world size)."""
    if not dist.is_initialized():
        dist.init_process_group("mpi")
    return dist.get_rank(), dist.get_world_size()


def everyone(obj):
    out = []
    dist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def all_ranks_agree():
    """Run local checks; fail on EVERY rank if they failed on ANY rank (no collectives
    may be issued inside the block)."""
    err = None
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # AssertionError, pytest's Failed, anything unexpected
        err = f"{type(e).__name__}: {e}"
    errs = everyone(err)
    bad = [(r, e) for r, e in enumerate(errs) if e is not None]
    if bad:
        text = "\n".join(f"[rank {r}] {e}" for r, e in bad)
        raise pytest.fail.Exception(text, pytrace=False) from None


def arr(t):
    return t.detach().numpy()


def grads(model):
    return {n: (None if p.grad is None else arr(p.grad).copy()) for n, p in model.named_parameters()}


def params(model):
    return {n: arr(p).copy() for n, p in model.named_parameters()}


def assert_close(got, want, tol, what):
    assert list(got) == list(want) and got, what
    for k in want:
        assert got[k] is not None, f"{what}: {k} has no gradient"
        np.testing.assert_allclose(got[k], want[k], err_msg=f"{what}: {k}", **tol)


def gathered_tensors(t):
    out = [dg.zeros(*t.shape, dtype=t.dtype) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.detach().contiguous())
    return [arr(o) for o in out]


def assert_identical_across_ranks(model):
    """Parameters must be bit-identical on every rank (compared through all_gather)."""
    per_param = {n: gathered_tensors(p) for n, p in model.named_parameters()}
    with all_ranks_agree():
        for n, parts in per_param.items():
            for r, part in enumerate(parts[1:], 1):
                assert np.array_equal(part, parts[0]), f"{n} differs between rank 0 and rank {r}"


# -------------------------------------------------------------------- models
class MLP(nn.Module):
    def __init__(self, dtype, ckpt="none"):
        super().__init__()
        self.ckpt = ckpt
        self.body = nn.Sequential(nn.Linear(6, 32, dtype=dtype), nn.Tanh(),
                                  nn.Linear(32, 24, dtype=dtype), nn.GELU())
        self.head = nn.Linear(24, 3, dtype=dtype)

    def forward(self, x):
        if self.ckpt == "none":
            h = self.body(x)
        else:
            h = checkpoint(self.body, x, use_reentrant=self.ckpt == "reentrant")
        return self.head(h)


class Block(nn.Module):
    def __init__(self, c, heads, dtype):
        super().__init__()
        self.ln1 = nn.LayerNorm(c, dtype=dtype)
        self.attn = nn.CausalSelfAttention(c, heads, dtype=dtype)
        self.ln2 = nn.LayerNorm(c, dtype=dtype)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c, dtype=dtype), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * c, c, dtype=dtype))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    VOCAB, T = 11, 6

    def __init__(self, dtype, ckpt="none", c=16, heads=2, layers=2, tied=False):
        super().__init__()
        self.ckpt = ckpt
        self.tok = nn.Embedding(self.VOCAB, c, dtype=dtype)
        self.pos = nn.Embedding(self.T, c, dtype=dtype)
        self.blocks = nn.ModuleList([Block(c, heads, dtype) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(c, dtype=dtype)
        self.head = nn.Linear(c, self.VOCAB, bias=False, dtype=dtype)
        if tied:
            self.head.weight = self.tok.weight

    def forward(self, idx):
        x = self.tok(idx) + self.pos(dg.arange(idx.shape[1]))
        for b in self.blocks:
            if self.ckpt == "none":
                x = b(x)
            else:
                x = checkpoint(b, x, use_reentrant=self.ckpt == "reentrant")
        return self.head(self.ln_f(x))


def build(kind, dtype, ckpt="none", seed=0):
    dg.manual_seed(seed)
    if kind == "mlp":
        return MLP(dtype, ckpt)
    return TinyGPT(dtype, ckpt, tied=kind == "gpt_tied")


def loss_fn(kind, model, batch):
    x, y = batch
    out = model(x)
    if kind == "mlp":
        return F.cross_entropy(out, y)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def make_batch(kind, dtype, n, seed):
    """The same global batch on every rank (seeded), of ``n`` rows."""
    rng = np.random.default_rng(1000 + seed)
    if kind == "mlp":
        return dg.tensor(rng.standard_normal((n, 6)), dtype=dtype), dg.tensor(rng.integers(0, 3, n))
    V, T = TinyGPT.VOCAB, TinyGPT.T
    return dg.tensor(rng.integers(0, V, (n, T))), dg.tensor(rng.integers(0, V, (n, T)))


def rows(batch, lo, hi):
    return tuple(t[lo:hi] for t in batch)


# ------------------------------------------------- gradients equal one process
EQUIV_CASES = [
    pytest.param("mlp", "none", 2, SMALL_BUCKETS, id="mlp-plain-M2"),
    pytest.param("mlp", "ckpt", 3, SMALL_BUCKETS, id="mlp-ckpt-M3"),
    pytest.param("gpt", "none", 2, SMALL_BUCKETS, id="gpt-plain-M2"),
    pytest.param("gpt", "ckpt", 2, SMALL_BUCKETS, id="gpt-ckpt-M2"),
    pytest.param("gpt", "none", 1, {}, id="gpt-plain-M1-default-buckets"),
]


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind, ckpt, M, caps", EQUIV_CASES)
def test_ranks_times_microbatches_equal_one_process_on_the_whole_batch(kind, ckpt, M, caps, dtype):
    """N ranks x M microbatches (no_sync on all but the last) give the gradients of one
    process on the whole batch, step after step with an optimizer in between; ranks
    start from different initializations and end with identical parameters."""
    rank, n = world()
    k, steps = 2, 3
    SEED0 = 7
    # the reference is built like rank 0's model; every other rank starts elsewhere
    ref = build(kind, dtype, "none", seed=SEED0)
    model = build(kind, dtype, ckpt, seed=SEED0 + 101 * rank)
    first = next(iter(model.parameters()))
    before = gathered_tensors(first)
    ddp = DDP(model, **caps)
    after = gathered_tensors(first)
    n_buckets = len(ddp.bucket_names())
    with all_ranks_agree():
        assert not np.array_equal(before[0], before[1]), "the ranks were meant to start differently"
        for r in range(n):
            assert np.array_equal(after[r], arr(next(iter(ref.parameters())))), f"rank {r} not given rank 0's init"
        assert_close(params(model), params(ref), dict(rtol=0, atol=0), "after construction")
        assert n_buckets >= (5 if caps else 1), f"expected many buckets, got {n_buckets}"

    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = dg.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        batch = make_batch(kind, dtype, n * M * k, seed=step)
        ref.zero_grad()
        ref_loss = loss_fn(kind, ref, batch)
        ref_loss.backward()
        want = grads(ref)

        model.zero_grad()
        mine = rows(batch, rank * M * k, (rank + 1) * M * k)
        local_after_first = None
        for i in range(M):
            ctx = ddp.no_sync() if i < M - 1 else contextlib.nullcontext()
            with ctx:
                (loss_fn(kind, ddp, rows(mine, i * k, (i + 1) * k)) / M).backward()
            if i == 0 and M > 1:
                local_after_first = arr(first.grad).copy()
        got = grads(model)
        if M > 1:  # inside no_sync nothing was exchanged: the ranks' gradients still differed
            local = everyone(local_after_first)
        with all_ranks_agree():
            assert_close(got, want, TOL[dtype], f"step {step}")
            assert max(np.abs(g).max() for g in want.values()) > 1e-3
            if M > 1:
                assert not np.allclose(local[0], local[1]), "no_sync() still averaged the gradients"
        opt.step()
        ref_opt.step()
    assert_identical_across_ranks(model)
    with all_ranks_agree():
        assert_close(params(model), params(ref), TOL[dtype], f"parameters after {steps} steps")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("kind, ckpt", [
    pytest.param("gpt", "reentrant", id="gpt-reentrant-blocks"),
    pytest.param("gpt_tied", "none", id="gpt-tied-embedding"),
    pytest.param("gpt_tied", "ckpt", id="gpt-tied-embedding-ckpt"),
])
def test_more_models_equal_one_process(kind, ckpt):
    """Reentrant checkpointing of the blocks (the head stays outside), and a tied
    embedding/head weight."""
    rank, n = world()
    dtype, M, k = dg.float64, 2, 2
    ref = build(kind, dtype, "none", seed=3)
    model = build(kind, dtype, ckpt, seed=3 + rank)
    ddp = DDP(model, **SMALL_BUCKETS)
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = dg.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(2):
        batch = make_batch(kind, dtype, n * M * k, seed=10 + step)
        ref.zero_grad()
        loss_fn(kind, ref, batch).backward()
        model.zero_grad()
        mine = rows(batch, rank * M * k, (rank + 1) * M * k)
        for i in range(M):
            with ddp.no_sync() if i < M - 1 else contextlib.nullcontext():
                (loss_fn(kind, ddp, rows(mine, i * k, (i + 1) * k)) / M).backward()
        with all_ranks_agree():
            assert_close(grads(model), grads(ref), TOL[dtype], f"step {step}")
        opt.step()
        ref_opt.step()
    assert_identical_across_ranks(model)


class CheckpointedHead(nn.Module):
    """The LAST layer is inside a reentrant checkpoint, so the first gradients become
    final inside the nested backward that the checkpoint runs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8, dtype=dg.float64)
        self.b = nn.Linear(8, 2, dtype=dg.float64)

    def forward(self, x):
        return checkpoint(self.b, self.a(x).tanh(), use_reentrant=True)


@pytest.mark.mpi(min_size=2)
def test_reentrant_checkpoint_around_the_last_layer():
    rank, n = world()
    dg.manual_seed(0)
    ref = CheckpointedHead()
    dg.manual_seed(0)
    model = CheckpointedHead()
    ddp = DDP(model)
    rng = np.random.default_rng(0)
    x = dg.tensor(rng.standard_normal((2 * n, 4)))
    ref(x).pow(2).mean().backward()
    err = None
    try:
        (ddp(x[2 * rank:2 * rank + 2]).pow(2).mean()).backward()
    except RuntimeError as e:
        err = str(e)
    with all_ranks_agree():
        assert err is None, err
        assert_close(grads(model), grads(ref), TOL[dg.float64], "reentrant head")


# -------------------------------------------------------------- bucket order
class Branchy(nn.Module):
    """A trunk and three heads: ``b`` is used only where asked, ``c`` never."""

    def __init__(self, dtype=dg.float64):
        super().__init__()
        self.trunk = nn.Linear(5, 8, dtype=dtype)
        self.a = nn.Linear(8, 3, dtype=dtype)
        self.b = nn.Linear(8, 3, dtype=dtype)
        self.c = nn.Linear(8, 3, dtype=dtype)

    def forward(self, x, use_b=True, use_c=False):
        h = self.trunk(x).tanh()
        out = self.a(h)
        if use_b:
            out = out + self.b(h)
        if use_c:
            out = out + self.c(h)
        return out


def branchy_data(n, seed=0):
    rng = np.random.default_rng(seed)
    return dg.tensor(rng.standard_normal((n, 5))), dg.tensor(rng.integers(0, 3, n))


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("caps", [pytest.param(SMALL_BUCKETS, id="small"),
                                  pytest.param(dict(bucket_cap_mb=0.002, first_bucket_cap_mb=0.0008), id="mixed"),
                                  pytest.param({}, id="default")])
def test_bucket_order_is_the_same_on_every_rank(caps):
    """Before and after the first step's rebuild; the rebuild follows the order in which
    gradients became ready on rank 0, even where another rank's order differs (here
    ``b`` is unused on rank 0, so its gradients come last there)."""
    rank, n = world()
    dg.manual_seed(0)
    model = Branchy()
    ddp = DDP(model, find_unused_parameters=True, **caps)
    names = [nm for nm, _ in model.named_parameters()]
    sizes = {nm: p.numel() * 8 for nm, p in model.named_parameters()}
    fired = []
    for nm, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, nm=nm: fired.append(nm))
    before = everyone(ddp.bucket_names())
    x, y = branchy_data(4, seed=rank)
    F.cross_entropy(ddp(x, use_b=rank != 0), y).backward()
    after = everyone(ddp.bucket_names())
    order0 = everyone(fired)[0]
    model.zero_grad()
    F.cross_entropy(ddp(x, use_b=True), y).backward()
    later = everyone(ddp.bucket_names())
    with all_ranks_agree():
        for r in range(n):
            assert before[r] == before[0], f"initial buckets differ on rank {r}: {before[r]} vs {before[0]}"
            assert after[r] == after[0], f"rebuilt buckets differ on rank {r}: {after[r]} vs {after[0]}"
            assert later[r] == after[0], "the buckets were rebuilt more than once"
        for layout in (before[0], after[0]):
            flat = [nm for b in layout for nm in b]
            assert sorted(flat) == sorted(names), f"not every parameter exactly once: {layout}"
            cap0 = caps.get("first_bucket_cap_mb", 1) * 1024 * 1024
            cap = caps.get("bucket_cap_mb", 25) * 1024 * 1024
            for j, b in enumerate(layout):
                assert len(b) == 1 or sum(sizes[nm] for nm in b) <= (cap0 if j == 0 else cap), (j, b)
        # initially reverse registration order; after the rebuild rank 0's ready order
        assert [nm for b in before[0] for nm in b] == names[::-1]
        flat_after = [nm for b in after[0] for nm in b]
        assert "b.weight" not in order0 and flat_after[:len(order0)] == order0, (order0, flat_after)
        assert sorted(flat_after[len(order0):]) == ["b.bias", "b.weight", "c.bias", "c.weight"]


# --------------------------------------------------------------- collectives
@pytest.mark.mpi(min_size=2)
def test_rank_size_and_backend():
    rank, n = world()
    from mpi4py import MPI

    got = dict(rank=dist.get_rank(), size=dist.get_world_size(), local=dist.get_local_rank(),
               local_size=dist.get_local_world_size(), backend=dist.get_backend(),
               init=dist.is_initialized(), avail=dist.is_available())
    all_got = everyone(got)
    with all_ranks_agree():
        assert got["rank"] == MPI.COMM_WORLD.Get_rank() and got["size"] == MPI.COMM_WORLD.Get_size()
        assert got["backend"] == "mpi" and got["init"] and got["avail"]
        # mpiexec starts every rank on this one machine
        assert got["local"] == got["rank"] and got["local_size"] == got["size"]
        assert sorted(g["rank"] for g in all_got) == list(range(n))
        with pytest.raises(RuntimeError, match="twice"):
            dist.init_process_group("mpi")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_reduce_ops(dtype):
    rank, n = world()
    vals = [np.array([r + 1.0, -2.0 * (r + 1), 0.5 * r]) for r in range(n)]
    out = {}
    for name, op in [("sum", dist.ReduceOp.SUM), ("max", dist.ReduceOp.MAX), ("min", dist.ReduceOp.MIN),
                     ("avg", dist.ReduceOp.AVG), ("product", dist.ReduceOp.PRODUCT)]:
        t = dg.tensor(vals[rank], dtype=dtype)
        ret = dist.all_reduce(t, op=op)
        out[name] = (ret, arr(t).copy(), t.dtype)
    t = dg.tensor(vals[rank], dtype=dtype)
    dist.all_reduce(t)  # SUM is the default
    default = arr(t).copy()
    ints = dg.tensor([rank, 10 * rank + 1])
    dist.all_reduce(ints)
    scalar = dg.tensor(float(rank + 1), dtype=dtype)
    dist.all_reduce(scalar, op=dist.ReduceOp.MAX)
    # a contiguous view: the reduction lands in the base tensor
    base = dg.zeros(3, 2, dtype=dtype)
    with dg.no_grad():
        base[1] = dg.tensor([rank + 1.0, 2.0], dtype=dtype)
    view = base[1]
    dist.all_reduce(view)
    work = dist.all_reduce(dg.ones(2, dtype=dtype), async_op=True)
    stacked = np.stack(vals)
    tol = TOL[dtype]
    with all_ranks_agree():
        want = {"sum": stacked.sum(0), "max": stacked.max(0), "min": stacked.min(0),
                "avg": stacked.mean(0), "product": stacked.prod(0)}
        for name, (ret, got, dt) in out.items():
            assert ret is None, name
            assert dt == dtype, name
            np.testing.assert_allclose(got, want[name], err_msg=name, **tol)
        np.testing.assert_allclose(default, want["sum"], **tol)
        assert ints.tolist() == [sum(range(n)), sum(10 * r + 1 for r in range(n))]
        assert scalar.item() == n
        np.testing.assert_allclose(arr(base), [[0, 0], [n * (n + 1) / 2, 2.0 * n], [0, 0]], **tol)
        assert work.wait() is True and work.is_completed()


@pytest.mark.mpi(min_size=2)
def test_broadcast_all_gather_reduce_scatter_barrier():
    rank, n = world()
    src = n - 1  # not rank 0
    t = dg.full((2, 3), float(rank), dtype=dg.float64)
    dist.broadcast(t, src=src)
    ints = dg.tensor([rank, rank * 7])
    dist.broadcast(ints, src=1)

    out = [dg.zeros(2, 2, dtype=dg.float32) for _ in range(n)]
    dist.all_gather(out, dg.full((2, 2), rank + 0.5, dtype=dg.float32))

    inp = dg.tensor(np.arange(n * 2 * 3, dtype=np.float64).reshape(n * 2, 3) * (rank + 1))
    part = dg.zeros(2, 3, dtype=dg.float64)
    dist.reduce_scatter_tensor(part, inp)
    part_max = dg.zeros(2, 3, dtype=dg.float64)
    dist.reduce_scatter_tensor(part_max, inp, op=dist.ReduceOp.MAX)

    objs = []
    dist.all_gather_object(objs, {"rank": rank, "sq": rank * rank})
    blist = [f"from {rank}", rank]
    dist.broadcast_object_list(blist, src=src)
    assert dist.barrier() is None
    dist.barrier(async_op=True).wait()

    base = np.arange(n * 2 * 3, dtype=np.float64).reshape(n * 2, 3)
    total = sum(r + 1 for r in range(n))
    with all_ranks_agree():
        assert np.array_equal(arr(t), np.full((2, 3), float(src)))
        assert ints.tolist() == [1, 7]
        for r, o in enumerate(out):
            assert np.array_equal(arr(o), np.full((2, 2), r + 0.5, np.float32)), r
        np.testing.assert_allclose(arr(part), base[2 * rank:2 * rank + 2] * total, rtol=1e-14)
        np.testing.assert_allclose(arr(part_max), base[2 * rank:2 * rank + 2] * n, rtol=1e-14)
        assert objs == [{"rank": r, "sq": r * r} for r in range(n)]
        assert blist == [f"from {src}", src]


@pytest.mark.mpi(min_size=2)
def test_collective_argument_errors_are_raised_before_communicating():
    """Each of these fails on every rank before any message is sent, so no rank waits."""
    rank, n = world()
    with all_ranks_agree():
        with pytest.raises(ValueError, match="src"):
            dist.broadcast(dg.zeros(2), src=n)
        with pytest.raises(ValueError, match="entries"):
            dist.all_gather([dg.zeros(2)] * (n + 1), dg.zeros(2))
        with pytest.raises(ValueError, match="contiguous"):
            dist.all_reduce(dg.zeros(3, 4).t())
        with pytest.raises(TypeError):
            dist.all_reduce(np.zeros(3))
    dist.barrier()


@pytest.mark.mpi(min_size=2)
def test_ddp_broadcasts_rank0_buffers():
    rank, n = world()

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2, dtype=dg.float64)
            self.register_buffer("scale", dg.full((2,), float(rank + 2), dtype=dg.float64))

        def forward(self, x):
            return self.lin(x) * self.scale

    dg.manual_seed(rank)
    model = Scaled()
    ddp = DDP(model)
    at_init = everyone(arr(model.scale).tolist())
    with dg.no_grad():
        model.scale.fill_(10.0 + rank)  # diverge again; forward re-broadcasts rank 0's
    ddp(dg.ones(1, 3, dtype=dg.float64)).sum().backward()
    in_forward = everyone(arr(model.scale).tolist())
    with all_ranks_agree():
        assert at_init == [[2.0, 2.0]] * n
        assert in_forward == [[10.0, 10.0]] * n


# ----------------------------------------------------------- model mismatch
class Small(nn.Module):
    def __init__(self, out=8, dtype=dg.float64, extra=False, rename=False, frozen=False,
                 drop=False, buffer=False):
        super().__init__()
        self.inp = nn.Linear(4, out, dtype=dtype)
        if rename:
            self.hidden2 = nn.Linear(out, 8, dtype=dg.float64)
        else:
            self.hidden = nn.Linear(out, 8, dtype=dg.float64)
        if not drop:
            self.head = nn.Linear(8, 2, dtype=dg.float64)
        if extra:
            self.extra = nn.Linear(2, 2, dtype=dg.float64)
        if frozen:
            self.head.bias.requires_grad_(False)
        if buffer:
            self.register_buffer("running", dg.zeros(3))


MISMATCHES = {
    # case: (kwargs for rank 1, text every rank's message must contain)
    "extra_layer": (dict(extra=True),
                    "the first difference is 'extra.weight' of shape [2, 2] and dtype distgrad.float64 on rank 1 "
                    "but missing on rank 0"),
    "missing_layer": (dict(drop=True), "the first difference is missing on rank 1 but 'head.weight' of shape [2, 8]"),
    "shape": (dict(out=9), "the first difference is 'inp.weight' of shape [9, 4]"),
    "dtype": (dict(dtype=dg.float32),
              "the first difference is 'inp.weight' of shape [8, 4] and dtype distgrad.float32 on rank 1"),
    "name": (dict(rename=True), "the first difference is 'hidden2.weight'"),
    "frozen": (dict(frozen=True),
               "the first difference is 'head.bias' of shape [2] and dtype distgrad.float64 (frozen) on rank 1"),
    "buffer": (dict(buffer=True), "'buffer running' of shape [3]"),
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(MISMATCHES))
def test_mismatched_models_raise_on_every_rank(case):
    rank, n = world()
    kwargs, text = MISMATCHES[case]
    model = Small(**(kwargs if rank == 1 else {}))
    err = None
    try:
        DDP(model)
    except RuntimeError as e:
        err = str(e)
    errs = everyone(err)
    dist.barrier()  # nothing is left pending: the group still works
    with all_ranks_agree():
        for r, e in enumerate(errs):
            assert e is not None, f"rank {r} raised no error"
            assert "rank 1 does not hold the same model as rank 0" in e, e
            assert f"seen on rank {r}" in e, e
            assert text in e, e
            assert e.replace(f"seen on rank {r}", "") == errs[0].replace("seen on rank 0", ""), \
                "the ranks name different differences"


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("option", [
    pytest.param(dict(bucket_cap_mb=(25, 0.0001)), id="bucket_cap_mb"),
    pytest.param(dict(find_unused_parameters=(False, True)), id="find_unused_parameters"),
])
def test_mismatched_ddp_config_raises_on_every_rank(option):
    rank, n = world()
    (key, (v0, v1)), = option.items()
    dg.manual_seed(0)
    model = Small()
    err = None
    try:
        DDP(model, **{key: v0 if rank == 0 else v1})
    except RuntimeError as e:
        err = str(e)
    errs = everyone(err)
    with all_ranks_agree():
        for r, e in enumerate(errs):
            assert e is not None and key in e, f"rank {r}: {e}"


# -------------------------------------------------------- unused parameters
def reference_branchy_grads(ref, batches, uses):
    """One process: mean over ranks of each rank's loss, with that rank's branches."""
    ref.zero_grad()
    total = 0
    for (x, y), use in zip(batches, uses):
        total = total + F.cross_entropy(ref(x, **use), y)
    (total / len(batches)).backward()
    return grads(ref)


def reference_microbatch_grads(ref, data, uses):
    """One process: ``data[r][i]``/``uses[r][i]`` are rank r's microbatch i; the mean
    over ranks of each rank's mean over its microbatches."""
    ref.zero_grad()
    total = 0
    for rank_data, rank_uses in zip(data, uses):
        for (x, y), use in zip(rank_data, rank_uses):
            total = total + F.cross_entropy(ref(x, **use), y) / len(rank_data)
    (total / len(data)).backward()
    return grads(ref)


@pytest.mark.mpi(min_size=2)
def test_find_unused_parameters_with_a_parameter_unused_on_one_rank():
    rank, n = world()
    dg.manual_seed(5)
    ref = Branchy()
    dg.manual_seed(5 + 45 * rank)  # rank 0 starts like the reference, the others elsewhere
    model = Branchy()
    ddp = DDP(model, find_unused_parameters=True, **SMALL_BUCKETS)
    uses = [dict(use_b=r != 1) for r in range(n)]  # b unused on rank 1; c unused everywhere
    opt = dg.optim.SGD(model.parameters(), lr=0.2)
    ref_opt = dg.optim.SGD(ref.parameters(), lr=0.2)
    for step in range(3):
        batches = [branchy_data(4, seed=100 * step + r) for r in range(n)]
        want = reference_branchy_grads(ref, batches, uses)
        model.zero_grad()
        F.cross_entropy(ddp(batches[rank][0], **uses[rank]), batches[rank][1]).backward()
        got = grads(model)
        with all_ranks_agree():
            assert got["c.weight"] is None and got["c.bias"] is None, "a parameter no rank used got a .grad"
            want = {k: v for k, v in want.items() if not k.startswith("c.")}
            assert_close({k: got[k] for k in want}, want, TOL[dg.float64], f"step {step}")
        opt.step()
        ref_opt.step()
    assert_identical_across_ranks(model)


@pytest.mark.mpi(min_size=2)
def test_parameter_without_gradient_raises_naming_it():
    """find_unused_parameters=False and ``b`` unused on ALL ranks (so no rank waits)."""
    rank, n = world()
    dg.manual_seed(0)
    model = Branchy()
    ddp = DDP(model, **SMALL_BUCKETS)
    x, y = branchy_data(4, seed=rank)
    err = None
    try:
        F.cross_entropy(ddp(x, use_b=False), y).backward()
    except RuntimeError as e:
        err = str(e)
    dist.barrier()
    with all_ranks_agree():
        assert err is not None, "no error for parameters without a gradient"
        assert "'b.weight'" in err and "'b.bias'" in err and "'c.weight'" in err, err
        assert "'a.weight'" not in err and "'trunk.weight'" not in err, err
        assert "find_unused_parameters=True" in err and f"rank {rank}" in err and "step 0" in err, err


@pytest.mark.mpi(min_size=2)
def test_ddp_usable_after_a_caught_unused_parameter_error():
    rank, n = world()
    dg.manual_seed(1)
    ref = Branchy()
    dg.manual_seed(1)
    model = Branchy()
    ddp = DDP(model, **SMALL_BUCKETS)
    use = dict(use_b=True, use_c=True)
    x, y = branchy_data(4, seed=rank)
    with pytest.raises(RuntimeError, match="received no gradient"):
        F.cross_entropy(ddp(x, use_b=False), y).backward()
    for step in range(3):
        layout = [nm for b in ddp.bucket_names() for nm in b]
        ok = sorted(layout) == sorted(nm for nm, _ in model.named_parameters())
        with all_ranks_agree():
            assert ok, f"before step {step + 1}: parameters in several buckets: {ddp.bucket_names()}"
        batches = [branchy_data(4, seed=10 * step + r) for r in range(n)]
        want = reference_branchy_grads(ref, batches, [use] * n)
        model.zero_grad()
        F.cross_entropy(ddp(batches[rank][0], **use), batches[rank][1]).backward()
        got = grads(model)
        with all_ranks_agree():
            assert_close(got, want, TOL[dg.float64], f"step {step + 1}")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("last_use", [pytest.param("rank0", id="b-in-last-microbatch-on-rank0-only"),
                                      pytest.param("none", id="b-in-no-last-microbatch")])
def test_find_unused_with_no_sync_counts_accumulated_microbatches(last_use):
    rank, n = world()
    dg.manual_seed(2)
    ref = Branchy()
    dg.manual_seed(2)
    model = Branchy()
    ddp = DDP(model, find_unused_parameters=True, **SMALL_BUCKETS)
    M = 2
    data = [[branchy_data(3, seed=10 * r + i) for i in range(M)] for r in range(n)]
    uses = [[dict(use_b=True), dict(use_b=last_use == "rank0" and r == 0)] for r in range(n)]
    want = {k: v for k, v in reference_microbatch_grads(ref, data, uses).items() if not k.startswith("c.")}
    model.zero_grad()
    for i in range(M):
        with ddp.no_sync() if i < M - 1 else contextlib.nullcontext():
            x, y = data[rank][i]
            (F.cross_entropy(ddp(x, **uses[rank][i]), y) / M).backward()
    got = grads(model)
    b_everywhere = everyone(got["b.weight"])
    with all_ranks_agree():
        for r in range(1, n):
            assert np.array_equal(b_everywhere[r], b_everywhere[0]), f"b.weight.grad differs on rank {r}"
        assert_close({k: got[k] for k in want}, want, TOL[dg.float64], "accumulated")


# ------------------------------------------------------------ mixed dtypes
@pytest.mark.mpi(min_size=2)
def test_parameters_of_two_dtypes_go_to_separate_buckets():
    rank, n = world()

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2, dtype=dg.float64)
            self.b = nn.Linear(3, 2, dtype=dg.float32)

        def forward(self, x):
            return self.a(x).sum() + self.b(x.float()).double().sum() * 0.5

    dg.manual_seed(0)
    ref = Mixed()
    dg.manual_seed(rank)
    model = Mixed()
    ddp = DDP(model)  # default caps: only the dtype change splits the buckets
    xs = [dg.tensor(np.random.default_rng(r).standard_normal((4, 3))) for r in range(n)]
    ref.zero_grad()
    (sum(ref(x) for x in xs) / n).backward()
    ddp(xs[rank]).backward()
    layout = ddp.bucket_names()
    with all_ranks_agree():
        assert sorted(map(sorted, layout)) == [["a.bias", "a.weight"], ["b.bias", "b.weight"]], layout
        for nm, p in model.named_parameters():
            assert p.grad.dtype == p.dtype, nm
        assert_close(grads(model), grads(ref), TOL[dg.float32], "mixed")


class _SlowOnRankZero(dg.autograd.Function):
    """Identity whose backward dawdles on rank 0, so ranks reach the end of backward
    at different times while buckets are still in flight."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        if dist.get_rank() == 0:
            import time

            time.sleep(0.05)
        return g


@pytest.mark.mpi(min_size=2)
def test_ranks_finishing_backward_at_different_times_do_not_deadlock():
    # Regression: a rank that finished its graph walk early once switched to blocking
    # all-reduces while the others still used non-blocking ones, which never match in MPI.
    world()
    dg.manual_seed(0)
    layers = [nn.Linear(32, 32) for _ in range(6)]
    ddp = dist.DistributedDataParallel(nn.Sequential(*layers), bucket_cap_mb=0.004,
                                       first_bucket_cap_mb=0.004)
    x = dg.randn(4, 32)
    for _ in range(4):
        h = x
        for layer in layers:
            h = _SlowOnRankZero.apply(layer(h).tanh())
        out = ddp.module[0].weight.sum() * 0 + h.sum()  # every parameter takes part
        ddp.zero_grad()
        out.backward()
    mine = np.concatenate([arr(p.grad).ravel() for p in ddp.parameters()])
    with all_ranks_agree():
        assert len(ddp.bucket_names()) >= 5
    theirs = everyone(mine)
    with all_ranks_agree():
        for other in theirs:
            np.testing.assert_array_equal(other, mine)


# -------------------------------------------------------------- communication hooks
def _hooked_grads(hook, state=None, steps=2, caps=SMALL_BUCKETS, dtype=dg.float64):
    """Per-rank gradients of DDP with ``hook`` registered, and of one process on the
    whole batch (rank 0's reference), for ``steps`` steps of SGD."""
    rank, size = world()
    ref = build("mlp", dtype)
    model = build("mlp", dtype)
    ddp = DDP(model, **caps)
    if hook is not None:
        ddp.register_comm_hook(state, hook)
    opt, opt_ref = dg.optim.SGD(model.parameters(), lr=0.1), dg.optim.SGD(ref.parameters(), lr=0.1)
    out = []
    for step in range(steps):
        batch = make_batch("mlp", dtype, 4 * size, step)
        opt.zero_grad()
        loss_fn("mlp", ddp, rows(batch, 4 * rank, 4 * rank + 4)).backward()
        opt_ref.zero_grad()
        loss_fn("mlp", ref, batch).backward()
        out.append((grads(model), grads(ref)))
        opt.step()
        opt_ref.step()
    return out, model


@pytest.mark.mpi(min_size=2)
def test_allreduce_hook_equals_the_builtin_reduction():
    from distgrad.distributed.algorithms.ddp_comm_hooks import default_hooks

    out, model = _hooked_grads(default_hooks.allreduce_hook)
    with all_ranks_agree():
        for step, (got, want) in enumerate(out):
            assert_close(got, want, TOL[dg.float64], f"step {step}")
    assert_identical_across_ranks(model)


@pytest.mark.mpi(min_size=2)
def test_fp16_compress_hook_rounds_the_mean_to_float16():
    """The bucket is divided by the world size, cast to float16, summed in float16 (by
    MPI, with an op of distgrad's own) and cast back: the gradients equal the mean
    within float16 rounding, not exactly, and are identical on every rank."""
    from distgrad.distributed.algorithms.ddp_comm_hooks import default_hooks

    out, model = _hooked_grads(default_hooks.fp16_compress_hook, steps=1)
    got, want = out[0]
    with all_ranks_agree():
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=2e-3, atol=2e-4, err_msg=k)
        assert any(not np.array_equal(got[k], want[k]) for k in want), "no float16 rounding happened"
        for k in got:
            assert np.array_equal(got[k].astype(np.float16).astype(np.float64), got[k]), \
                f"{k}: not a float16 value"
    assert_identical_across_ranks(model)


@pytest.mark.mpi(min_size=2)
def test_bf16_compress_hook_and_wrapper_round_to_bfloat16():
    """bf16_compress_hook: the mean within bfloat16 rounding, every value a bfloat16 one,
    identical on every rank; fp16_compress_wrapper(allreduce_hook): within float16."""
    import ml_dtypes

    from distgrad.distributed.algorithms.ddp_comm_hooks import default_hooks

    out, model = _hooked_grads(default_hooks.bf16_compress_hook, steps=1)
    got, want = out[0]
    wrapped, _ = _hooked_grads(default_hooks.fp16_compress_wrapper(default_hooks.allreduce_hook), steps=1)
    got16 = wrapped[0][0]
    with all_ranks_agree():
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=2e-2, atol=2e-3, err_msg=k)
            assert np.array_equal(got[k].astype(ml_dtypes.bfloat16).astype(np.float64), got[k]), k
            np.testing.assert_allclose(got16[k], want[k], rtol=2e-3, atol=2e-4, err_msg=k)
        assert any(not np.array_equal(got[k], want[k]) for k in want)
    assert_identical_across_ranks(model)


@pytest.mark.mpi(min_size=2)
def test_custom_hook_sees_unaveraged_buckets_and_its_result_is_used():
    """A hook gets each bucket as this rank's raw gradients (not yet divided by the world
    size), in bucket order, with GradBucket's accessors; what its Future holds becomes
    the gradients (here: the sum over ranks, twice the builtin mean on 2 ranks)."""
    from distgrad.futures import Future

    rank, size = world()
    seen = []

    def summing_hook(state, bucket):
        state.append((bucket.index(), bucket.is_last(), [tuple(g.shape) for g in bucket.gradients()],
                      [tuple(p.shape) for p in bucket.parameters()], bucket.buffer().numel()))
        buf = bucket.buffer()
        dist.all_reduce(buf)            # on the hook's own communicator
        fut = Future()
        fut.set_result(buf)
        return fut

    out, _ = _hooked_grads(summing_hook, state=seen, steps=1)
    got, want = out[0]
    with all_ranks_agree():
        for k in want:
            np.testing.assert_allclose(got[k], want[k] * size, **TOL[dg.float64], err_msg=k)
        indices = [s[0] for s in seen]
        assert indices == sorted(indices) and indices[0] == 0, indices
        assert [s[1] for s in seen] == [False] * (len(seen) - 1) + [True]
        for _, _, gshapes, pshapes, n in seen:
            assert gshapes == pshapes and n == sum(int(np.prod(s)) for s in pshapes)


@pytest.mark.mpi(min_size=2)
def test_hook_errors_are_reported_on_every_rank():
    def bad_hook(state, bucket):
        fut = dg.futures.Future()
        fut.set_result(dg.zeros(3))    # not the bucket's size
        return fut

    rank, size = world()
    model = build("mlp", dg.float64)
    ddp = DDP(model, **SMALL_BUCKETS)
    ddp.register_comm_hook(None, bad_hook)
    err = None
    try:
        loss_fn("mlp", ddp, make_batch("mlp", dg.float64, 4, 0)).backward()
    except RuntimeError as e:
        err = str(e)
    with all_ranks_agree():
        assert err is not None and "Future of the reduced bucket" in err, err
    with all_ranks_agree():
        with pytest.raises(RuntimeError, match="can only be called once"):
            ddp.register_comm_hook(None, bad_hook)
        with pytest.raises(TypeError, match="must be callable"):
            DDP.register_comm_hook(ddp, None, 3)


@pytest.mark.mpi(min_size=2)
def test_half_precision_all_reduce_ops():
    """float16 all-reduce with every op, through MPI's own op of distgrad's."""
    rank, size = world()
    base = np.array([0.5, -1.25, 3.0, 1e-3], np.float16)
    results = {}
    for op in (dist.ReduceOp.SUM, dist.ReduceOp.MAX, dist.ReduceOp.MIN, dist.ReduceOp.PRODUCT):
        t = dg.tensor(base * (rank + 1), dtype=dg.float16)
        dist.all_reduce(t, op=op)
        results[op] = t.numpy()
    stack = np.stack([base * (r + 1) for r in range(size)]).astype(np.float32)
    with all_ranks_agree():
        assert results[dist.ReduceOp.MAX].dtype == np.float16
        np.testing.assert_array_equal(results[dist.ReduceOp.MAX], stack.max(0).astype(np.float16))
        np.testing.assert_array_equal(results[dist.ReduceOp.MIN], stack.min(0).astype(np.float16))
        np.testing.assert_allclose(results[dist.ReduceOp.SUM], stack.sum(0), rtol=2e-3)
        np.testing.assert_allclose(results[dist.ReduceOp.PRODUCT], stack.prod(0), rtol=4e-3, atol=1e-7)


# ------------------------------------------------- uneven reduce-scatter, ZeRO-2
@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_reduce_scatter_with_uneven_counts(dtype):
    """``ireduce_scatter(counts=...)``: rank r gets the sum of the r-th segment, of
    counts[r] elements (one of them empty); polled to completion like the reducer does."""
    from distgrad.distributed import group as _group

    rank, n = world()
    counts = [3 * r + 1 for r in range(n)]
    counts[1] = 0
    total = sum(counts)
    base = np.arange(total, dtype=np.float64) / 8
    send = (base * (rank + 1)).astype(dtype)
    req = _group.default_comm().ireduce_scatter(send, "sum", counts=counts)
    polls = 1   # test() calls that drove it to the end, as the reducer drives its buckets
    while not req.test():
        polls += 1
    got = req.result
    start = sum(counts[:rank])
    want = (base * sum(r + 1 for r in range(n)))[start:start + counts[rank]]
    bad = None
    try:
        _group.default_comm().ireduce_scatter(send, "sum", counts=[1] * n).wait()
    except ValueError as e:
        bad = str(e)
    with all_ranks_agree():
        assert got.dtype == dtype and got.shape == (counts[rank],)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-3 if dtype == np.float16 else 1e-12)
        assert bad is not None and "counts" in bad and f"{total} elements" in bad, bad


def _zero2(model, caps, **ddp_kw):
    from distgrad.distributed.optim import ZeroRedundancyOptimizer, shard_gradients

    ddp = DDP(model, **caps, **ddp_kw)
    opt = ZeroRedundancyOptimizer(model.parameters(), dg.optim.SGD, lr=0.2)
    shard_gradients(ddp, opt)
    return ddp, opt


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("as_view", [False, True], ids=["copied-grads", "gradient_as_bucket_view"])
def test_stage_2_with_unused_parameters_and_no_sync(as_view):
    """Sharded gradients with find_unused_parameters (``b`` unused on rank 1, ``c``
    everywhere) and a no_sync microbatch first: each rank's own parameters get the
    averaged gradient of one process on the whole batch, the others' ``.grad`` is
    None, no bucket memory is left, and training keeps every rank identical."""
    rank, n = world()
    dg.manual_seed(7)
    ref = Branchy()
    dg.manual_seed(7)
    model = Branchy()
    ddp, opt = _zero2(model, SMALL_BUCKETS, find_unused_parameters=True, gradient_as_bucket_view=as_view)
    ref_opt = dg.optim.SGD(ref.parameters(), lr=0.2)
    M = 2
    for step in range(3):
        data = [[branchy_data(3, seed=100 * step + 10 * r + i) for i in range(M)] for r in range(n)]
        uses = [[dict(use_b=r != 1)] * M for r in range(n)]
        want = reference_microbatch_grads(ref, data, uses)
        opt.zero_grad()
        for i in range(M):
            with ddp.no_sync() if i < M - 1 else contextlib.nullcontext():
                x, y = data[rank][i]
                (F.cross_entropy(ddp(x, **uses[rank][i]), y) / M).backward()
        got = grads(model)
        held = sum(0 if b.buffer is None else b.buffer.nbytes for b in ddp.reducer.buckets)
        mine = {name for name, p in model.named_parameters() if opt.owner(p) == rank}
        with all_ranks_agree():
            assert held == 0, f"step {step}: the buckets still hold {held} bytes after backward"
            for name, g in got.items():
                if name in mine and not name.startswith("c."):
                    assert g is not None, f"step {step}: {name} is this rank's and has no gradient"
                    np.testing.assert_allclose(g, want[name], rtol=1e-12, atol=1e-12, err_msg=f"step {step}: {name}")
                else:
                    assert g is None, f"step {step}: {name} should have no .grad on rank {rank}"
        opt.step()
        ref_opt.step()
    assert_identical_across_ranks(model)
    with all_ranks_agree():
        for name, p in model.named_parameters():
            np.testing.assert_allclose(arr(p), arr(dict(ref.named_parameters())[name]), rtol=1e-12, atol=1e-12,
                                       err_msg=name)


@pytest.mark.mpi(min_size=2)
def test_stage_2_refuses_a_comm_hook():
    from distgrad.distributed.algorithms.ddp_comm_hooks import default_hooks

    rank, n = world()
    dg.manual_seed(0)
    ddp, _ = _zero2(MLP(dg.float64), SMALL_BUCKETS)
    err = None
    try:
        ddp.register_comm_hook(None, default_hooks.allreduce_hook)
    except RuntimeError as e:
        err = str(e)
    with all_ranks_agree():
        assert err is not None and "sharded" in err and f"rank {rank}" in err, err


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("kind, ckpt", [
    pytest.param("mlp", "ckpt", id="mlp-checkpointed"),
    pytest.param("gpt", "reentrant", id="gpt-reentrant-checkpointed-blocks"),
    pytest.param("gpt_tied", "ckpt", id="gpt-tied-embedding-checkpointed"),
])
def test_stage_2_with_activation_checkpointing_equals_one_process(kind, ckpt):
    """Sharded gradients (ZeRO stage 2) under gradient checkpointing, reentrant or
    not, a tied embedding included: each rank's own parameters get the gradients of
    one process on the whole batch, with two microbatches (the first in no_sync)."""
    rank, n = world()
    M, k = 2, 2
    ref = build(kind, dg.float64, "none", seed=3)
    model = build(kind, dg.float64, ckpt, seed=3)
    ddp, opt = _zero2(model, SMALL_BUCKETS)
    ref_opt = dg.optim.SGD(ref.parameters(), lr=0.2)
    for step in range(2):
        batch = make_batch(kind, dg.float64, n * M * k, seed=10 + step)
        ref.zero_grad()
        loss_fn(kind, ref, batch).backward()
        want = grads(ref)
        opt.zero_grad()
        mine = rows(batch, rank * M * k, (rank + 1) * M * k)
        for i in range(M):
            with ddp.no_sync() if i < M - 1 else contextlib.nullcontext():
                (loss_fn(kind, ddp, rows(mine, i * k, (i + 1) * k)) / M).backward()
        got = grads(model)
        owned = {name for name, p in model.named_parameters() if opt.owner(p) == rank}
        with all_ranks_agree():
            assert owned and len(owned) < len(got), owned
            assert_close({k_: got[k_] for k_ in owned}, {k_: want[k_] for k_ in owned}, TOL[dg.float64],
                         f"step {step}")
            assert all(got[k_] is None for k_ in got if k_ not in owned)
        opt.step()
        ref_opt.step()
    assert_identical_across_ranks(model)
    with all_ranks_agree():
        assert_close(params(model), params(ref), TOL[dg.float64], "parameters after 2 steps")
