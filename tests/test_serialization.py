"""``dg.save`` / ``dg.load``: PyTorch's checkpoint format, both ways.

Round trips within distgrad run without PyTorch; the checks that a file written by one
library is read by the other call ``pytest.importorskip("torch")``. Malicious files
must be refused by name with nothing executed.
"""
import io
import os
import pathlib
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import distgrad as dg
from distgrad import nn
from distgrad.serialization import Storage, _write_archive

DTYPES = ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "bool"]


def values(name, shape=(3, 4), seed=0):
    rng = np.random.default_rng(seed)
    if name == "bool":
        return np.asarray(rng.random(shape) > 0.5)
    if name.startswith("float"):
        return np.asarray(rng.standard_normal(shape), dtype=name)
    info = np.iinfo(name)
    return np.asarray(rng.integers(max(info.min, -100), min(info.max, 100), shape), dtype=name)


def arr(t):
    return t.detach().numpy()


def roundtrip(obj, **load_kw):
    buf = io.BytesIO()
    dg.save(obj, buf)
    buf.seek(0)
    return dg.load(buf, **load_kw)


def tensor_cases(name):
    """(label, tensor) pairs: plain, 0-d, empty, transposed, strided slice."""
    base = dg.tensor(values(name))
    return [
        ("plain", base),
        ("0-d", dg.tensor(values(name, ()))),
        ("empty", dg.tensor(values(name, (0, 3)))),
        ("transposed", base.t()),
        ("strided", base[::2, 1::2]),
    ]


def assert_same(t, ref):
    assert isinstance(t, dg.Tensor)
    assert t.dtype == ref.dtype
    assert tuple(t.shape) == tuple(ref.shape)
    np.testing.assert_array_equal(arr(t), arr(ref))


def model(seed=0):
    dg.manual_seed(seed)
    return nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 4))


def torch_model(torch):
    return torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.LayerNorm(8),
                               torch.nn.Linear(8, 4))


TOKENS = np.array([[1, 2, 3, 9], [0, 5, 5, 7]])


def pickle_records(blob: bytes):
    """(data.pkl's opcodes with their arguments, the archive's ZipInfos)."""
    zf = zipfile.ZipFile(io.BytesIO(blob))
    pkl = next(n for n in zf.namelist() if n.endswith("/data.pkl"))
    return [(op.name, arg) for op, arg, _ in pickletools.genops(zf.read(pkl))], zf.infolist()


# =================================================== within distgrad (no torch needed)
@pytest.mark.parametrize("name", DTYPES)
def test_roundtrip_every_dtype_and_layout(name):
    cases = tensor_cases(name)
    out = roundtrip({label: t for label, t in cases})
    for label, t in cases:
        assert_same(out[label], t)
        assert out[label].requires_grad is False


def test_roundtrip_keeps_views_sharing_one_storage_and_identity():
    x = dg.arange(12.0).reshape(3, 4)
    out = roundtrip({"x": x, "t": x.t(), "row": x[1], "again": x})
    assert out["again"] is out["x"]
    assert np.shares_memory(arr(out["x"]), arr(out["t"]))
    assert np.shares_memory(arr(out["x"]), arr(out["row"]))
    out["x"].add_(1)        # like torch: the views see writes through the shared storage
    np.testing.assert_array_equal(arr(out["row"]), np.arange(4.0, 8.0) + 1)


def test_roundtrip_parameters_and_requires_grad():
    p = nn.Parameter(dg.randn(3, 2))
    frozen = nn.Parameter(dg.randn(2), requires_grad=False)
    leaf = dg.ones(2, requires_grad=True)
    out = roundtrip([p, frozen, leaf, leaf * 2])
    assert isinstance(out[0], nn.Parameter) and out[0].requires_grad
    assert isinstance(out[1], nn.Parameter) and not out[1].requires_grad
    assert not isinstance(out[2], nn.Parameter) and out[2].requires_grad and out[2].is_leaf
    assert out[3].is_leaf and out[3].requires_grad
    np.testing.assert_array_equal(arr(out[0]), arr(p))
    np.testing.assert_array_equal(arr(out[3]), [2.0, 2.0])


def test_roundtrip_plain_containers():
    obj = {
        "none": None, "flags": [True, False], "ints": (1, -2, 2**40), "f": 0.25, "s": "héllo",
        "bytes": b"\x00\xff", "set": {1, 2}, "frozen": frozenset({"a"}), "c": 1 + 2j,
        "od": OrderedDict([("b", 1), ("a", 2)]), "nested": [{"k": (dg.ones(2), [None])}],
        "size": dg.Size([2, 3]), "dtype": dg.float16, "device": dg.device("cpu"),
        "bytearray": bytearray(b"xy"),
    }
    out = roundtrip(obj)
    assert out.keys() == obj.keys()
    for k, v in obj.items():
        if k != "nested":
            assert out[k] == v and type(out[k]) is type(v), k
    assert list(out["od"]) == ["b", "a"]
    assert out["dtype"] is dg.float16
    assert_same(out["nested"][0]["k"][0], dg.ones(2))
    assert out["nested"][0]["k"][1] == [None]


def test_roundtrip_model_and_optimizer_state():
    m = model()
    opt = dg.optim.Adam(m.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        m(dg.tensor(TOKENS)).pow(2).sum().backward()
        opt.step()
    out = roundtrip({"model": m.state_dict(), "optim": opt.state_dict()})
    assert type(out["model"]) is OrderedDict and list(out["model"]) == list(m.state_dict())
    m2 = model(seed=1)
    m2.load_state_dict(out["model"])
    np.testing.assert_array_equal(arr(m2(dg.tensor(TOKENS))), arr(m(dg.tensor(TOKENS))))
    opt2 = dg.optim.Adam(m2.parameters(), lr=0.5)
    opt2.load_state_dict(out["optim"])
    assert opt2.param_groups[0]["lr"] == 0.01
    for o in (opt, opt2):
        mm = m if o is opt else m2
        o.zero_grad()
        mm(dg.tensor(TOKENS)).pow(2).sum().backward()
        o.step()
    for a, b in zip(m.parameters(), m2.parameters()):
        np.testing.assert_array_equal(arr(a), arr(b))


def test_paths_and_file_objects(tmp_path):
    x = dg.randn(4, 5)
    for target in (str(tmp_path / "a.pt"), tmp_path / "model.v2.pt"):
        dg.save(x, target)
        assert_same(dg.load(target), x)
        assert_same(dg.load(str(target)), x)
    # the archive folder is the file's stem, or "archive" for a file object
    assert zipfile.ZipFile(tmp_path / "model.v2.pt").namelist()[0] == "model.v2/data.pkl"
    with open(tmp_path / "f.pt", "wb") as fh:
        dg.save(x, fh)
    with open(tmp_path / "f.pt", "rb") as fh:
        assert_same(dg.load(fh), x)
    assert zipfile.ZipFile(tmp_path / "f.pt").namelist()[0] == "archive/data.pkl"


def test_file_layout_is_pytorchs():
    buf = io.BytesIO()
    x = dg.arange(6.0).reshape(2, 3)
    dg.save({"x": x, "t": x.t(), "p": nn.Parameter(dg.ones(2)), "b": dg.tensor([True])}, buf)
    blob = buf.getvalue()
    ops, infos = pickle_records(blob)
    names = [i.filename for i in infos]
    assert names == ["archive/data.pkl", "archive/.format_version", "archive/.storage_alignment",
                     "archive/byteorder", "archive/data/0", "archive/data/1", "archive/data/2",
                     "archive/version", "archive/.data/serialization_id"]
    zf = zipfile.ZipFile(io.BytesIO(blob))
    assert zf.read("archive/version") == b"3\n"
    assert zf.read("archive/byteorder") == b"little"
    assert zf.read("archive/.format_version") == b"1"
    assert zf.read("archive/.storage_alignment") == b"64"
    assert zf.read("archive/data/0") == np.arange(6, dtype="<f4").tobytes()
    for info in infos:
        assert info.compress_type == zipfile.ZIP_STORED
        nlen, elen = struct.unpack("<HH", blob[info.header_offset + 26:info.header_offset + 30])
        assert (info.header_offset + 30 + nlen + elen) % 64 == 0, info.filename
    assert ops[0] == ("PROTO", 2)
    globals_ = [a for op, a in ops if op == "GLOBAL"]
    assert globals_ == ["torch._utils _rebuild_tensor_v2", "torch FloatStorage",
                        "collections OrderedDict", "torch._utils _rebuild_parameter",
                        "torch BoolStorage"]
    # the transposed view refers to the same storage key with its own strides
    assert ops.count(("BINPERSID", None)) == 4


def test_zip64_records_are_readable(tmp_path):
    x = dg.randn(3, 3)
    with open(tmp_path / "z.pt", "wb") as fh:
        _write_archive({"x": x}, fh, "z", 2, force_zip64=True)
    assert_same(dg.load(tmp_path / "z.pt")["x"], x)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_other_pickle_protocols(protocol):
    buf = io.BytesIO()
    x = dg.randn(2, 2)
    dg.save({"x": x, "dt": dg.int8}, buf, pickle_protocol=protocol)
    buf.seek(0)
    out = dg.load(buf)
    assert_same(out["x"], x)
    assert out["dt"] is dg.int8


def test_mmap_loads_copy_on_write(tmp_path):
    x = dg.randn(64, 8)
    path = tmp_path / "m.pt"
    dg.save({"x": x}, path)
    out = dg.load(path, mmap=True)["x"]
    assert_same(out, x)
    out.mul_(0)
    assert_same(dg.load(path)["x"], x)


def test_map_location_variants_for_cpu_files():
    x = dg.randn(2, 3)
    for ml in ("cpu", dg.device("cpu"), {"cpu": "cpu"}, {"cuda:0": "cpu"},
               lambda storage, loc: storage, lambda storage, loc: None):
        assert_same(roundtrip(x, map_location=ml), x)
    seen = []
    roundtrip(x, map_location=lambda storage, loc: seen.append((storage, loc)))
    assert len(seen) == 1 and isinstance(seen[0][0], Storage) and seen[0][1] == "cpu"
    assert seen[0][0].dtype == dg.float32 and seen[0][0].size() == 6
    with pytest.raises(RuntimeError, match="cpu' and 'cuda"):
        roundtrip(x, map_location="mps")


def cuda_file(x) -> bytes:
    """A checkpoint of ``x`` whose storage says it was saved on cuda:0."""
    buf = io.BytesIO()
    dg.save(x, buf)
    zf = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    pkl = zf.read("archive/data.pkl")
    old, new = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    assert pkl.count(old) == 1
    return make_archive(pkl.replace(old, new),
                        {n: zf.read(n) for n in zf.namelist() if n != "archive/data.pkl"})


def make_archive(pkl: bytes, records=None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        for name, data in (records or {"archive/version": b"3\n"}).items():
            zf.writestr(name, data)
    return out.getvalue()


def test_map_location_for_a_cuda_file():
    x = dg.randn(2, 3)
    blob = cuda_file(x)
    seen = []
    for ml in ("cpu", {"cuda:0": "cpu"}, lambda s, loc: seen.append(loc) or s.cpu()):
        assert_same(dg.load(io.BytesIO(blob), map_location=ml), x)
    assert seen == ["cuda:0"]
    if dg.cuda.is_available():
        out = dg.load(io.BytesIO(blob))
        assert out.device == dg.device("cuda:0")
        np.testing.assert_array_equal(out.cpu().numpy(), arr(x))
    else:
        with pytest.raises(RuntimeError, match="map_location='cpu'"):
            dg.load(io.BytesIO(blob))


@pytest.mark.skipif(not dg.cuda.is_available(), reason="needs a CUDA GPU (CuPy)")
def test_cuda_tensors_are_saved_with_their_location():
    x = dg.randn(3, 4, device="cuda")
    buf = io.BytesIO()
    dg.save({"x": x, "t": x.t()}, buf)
    ops, _ = pickle_records(buf.getvalue())
    assert ("BINUNICODE", "cuda:0") in ops
    buf.seek(0)
    out = dg.load(buf)
    assert out["x"].device == dg.device("cuda:0")
    np.testing.assert_array_equal(out["t"].cpu().numpy(), x.t().cpu().numpy())
    buf.seek(0)
    assert dg.load(buf, map_location="cpu")["x"].device == dg.device("cpu")


# ================================================================ malicious files
class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def global_call(module, name, arg) -> bytes:
    """A protocol-2 pickle of ``module.name(arg)``."""
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
            + pickle.dumps(arg, protocol=2)[2:-1] + b"\x85R.")


def attacks(marker):
    """(the global each pickle names, the pickle): each would create ``marker``."""
    cmd = f"touch {marker}"
    return [
        ("os.system", global_call("os", "system", cmd)),
        ("builtins.eval", global_call("builtins", "eval", f"open({str(marker)!r}, 'w')")),
        ("subprocess.Popen", global_call("subprocess", "Popen", ["touch", str(marker)])),
        ("posix.system", pickle.dumps(Evil(marker), protocol=2)),   # a class's __reduce__
        # protocol 4 names globals with STACK_GLOBAL: the same refusal
        ("posix.system", pickle.dumps({"w": Evil(marker)}, protocol=4)),
        # a tensor whose "storage" type is os.system
        ("os.system", (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
                      b"cos\nsystem\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01"
                      b"\x85K\x01\x85\x89}tR.")),
    ]


@pytest.mark.parametrize("weights_only", [True, False])
def test_malicious_pickles_are_refused_and_nothing_runs(tmp_path, weights_only):
    marker = tmp_path / "pwned"
    for name, pkl in attacks(marker):
        blob = make_archive(pkl)
        with pytest.raises(pickle.UnpicklingError) as err:
            dg.load(io.BytesIO(blob), weights_only=weights_only)
        msg = str(err.value)
        assert f"global {name}," in msg, msg
        assert "Nothing in the file was executed" in msg
        assert ("weights_only=True" if weights_only else "even with weights_only=False") in msg
        assert not marker.exists(), name


def test_a_plain_pickle_or_legacy_header_attack_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Evil(marker), protocol=2))
    with pytest.raises((RuntimeError, pickle.UnpicklingError), match="evil.pt|posix.system"):
        dg.load(path)
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    head = magic + pickle.dumps(1001, protocol=2) + pickle.dumps({"little_endian": True}, 2)
    path.write_bytes(head + pickle.dumps(Evil(marker), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        dg.load(path)
    assert not marker.exists()


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    dg.save({"w": dg.randn(100, 10)}, path)
    blob = path.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RuntimeError, match="truncated.pt"):
        dg.load(bad)
    # a flipped byte inside a storage fails its CRC
    zf = zipfile.ZipFile(path)
    info = zf.getinfo("ckpt/data/0")
    start = info.header_offset + 30 + len(info.filename) + \
        struct.unpack("<H", blob[info.header_offset + 28:info.header_offset + 30])[0]
    flipped = bytearray(blob)
    flipped[start + 10] ^= 0xFF
    bad.write_bytes(bytes(flipped))
    with pytest.raises(RuntimeError, match="truncated.pt.*corrupt"):
        dg.load(bad)
    for junk in (b"", b"\x00" * 100, b"PK\x03\x04 not really a zip"):
        bad.write_bytes(junk)
        with pytest.raises(RuntimeError, match="truncated.pt"):
            dg.load(bad)
    with pytest.raises(RuntimeError, match="<BytesIO>"):
        dg.load(io.BytesIO(blob[:200]))


def test_a_storage_too_small_for_its_tensor_is_refused():
    # size [100] on a one-element storage: reading it would run past the buffer
    pkl = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n"
           b"FloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00Kd\x85K\x01\x85"
           b"\x89ccollections\nOrderedDict\n)RtR.")
    blob = make_archive(pkl, {"archive/data/0": b"\x00" * 4})
    with pytest.raises(pickle.UnpicklingError, match="does not fit"):
        dg.load(io.BytesIO(blob))


def test_save_arguments_are_checked():
    with pytest.raises(NotImplementedError, match="zip format"):
        dg.save(dg.ones(1), io.BytesIO(), _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="pickle_protocol"):
        dg.save(dg.ones(1), io.BytesIO(), pickle_protocol=1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        dg.load(io.BytesIO(), bogus=1)


# ======================================================== parity with PyTorch itself
def to_torch(torch, t):
    return torch.from_numpy(np.ascontiguousarray(arr(t)))


@pytest.mark.parametrize("name", DTYPES)
def test_torch_loads_distgrad_files(tmp_path, name):
    torch = pytest.importorskip("torch")
    cases = tensor_cases(name)
    path = tmp_path / "x.pt"
    dg.save({label: t for label, t in cases}, path)
    for kw in ({}, {"mmap": True}):
        out = torch.load(path, weights_only=True, **kw)
        for label, t in cases:
            got = out[label]
            assert str(got.dtype) == f"torch.{name}", label
            assert tuple(got.shape) == tuple(t.shape)
            assert got.stride() == t.stride() or t.numel() <= 1, label
            np.testing.assert_array_equal(got.numpy(), arr(t))
    assert out["transposed"].untyped_storage().data_ptr() == \
        out["plain"].untyped_storage().data_ptr()


def test_torch_loads_parameters_containers_and_metadata():
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    obj = {"p": nn.Parameter(dg.randn(2, 2)), "leaf": dg.ones(3, requires_grad=True),
           "size": dg.Size([4, 5]), "dtype": dg.int16, "device": dg.device("cpu"),
           "c": [1, (2.5, None), {"s": {1, 2}, "b": b"\x01", "z": 3j}]}
    dg.save(obj, buf)
    buf.seek(0)
    out = torch.load(buf, weights_only=True)
    assert isinstance(out["p"], torch.nn.Parameter) and out["p"].requires_grad
    np.testing.assert_array_equal(out["p"].detach().numpy(), arr(obj["p"]))
    assert out["leaf"].requires_grad and out["leaf"].is_leaf
    assert out["size"] == torch.Size([4, 5]) and type(out["size"]) is torch.Size
    assert out["dtype"] is torch.int16 and out["device"] == torch.device("cpu")
    assert out["c"] == obj["c"]


def test_torch_model_loads_a_distgrad_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    m = model()
    dg.save(m.state_dict(), tmp_path / "sd.pt")
    tm = torch_model(torch)
    tm.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    with torch.no_grad():
        want = tm(torch.from_numpy(TOKENS)).numpy()
    np.testing.assert_allclose(arr(m(dg.tensor(TOKENS))), want, rtol=1e-6, atol=1e-6)


def adam_steps(lib, m, opt, n):
    for _ in range(n):
        opt.zero_grad()
        x = lib.tensor(TOKENS)
        (m(x) ** 2).sum().backward()
        opt.step()


def test_torch_adam_continues_from_a_distgrad_optimizer_state(tmp_path):
    torch = pytest.importorskip("torch")
    m = model()
    opt = dg.optim.Adam(m.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)
    adam_steps(dg, m, opt, 3)
    dg.save({"model": m.state_dict(), "optim": opt.state_dict()}, tmp_path / "ck.pt")
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    tm = torch_model(torch)
    tm.load_state_dict(ck["model"])
    topt = torch.optim.Adam(tm.parameters(), lr=1.0)
    topt.load_state_dict(ck["optim"])
    assert topt.param_groups[0]["lr"] == 0.01 and topt.param_groups[0]["betas"] == (0.8, 0.99)
    assert float(topt.state[next(tm.parameters())]["step"]) == 3
    adam_steps(dg, m, opt, 1)
    adam_steps(torch, tm, topt, 1)
    for a, b in zip(m.parameters(), tm.parameters()):
        np.testing.assert_allclose(arr(a), b.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("name", DTYPES)
def test_distgrad_loads_torch_files(name, legacy):
    torch = pytest.importorskip("torch")
    base = torch.from_numpy(values(name))
    obj = {"plain": base, "0-d": torch.from_numpy(values(name, ())),
           "empty": torch.from_numpy(values(name, (0, 3))), "transposed": base.t(),
           "strided": base[::2, 1::2], "row": base[1]}
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    buf.seek(0)
    out = dg.load(buf)
    for label, t in obj.items():
        got = out[label]
        assert got.dtype.name == name and tuple(got.shape) == tuple(t.shape), label
        np.testing.assert_array_equal(arr(got), t.numpy())
        if t.numel() > 1:
            assert got.stride() == t.stride(), label
    assert np.shares_memory(arr(out["plain"]), arr(out["transposed"]))


def test_distgrad_loads_torch_parameters_and_containers():
    torch = pytest.importorskip("torch")
    x = torch.ones(2)
    x.note = "hi"     # a tensor with attributes pickles through _rebuild_from_type_v2
    obj = {"p": torch.nn.Parameter(torch.randn(2, 3)), "leaf": torch.ones(2, requires_grad=True),
           "attr": x, "size": torch.Size([2, 3]), "dtype": torch.float64,
           "dev": torch.device("cpu"), "c": [1, (2.5, None), {"s": {1, 2}, "b": b"\x01", "z": 3j}],
           "od": OrderedDict(a=1)}
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    out = dg.load(buf)
    assert isinstance(out["p"], nn.Parameter) and out["p"].requires_grad
    np.testing.assert_array_equal(arr(out["p"]), obj["p"].detach().numpy())
    assert out["leaf"].requires_grad and not isinstance(out["leaf"], nn.Parameter)
    assert out["attr"].note == "hi"
    assert out["size"] == dg.Size([2, 3]) and type(out["size"]) is dg.Size
    assert out["dtype"] is dg.float64 and out["dev"] == dg.device("cpu")
    assert out["c"] == obj["c"] and type(out["od"]) is OrderedDict


def test_distgrad_model_loads_a_torch_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = torch_model(torch)
    torch.save(tm.state_dict(), tmp_path / "sd.pt")
    sd = dg.load(tmp_path / "sd.pt")
    assert type(sd) is OrderedDict and list(sd) == list(tm.state_dict())
    m = model(seed=5)
    m.load_state_dict(sd)
    with torch.no_grad():
        want = tm(torch.from_numpy(TOKENS)).numpy()
    np.testing.assert_allclose(arr(m(dg.tensor(TOKENS))), want, rtol=1e-6, atol=1e-6)
    # a torch file's map_location variants
    for ml in ("cpu", dg.device("cpu"), {"cpu": "cpu"}, lambda s, loc: s):
        again = dg.load(tmp_path / "sd.pt", map_location=ml)
        np.testing.assert_array_equal(arr(again["2.weight"]), tm[2].weight.detach().numpy())


def test_distgrad_adam_continues_from_a_torch_optimizer_state(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = torch_model(torch)
    topt = torch.optim.Adam(tm.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)
    adam_steps(torch, tm, topt, 3)
    torch.save({"model": tm.state_dict(), "optim": topt.state_dict()}, tmp_path / "ck.pt")
    ck = dg.load(tmp_path / "ck.pt")
    m = model(seed=3)
    m.load_state_dict(ck["model"])
    opt = dg.optim.Adam(m.parameters(), lr=1.0)
    opt.load_state_dict(ck["optim"])
    assert opt.param_groups[0]["lr"] == 0.01
    adam_steps(torch, tm, topt, 1)
    adam_steps(dg, m, opt, 1)
    for a, b in zip(m.parameters(), tm.parameters()):
        np.testing.assert_allclose(arr(a), b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_torch_files_with_unsupported_contents_are_refused_clearly(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "x.pt"
    torch.save(torch.ones(2, dtype=torch.complex64), path)
    with pytest.raises(RuntimeError, match="complex64"):
        dg.load(path)
    torch.save(torch.nn.Linear(2, 2), path)       # a whole module: arbitrary classes
    with pytest.raises(pickle.UnpicklingError, match="torch.nn.modules.linear.Linear"):
        dg.load(path, weights_only=False)


def test_torch_reads_the_zip64_layout(tmp_path):
    torch = pytest.importorskip("torch")
    x = dg.randn(3, 3)
    with open(tmp_path / "z.pt", "wb") as fh:
        _write_archive({"x": x}, fh, "z", 2, force_zip64=True)
    np.testing.assert_array_equal(torch.load(tmp_path / "z.pt", weights_only=True)["x"].numpy(),
                                  arr(x))


def test_torch_and_distgrad_agree_on_a_cuda_location_file():
    torch = pytest.importorskip("torch")
    x = dg.randn(2, 3)
    blob = cuda_file(x)
    np.testing.assert_array_equal(
        torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True).numpy(), arr(x))


def test_pathlib_and_str_paths_are_the_same_file(tmp_path):
    p = pathlib.Path(tmp_path) / "same.pt"
    dg.save(dg.ones(2), p)
    assert_same(dg.load(os.fspath(p)), dg.ones(2))


NUMPY_ARRAY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
                       type(np.dtype(np.float64))]


def test_safe_globals_allow_a_numpy_array_only_when_listed(tmp_path):
    """As torch.serialization: a numpy array (numpy's globals) is refused by default and
    loads inside ``safe_globals([...])`` or after ``add_safe_globals``; the allowlist
    names globals exactly, and leaving the block restores it."""
    data = np.sin(np.arange(12.0)).reshape(3, 4)
    path = tmp_path / "array.pt"
    dg.save({"x": data}, path)
    with pytest.raises(pickle.UnpicklingError, match="add_safe_globals"):
        dg.load(path)
    with dg.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
        out = dg.load(path)["x"]
        assert dg.serialization.get_safe_globals() == NUMPY_ARRAY_GLOBALS
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, data)
    assert dg.serialization.get_safe_globals() == []
    with pytest.raises(pickle.UnpicklingError):   # only what is listed
        with dg.serialization.safe_globals(NUMPY_ARRAY_GLOBALS[1:]):
            dg.load(path)
    # a (function, "module.name") pair allowlists the function under that name
    marker = tmp_path / "ran"
    blob = make_archive(global_call("os", "system", f"touch {marker}"))
    with dg.serialization.safe_globals([(np.asarray, "os.system")]):
        assert dg.load(io.BytesIO(blob)) == np.asarray(f"touch {marker}")
    assert not marker.exists()
    try:
        dg.serialization.add_safe_globals(NUMPY_ARRAY_GLOBALS)
        np.testing.assert_array_equal(dg.load(path, weights_only=False)["x"], data)
    finally:
        dg.serialization.clear_safe_globals()
    with pytest.raises(TypeError):
        dg.serialization.add_safe_globals(["numpy.ndarray"])


def test_distgrad_loads_a_numpy_array_torch_saved(tmp_path):
    """A file torch.save wrote a numpy array to (pytorch/examples time_sequence_prediction
    does) loads with numpy's globals allowlisted, in both libraries alike."""
    torch = pytest.importorskip("torch")
    data = np.sin(np.arange(20.0) / 3).reshape(4, 5)
    path = tmp_path / "traindata.pt"
    with open(path, "wb") as f:
        torch.save(data, f)
    with pytest.raises(pickle.UnpicklingError):
        dg.load(path)
    with dg.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
        out = dg.load(path)
    with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
        ref = torch.load(path)
    np.testing.assert_array_equal(out, data)
    np.testing.assert_array_equal(ref, data)
