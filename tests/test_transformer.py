"""``nn.Transformer``, ``TransformerEncoder``/``Decoder`` and their layers against PyTorch
with the same weights (PyTorch's state dict loaded through numpy), in float64: outputs
and the gradients of the inputs and of every parameter, over the layouts, the
``norm_first`` variants, the activations, every mask kind, train and eval mode; the
state-dict keys, initialization, the causal-mask helper, a few Adam steps, the
nested-tensor zeros of PyTorch's inference path, the error messages, and a gradcheck."""
import warnings

import numpy as np
import pytest

import distgrad as dg
import distgrad.nn.functional as F
from distgrad import nn

TOL = {"rtol": 1e-10, "atol": 1e-10}
D, H, FF = 8, 2, 16


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def arr(t):
    return t.detach().numpy()


def close(a, b):
    a, b = arr(a), arr(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, **TOL)


def load_from(dm, tm, rng=None):
    """Give ``tm`` random parameters (nonzero biases, non-unit norms) when ``rng`` is
    set, then load its state dict into ``dm``; the keys must match exactly."""
    if rng is not None:
        import torch
        with torch.no_grad():
            for name, p in tm.named_parameters():
                base = 1.0 if name.split(".")[-2].startswith("norm") and name.endswith("weight") else 0.0
                p.copy_(torch.tensor(base + 0.3 * rng.standard_normal(tuple(p.shape))))
    assert list(dm.state_dict()) == list(tm.state_dict())
    sd = {k: dg.tensor(v.detach().numpy().copy()) for k, v in tm.state_dict().items()}
    result = dm.load_state_dict(sd)
    assert not result.missing_keys and not result.unexpected_keys


def pair(torch, cls_name, rng, *args, **kw):
    """The distgrad and PyTorch modules of one class with the same (random) weights."""
    tkw = dict(kw)
    dkw = dict(kw)
    if callable(kw.get("activation")):  # a (distgrad, torch) pair of callables
        dkw["activation"], tkw["activation"] = kw["activation"]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tm = getattr(torch.nn, cls_name)(*args, **tkw).double()
        dm = getattr(nn, cls_name)(*args, dtype=dg.float64, **dkw)
    load_from(dm, tm, rng)
    return dm, tm


def to_lib(lib, x, requires_grad=False):
    if x is None or isinstance(x, (bool, int, float)):
        return x
    if x.dtype == bool:
        return lib.tensor(x)
    return lib.tensor(x, dtype=lib.float64, requires_grad=requires_grad)


def check(torch, dm, tm, rng, inputs, masks=None, train=False, grad=True, **kw):
    """Same output (and, with ``grad``, the same gradients of the inputs and of every
    parameter) from both modules; returns distgrad's output."""
    masks = masks or {}
    dm.train(train)
    tm.train(train)
    d_in = [to_lib(dg, x, grad) for x in inputs]
    t_in = [to_lib(torch, x, grad) for x in inputs]
    d_masks = {k: to_lib(dg, v) for k, v in masks.items()}
    t_masks = {k: to_lib(torch, v) for k, v in masks.items()}
    if not grad:
        with dg.no_grad():
            do = dm(*d_in, **d_masks, **kw)
        with torch.no_grad():
            to = tm(*t_in, **t_masks, **kw)
        close(do, to)
        return do
    do = dm(*d_in, **d_masks, **kw)
    to = tm(*t_in, **t_masks, **kw)
    close(do, to)
    g = rng.standard_normal(tuple(to.shape))
    (do * dg.tensor(g)).sum().backward()
    (to * torch.tensor(g)).sum().backward()
    for a, b in zip(d_in, t_in):
        close(a.grad, b.grad)
    ours, theirs = dict(dm.named_parameters()), dict(tm.named_parameters())
    assert list(ours) == list(theirs)
    for n, p in ours.items():
        assert p.grad is not None and theirs[n].grad is not None, n
        close(p.grad, theirs[n].grad)
        p.grad = None
        theirs[n].grad = None
    return do


def bool_mask(rng, shape):
    """Random True (= masked) entries with the first key of each row always visible."""
    m = rng.random(shape) < 0.4
    m[..., 0] = False
    return m


def float_of(rng, m):
    """An additive float mask: -inf where ``m`` is True, small random values elsewhere."""
    return np.where(m, -np.inf, 0.3 * rng.standard_normal(m.shape))


def seq(rng, T, N, batch_first):
    if N is None:
        return rng.standard_normal((T, D))
    return rng.standard_normal((N, T, D) if batch_first else (T, N, D))


def causal(T):
    return np.triu(np.full((T, T), -np.inf), 1)


def self_masks(rng, kind, T, N, names):
    """Masks of one ``kind`` for self-attention over ``T`` positions; ``names`` are the
    (attention mask, key padding mask) argument names."""
    attn, kpm = names
    pad_shape = (T,) if N is None else (N, T)
    if kind == "none":
        return {}
    if kind == "attn_bool":
        return {attn: bool_mask(rng, (T, T))}
    if kind == "attn_float":
        return {attn: float_of(rng, bool_mask(rng, (T, T)))}
    if kind == "attn_3d":
        return {attn: bool_mask(rng, (H * (N or 1), T, T) if N else (H, T, T))}
    if kind == "kpm_bool":
        return {kpm: bool_mask(rng, pad_shape)}
    if kind == "kpm_float":
        return {kpm: float_of(rng, bool_mask(rng, pad_shape))}
    if kind == "both_bool":
        return {attn: bool_mask(rng, (T, T)), kpm: bool_mask(rng, pad_shape)}
    if kind == "both_float":
        return {attn: float_of(rng, bool_mask(rng, (T, T))), kpm: float_of(rng, bool_mask(rng, pad_shape))}
    if kind == "causal":
        return {attn: causal(T)}
    raise AssertionError(kind)


MASK_KINDS = ["none", "attn_bool", "attn_float", "attn_3d", "kpm_bool", "kpm_float", "both_bool",
              "both_float", "causal"]
ACTIVATIONS = ["relu", "gelu"]


# ---------------------------------------------------------------- layers
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("train", [False, True])
def test_encoder_layer(torch, rng, batch_first, norm_first, activation, train):
    dm, tm = pair(torch, "TransformerEncoderLayer", rng, D, H, FF, dropout=0.0, activation=activation,
                  batch_first=batch_first, norm_first=norm_first)
    T, N = 5, 3
    for kind in MASK_KINDS:
        masks = self_masks(rng, kind, T, N, ("src_mask", "src_key_padding_mask"))
        check(torch, dm, tm, rng, [seq(rng, T, N, batch_first)], masks, train=train,
              is_causal=kind == "causal")
    # unbatched input, with and without masks
    for kind in ["none", "attn_3d", "both_bool"]:
        masks = self_masks(rng, kind, T, None, ("src_mask", "src_key_padding_mask"))
        out = check(torch, dm, tm, rng, [seq(rng, T, None, batch_first)], masks, train=train)
        assert tuple(out.shape) == (T, D)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("train", [False, True])
def test_decoder_layer(torch, rng, batch_first, norm_first, activation, train):
    dm, tm = pair(torch, "TransformerDecoderLayer", rng, D, H, FF, dropout=0.0, activation=activation,
                  batch_first=batch_first, norm_first=norm_first)
    T, S, N = 4, 6, 2
    for kind in MASK_KINDS:
        masks = self_masks(rng, kind, T, N, ("tgt_mask", "tgt_key_padding_mask"))
        if kind.startswith(("attn", "both")):
            masks["memory_mask"] = bool_mask(rng, (T, S))
        if kind.startswith(("kpm", "both")):
            m = bool_mask(rng, (N, S))
            masks["memory_key_padding_mask"] = float_of(rng, m) if kind.endswith("float") else m
        if kind.endswith("float") and "memory_mask" in masks:
            masks["memory_mask"] = float_of(rng, masks["memory_mask"])
        check(torch, dm, tm, rng, [seq(rng, T, N, batch_first), seq(rng, S, N, batch_first)], masks,
              train=train, tgt_is_causal=kind == "causal")
    out = check(torch, dm, tm, rng, [seq(rng, T, None, batch_first), seq(rng, S, None, batch_first)],
                {"tgt_mask": causal(T), "memory_key_padding_mask": bool_mask(rng, (S,))}, train=train)
    assert tuple(out.shape) == (T, D)


def test_memory_is_causal_and_wrong_hints(torch, rng):
    """``is_causal=True`` with a mask that is not causal: PyTorch drops the mask and
    applies the causal one (no padding mask, no weights); distgrad does the same."""
    dm, tm = pair(torch, "TransformerDecoderLayer", rng, D, H, FF, dropout=0.0)
    T = 5
    x, mem = seq(rng, T, 2, False), seq(rng, T, 2, False)
    random_mask = float_of(rng, bool_mask(rng, (T, T)))
    hinted = check(torch, dm, tm, rng, [x, mem], {"tgt_mask": random_mask, "memory_mask": random_mask},
                   tgt_is_causal=True, memory_is_causal=True)
    plain = check(torch, dm, tm, rng, [x, mem], {"tgt_mask": causal(T), "memory_mask": causal(T)})
    close(hinted, plain)


def test_custom_activation_and_bias_false(torch, rng):
    acts = lambda: (F.silu, torch.nn.functional.silu)
    for cls in ["TransformerEncoderLayer", "TransformerDecoderLayer"]:
        dm, tm = pair(torch, cls, rng, D, H, FF, dropout=0.0, activation=acts, bias=False,
                      layer_norm_eps=1e-3)
        assert dm.linear1.bias is None and dm.norm1.bias is None and dm.self_attn.in_proj_bias is None
        assert dm.norm1.eps == 1e-3
        ins = [seq(rng, 4, 2, False)] + ([seq(rng, 3, 2, False)] if "Decoder" in cls else [])
        check(torch, dm, tm, rng, ins, train=True)
    assert nn.TransformerEncoderLayer(D, H, activation=F.gelu).activation_relu_or_gelu == 2
    assert nn.TransformerEncoderLayer(D, H, activation=nn.ReLU()).activation_relu_or_gelu == 1
    assert nn.TransformerEncoderLayer(D, H, activation=F.silu).activation_relu_or_gelu == 0


def test_eval_fast_path_values(torch, rng):
    """Without gradients, in eval mode, PyTorch runs its fused encoder-layer kernel
    (batch_first, even heads): the same values to rounding."""
    dm, tm = pair(torch, "TransformerEncoderLayer", rng, D, H, FF, batch_first=True)
    T, N = 5, 3
    for kind in ["none", "attn_bool", "kpm_bool", "both_bool"]:
        masks = self_masks(rng, kind, T, N, ("src_mask", "src_key_padding_mask"))
        check(torch, dm, tm, rng, [seq(rng, T, N, True)], masks, grad=False)
        # float masks of 0 and -inf only: PyTorch's fused kernel returns NaN for other values
        masks = {k: np.where(v, -np.inf, 0.0) for k, v in masks.items()}
        check(torch, dm, tm, rng, [seq(rng, T, N, True)], masks, grad=False)


# ---------------------------------------------------------------- stacks
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_transformer(torch, rng, batch_first, norm_first, activation):
    dm, tm = pair(torch, "Transformer", rng, D, H, 2, 2, FF, dropout=0.0, activation=activation,
                  batch_first=batch_first, norm_first=norm_first)
    S, T, N = 6, 4, 2
    src, tgt = seq(rng, S, N, batch_first), seq(rng, T, N, batch_first)
    for train in (True, False):
        check(torch, dm, tm, rng, [src, tgt], train=train)
        masks = {"src_mask": bool_mask(rng, (S, S)), "tgt_mask": np.isinf(causal(T)),
                 "memory_mask": bool_mask(rng, (T, S)), "src_key_padding_mask": bool_mask(rng, (N, S)),
                 "tgt_key_padding_mask": bool_mask(rng, (N, T)),
                 "memory_key_padding_mask": bool_mask(rng, (N, S))}
        check(torch, dm, tm, rng, [src, tgt], masks, train=train)
        masks = {k: (float_of(rng, v) if v.dtype == bool else v) for k, v in masks.items()}
        check(torch, dm, tm, rng, [src, tgt], masks, train=train)
        out = check(torch, dm, tm, rng, [src, tgt], {"src_mask": causal(S), "tgt_mask": causal(T)},
                    train=train, src_is_causal=True, tgt_is_causal=True)
        assert tuple(out.shape) == tuple(np.shape(tgt))
    out = check(torch, dm, tm, rng, [seq(rng, S, None, batch_first), seq(rng, T, None, batch_first)],
                {"tgt_mask": causal(T)})
    assert tuple(out.shape) == (T, D)


@pytest.mark.parametrize("batch_first", [False, True])
def test_encoder_decoder_stacks(torch, rng, batch_first):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl = torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=batch_first)
        dl = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=batch_first)
        te = torch.nn.TransformerEncoder(tl, 3, norm=torch.nn.LayerNorm(D)).double()
        de = nn.TransformerEncoder(dl, 3, norm=nn.LayerNorm(D)).to(dg.float64)
    load_from(de, te, rng)
    T, N = 5, 3
    src = seq(rng, T, N, batch_first)
    for kind in MASK_KINDS:
        masks = self_masks(rng, kind, T, N, ("mask", "src_key_padding_mask"))
        for train in (True, False):
            check(torch, de, te, rng, [src], masks, train=train)
    # a wrong ``is_causal`` hint replaces the mask with the causal one, in both
    check(torch, de, te, rng, [src], {"mask": bool_mask(rng, (T, T))}, is_causal=True)

    tdl = torch.nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=batch_first)
    ddl = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=batch_first)
    td = torch.nn.TransformerDecoder(tdl, 2).double()
    dd = nn.TransformerDecoder(ddl, 2).to(dg.float64)
    assert dd.norm is None and dd.num_layers == 2
    load_from(dd, td, rng)
    mem = seq(rng, 6, N, batch_first)
    for tgt_mask in (None, causal(4), bool_mask(rng, (4, 4))):
        check(torch, dd, td, rng, [seq(rng, 4, N, batch_first), mem],
              {"tgt_mask": tgt_mask, "memory_key_padding_mask": bool_mask(rng, (N, 6))})


def test_layers_are_deep_copies():
    layer = nn.TransformerEncoderLayer(D, H, FF, batch_first=True)
    enc = nn.TransformerEncoder(layer, 3)
    assert len(enc.layers) == 3 and enc.num_layers == 3
    assert all(m is not layer for m in enc.layers)
    w = [m.linear1.weight for m in enc.layers]
    assert w[0] is not w[1] and w[0] is not layer.linear1.weight
    np.testing.assert_array_equal(arr(w[0]), arr(w[2]))  # copies start equal ...
    with dg.no_grad():
        enc.layers[0].linear1.weight.add_(1.0)
    assert not np.allclose(arr(enc.layers[0].linear1.weight), arr(enc.layers[1].linear1.weight))
    assert not np.allclose(arr(layer.linear1.weight), arr(enc.layers[0].linear1.weight))
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, H, FF), 2)
    assert dec.layers[0].multihead_attn is not dec.layers[1].multihead_attn


# ---------------------------------------------------- PyTorch's nested-tensor path
def test_nested_tensor_zeros_at_padding(torch, rng):
    """In eval mode without gradients, a batch-first encoder with a left-aligned padding
    mask runs on nested tensors in PyTorch: the padded positions come out as zeros
    (before the final norm). Not left-aligned, or in training, they do not."""
    tl = torch.nn.TransformerEncoderLayer(D, H, FF, batch_first=True)
    dl = nn.TransformerEncoderLayer(D, H, FF, batch_first=True)
    te = torch.nn.TransformerEncoder(tl, 2, norm=torch.nn.LayerNorm(D)).double()
    de = nn.TransformerEncoder(dl, 2, norm=nn.LayerNorm(D)).to(dg.float64)
    assert de.use_nested_tensor and te.use_nested_tensor
    load_from(de, te, rng)
    T, N = 5, 3
    src = seq(rng, T, N, True)
    left = np.array([[False] * 3 + [True] * 2, [False] * 5, [False] + [True] * 4])
    out = check(torch, de, te, rng, [src], {"src_key_padding_mask": left}, grad=False)
    bias = arr(de.norm.bias)
    np.testing.assert_allclose(arr(out)[0, 3:], np.broadcast_to(bias, (2, D)), rtol=0, atol=1e-12)
    not_left = np.array([[False, True, False, False, True]] * N)
    out = check(torch, de, te, rng, [src], {"src_key_padding_mask": not_left}, grad=False)
    assert not np.allclose(arr(out)[0, 1], bias)
    # mask_check=False trusts the mask to be left-aligned
    de.mask_check = te.mask_check = False
    check(torch, de, te, rng, [src], {"src_key_padding_mask": left}, grad=False)
    # with gradients (or in training) the ordinary path: padded positions are computed
    out = check(torch, de, te, rng, [src], {"src_key_padding_mask": left})
    assert not np.allclose(arr(out)[0, 4], bias)
    # enable_nested_tensor=False
    de2 = nn.TransformerEncoder(dl, 2, enable_nested_tensor=False).to(dg.float64)
    te2 = torch.nn.TransformerEncoder(tl, 2, enable_nested_tensor=False).double()
    load_from(de2, te2, rng)
    out = check(torch, de2, te2, rng, [src], {"src_key_padding_mask": left}, grad=False)
    assert not np.allclose(arr(out)[0, 4], 0.0)


@pytest.mark.parametrize("kw,reason", [
    ({"batch_first": False}, "encoder_layer.self_attn.batch_first was not True"),
    ({"batch_first": True, "norm_first": True}, "encoder_layer.norm_first was True"),
    ({"batch_first": True, "bias": False}, "encoder_layer.self_attn was passed bias=False"),
    ({"batch_first": True, "activation": F.silu}, "encoder_layer.activation_relu_or_gelu was not True"),
])
def test_nested_tensor_warning(torch, kw, reason):
    with pytest.warns(UserWarning) as ours:
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, FF, **kw), 1)
    assert not enc.use_nested_tensor and enc.enable_nested_tensor
    tkw = dict(kw)
    if "activation" in tkw:
        tkw["activation"] = torch.nn.functional.silu
    with pytest.warns(UserWarning) as theirs:
        torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(D, H, FF, **tkw), 1)
    msg = [str(w.message) for w in ours if "enable_nested_tensor" in str(w.message)]
    assert msg == [str(w.message) for w in theirs if "enable_nested_tensor" in str(w.message)]
    assert reason in msg[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, FF, **kw), 1, enable_nested_tensor=False)
        nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, FF, batch_first=True), 1)


# ---------------------------------------------------------------- construction
def test_state_dict_keys_and_shapes(torch):
    for args, kw in [((D, H, 2, 1, FF), {}), ((D, H, 1, 2, FF), {"bias": False, "norm_first": True})]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = nn.Transformer(*args, **kw).state_dict()
            theirs = torch.nn.Transformer(*args, **kw).state_dict()
        assert list(ours) == list(theirs)
        assert all(tuple(ours[k].shape) == tuple(theirs[k].shape) for k in ours)
    for cls in ["TransformerEncoderLayer", "TransformerDecoderLayer"]:
        ours, theirs = getattr(nn, cls)(D, H).state_dict(), getattr(torch.nn, cls)(D, H).state_dict()
        assert list(ours) == list(theirs)
        assert tuple(ours["linear1.weight"].shape) == (2048, D)


def test_defaults_dtype_and_attributes():
    m = nn.Transformer(d_model=16, nhead=4, num_encoder_layers=1, num_decoder_layers=1,
                       dim_feedforward=32, dtype=dg.float64, device="cpu")
    assert m.d_model == 16 and m.nhead == 4 and not m.batch_first
    assert all(p.dtype == dg.float64 for p in m.parameters())
    layer = m.encoder.layers[0]
    assert layer.dropout.p == 0.1 and layer.self_attn.dropout == 0.1 and not layer.norm_first
    assert layer.activation is F.relu and layer.activation_relu_or_gelu == 1
    assert isinstance(m.encoder.norm, nn.LayerNorm) and isinstance(m.decoder.norm, nn.LayerNorm)
    assert nn.TransformerDecoderLayer(D, H, activation="gelu").activation is F.gelu


def test_xavier_initialization():
    dg.manual_seed(0)
    m = nn.Transformer(32, 4, 1, 1, 64)
    for name, p in m.named_parameters():
        a = arr(p)
        if p.dim() > 1:
            fan_out, fan_in = a.shape
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            assert np.abs(a).max() <= bound, name
            assert np.abs(a).max() > 0.9 * bound, name  # uniform over the whole range
            np.testing.assert_allclose(a.std(), bound / np.sqrt(3), rtol=0.15, err_msg=name)
        elif "in_proj_bias" in name or "out_proj.bias" in name:
            assert not a.any(), name
    # the Transformer re-initializes a custom encoder's matrices too
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64), 1)
    before = arr(enc.layers[0].linear1.weight).copy()
    t = nn.Transformer(32, 4, custom_encoder=enc, num_decoder_layers=1, dim_feedforward=64)
    assert t.encoder is enc
    assert not np.allclose(arr(enc.layers[0].linear1.weight), before)


def test_custom_encoder_decoder(torch, rng):
    def build(lib, **f):
        enc = lib.nn.TransformerEncoder(lib.nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, **f), 1)
        dec = lib.nn.TransformerDecoder(lib.nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, **f), 1)
        return lib.nn.Transformer(D, H, custom_encoder=enc, custom_decoder=dec, **f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = build(dg, dtype=dg.float64)
        tm = build(torch, dtype=torch.float64)
    load_from(dm, tm, rng)
    assert "encoder.norm.weight" not in dm.state_dict()
    check(torch, dm, tm, rng, [seq(rng, 5, 2, False), seq(rng, 3, 2, False)],
          {"tgt_mask": causal(3)}, train=True)


def test_generate_square_subsequent_mask(torch):
    for sz in (0, 1, 4, 7):
        ours = nn.Transformer.generate_square_subsequent_mask(sz)
        theirs = torch.nn.Transformer.generate_square_subsequent_mask(sz)
        assert ours.dtype == dg.float32
        np.testing.assert_array_equal(arr(ours), theirs.numpy())
    m = nn.Transformer.generate_square_subsequent_mask(3, device="cpu", dtype=dg.float64)
    assert m.dtype == dg.float64
    np.testing.assert_array_equal(arr(m), causal(3))
    # also from an instance
    assert nn.Transformer(D, H, 1, 1, FF).generate_square_subsequent_mask(2).shape == (2, 2)


# ---------------------------------------------------------------- training
def test_adam_steps_match_torch(torch, rng):
    """A TransformerEncoder and a Linear head, trained two steps with Adam, in train
    mode (dropout 0): same losses and the same parameters after each step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tenc = torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, activation="gelu"), 2)
        denc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, activation="gelu"), 2)
    tenc, denc = tenc.double(), denc.to(dg.float64)
    thead, dhead = torch.nn.Linear(D, 3).double(), nn.Linear(D, 3, dtype=dg.float64)
    load_from(denc, tenc, rng)
    load_from(dhead, thead)
    w0 = arr(denc.layers[0].linear1.weight).copy()
    x = rng.standard_normal((4, 5, D))
    y = rng.standard_normal((4, 5, 3))
    pad = np.zeros((4, 5), bool)
    pad[1, 3:] = True
    topt = torch.optim.Adam(list(tenc.parameters()) + list(thead.parameters()), lr=1e-2)
    dopt = dg.optim.Adam(list(denc.parameters()) + list(dhead.parameters()), lr=1e-2)
    for _ in range(2):
        tout = thead(tenc(torch.tensor(x), src_key_padding_mask=torch.tensor(pad)))
        dout = dhead(denc(dg.tensor(x), src_key_padding_mask=dg.tensor(pad)))
        tloss = ((tout - torch.tensor(y)) ** 2).mean()
        dloss = ((dout - dg.tensor(y)) ** 2).mean()
        np.testing.assert_allclose(dloss.item(), tloss.item(), rtol=1e-10)
        topt.zero_grad()
        dopt.zero_grad()
        tloss.backward()
        dloss.backward()
        topt.step()
        dopt.step()
    for (n, p), (_, q) in zip(denc.named_parameters(), tenc.named_parameters()):
        np.testing.assert_allclose(arr(p), arr(q), rtol=1e-9, atol=1e-10, err_msg=n)
    for p, q in zip(dhead.parameters(), thead.parameters()):
        np.testing.assert_allclose(arr(p), arr(q), rtol=1e-9, atol=1e-10)
    assert np.abs(arr(denc.layers[0].linear1.weight) - w0).max() > 1e-3  # the steps did move it


# ---------------------------------------------------------------- errors
def _raises_like(torch, make, call, exc=Exception):
    """The same exception type and message from PyTorch's module and distgrad's."""
    with pytest.raises(exc) as theirs:
        call(make(torch), torch)
    with pytest.raises(type(theirs.value)) as ours:
        call(make(dg), dg)
    assert str(ours.value) == str(theirs.value).replace("torch.Size", "distgrad.Size")
    return str(ours.value)


def test_errors_match_torch(torch):
    def tr(batch_first):
        return lambda lib: lib.nn.Transformer(D, H, 1, 1, FF, batch_first=batch_first)

    msg = _raises_like(torch, tr(False), lambda m, lib: m(lib.randn(5, 2, D), lib.randn(4, 3, D)))
    assert msg == "the batch number of src and tgt must be equal"
    msg = _raises_like(torch, tr(True), lambda m, lib: m(lib.randn(2, 5, D), lib.randn(3, 4, D)))
    assert msg == "the batch number of src and tgt must be equal"
    msg = _raises_like(torch, tr(False), lambda m, lib: m(lib.randn(5, 2, D), lib.randn(4, 2, D + 1)))
    assert msg == "the feature number of src and tgt must be equal to d_model"
    msg = _raises_like(torch, tr(True), lambda m, lib: m(lib.randn(5, D - 2), lib.randn(4, D)))
    assert msg == "the feature number of src and tgt must be equal to d_model"

    msg = _raises_like(torch, lambda lib: None,
                       lambda m, lib: lib.nn.TransformerEncoderLayer(D, H, activation="tanh"))
    assert msg == "activation should be relu/gelu, not tanh"

    layer = lambda lib: lib.nn.TransformerEncoderLayer(D, H, FF)
    msg = _raises_like(torch, layer, lambda m, lib: m(lib.randn(4, 2, D), is_causal=True))
    assert msg.startswith("Need attn_mask if specifying the is_causal hint")
    int_mask = lambda m, lib: m(lib.randn(4, 2, D), src_key_padding_mask=lib.zeros(2, 4, dtype=lib.int64))
    msg = _raises_like(torch, layer, int_mask)
    assert msg == "only bool and floating types of src_key_padding_mask are supported"
    msg = _raises_like(torch, layer,
                       lambda m, lib: m(lib.randn(4, 2, D), src_mask=lib.zeros(3, 3, dtype=lib.bool)))
    assert "attn_mask" in msg
    _raises_like(torch, lambda lib: lib.nn.TransformerEncoderLayer(D, 3), lambda m, lib: None)


def test_mismatched_mask_types_warn(torch, rng):
    dm, tm = pair(torch, "TransformerEncoderLayer", rng, D, H, FF, dropout=0.0)
    masks = {"src_mask": causal(4), "src_key_padding_mask": bool_mask(rng, (2, 4))}
    with pytest.warns(UserWarning, match="Support for mismatched src_key_padding_mask and src_mask"):
        check(torch, dm, tm, rng, [seq(rng, 4, 2, False)], masks)


# ---------------------------------------------------------------- gradcheck
def test_gradcheck_tiny_layers():
    dg.manual_seed(3)
    enc = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, activation="gelu", dtype=dg.float64)
    dec = nn.TransformerDecoderLayer(4, 2, 6, dropout=0.0, norm_first=True, dtype=dg.float64)
    x = dg.randn(3, 2, 4, dtype=dg.float64, requires_grad=True)
    mem = dg.randn(2, 2, 4, dtype=dg.float64, requires_grad=True)
    w = enc.linear1.weight
    mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=dg.float64)
    pad = dg.tensor([[False, False], [False, True]])
    assert dg.autograd.gradcheck(lambda a, _w: enc(a, src_mask=mask), (x, w))
    assert dg.autograd.gradcheck(lambda a, m: dec(a, m, tgt_mask=mask, memory_key_padding_mask=pad),
                                 (x, mem))
