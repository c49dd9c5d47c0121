"""``dg.nn.Module`` and the containers: registration, traversal, modes, gradients,
state dicts, conversions, repr, ``Parameter``, hooks — against PyTorch's behaviour."""
import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn


def arr(t):
    return t.detach().numpy()


def _classes(mod, lib):
    """Block and Net written against ``mod`` (dg.nn or torch.nn) and ``lib`` (dg or torch)."""

    class Block(mod.Module):
        """A parameter, a child, a persistent and a non-persistent buffer."""

        def __init__(self):
            super().__init__()
            self.lin = mod.Linear(3, 4)
            self.scale = mod.Parameter(lib.ones(4))
            self.register_buffer("count", lib.zeros(1, dtype=lib.int64))
            self.register_buffer("cache", lib.zeros(4), persistent=False)
            self.plain = lib.ones(2)  # a plain tensor attribute: neither parameter nor buffer

        def forward(self, x):
            return self.lin(x) * self.scale

    class Net(mod.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()
            self.head = mod.Sequential(mod.ReLU(), mod.Linear(4, 2))

        def forward(self, x):
            return self.head(self.block(x))

    return Block, Net


Block, Net = _classes(nn, dg)


def torch_net():
    torch = pytest.importorskip("torch")
    return _classes(torch.nn, torch)[1]()


# ------------------------------------------------------------------ registration
def test_attribute_assignment_registers_parameters_buffers_and_modules():
    b = Block()
    assert list(b._parameters) == ["scale"]
    assert list(b._buffers) == ["count", "cache"]
    assert list(b._modules) == ["lin"]
    assert "plain" not in b._buffers and "plain" not in b._parameters
    assert isinstance(b.plain, dg.Tensor)
    assert b.scale is b._parameters["scale"]
    assert b.lin is b._modules["lin"]
    assert b.count.dtype == dg.int64


def test_reassignment_rules():
    b = Block()
    with pytest.raises(TypeError):
        b.scale = dg.ones(4)  # a registered parameter takes only a Parameter or None
    b.scale = None
    assert b.scale is None and "scale" in b._parameters
    assert [n for n, _ in b.named_parameters()] == ["lin.weight", "lin.bias"]
    new = nn.Parameter(dg.zeros(4))
    b.scale = new
    assert b.scale is new
    # assigning a tensor to a buffer name keeps it a buffer (and keeps its persistence)
    b.cache = dg.ones(4)
    assert "cache" in b._buffers and "cache" not in b.state_dict()
    np.testing.assert_array_equal(arr(b.cache), np.ones(4))
    # a module replaces a previous attribute of the same name
    b.plain = nn.ReLU()
    assert "plain" in b._modules
    del b.plain
    assert "plain" not in b._modules
    with pytest.raises(AttributeError):
        b.plain


def test_register_buffer_errors_and_name_clash():
    b = Block()
    with pytest.raises(KeyError):
        b.register_buffer("a.b", dg.zeros(1))
    with pytest.raises(KeyError):
        b.register_buffer("plain", dg.zeros(1))  # an attribute of that name exists
    with pytest.raises(TypeError):
        b.register_buffer("x", [1, 2])
    with pytest.raises(TypeError):
        b.register_parameter("y", dg.zeros(1))  # needs a Parameter
    b.register_buffer("none_buf", None)
    assert "none_buf" not in dict(b.named_buffers())


def test_assignment_before_init_raises():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(dg.zeros(1))
            super().__init__()

    with pytest.raises(AttributeError):
        Bad()


def test_unknown_attribute_error_names_it():
    with pytest.raises(AttributeError, match="nope"):
        nn.Linear(2, 2).nope


# --------------------------------------------------------------------- traversal
def test_named_parameters_buffers_children_modules_with_prefixes():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "block.scale", "block.lin.weight", "block.lin.bias", "head.1.weight", "head.1.bias"]
    assert [n for n, _ in net.named_parameters(prefix="model")] == [
        "model.block.scale", "model.block.lin.weight", "model.block.lin.bias",
        "model.head.1.weight", "model.head.1.bias"]
    assert [n for n, _ in net.block.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in net.named_buffers()] == ["block.count", "block.cache"]
    assert [n for n, _ in net.named_buffers(prefix="p")] == ["p.block.count", "p.block.cache"]
    assert [n for n, _ in net.named_children()] == ["block", "head"]
    assert list(net.children()) == [net.block, net.head]
    assert [n for n, _ in net.named_modules()] == ["", "block", "block.lin", "head", "head.0", "head.1"]
    assert [n for n, _ in net.named_modules(prefix="m")] == [
        "m", "m.block", "m.block.lin", "m.head", "m.head.0", "m.head.1"]
    assert list(net.modules())[0] is net
    assert len(list(net.parameters())) == 5
    assert net.get_submodule("head.1") is net.head[1]
    assert net.get_parameter("block.lin.bias") is net.block.lin.bias


def test_traversal_matches_torch():
    pytest.importorskip("torch")
    ours, theirs = Net(), torch_net()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_shared_parameters_and_modules_are_deduplicated():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.out = nn.Linear(3, 5, bias=False)
            self.out.weight = self.emb.weight
            self.again = self.emb  # the same module under a second name

    m = Tied()
    assert [n for n, _ in m.named_parameters()] == ["emb.weight"]
    assert len(list(m.parameters())) == 1
    assert [n for n, _ in m.named_parameters(remove_duplicate=False)] == [
        "emb.weight", "out.weight", "again.weight"]
    assert [n for n, _ in m.named_modules()] == ["", "emb", "out"]
    assert [n for n, _ in m.named_children()] == ["emb", "out"]
    # the state dict has every name, as in PyTorch
    assert list(m.state_dict()) == ["emb.weight", "out.weight", "again.weight"]
    # gradients through both uses go into the one parameter
    idx = dg.tensor([0, 2])
    m.out(m.emb(idx)).sum().backward()
    assert m.emb.weight.grad is m.out.weight.grad


def test_shared_parameter_dedup_matches_torch():
    torch = pytest.importorskip("torch")

    def build(mod):
        seq = mod.Sequential(mod.Linear(2, 2), mod.Linear(2, 2))
        seq[1].weight = seq[0].weight
        return seq

    a, b = build(nn), build(torch.nn)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert ([n for n, _ in a.named_parameters(remove_duplicate=False)]
            == [n for n, _ in b.named_parameters(remove_duplicate=False)])
    assert list(a.state_dict()) == list(b.state_dict())


# ------------------------------------------------------------------------ modes
def test_train_eval_propagate_to_every_submodule():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.head.train()
    assert net.head.training and net.head[0].training and not net.training and not net.block.training
    assert net.train() is net
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not any(m.training for m in net.modules())
    with pytest.raises(ValueError):
        net.train("yes")


def test_eval_makes_dropout_an_identity():
    dg.manual_seed(0)
    d = nn.Sequential(nn.Dropout(0.9))
    x = dg.ones(100)
    d.eval()
    np.testing.assert_array_equal(arr(d(x)), np.ones(100))
    d.train()
    assert (arr(d(x)) == 0).sum() > 50


# ------------------------------------------------------------------- zero_grad
def _with_grads():
    net = Net()
    net(dg.randn(5, 3)).sum().backward()
    return net


def test_zero_grad_set_to_none():
    net = _with_grads()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_zero_grad_set_to_zero_keeps_the_tensor():
    net = _with_grads()
    before = {n: p.grad for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=False)
    for n, p in net.named_parameters():
        assert p.grad is before[n]
        np.testing.assert_array_equal(arr(p.grad), np.zeros(p.shape))
        assert not p.grad.requires_grad
    # the next backward accumulates from zero
    x = dg.randn(5, 3)
    net(x).sum().backward()
    g1 = {n: arr(p.grad).copy() for n, p in net.named_parameters()}
    net.zero_grad()
    net(x).sum().backward()
    for n, p in net.named_parameters():
        np.testing.assert_array_equal(arr(p.grad), g1[n])


def test_zero_grad_detaches_a_grad_with_history():
    lin = nn.Linear(2, 1)
    (lin(dg.randn(3, 2)) ** 2).sum().backward(create_graph=True)
    assert lin.weight.grad.requires_grad
    lin.zero_grad(set_to_none=False)
    assert lin.weight.grad.grad_fn is None and not lin.weight.grad.requires_grad
    np.testing.assert_array_equal(arr(lin.weight.grad), np.zeros((1, 2)))


# ------------------------------------------------------------------ state dict
def test_state_dict_keys_values_and_persistence():
    net = Net()
    sd = net.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == ["block.scale", "block.count", "block.lin.weight", "block.lin.bias",
                        "head.1.weight", "head.1.bias"]
    assert "block.cache" not in sd  # non-persistent
    assert all(not v.requires_grad for v in sd.values())
    np.testing.assert_array_equal(arr(sd["block.lin.weight"]), arr(net.block.lin.weight))
    kv = net.state_dict(keep_vars=True)
    assert kv["block.lin.weight"] is net.block.lin.weight
    assert list(net.state_dict(prefix="m.")) == ["m." + k for k in sd]


def test_state_dict_values_share_memory_with_parameters():
    lin = nn.Linear(2, 2)
    sd = lin.state_dict()
    with dg.no_grad():
        sd["weight"].fill_(3.0)
    np.testing.assert_array_equal(arr(lin.weight), np.full((2, 2), 3.0))


def test_load_state_dict_copies_values():
    src, dst = Net(), Net()
    with dg.no_grad():
        src.block.count.fill_(7)
    w_obj = dst.block.lin.weight
    res = dst.load_state_dict(src.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert dst.block.lin.weight is w_obj  # copied into, not replaced
    assert dst.block.lin.weight.requires_grad
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(arr(dst.state_dict()[k]), arr(v))
    assert dst.block.count.dtype == dg.int64 and int(dst.block.count.item()) == 7
    # a copy: changing the source afterwards does not change the destination
    with dg.no_grad():
        src.block.lin.weight.fill_(0.5)
    assert not np.allclose(arr(dst.block.lin.weight), 0.5)


def test_load_state_dict_strict_reports_every_problem_by_name():
    net = Net()
    before = {k: arr(v).copy() for k, v in net.state_dict().items()}
    sd = Net().state_dict()
    del sd["block.scale"]
    sd["head.9.weight"] = dg.zeros(1)
    sd["head.1.bias"] = dg.zeros(5)  # shape mismatch (model has 2)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(sd)
    msg = str(info.value)
    assert "block.scale" in msg and "Missing" in msg
    assert "head.9.weight" in msg and "Unexpected" in msg
    assert "head.1.bias" in msg and "size mismatch" in msg
    assert "Net" in msg
    # nothing was copied
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(arr(v), before[k])


def test_load_state_dict_non_strict_returns_missing_and_unexpected():
    net = Net()
    sd = Net().state_dict()
    del sd["block.scale"]
    sd["extra"] = dg.zeros(1)
    res = net.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["block.scale"]
    assert res.unexpected_keys == ["extra"]
    missing, unexpected = res
    assert missing == ["block.scale"] and unexpected == ["extra"]
    np.testing.assert_array_equal(arr(net.head[1].weight), arr(sd["head.1.weight"]))


def test_load_state_dict_shape_mismatch_raises_even_when_not_strict():
    lin = nn.Linear(2, 3)
    with pytest.raises(RuntimeError, match="weight"):
        lin.load_state_dict({"weight": dg.zeros(3, 3), "bias": dg.zeros(3)}, strict=False)


def test_non_persistent_buffer_not_expected_when_loading():
    b = Block()
    sd = b.state_dict()
    assert "cache" not in sd
    b.load_state_dict(sd)  # strict: "cache" must not be reported missing
    sd["cache"] = dg.zeros(4)
    with pytest.raises(RuntimeError, match="cache"):
        b.load_state_dict(sd)


def test_load_state_dict_matches_torch_incompatible_keys():
    torch = pytest.importorskip("torch")
    ours, theirs = Net(), torch_net()
    sd_o, sd_t = ours.state_dict(), theirs.state_dict()
    for sd in (sd_o, sd_t):
        del sd["head.1.bias"]
        del sd["block.count"]
    sd_o["zzz"], sd_t["zzz"] = dg.zeros(1), torch.zeros(1)
    r_o, r_t = ours.load_state_dict(sd_o, strict=False), theirs.load_state_dict(sd_t, strict=False)
    assert r_o.missing_keys == r_t.missing_keys
    assert r_o.unexpected_keys == r_t.unexpected_keys


# ---------------------------------------------------------- apply, to, requires
def test_apply_visits_children_first_then_self():
    net = Net()
    seen = []
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Linear", "Block", "ReLU", "Linear", "Sequential", "Net"]


def test_apply_order_matches_torch():
    a, b = [], []
    Net().apply(lambda m: a.append(type(m).__name__))
    torch_net().apply(lambda m: b.append(type(m).__name__))
    assert a == b


def test_apply_for_initialisation():
    net = Net()

    def init(m):
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.25)
            nn.init.zeros_(m.bias)

    net.apply(init)
    np.testing.assert_array_equal(arr(net.head[1].weight), np.full((2, 4), 0.25))
    np.testing.assert_array_equal(arr(net.block.lin.bias), np.zeros(4))


def test_to_dtype_casts_float_tensors_and_keeps_int_buffers():
    net = Net()
    w = net.block.lin.weight
    ref = arr(w).copy()
    assert net.to(dg.float64) is net
    for p in net.parameters():
        assert p.dtype == dg.float64 and isinstance(p, nn.Parameter) and p.requires_grad
    assert net.block.cache.dtype == dg.float64
    assert net.block.count.dtype == dg.int64
    assert net.block.lin.weight is w  # the same Parameter object
    np.testing.assert_array_equal(arr(w), ref.astype(np.float64))
    net.float()
    assert all(p.dtype == dg.float32 for p in net.parameters())
    assert net.block.count.dtype == dg.int64
    net.double()
    assert net(dg.randn(2, 3, dtype=dg.float64)).dtype == dg.float64
    with pytest.raises(TypeError):
        net.to(dg.int32)


def test_to_dtype_casts_existing_grads():
    lin = nn.Linear(2, 2)
    lin(dg.randn(3, 2)).sum().backward()
    lin.to(dg.float64)
    assert lin.weight.grad.dtype == dg.float64


def test_requires_grad_():
    net = Net()
    assert net.requires_grad_(False) is net
    assert not any(p.requires_grad for p in net.parameters())
    out = net(dg.randn(2, 3))
    assert not out.requires_grad
    net.head.requires_grad_()
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["head.1.weight", "head.1.bias"]
    net(dg.randn(2, 3)).sum().backward()
    assert net.block.lin.weight.grad is None and net.head[1].weight.grad is not None


# ---------------------------------------------------------------------- repr
TREE_REPR_TORCH_2_13 = """Sequential(
  (0): Linear(in_features=3, out_features=4, bias=True)
  (1): ReLU()
  (2): LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)
  (3): Dropout(p=0.1, inplace=False)
  (4): Embedding(5, 4, padding_idx=0)
)"""


def _tree(mod):
    return mod.Sequential(mod.Linear(3, 4), mod.ReLU(), mod.LayerNorm(4), mod.Dropout(0.1),
                          mod.Embedding(5, 4, padding_idx=0))


def test_repr_of_tree_is_pytorchs():
    assert repr(_tree(nn)) == TREE_REPR_TORCH_2_13


def test_repr_of_tree_matches_torch():
    torch = pytest.importorskip("torch")
    assert repr(_tree(nn)) == repr(_tree(torch.nn))


def test_repr_of_tree_without_layernorm_matches_pytorch():
    expected = """Sequential(
  (0): Linear(in_features=3, out_features=4, bias=True)
  (1): ReLU()
  (2): Dropout(p=0.1, inplace=False)
  (3): Embedding(5, 4, padding_idx=0)
  (4): Sequential(
    (act): GELU(approximate='tanh')
    (sm): Softmax(dim=-1)
  )
)"""
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.1), nn.Embedding(5, 4, padding_idx=0),
                      nn.Sequential(OrderedDict(act=nn.GELU("tanh"), sm=nn.Softmax(dim=-1))))
    assert repr(m) == expected


_SAME_REPR = {
    "linear": lambda m: m.Linear(2, 3),
    "linear_nobias": lambda m: m.Linear(2, 3, bias=False),
    "relu": lambda m: m.ReLU(),
    "relu_inplace": lambda m: m.ReLU(inplace=True),
    "gelu": lambda m: m.GELU(),
    "gelu_tanh": lambda m: m.GELU(approximate="tanh"),
    "tanh": lambda m: m.Tanh(),
    "silu": lambda m: m.SiLU(),
    "sigmoid": lambda m: m.Sigmoid(),
    "softmax": lambda m: m.Softmax(dim=1),
    "softmax_none": lambda m: m.Softmax(),
    "identity": lambda m: m.Identity(),
    "dropout": lambda m: m.Dropout(),
    "embedding": lambda m: m.Embedding(10, 3),
    "embedding_pad": lambda m: m.Embedding(10, 3, padding_idx=-1),
    "rmsnorm": lambda m: m.RMSNorm(4),
    "rmsnorm_eps": lambda m: m.RMSNorm([2, 4], eps=1e-6, elementwise_affine=False),
    "cross_entropy": lambda m: m.CrossEntropyLoss(),
    "mse": lambda m: m.MSELoss(),
    "moduledict": lambda m: m.ModuleDict({"a": m.ReLU(), "b": m.Linear(1, 1)}),
    "nested": lambda m: m.Sequential(m.Sequential(m.Linear(1, 2)), m.ModuleList([m.ReLU(), m.Tanh()])),
    "empty_seq": lambda m: m.Sequential(),
}

_SAME_REPR.update({
    "layernorm": lambda m: m.LayerNorm(4),
    "layernorm_noaffine": lambda m: m.LayerNorm(4, elementwise_affine=False),
    "layernorm_nobias": lambda m: m.LayerNorm((2, 4), bias=False),
    "modulelist_repeated": lambda m: m.ModuleList([m.Linear(2, 2) for _ in range(3)]),
})


@pytest.mark.parametrize(
    "build",
    [pytest.param(f, id=k) for k, f in _SAME_REPR.items()])
def test_repr_matches_torch(build):
    torch = pytest.importorskip("torch")
    assert repr(build(nn)) == repr(build(torch.nn))


def test_custom_extra_repr_and_childless_module():
    class M(nn.Module):
        def extra_repr(self):
            return "a=1\nb=2"

    assert repr(M()) == "M(\n  a=1\n  b=2\n)"

    class N(nn.Module):
        def extra_repr(self):
            return "k=3"

    assert repr(N()) == "N(k=3)"


# ------------------------------------------------------------------ Parameter
def test_parameter_semantics():
    t = dg.tensor([1.0, 2.0])
    p = nn.Parameter(t)
    assert isinstance(p, dg.Tensor) and isinstance(p, nn.Parameter)
    assert p.requires_grad and p.is_leaf and p.grad_fn is None
    with dg.no_grad():
        p.mul_(2)
    np.testing.assert_array_equal(arr(t), [2.0, 4.0])  # shares memory with its source
    q = p * 3
    assert type(q) is dg.Tensor and q.grad_fn is not None
    assert type(p.detach()) is dg.Tensor
    frozen = nn.Parameter(dg.ones(2), requires_grad=False)
    assert not frozen.requires_grad
    assert nn.Parameter().shape == (0,)
    with pytest.raises(RuntimeError):
        p.add_(1)  # in-place on a leaf that requires grad


def test_parameter_repr():
    assert repr(nn.Parameter(dg.tensor([1.0, 2.0]))) == (
        "Parameter containing:\ntensor([1., 2.], requires_grad=True)")
    assert repr(nn.Parameter(dg.tensor([1.0, 2.0]), requires_grad=False)) == (
        "Parameter containing:\ntensor([1., 2.])")


def test_parameter_repr_matches_torch():
    torch = pytest.importorskip("torch")
    for rg in (True, False):
        for v in ([1.0, 2.5], [[1.0, -2.0], [3.0, 4.0]]):
            a = repr(nn.Parameter(dg.tensor(v), requires_grad=rg))
            b = repr(torch.nn.Parameter(torch.tensor(v), requires_grad=rg))
            assert a == b


def test_parameter_deepcopy_and_pickle():
    p = nn.Parameter(dg.tensor([1.0, 2.0]))
    for q in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        assert type(q) is nn.Parameter and q.requires_grad
        np.testing.assert_array_equal(arr(q), [1.0, 2.0])
        with dg.no_grad():
            q.fill_(0)
        np.testing.assert_array_equal(arr(p), [1.0, 2.0])  # independent storage
    f = copy.deepcopy(nn.Parameter(dg.ones(1), requires_grad=False))
    assert not f.requires_grad


def test_deepcopy_of_module_keeps_tied_parameters_tied():
    seq = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    seq[1].weight = seq[0].weight
    c = copy.deepcopy(seq)
    assert c[1].weight is c[0].weight and c[0].weight is not seq[0].weight
    np.testing.assert_array_equal(arr(c[0].weight), arr(seq[0].weight))


# ----------------------------------------------------------------- containers
def test_sequential_indexing_slicing_append_len_iter():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b)
    assert len(s) == 2
    assert s[0] is a and s[-1] is b and s[1] is b
    with pytest.raises(IndexError):
        s[2]
    with pytest.raises(IndexError):
        s[-3]
    assert s.append(c) is s
    assert len(s) == 3 and s[2] is c and list(s) == [a, b, c]
    sl = s[1:]
    assert isinstance(sl, nn.Sequential) and list(sl) == [b, c]
    assert [n for n, _ in sl.named_children()] == ["1", "2"]  # slices keep the names, as in torch
    assert list(s[::2]) == [a, c]
    x = dg.randn(4, 2)
    np.testing.assert_allclose(arr(s(x)), arr(c(b(a(x)))), rtol=0, atol=0)
    d = nn.Tanh()
    s[1] = d
    assert s[1] is d
    del s[0]
    assert list(s) == [d, c] and [n for n, _ in s.named_children()] == ["0", "1"]
    assert [n for n, _ in s.named_parameters()] == ["1.weight", "1.bias"]


def test_sequential_from_ordered_dict():
    s = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert [n for n, _ in s.named_children()] == ["fc", "act"]
    assert s.fc is s[0] and s.act is s[1]
    assert [n for n, _ in s.named_parameters()] == ["fc.weight", "fc.bias"]


def test_sequential_slicing_matches_torch():
    torch = pytest.importorskip("torch")
    for mod in (nn, torch.nn):
        s = mod.Sequential(mod.ReLU(), mod.Tanh(), mod.Sigmoid(), mod.Identity())
        if mod is nn:
            ours = [(n, type(m).__name__) for n, m in s[1:3].named_children()]
            ours_del = s
        else:
            theirs = [(n, type(m).__name__) for n, m in s[1:3].named_children()]
            theirs_del = s
    assert ours == theirs
    del ours_del[1]
    del theirs_del[1]
    assert ([(n, type(m).__name__) for n, m in ours_del.named_children()]
            == [(n, type(m).__name__) for n, m in theirs_del.named_children()])


def test_modulelist():
    mods = [nn.Linear(2, 2) for _ in range(3)]
    ml = nn.ModuleList(mods)
    assert len(ml) == 3 and list(ml) == mods
    assert ml[0] is mods[0] and ml[-1] is mods[2]
    sl = ml[1:]
    assert isinstance(sl, nn.ModuleList) and list(sl) == mods[1:]
    extra = nn.Linear(2, 2)
    ml.append(extra)
    assert ml[3] is extra
    more = [nn.ReLU(), nn.Tanh()]
    ml.extend(more)
    assert len(ml) == 6
    ml += [nn.Sigmoid()]
    assert len(ml) == 7 and isinstance(ml[6], nn.Sigmoid)
    ins = nn.Identity()
    ml.insert(1, ins)
    assert ml[1] is ins and ml[2] is mods[1] and len(ml) == 8
    assert [n for n, _ in ml.named_children()] == [str(i) for i in range(8)]
    assert len(list(ml.parameters())) == 8  # 4 Linear layers x (weight, bias)
    del ml[0]
    assert ml[0] is ins and [n for n, _ in ml.named_children()] == [str(i) for i in range(7)]
    with pytest.raises(IndexError):
        ml[7]

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

    assert [n for n, _ in Holder().named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]


def test_moduledict():
    md = nn.ModuleDict({"b": nn.Linear(1, 1), "a": nn.ReLU()})
    assert list(md) == ["b", "a"] and list(md.keys()) == ["b", "a"]  # insertion order
    assert len(md) == 2 and "a" in md and "z" not in md
    assert isinstance(md["a"], nn.ReLU)
    md["c"] = nn.Tanh()
    assert [k for k, _ in md.items()] == ["b", "a", "c"]
    assert [type(v).__name__ for v in md.values()] == ["Linear", "ReLU", "Tanh"]
    md.update([("d", nn.Identity())])
    md.update({"e": nn.Sigmoid()})
    assert list(md) == ["b", "a", "c", "d", "e"]
    popped = md.pop("a")
    assert isinstance(popped, nn.ReLU) and "a" not in md
    del md["c"]
    assert list(md) == ["b", "d", "e"]
    assert [n for n, _ in md.named_parameters()] == ["b.weight", "b.bias"]
    md.clear()
    assert len(md) == 0


# ---------------------------------------------------------------------- hooks
def test_forward_hook_sees_inputs_and_output_and_can_replace_output():
    lin = nn.Linear(2, 2)
    seen = []

    def hook(mod, inputs, output):
        seen.append((mod, inputs, output))

    h = lin.register_forward_hook(hook)
    x = dg.randn(3, 2)
    y = lin(x)
    assert len(seen) == 1
    mod, inputs, output = seen[0]
    assert mod is lin and isinstance(inputs, tuple) and inputs[0] is x and output is y
    h.remove()
    lin(x)
    assert len(seen) == 1
    h2 = lin.register_forward_hook(lambda m, i, o: o * 0)
    np.testing.assert_array_equal(arr(lin(x)), np.zeros((3, 2)))
    h2.remove()
    assert np.abs(arr(lin(x))).sum() > 0


def test_forward_hooks_run_in_registration_order_and_gradients_flow():
    lin = nn.Linear(2, 2)
    order = []
    lin.register_forward_hook(lambda m, i, o: order.append(1))
    lin.register_forward_hook(lambda m, i, o: (order.append(2), o * 2)[1])
    x = dg.randn(3, 2, requires_grad=True)
    lin(x).sum().backward()
    assert order == [1, 2]
    # the replaced output (o * 2) is what backward differentiates
    np.testing.assert_allclose(arr(x.grad), np.tile(2 * arr(lin.weight).sum(0), (3, 1)))


def test_forward_pre_hook_can_replace_input():
    lin = nn.Linear(2, 2)
    lin.register_forward_pre_hook(lambda m, inp: (inp[0] * 0,))
    np.testing.assert_allclose(arr(lin(dg.randn(3, 2))), np.tile(arr(lin.bias), (3, 1)))


def test_forward_hook_on_submodule_fires_inside_parent():
    net = Net()
    shapes = []
    net.head[1].register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    net(dg.randn(5, 3))
    assert shapes == [(5, 2)]


def test_forward_hook_prepend_and_with_kwargs():
    class K(nn.Module):
        def forward(self, x, scale=1.0):
            return x * scale

    k = K()
    order = []
    k.register_forward_hook(lambda m, i, o: order.append("first"))
    k.register_forward_hook(lambda m, i, o: order.append("prepended"), prepend=True)
    seen = {}
    k.register_forward_hook(lambda m, a, kw, o: seen.update(kw), with_kwargs=True)
    k(dg.ones(1), scale=3.0)
    assert order == ["prepended", "first"]
    assert seen == {"scale": 3.0}


# -------------------------------------------------------- misc Module features
def test_module_pickle_and_deepcopy_round_trip():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    net.register_buffer("cache", dg.zeros(4), persistent=False)
    net.register_buffer("count", dg.zeros(1, dtype=dg.int64))
    x = dg.randn(4, 3)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(arr(clone(x)), arr(net(x)))
        assert isinstance(clone[0].weight, nn.Parameter) and clone[0].weight.requires_grad
        assert clone[0].weight is not net[0].weight
        assert list(clone.state_dict()) == list(net.state_dict())
        assert "cache" in dict(clone.named_buffers()) and "cache" not in clone.state_dict()


def test_buffer_class_assignment():
    class B(nn.Module):
        def __init__(self):
            super().__init__()
            self.tmp = nn.Buffer(dg.zeros(2), persistent=False)
            self.kept = nn.Buffer(dg.ones(2))

    b = B()
    assert [n for n, _ in b.named_buffers()] == ["tmp", "kept"]
    assert list(b.state_dict()) == ["kept"]


def test_load_state_dict_assign_replaces_tensors():
    lin = nn.Linear(2, 2)
    w = dg.ones(2, 2)
    lin.load_state_dict({"weight": w, "bias": dg.zeros(2)}, assign=True)
    assert isinstance(lin.weight, nn.Parameter) and lin.weight.requires_grad
    np.testing.assert_array_equal(arr(lin.weight), np.ones((2, 2)))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]


def test_to_device_cpu_and_half():
    lin = nn.Linear(2, 2)
    assert lin.to("cpu") is lin and lin.cpu() is lin
    assert lin.half().weight.dtype == dg.float16
    assert lin.to(dg.ones(1, dtype=dg.float64)).weight.dtype == dg.float64
