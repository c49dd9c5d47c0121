"""``nn.MultiheadAttention`` and ``F.multi_head_attention_forward`` against PyTorch with
the same weights (PyTorch's state dict loaded through numpy): outputs, attention weights
and the gradients of the inputs and of every parameter, in float64 and float32, over
the layouts, masks and options; plus initialization, dropout and the error messages."""
import numpy as np
import pytest

import distgrad as dg
import distgrad.nn.functional as F
from distgrad import nn

TOL = {"float64": {"rtol": 1e-10, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-5}}
E, H = 8, 2


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(4321)


def arr(t):
    return t.detach().numpy()


def close(a, b, dtype):
    """float64 to 1e-10; float32 to 1e-5 relative, the absolute part scaled by the
    largest magnitude (sums of float32 products lose digits on their small terms)."""
    a, b = arr(a), arr(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    tol = dict(TOL[dtype])
    if dtype == "float32" and b.size:
        tol["atol"] *= max(1.0, float(np.nanmax(np.abs(b), initial=0.0)))
    np.testing.assert_allclose(a, b, **tol)


def make_pair(torch, dtype="float64", **kw):
    """A PyTorch module with random parameters (nonzero biases) and its distgrad twin
    loaded from PyTorch's state dict; both in eval mode."""
    tm = torch.nn.MultiheadAttention(E, H, **kw).to(getattr(torch, dtype))
    with torch.no_grad():
        for p in tm.parameters():
            p.copy_(0.5 * torch.randn(p.shape, dtype=p.dtype))
    dm = nn.MultiheadAttention(E, H, dtype=getattr(dg, dtype), **kw)
    sd = {k: dg.tensor(v.detach().numpy().copy()) for k, v in tm.state_dict().items()}
    result = dm.load_state_dict(sd)
    assert not result.missing_keys and not result.unexpected_keys
    return dm.eval(), tm.eval()


def inputs(rng, L, S, N, batch_first=False, kdim=E, vdim=E, batched=True):
    def shape(T, D):
        if not batched:
            return (T, D)
        return (N, T, D) if batch_first else (T, N, D)
    return (rng.standard_normal(shape(L, E)), rng.standard_normal(shape(S, kdim)),
            rng.standard_normal(shape(S, vdim)))


def check(torch, dm, tm, rng, q, k=None, v=None, *, dtype="float64", masks=None, **kw):
    """Same output, weights and gradients. ``k``/``v`` of None reuse the query tensor
    (self-attention), ``v`` of None reuses the key tensor."""
    masks = masks or {}

    def build(lib, requires):
        cast = getattr(lib, dtype)
        qt = lib.tensor(q, dtype=cast, requires_grad=requires)
        kt = qt if k is None else lib.tensor(k, dtype=cast, requires_grad=requires)
        vt = kt if v is None else lib.tensor(v, dtype=cast, requires_grad=requires)
        mk = {}
        for name, m in masks.items():
            mk[name] = lib.tensor(m) if m.dtype == bool else lib.tensor(m, dtype=cast)
        return (qt, kt, vt), mk

    (dq, dk, dv), dmasks = build(dg, True)
    (tq, tk, tv), tmasks = build(torch, True)
    do, dw = dm(dq, dk, dv, **dmasks, **kw)
    to, tw = tm(tq, tk, tv, **tmasks, **kw)
    close(do, to, dtype)
    assert (dw is None) == (tw is None)
    g = rng.standard_normal(tuple(to.shape))
    dloss = (do * dg.tensor(g, dtype=do.dtype)).sum()
    tloss = (to * torch.tensor(g, dtype=to.dtype)).sum()
    if tw is not None:
        close(dw, tw, dtype)
        gw = rng.standard_normal(tuple(tw.shape))
        dloss = dloss + (dw * dg.tensor(gw, dtype=dw.dtype)).sum()
        tloss = tloss + (tw * torch.tensor(gw, dtype=tw.dtype)).sum()
    dloss.backward()
    tloss.backward()
    for a, b in ((dq, tq), (dk, tk), (dv, tv)):
        close(a.grad, b.grad, dtype)
    ours, theirs = dict(dm.named_parameters()), dict(tm.named_parameters())
    assert list(ours) == list(theirs)
    for n, p in ours.items():
        assert p.grad is not None and theirs[n].grad is not None, n
        close(p.grad, theirs[n].grad, dtype)
    return do, dw


def bool_mask(rng, shape):
    """Random True (= masked) entries with the first key of each row always visible."""
    m = rng.random(shape) < 0.4
    m[..., 0] = False
    return m


DTYPES = ["float64", "float32"]


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_self_attention(torch, rng, dtype, batch_first, bias):
    dm, tm = make_pair(torch, dtype, batch_first=batch_first, bias=bias)
    q, _, _ = inputs(rng, 5, 5, 3, batch_first)
    check(torch, dm, tm, rng, q, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("same_kv", [True, False])
def test_cross_attention_packed(torch, rng, dtype, batch_first, same_kv):
    dm, tm = make_pair(torch, dtype, batch_first=batch_first)
    q, k, v = inputs(rng, 4, 6, 2, batch_first)
    check(torch, dm, tm, rng, q, k, None if same_kv else v, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kdim,vdim", [(5, 7), (5, None), (None, 3)])
def test_cross_attention_kdim_vdim(torch, rng, dtype, batch_first, kdim, vdim):
    dm, tm = make_pair(torch, dtype, batch_first=batch_first, kdim=kdim, vdim=vdim)
    assert dm.in_proj_weight is None and dm.q_proj_weight is not None
    q, k, v = inputs(rng, 4, 6, 3, batch_first, kdim or E, vdim or E)
    check(torch, dm, tm, rng, q, k, v, dtype=dtype)
    check(torch, dm, tm, rng, q, k, v, dtype=dtype, need_weights=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched(torch, rng, dtype, batch_first):
    dm, tm = make_pair(torch, dtype, batch_first=batch_first, add_bias_kv=True)
    q, k, v = inputs(rng, 4, 6, None, batched=False)
    _, w = check(torch, dm, tm, rng, q, k, v, dtype=dtype)
    assert tuple(w.shape) == (4, 7)
    check(torch, dm, tm, rng, q, dtype=dtype, average_attn_weights=False)
    check(torch, dm, tm, rng, q, k, v, dtype=dtype, need_weights=False,
          masks={"key_padding_mask": bool_mask(rng, (6,)), "attn_mask": bool_mask(rng, (H, 4, 6))})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("kind", ["attn2d_bool", "attn2d_float", "attn3d_bool", "attn3d_float",
                                  "kpm_bool", "kpm_float", "both_bool", "both_float"])
def test_masks(torch, rng, dtype, need_weights, average, kind):
    L, S, N = 4, 6, 3
    dm, tm = make_pair(torch, dtype, batch_first=True)
    q, k, v = inputs(rng, L, S, N, True)
    masks = {}
    if kind.startswith(("attn2d", "both")):
        masks["attn_mask"] = bool_mask(rng, (L, S))
    if kind.startswith("attn3d"):
        masks["attn_mask"] = bool_mask(rng, (N * H, L, S))
    if kind.startswith(("kpm", "both")):
        masks["key_padding_mask"] = bool_mask(rng, (N, S))
    if kind.endswith("float"):
        masks = {n: np.where(m, -1e9 if i else -np.inf, 0.0) + rng.standard_normal(m.shape) * 0.5
                 for i, (n, m) in enumerate(masks.items())}
    _, w = check(torch, dm, tm, rng, q, k, v, dtype=dtype, masks=masks, need_weights=need_weights,
                 average_attn_weights=average)
    if need_weights:
        assert tuple(w.shape) == ((N, L, S) if average else (N, H, L, S))


def test_mismatched_mask_types_warn_like_torch(torch, rng):
    dm, tm = make_pair(torch)
    q, k, v = inputs(rng, 4, 6, 2)
    masks = {"key_padding_mask": bool_mask(rng, (2, 6)),
             "attn_mask": np.where(bool_mask(rng, (4, 6)), -np.inf, 0.0)}
    with pytest.warns(UserWarning, match="Support for mismatched key_padding_mask and attn_mask"):
        check(torch, dm, tm, rng, q, k, v, masks=masks)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("add_bias_kv", [False, True])
@pytest.mark.parametrize("add_zero_attn", [False, True])
@pytest.mark.parametrize("need_weights", [True, False])
def test_bias_kv_and_zero_attn(torch, rng, dtype, add_bias_kv, add_zero_attn, need_weights):
    L, S, N = 4, 5, 2
    dm, tm = make_pair(torch, dtype, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn)
    q, k, v = inputs(rng, L, S, N)
    masks = {"attn_mask": bool_mask(rng, (L, S)), "key_padding_mask": bool_mask(rng, (N, S))}
    _, w = check(torch, dm, tm, rng, q, k, v, dtype=dtype, masks=masks, need_weights=need_weights)
    if need_weights:
        assert tuple(w.shape) == (N, L, S + add_bias_kv + add_zero_attn)
    check(torch, dm, tm, rng, q, dtype=dtype, need_weights=need_weights)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("with_kpm", [False, True])
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_is_causal_with_attn_mask(torch, rng, dtype, need_weights, with_kpm, mask_kind):
    L, N = 5, 3
    dm, tm = make_pair(torch, dtype, batch_first=True)
    q, _, _ = inputs(rng, L, L, N, True)
    causal = np.triu(np.ones((L, L), dtype=bool), 1)
    masks = {"attn_mask": causal if mask_kind == "bool" else np.where(causal, -np.inf, 0.0)}
    if with_kpm:
        kpm = bool_mask(rng, (N, L))
        masks["key_padding_mask"] = kpm if mask_kind == "bool" else np.where(kpm, -np.inf, 0.0)
    out, _ = check(torch, dm, tm, rng, q, dtype=dtype, masks=masks, need_weights=need_weights,
                   is_causal=True)
    # the hint means the same as the mask it stands for
    ref, _ = dm(*(dg.tensor(q, dtype=getattr(dg, dtype)),) * 3, need_weights=need_weights,
                **{n: dg.tensor(m) if m.dtype == bool else dg.tensor(m, dtype=getattr(dg, dtype))
                   for n, m in masks.items()})
    close(out, ref, dtype)


def test_functional_matches_torch(torch, rng):
    dm, tm = make_pair(torch, kdim=5, vdim=7, add_bias_kv=True)
    q, k, v = inputs(rng, 4, 6, 2, kdim=5, vdim=7)
    args = lambda m, lib: (lib.tensor(q), lib.tensor(k), lib.tensor(v), E, H, None, m.in_proj_bias,
                           m.bias_k, m.bias_v, True, 0.0, m.out_proj.weight, m.out_proj.bias)
    kw = lambda m: {"training": False, "use_separate_proj_weight": True, "q_proj_weight": m.q_proj_weight,
                    "k_proj_weight": m.k_proj_weight, "v_proj_weight": m.v_proj_weight,
                    "average_attn_weights": False}
    do, dw = F.multi_head_attention_forward(*args(dm, dg), **kw(dm))
    to, tw = torch.nn.functional.multi_head_attention_forward(*args(tm, torch), **kw(tm))
    close(do, to, "float64")
    close(dw, tw, "float64")


def test_torch_weights_round_trip(torch, rng):
    dm, tm = make_pair(torch, add_bias_kv=True, kdim=3)
    assert list(dm.state_dict()) == list(tm.state_dict())
    tm2 = torch.nn.MultiheadAttention(E, H, add_bias_kv=True, kdim=3).double()
    tm2.load_state_dict({k: torch.from_numpy(arr(v).copy()) for k, v in dm.state_dict().items()})
    for (n, a), (_, b) in zip(tm.state_dict().items(), tm2.state_dict().items()):
        assert torch.equal(a, b), n
    assert repr(dm) == repr(tm)


# ------------------------------------------------------- init and dropout
@pytest.mark.parametrize("kw", [{}, {"kdim": 4, "vdim": 6}, {"bias": False}, {"add_bias_kv": True}])
def test_parameter_names_shapes_and_init(torch, kw):
    dm = nn.MultiheadAttention(16, 4, **kw)
    tm = torch.nn.MultiheadAttention(16, 4, **kw)
    assert [(n, tuple(p.shape)) for n, p in dm.named_parameters()] == \
           [(n, tuple(p.shape)) for n, p in tm.named_parameters()]
    assert dm._qkv_same_embed_dim == tm._qkv_same_embed_dim and dm.head_dim == 4
    for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
        w = getattr(dm, name)
        if w is not None:
            bound = np.sqrt(6.0 / sum(w.shape))
            assert np.abs(arr(w)).max() <= bound and np.abs(arr(w)).max() > 0.5 * bound
    if dm.in_proj_bias is not None:
        assert not arr(dm.in_proj_bias).any() and not arr(dm.out_proj.bias).any()
    else:
        assert dm.out_proj.bias is None
    bound = 1 / np.sqrt(16)
    assert np.abs(arr(dm.out_proj.weight)).max() <= bound
    if kw.get("add_bias_kv"):
        assert arr(dm.bias_k).any() and arr(dm.bias_v).any()
    else:
        assert dm.bias_k is None and dm.bias_v is None


def test_dtype_argument():
    m = nn.MultiheadAttention(8, 2, dtype=dg.float64, kdim=3)
    assert all(p.dtype == dg.float64 for p in m.parameters())
    out, w = m(dg.randn(4, 2, 8, dtype=dg.float64), dg.randn(5, 2, 3, dtype=dg.float64),
               dg.randn(5, 2, 8, dtype=dg.float64))
    assert out.dtype == dg.float64 and tuple(out.shape) == (4, 2, 8) and tuple(w.shape) == (2, 4, 5)


@pytest.mark.parametrize("need_weights", [True, False])
def test_dropout_only_in_training(need_weights):
    dg.manual_seed(0)
    m = nn.MultiheadAttention(8, 2, dropout=0.5, batch_first=True)
    ref = nn.MultiheadAttention(8, 2, dropout=0.0, batch_first=True)
    ref.load_state_dict(m.state_dict())
    x = dg.randn(3, 6, 8)
    m.train()
    a, _ = m(x, x, x, need_weights=need_weights)
    b, _ = m(x, x, x, need_weights=need_weights)
    expected, _ = ref(x, x, x, need_weights=need_weights)
    assert not np.allclose(arr(a), arr(b))
    assert not np.allclose(arr(a), arr(expected))
    m.eval()
    c, _ = m(x, x, x, need_weights=need_weights)
    d, _ = m(x, x, x, need_weights=need_weights)
    np.testing.assert_array_equal(arr(c), arr(d))
    np.testing.assert_allclose(arr(c), arr(expected), rtol=1e-6, atol=1e-6)


def test_dropout_training_gradients_flow():
    dg.manual_seed(1)
    m = nn.MultiheadAttention(8, 2, dropout=0.3)
    x = dg.randn(5, 2, 8, requires_grad=True)
    out, w = m(x, x, x)
    (out.sum() + w.sum()).backward()
    assert x.grad is not None and all(p.grad is not None for p in m.parameters())


# ----------------------------------------------------------------- errors
def _raises_like_torch(torch, build):
    """``build(lib)`` raises the same exception type and message in both libraries."""
    with pytest.raises(Exception) as theirs:
        build(torch)
    with pytest.raises(type(theirs.value)) as ours:
        build(dg)
    assert str(ours.value).replace("distgrad.Size", "torch.Size") == str(theirs.value)


def _call(lib, *, L=4, S=6, N=2, qdim=None, kshape=None, vshape=None, kw=None, mod_kw=None, **fkw):
    nnmod = lib.nn.MultiheadAttention(E, H, **(mod_kw or {}))
    q = lib.randn(*(qdim or (L, N, E)))
    k = lib.randn(*(kshape or (S, N, E)))
    v = lib.randn(*(vshape or (S, N, E)))
    return nnmod(q, k, v, **fkw)


@pytest.mark.parametrize("case", [
    "query_4d", "key_2d_batched", "key_3d_unbatched", "kpm_dims", "kpm_unbatched_dims",
    "attn_mask_1d", "attn_mask_2d_shape", "attn_mask_3d_shape", "attn_mask_unbatched_3d",
    "int_mask", "is_causal_without_mask", "embed_dim", "key_value_shape", "kpm_shape",
    "kpm_len", "separate_kv_mismatch"])
def test_errors_match_torch(torch, case):
    def build(lib):
        b = lambda *s: lib.zeros(*s, dtype=lib.bool)
        return {
            "query_4d": lambda: _call(lib, qdim=(1, 4, 2, E)),
            "key_2d_batched": lambda: _call(lib, kshape=(6, E)),
            "key_3d_unbatched": lambda: _call(lib, qdim=(4, E)),
            "kpm_dims": lambda: _call(lib, key_padding_mask=b(2, 6, 1)),
            "kpm_unbatched_dims": lambda: _call(lib, qdim=(4, E), kshape=(6, E), vshape=(6, E),
                                                key_padding_mask=b(1, 6)),
            "attn_mask_1d": lambda: _call(lib, attn_mask=b(6)),
            "attn_mask_2d_shape": lambda: _call(lib, attn_mask=b(4, 5)),
            "attn_mask_3d_shape": lambda: _call(lib, attn_mask=b(2, 4, 6)),
            "attn_mask_unbatched_3d": lambda: _call(lib, qdim=(4, E), kshape=(6, E), vshape=(6, E),
                                                    attn_mask=b(3, 4, 6)),
            "int_mask": lambda: _call(lib, attn_mask=lib.zeros(4, 6, dtype=lib.int64)),
            "is_causal_without_mask": lambda: _call(lib, is_causal=True),
            "embed_dim": lambda: _call(lib, qdim=(4, 2, E + 2)),
            "key_value_shape": lambda: _call(lib, vshape=(5, 2, E)),
            "kpm_shape": lambda: _call(lib, key_padding_mask=b(3, 6)),
            "kpm_len": lambda: _call(lib, key_padding_mask=b(2, 5), mod_kw={"add_zero_attn": True}),
            "separate_kv_mismatch": lambda: _call(lib, kshape=(6, 2, 3), vshape=(5, 2, 3),
                                                  mod_kw={"kdim": 3, "vdim": 3}),
        }[case]()
    _raises_like_torch(torch, build)


@pytest.mark.parametrize("args", [(0, 2), (8, 0), (8, 3)])
def test_constructor_errors_match_torch(torch, args):
    _raises_like_torch(torch, lambda lib: lib.nn.MultiheadAttention(*args))
