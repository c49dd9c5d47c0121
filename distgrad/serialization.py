"""``distgrad.save`` / ``distgrad.load``: PyTorch's checkpoint file format.

``save`` writes the zip layout that ``torch.save`` has written since PyTorch 1.6, so
``torch.load(f, weights_only=True)`` reads distgrad checkpoints, and ``load`` reads
files written by ``torch.save`` (the zip layout, and the older non-zip layout) with
no PyTorch installed.

The layout, for an archive folder ``<name>`` (the file's stem, or ``archive`` for a
file object)::

    <name>/data.pkl                 the object, pickled (protocol 2 by default)
    <name>/.format_version          "1"
    <name>/.storage_alignment       "64"
    <name>/byteorder                "little"
    <name>/data/<key>               the raw bytes of each storage
    <name>/version                  "3\\n"
    <name>/.data/serialization_id   an id for this file

Entries are stored (not compressed) and each one's data starts at a multiple of 64
bytes, as PyTorch aligns them (so they can be memory-mapped). In ``data.pkl`` a tensor
is ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
requires_grad, OrderedDict())`` where ``storage`` is the persistent id
``('storage', torch.<Type>Storage, key, location, numel)``; a Parameter is
``torch._utils._rebuild_parameter(tensor, requires_grad, OrderedDict())``.

Loading never runs code named by the file: the unpickler accepts only the globals
that describe tensors and plain containers (see ``load``), plus those the caller
allowlisted by name as in PyTorch (``add_safe_globals`` / the ``safe_globals`` context
manager), and refuses every other one with ``pickle.UnpicklingError``, whatever
``weights_only`` says.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import time
import zlib
from collections import Counter, OrderedDict
from typing import ClassVar

import numpy as np

from . import backend
from .dtype import _ALL as _ALL_DTYPES
from .dtype import dtype as _DType
from .dtype import from_numpy_dtype, to_dtype
from .tensor import Size, Tensor, _wrap

__all__ = ["load", "save", "add_safe_globals", "get_safe_globals", "clear_safe_globals",
           "safe_globals"]

# PyTorch's storage classes and dtype names for distgrad's dtypes.
_STORAGE_OF = {
    "float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
    "uint8": "ByteStorage", "int8": "CharStorage", "int16": "ShortStorage",
    "int32": "IntStorage", "int64": "LongStorage", "bool": "BoolStorage",
    "bfloat16": "BFloat16Storage",
}
_DTYPE_OF_STORAGE = {v: to_dtype(k) for k, v in _STORAGE_OF.items()}
_TORCH_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16",
                        "short": "int16", "int": "int32", "long": "int64"}
# Storage classes and dtypes PyTorch has but distgrad does not.
_UNSUPPORTED_STORAGES = {
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}
_UNSUPPORTED_DTYPES = {
    "complex32", "complex64", "complex128", "cfloat", "cdouble", "chalf",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
    "uint16", "uint32", "uint64", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
    "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
}

_ALIGN = 64
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


# ============================================================================ save
class _Global:
    """Pickles as the global ``module.name`` (a GLOBAL opcode) without importing it."""

    __slots__ = ("module", "name")
    _cache: ClassVar[dict] = {}

    def __new__(cls, module: str, name: str):
        g = cls._cache.get((module, name))
        if g is None:
            g = object.__new__(cls)
            g.module, g.name = module, name
            cls._cache[(module, name)] = g
        return g

    def __repr__(self):
        return f"{self.module}.{self.name}"

    def __call__(self, *args, **kwargs):   # pickle's save_reduce wants a callable
        raise TypeError(f"{self!r} is a reference written into a checkpoint, not a function")


_REBUILD_TENSOR = _Global("torch._utils", "_rebuild_tensor_v2")
_REBUILD_PARAMETER = _Global("torch._utils", "_rebuild_parameter")
_TORCH_SIZE = _Global("torch", "Size")
_TORCH_DEVICE = _Global("torch", "device")


class _StorageTable:
    """The storages a save writes, one per distinct memory block, in first-use order."""

    def __init__(self):
        self.entries = []      # [(key, host array (1-d, C-contiguous), location)]
        self._by_id = {}       # id(root array) -> (key, root)  (root kept alive)

    def add(self, root, host, location) -> str:
        hit = self._by_id.get(id(root))
        if hit is not None and hit[1] is root:
            return hit[0]
        key = str(len(self.entries))
        self._by_id[id(root)] = (key, root)
        self.entries.append((key, host, location))
        return key


def _contiguous_strides(shape) -> tuple:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


def _numpy_view_of_root(arr: np.ndarray):
    """(root, offset, strides) in elements when ``arr`` is a view into a C-contiguous
    array of its own dtype that can be written whole; None when it must be copied."""
    root = arr
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root is arr:
        return None
    if root.dtype != arr.dtype or not root.flags.c_contiguous or root.size == 0 or arr.size == 0:
        return None
    item = arr.itemsize
    delta = arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    if delta < 0 or delta % item or any(s < 0 or s % item for s in arr.strides):
        return None
    offset = delta // item
    strides = tuple(s // item for s in arr.strides)
    last = offset + sum((n - 1) * s for n, s in zip(arr.shape, strides))
    if last >= root.size:
        return None
    return root, offset, strides


class _TorchPickler(pickle._Pickler):
    """A pickler that writes distgrad tensors, dtypes, devices and sizes as their
    PyTorch counterparts, naming PyTorch's globals without importing PyTorch."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def __init__(self, file, protocol, storages: _StorageTable):
        super().__init__(file, protocol)
        self.storages = storages

    def _save_global_ref(self, obj: _Global):
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + obj.module.encode("ascii") + b"\n"
                       + obj.name.encode("ascii") + b"\n")
        self.memoize(obj)

    dispatch[_Global] = _save_global_ref

    def save(self, obj, save_persistent_id=True):
        if type(obj) is _DType:
            obj = _Global("torch", obj.name)
        super().save(obj, save_persistent_id)

    def reducer_override(self, obj):
        if isinstance(obj, Tensor):
            from .nn.parameter import Parameter

            if isinstance(obj, Parameter):
                return (_REBUILD_PARAMETER, (obj.detach(), obj.requires_grad, OrderedDict()))
            return self._reduce_tensor(obj)
        if type(obj) is Size:
            return (_TORCH_SIZE, (tuple(int(s) for s in obj),))
        if type(obj) is backend.device:
            args = (obj.type,) if obj.index is None else (obj.type, obj.index)
            return (_TORCH_DEVICE, args)
        return NotImplemented

    def _reduce_tensor(self, t: Tensor):
        data = t._data
        dt = from_numpy_dtype(data.dtype)
        storage_cls = _Global("torch", _STORAGE_OF[dt.name])
        shape = tuple(int(s) for s in data.shape)
        if backend.is_device_array(data):
            location = f"cuda:{data.device.id}"
            host = np.ascontiguousarray(backend.to_numpy(data)).reshape(-1)
            key = self.storages.add(data, host, location)
            offset, strides = 0, _contiguous_strides(shape)
        else:
            location = "cpu"
            view = _numpy_view_of_root(data)
            if view is not None:
                root, offset, strides = view
                key = self.storages.add(root, root.reshape(-1), location)
            elif data.flags.c_contiguous:
                key = self.storages.add(data, data.reshape(-1), location)
                offset, strides = 0, _contiguous_strides(shape)
            else:
                host = np.ascontiguousarray(data).reshape(-1)
                key = self.storages.add(host, host, location)
                offset, strides = 0, _contiguous_strides(shape)
        numel = len(self.storages.entries[int(key)][1])
        pid = ("storage", storage_cls, key, location, numel)
        return (_REBUILD_TENSOR, (_PersistentRef(pid), offset, shape, strides,
                                  bool(t.requires_grad), OrderedDict()))


class _PersistentRef:
    """A placeholder that the pickler writes as a persistent id."""

    __slots__ = ("pid",)

    def __init__(self, pid):
        self.pid = pid


def _persistent_id(obj):
    return obj.pid if type(obj) is _PersistentRef else None


_TorchPickler.persistent_id = staticmethod(_persistent_id)


class _ZipWriter:
    """A minimal zip writer: stored entries whose data starts at 64-byte boundaries
    (padding in an extra field, as PyTorch does), zip64 where sizes need it."""

    _DOS_DATE = (0 << 9) | (1 << 5) | 1   # 1980-01-01, as a fixed date

    def __init__(self, f, force_zip64: bool = False):
        self.f = f
        self.pos = 0
        self.central = []
        self.force_zip64 = force_zip64

    def _write(self, b):
        self.f.write(b)
        self.pos += len(b)

    def add(self, name: str, data) -> None:
        mv = memoryview(data).cast("B")
        size = mv.nbytes
        crc = zlib.crc32(mv) & 0xFFFFFFFF
        raw_name = name.encode("utf-8")
        flags = 0 if raw_name.isascii() else 0x0800
        zip64 = self.force_zip64 or size >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
        head = 30 + len(raw_name) + len(extra) + 4
        pad = (-(self.pos + head)) % _ALIGN
        extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad   # "FB": padding
        offset = self.pos
        version = 45 if zip64 else 20
        field = 0xFFFFFFFF if zip64 else size
        self._write(struct.pack("<IHHHHHIIIHH", 0x04034B50, version, flags, 0, 0,
                                self._DOS_DATE, crc, field, field, len(raw_name), len(extra)))
        self._write(raw_name)
        self._write(extra)
        self._write(mv)
        self.central.append((raw_name, flags, crc, size, offset))

    def close(self) -> None:
        cd_start = self.pos
        for raw_name, flags, crc, size, offset in self.central:
            zip64 = self.force_zip64 or size >= 0xFFFFFFFF or offset >= 0xFFFFFFFF
            if zip64:
                extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
                size_f = off_f = 0xFFFFFFFF
            else:
                extra, size_f, off_f = b"", size, offset
            version = 45 if zip64 else 20
            self._write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, version, version, flags,
                                    0, 0, self._DOS_DATE, crc, size_f, size_f, len(raw_name),
                                    len(extra), 0, 0, 0, 0, off_f))
            self._write(raw_name)
            self._write(extra)
        cd_size = self.pos - cd_start
        n = len(self.central)
        if self.force_zip64 or n >= 0xFFFF or cd_start >= 0xFFFFFFFF or cd_size >= 0xFFFFFFFF:
            eocd64 = self.pos
            self._write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n,
                                    cd_size, cd_start))
            self._write(struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1))
            self._write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF,
                                    0xFFFFFFFF, 0xFFFFFFFF, 0))
        else:
            self._write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_start, 0))


def _is_path(f) -> bool:
    return isinstance(f, (str, os.PathLike))


def _le_bytes(arr: np.ndarray):
    """``arr`` (1-d, C-contiguous) as little-endian bytes, without a copy where possible."""
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    return np.ascontiguousarray(arr).view(np.uint8)


def _write_archive(obj, f, archive: str, protocol: int, force_zip64: bool = False) -> None:
    storages = _StorageTable()
    buf = io.BytesIO()
    _TorchPickler(buf, protocol, storages).dump(obj)
    z = _ZipWriter(f, force_zip64)
    z.add(f"{archive}/data.pkl", buf.getbuffer())
    z.add(f"{archive}/.format_version", b"1")
    z.add(f"{archive}/.storage_alignment", str(_ALIGN).encode())
    z.add(f"{archive}/byteorder", b"little")
    for key, host, _location in storages.entries:
        z.add(f"{archive}/data/{key}", _le_bytes(host))
    z.add(f"{archive}/version", b"3\n")
    z.add(f"{archive}/.data/serialization_id",
          str(time.time_ns() ^ (os.getpid() << 64) ^ id(obj)).zfill(40)[-40:].encode())
    z.close()


def save(obj, f, pickle_module=None, pickle_protocol=2, _use_new_zipfile_serialization=True,
         _disable_byteorder_record=False):
    """Save ``obj`` to ``f`` (a path or a writable binary file object) in PyTorch's
    checkpoint format, readable by ``torch.load`` (``weights_only=True`` included)
    and by ``distgrad.load``. Tensors are written as PyTorch tensors (CUDA tensors with
    their ``cuda:N`` location), Parameters as Parameters; views of one array share one
    storage in the file."""
    if pickle_module is not None and pickle_module is not pickle:
        raise TypeError("distgrad.save writes with the standard pickle module only; "
                        "leave pickle_module unset")
    if not _use_new_zipfile_serialization:
        raise NotImplementedError("distgrad.save writes only the zip format (PyTorch >= 1.6's "
                                  "default); the legacy format can be read but not written")
    if not isinstance(pickle_protocol, int) or not 2 <= pickle_protocol <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"pickle_protocol must be between 2 and {pickle.HIGHEST_PROTOCOL}, "
                         f"got {pickle_protocol!r}")
    if _is_path(f):
        path = os.fspath(f)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        archive = os.path.splitext(os.path.basename(path))[0] or "archive"
        with open(path, "wb") as fh:
            _write_archive(obj, fh, archive, pickle_protocol)
    else:
        if not hasattr(f, "write"):
            raise TypeError(f"f must be a path or a writable binary file object, "
                            f"got {type(f).__name__}")
        _write_archive(obj, f, "archive", pickle_protocol)
        if hasattr(f, "flush"):
            f.flush()


# ============================================================================ load
# globals the caller allowlisted (``add_safe_globals`` / ``safe_globals``), as PyTorch's:
# each entry is a class or function, or a ``(class or function, "module.name")`` pair
_SAFE_GLOBALS: list = []


def _check_safe_global(entry):
    if isinstance(entry, tuple):
        if (len(entry) != 2 or not callable(entry[0]) or not isinstance(entry[1], str)
                or "." not in entry[1]):
            raise TypeError(f"a safe global is a class or function, or a (class or function, "
                            f"'module.name') pair; got {entry!r}")
        return entry
    if not callable(entry) or not hasattr(entry, "__module__") or not hasattr(entry, "__qualname__"):
        raise TypeError(f"a safe global is a class or function, or a (class or function, "
                        f"'module.name') pair; got {entry!r}")
    return entry


def _safe_global_name(entry) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


def add_safe_globals(safe_globals) -> None:
    """Allow ``load`` to resolve these globals by name (as ``torch.serialization.
    add_safe_globals``): each a class or function, or a ``(class or function,
    "module.name")`` pair for one pickled under another name. Only name these if you
    trust every file you load: the unpickler calls them with arguments from the file."""
    entries = [_check_safe_global(e) for e in safe_globals]
    _SAFE_GLOBALS.extend(entries)


def get_safe_globals() -> list:
    """The globals ``add_safe_globals`` allowlisted (a copy)."""
    return list(_SAFE_GLOBALS)


def clear_safe_globals() -> None:
    """Forget every global ``add_safe_globals`` allowlisted."""
    _SAFE_GLOBALS.clear()


class safe_globals:
    """Context manager: ``add_safe_globals(globals)`` inside the block only."""

    def __init__(self, safe_globals):
        self.safe_globals = [_check_safe_global(e) for e in safe_globals]

    def __enter__(self):
        self._saved = list(_SAFE_GLOBALS)
        _SAFE_GLOBALS.extend(self.safe_globals)
        return self

    def __exit__(self, *exc):
        _SAFE_GLOBALS[:] = self._saved
        return False


def _allowlisted(full: str):
    for entry in reversed(_SAFE_GLOBALS):
        if _safe_global_name(entry) == full:
            return entry[0] if isinstance(entry, tuple) else entry
    return None


def _refuse(what: str, weights_only: bool):
    if weights_only:
        tail = ("distgrad.load(weights_only=True) loads only tensors, Parameters and plain "
                "containers (dict, OrderedDict, list, tuple, set, numbers, strings, None, "
                "dtypes, devices, sizes)")
    else:
        tail = ("distgrad.load never runs code named by a file, even with weights_only=False: "
                "it loads only tensors, Parameters and plain containers (dict, OrderedDict, "
                "list, tuple, set, numbers, strings, None, dtypes, devices, sizes)")
    prefix = "Weights only load failed" if weights_only else "distgrad.load refused the file"
    raise pickle.UnpicklingError(
        f"{prefix}: the file names the global {what}, which is not allowed. "
        f"{tail}. Nothing in the file was executed. Load files from trusted sources with "
        "torch.load(..., weights_only=False) if you need other objects, or allowlist "
        "the global with torch.serialization.add_safe_globals / safe_globals if you "
        "trust it.")


class _StorageType:
    """``torch.<Type>Storage`` (or ``torch.UntypedStorage``) named by a file."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype):
        self.name, self.dtype = name, dtype

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"Weights only load failed: torch.{self.name} may only "
                                     "appear in a storage's persistent id")


class _TypeMarker:
    """``torch.Tensor`` / ``torch.nn.Parameter``, allowed as ``_rebuild_from_type_v2``'s type."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"Weights only load failed: {self.name} may only appear "
                                     "as the type of torch._tensor._rebuild_from_type_v2")


_TENSOR_TYPE = _TypeMarker("torch.Tensor")
_PARAMETER_TYPE = _TypeMarker("torch.nn.parameter.Parameter")


class Storage:
    """A storage read from a checkpoint: what a ``map_location`` callable receives as
    ``storage`` (with the location string it was saved from). Return it, ``storage.cpu()``,
    ``storage.cuda(i)`` or ``storage.to(device)`` -- or None for the default placement."""

    __slots__ = ("array", "device", "dtype")

    def __init__(self, array: np.ndarray, dtype, device):
        self.array, self.dtype, self.device = array, dtype, device

    def size(self) -> int:
        return self.array.size

    def nbytes(self) -> int:
        return self.array.nbytes

    def to(self, device) -> Storage:
        return Storage(self.array, self.dtype, backend.device(str(device)))

    def cpu(self) -> Storage:
        return self.to("cpu")

    def cuda(self, device=None) -> Storage:
        if device is None:
            return self.to("cuda")
        return self.to(device if not isinstance(device, int) else f"cuda:{device}")

    def __repr__(self):
        return f"distgrad.serialization.Storage(dtype={self.dtype}, size={self.size()}, device='{self.device}')"


def _check_device(dev: backend.device, location: str) -> backend.device:
    if dev.type == "cuda" and not backend.cuda_available():
        raise RuntimeError(
            f"Attempting to deserialize object on a CUDA device ({location}) but CUDA is not "
            "available to distgrad. If you are running on a CPU-only machine, please use "
            "distgrad.load with map_location='cpu' to map your storages to the CPU.")
    return dev


def _parse_device(value, location: str) -> backend.device:
    try:
        return backend.device(str(value))
    except RuntimeError:
        raise RuntimeError(f"cannot place a storage saved on '{location}' on '{value}': "
                           "distgrad has only the 'cpu' and 'cuda' devices; pass "
                           "map_location='cpu'") from None


class _Loader:
    """State shared by the restricted unpickler's callbacks during one load."""

    def __init__(self, map_location, weights_only, read_record=None):
        self.map_location = map_location
        self.weights_only = weights_only
        self.read_record = read_record   # key, nbytes -> bytes-like (zip format)
        self.byteorder = "<"             # of the storages' bytes
        self.legacy_limit = 0            # the legacy format's bytes after the header
        self.storages = {}               # key -> Storage
        self.tensors = []                # every tensor made, for the moves to a device
        self.devices = {}                # id(tensor) -> (tensor, its device)

    # --------------------------------------------------------------- placement
    def place(self, storage: Storage, location: str) -> Storage:
        ml = self.map_location
        if ml is None:
            target = location
        elif isinstance(ml, dict):
            target = location
            for k, v in ml.items():
                if str(k) == location:
                    target = v
                    break
        elif callable(ml) and not isinstance(ml, (str, backend.device)):
            out = ml(storage, location)
            if out is None:
                target = location
            elif isinstance(out, Storage):
                target = out.device
            else:
                target = out
        else:
            target = ml
        dev = _check_device(_parse_device(target, location), location)
        return Storage(storage.array, storage.dtype, dev)

    # --------------------------------------------------------------- storages
    def storage_from_pid(self, pid, legacy=False) -> Storage:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
            raise pickle.UnpicklingError(f"Weights only load failed: unknown persistent id "
                                         f"kind {kind!r} (only 'storage' is allowed)")
        if len(pid) != (6 if legacy else 5):
            raise pickle.UnpicklingError(f"corrupt checkpoint: malformed storage id {pid!r}")
        _, stype, key, location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"corrupt checkpoint: storage type {stype!r} is not "
                                         "a torch storage class")
        if not isinstance(key, str) or not isinstance(location, str) or \
                type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"corrupt checkpoint: malformed storage id {pid!r}")
        if stype.dtype is None:
            raise RuntimeError(f"this checkpoint holds a torch.{stype.name} (dtype "
                               f"{_UNSUPPORTED_STORAGES.get(stype.name, '?')}), which distgrad "
                               f"does not have; supported: "
                               f"{', '.join(d.name for d in _ALL_DTYPES)}")
        hit = self.storages.get(key)
        if hit is None:
            npd = stype.dtype.np.newbyteorder(self.byteorder)
            if legacy:
                if numel * npd.itemsize > self.legacy_limit:
                    raise RuntimeError(f"corrupt checkpoint: storage {key!r} claims {numel} "
                                       "elements, more than the file holds")
                arr = np.empty(numel, npd)     # filled once the object is read
            else:
                arr = np.frombuffer(self.read_record(key, numel * npd.itemsize), npd,
                                    count=numel)
            hit = self.storages[key] = self.place(Storage(arr, stype.dtype, backend.CPU),
                                                  location)
        if legacy and pid[5] is not None:
            view_key, offset, size = pid[5]
            if type(offset) is not int or type(size) is not int or offset < 0 or size < 0 \
                    or offset + size > hit.array.size:
                raise pickle.UnpicklingError(f"corrupt checkpoint: storage view {pid[5]!r} "
                                             "lies outside its storage")
            view = self.storages.get(view_key)
            if view is None:
                view = self.storages[view_key] = Storage(hit.array[offset:offset + size],
                                                         hit.dtype, hit.device)
            return view
        return hit

    # --------------------------------------------------------------- rebuilds
    def rebuild_tensor(self, storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
        if not isinstance(storage, Storage):
            raise pickle.UnpicklingError("Weights only load failed: _rebuild_tensor_v2 expects "
                                         f"a storage, got {type(storage).__name__}")
        size, stride = tuple(size), tuple(stride)
        ints = (storage_offset, *size, *stride)
        if len(size) != len(stride) or any(type(v) is not int for v in ints) or \
                min(ints) < 0:
            raise pickle.UnpicklingError(f"corrupt checkpoint: tensor of size {size}, stride "
                                         f"{stride}, offset {storage_offset!r}")
        arr = storage.array
        numel = 1
        for s in size:
            numel *= s
        if numel:
            last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= arr.size:
                raise pickle.UnpicklingError(
                    f"corrupt checkpoint: a tensor of size {list(size)}, stride {list(stride)} "
                    f"at offset {storage_offset} does not fit in its storage of {arr.size} "
                    "elements")
            view = np.lib.stride_tricks.as_strided(
                arr[storage_offset:], size, tuple(s * arr.itemsize for s in stride))
        else:
            view = np.empty(size, arr.dtype)
        if not view.dtype.isnative:
            view = view.astype(view.dtype.newbyteorder("="))
        t = _wrap(view)
        if requires_grad:
            t.requires_grad_(True)
        self._made(t, storage.device)
        return t

    def _made(self, t, dev):
        self.tensors.append((t, dev))
        self.devices[id(t)] = (t, dev)

    def rebuild_parameter(self, data, requires_grad, backward_hooks=None, state=None):
        from .nn.parameter import Parameter

        if not isinstance(data, Tensor):
            raise pickle.UnpicklingError("Weights only load failed: _rebuild_parameter expects "
                                         f"a tensor, got {type(data).__name__}")
        hit = self.devices.get(id(data))
        dev = hit[1] if hit is not None and hit[0] is data else backend.CPU
        p = Parameter(data, bool(requires_grad))
        if state:
            _set_state(p, state)
        self._made(p, dev)
        return p

    def rebuild_parameter_with_state(self, data, requires_grad, backward_hooks, state):
        return self.rebuild_parameter(data, requires_grad, backward_hooks, state)

    def rebuild_from_type_v2(self, func, new_type, args, state):
        if func not in (self.rebuild_tensor, self.rebuild_parameter,
                        self.rebuild_parameter_with_state):
            raise pickle.UnpicklingError("Weights only load failed: _rebuild_from_type_v2 "
                                         "may only call a torch._utils rebuild function")
        ret = func(*args)
        if new_type is _PARAMETER_TYPE and not _is_parameter(ret):
            ret = self.rebuild_parameter(ret, ret.requires_grad)
        elif new_type is not _TENSOR_TYPE and new_type is not _PARAMETER_TYPE:
            raise pickle.UnpicklingError(f"Weights only load failed: tensor subclass "
                                         f"{new_type!r} is not allowed")
        if state:
            _set_state(ret, state)
        return ret

    # --------------------------------------------------------------- globals
    def find_class(self, module: str, name: str):
        if module == "__builtin__":
            module = "builtins"
        full = f"{module}.{name}"
        if module == "torch._utils":
            fn = {"_rebuild_tensor_v2": self.rebuild_tensor,
                  "_rebuild_parameter": self.rebuild_parameter,
                  "_rebuild_parameter_with_state": self.rebuild_parameter_with_state}.get(name)
            if fn is not None:
                return fn
        elif full == "torch._tensor._rebuild_from_type_v2":
            return self.rebuild_from_type_v2
        elif full == "collections.OrderedDict":
            return OrderedDict
        elif full == "collections.Counter":
            return Counter
        elif module == "builtins" and name in ("set", "frozenset", "complex", "bytearray"):
            return {"set": set, "frozenset": frozenset, "complex": complex,
                    "bytearray": bytearray}[name]
        elif full == "_codecs.encode":
            return _latin1_encode
        elif full == "torch.Size":
            return _make_size
        elif full == "torch.device":
            return _make_device
        elif full == "torch.Tensor":
            return _TENSOR_TYPE
        elif full in ("torch.nn.parameter.Parameter", "torch.nn.Parameter"):
            return _PARAMETER_TYPE
        elif module in ("torch", "torch.storage") and name.endswith("Storage"):
            if name in _DTYPE_OF_STORAGE:
                return _StorageType(name, _DTYPE_OF_STORAGE[name])
            if name in ("UntypedStorage", "ByteStorage"):
                return _StorageType(name, to_dtype("uint8"))
            if name in _UNSUPPORTED_STORAGES:
                return _StorageType(name, None)
        elif module == "torch":
            dname = _TORCH_DTYPE_ALIASES.get(name, name)
            if dname in _STORAGE_OF:
                return to_dtype(dname)
            if name in _UNSUPPORTED_DTYPES:
                raise pickle.UnpicklingError(
                    f"this checkpoint names the dtype torch.{name}, which distgrad does not "
                    f"have; supported: {', '.join(d.name for d in _ALL_DTYPES)}")
        allowed = _allowlisted(full)
        if allowed is not None:
            return allowed
        _refuse(full, self.weights_only)

    # --------------------------------------------------------------- finish
    def finish(self):
        """Put the tensors on their devices (storages are read by now)."""
        moved = {}
        for t, dev in self.tensors:
            if dev.type == "cpu":
                continue
            arr = t._data
            hit = moved.get(id(arr))
            if hit is None or hit[0] is not arr:
                hit = moved[id(arr)] = (arr, backend.to_device(arr, dev))
            t._data = hit[1]


def _is_parameter(t) -> bool:
    from .nn.parameter import Parameter

    return isinstance(t, Parameter)


def _set_state(t, state):
    """Python attributes saved with a tensor (``tensor.foo = 1``): public names only."""
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    for part in (state, slots):
        if not part:
            continue
        if not isinstance(part, dict):
            raise pickle.UnpicklingError("Weights only load failed: a tensor's state must be "
                                         "a dict of attributes")
        for k, v in part.items():
            if not isinstance(k, str) or k.startswith("_"):
                raise pickle.UnpicklingError(f"Weights only load failed: refusing to set the "
                                             f"tensor attribute {k!r}")
            setattr(t, k, v)


def _latin1_encode(obj, encoding="latin1"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("Weights only load failed: _codecs.encode is allowed "
                                     "only as protocol 2's encoding of bytes (a str, 'latin1')")
    return obj.encode("latin1")


def _make_size(dims=()):
    dims = tuple(dims)
    if any(type(d) is not int for d in dims):
        raise pickle.UnpicklingError(f"Weights only load failed: torch.Size{dims!r}")
    return Size(dims)


def _make_device(type_="cpu", index=None):
    if not isinstance(type_, str) or (index is not None and type(index) is not int):
        raise pickle.UnpicklingError(f"Weights only load failed: torch.device({type_!r}, "
                                     f"{index!r})")
    return backend.device(type_, index)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, loader: _Loader, legacy=False, **kw):
        super().__init__(file, **kw)
        self._loader = loader
        self._legacy = legacy

    def find_class(self, module, name):
        return self._loader.find_class(module, name)

    def persistent_load(self, pid):
        return self._loader.storage_from_pid(pid, self._legacy)


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy format's header pickles: numbers, strings and containers only."""

    def find_class(self, module, name):
        _refuse(f"{module}.{name}", True)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("corrupt checkpoint: unexpected persistent id in a header")


def _describe(f) -> str:
    if _is_path(f):
        return repr(os.fspath(f))
    name = getattr(f, "name", None)
    return repr(name) if isinstance(name, str) else f"<{type(f).__name__}>"


def _local_data_offset(fh, info) -> int:
    """Where a stored zip entry's data starts in the file."""
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise RuntimeError("bad local header")
    nlen, elen = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + nlen + elen


def _load_zip(fh, what, loader: _Loader, mmap_path, pickle_kw):
    import zipfile

    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise RuntimeError(f"{what} is not a valid PyTorch checkpoint: cannot read its zip "
                           f"archive ({e}); the file may be truncated or corrupt") from None
    with zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("data.pkl") and n.count("/") <= 1), None)
        if pkl is None:
            raise RuntimeError(f"{what} is a zip archive but not a PyTorch checkpoint: it has "
                               "no data.pkl")
        prefix = pkl[: -len("data.pkl")]
        infos = {i.filename: i for i in zf.infolist()}
        byteorder = "little"
        if prefix + "byteorder" in infos:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise RuntimeError(f"{what}: unknown byteorder record {byteorder!r}")
        mm = None
        if mmap_path is not None:
            mm = np.memmap(mmap_path, np.uint8, mode="c")

        def read_record(key, nbytes):
            name = f"{prefix}data/{key}"
            info = infos.get(name)
            if info is None:
                raise RuntimeError(f"{what} is corrupt: the storage record {name!r} is missing")
            if info.file_size < nbytes:
                raise RuntimeError(f"{what} is corrupt: the storage record {name!r} has "
                                   f"{info.file_size} bytes, {nbytes} expected")
            if mm is not None and info.compress_type == zipfile.ZIP_STORED:
                start = _local_data_offset(fh, info)
                raw = mm[start:start + nbytes]
            else:
                try:
                    raw = bytearray(zf.read(name))   # writable, as tensors' memory must be
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
                    raise RuntimeError(f"{what} is corrupt: cannot read the storage record "
                                       f"{name!r} ({e})") from None
            return raw

        loader.read_record = read_record
        loader.byteorder = ">" if byteorder == "big" else "<"
        try:
            data = zf.read(pkl)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise RuntimeError(f"{what} is corrupt: cannot read {pkl!r} ({e})") from None
        up = _RestrictedUnpickler(io.BytesIO(data), loader, **pickle_kw)
        try:
            result = up.load()
        except (EOFError, struct.error) as e:
            raise RuntimeError(f"{what} is corrupt: {pkl!r} is not a complete pickle ({e})") \
                from None
        loader.finish()
        return result


def _load_legacy(fh, what, loader: _Loader, pickle_kw):
    def header():
        try:
            return _PlainUnpickler(fh, **pickle_kw).load()
        except (EOFError, pickle.UnpicklingError, ValueError, struct.error) as e:
            raise RuntimeError(f"{what} is not a PyTorch checkpoint: it is neither a zip "
                               f"archive nor the legacy format ({type(e).__name__}: {e})") \
                from None

    magic = header()
    if magic != _LEGACY_MAGIC:
        raise RuntimeError(f"{what} is not a PyTorch checkpoint: it is neither a zip archive "
                           "nor the legacy format (invalid magic number)")
    protocol = header()
    if protocol != _LEGACY_PROTOCOL:
        raise RuntimeError(f"{what}: unsupported legacy checkpoint protocol {protocol!r}")
    sys_info = header()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        loader.byteorder = ">"
    here = fh.tell()
    loader.legacy_limit = fh.seek(0, io.SEEK_END) - here
    fh.seek(here)
    try:
        result = _RestrictedUnpickler(fh, loader, legacy=True, **pickle_kw).load()
        keys = _PlainUnpickler(fh, **pickle_kw).load()
    except (EOFError, struct.error) as e:
        raise RuntimeError(f"{what} is corrupt or truncated ({e})") from None
    if not isinstance(keys, list):
        raise RuntimeError(f"{what} is corrupt: bad storage key list")  # noqa: TRY004
    for key in keys:
        st = loader.storages.get(key)
        if st is None:
            raise RuntimeError(f"{what} is corrupt: storage {key!r} is not used by the object")
        head = fh.read(8)
        if len(head) != 8:
            raise RuntimeError(f"{what} is truncated: storage {key!r} is missing")
        (numel,) = struct.unpack(loader.byteorder + "q", head)
        if numel != st.array.size:
            raise RuntimeError(f"{what} is corrupt: storage {key!r} has {numel} elements, "
                               f"{st.array.size} expected")
        raw = fh.read(st.array.nbytes)
        if len(raw) != st.array.nbytes:
            raise RuntimeError(f"{what} is truncated: storage {key!r} is incomplete")
        st.array[...] = np.frombuffer(raw, st.array.dtype)
    loader.finish()
    return result


def load(f, map_location=None, pickle_module=None, *, weights_only=True, mmap=None,
         **pickle_load_args):
    """Load an object saved with ``distgrad.save`` or ``torch.save`` from ``f`` (a path
    or a readable binary file object); tensors come back as distgrad tensors.

    Reads PyTorch's zip format (PyTorch >= 1.6, the default) and its legacy non-zip
    format. ``map_location`` places storages as in ``torch.load``: None (where they
    were saved), a device or string ('cpu', 'cuda:0'), a dict from saved location to
    new location, or a callable ``(storage, location)`` returning a storage
    (``storage``, ``storage.cpu()``, ``storage.cuda(i)``) or None.

    Only tensors, Parameters and plain containers are loaded, and the globals allowlisted
    with ``add_safe_globals`` / ``safe_globals`` (e.g. numpy's array globals, for a file
    ``torch.save`` wrote a numpy array to); any other global the file names raises
    ``pickle.UnpicklingError`` naming it, and nothing in the file is executed.
    ``weights_only=False`` does not lift this: distgrad never runs code from a
    checkpoint that the caller did not allowlist. ``mmap=True`` (a path to a zip-format
    file) maps storages from the file copy-on-write instead of reading them."""
    if weights_only is None:
        weights_only = True
    if pickle_module is not None and pickle_module is not pickle:
        raise RuntimeError("distgrad.load reads with its own restricted unpickler; "
                           "leave pickle_module unset")
    unknown = set(pickle_load_args) - {"encoding", "errors"}
    if unknown:
        raise TypeError(f"load() got unexpected keyword arguments {sorted(unknown)}")
    pickle_kw = {"encoding": pickle_load_args.get("encoding", "utf-8")}
    if "errors" in pickle_load_args:
        pickle_kw["errors"] = pickle_load_args["errors"]
    if isinstance(map_location, (str, backend.device)):
        _parse_device(map_location, "any")
    what = _describe(f)
    loader = _Loader(map_location, bool(weights_only))

    if _is_path(f):
        path = os.fspath(f)
        with open(path, "rb") as fh:
            return _load_file(fh, what, loader, path if mmap else None, pickle_kw)
    if mmap:
        raise ValueError("mmap=True needs f to be a path to the file")
    if not hasattr(f, "read"):
        raise TypeError(f"f must be a path or a readable binary file object, got "
                        f"{type(f).__name__}")
    fh = f
    if not (hasattr(f, "seekable") and f.seekable()):
        fh = io.BytesIO(f.read())
    return _load_file(fh, what, loader, None, pickle_kw)


def _load_file(fh, what, loader, mmap_path, pickle_kw):
    import zipfile

    start = fh.tell()
    head = fh.read(4)
    fh.seek(start)
    if not head:
        raise RuntimeError(f"{what} is empty: not a PyTorch checkpoint")
    if head[:2] == b"PK" or zipfile.is_zipfile(fh):
        fh.seek(start)
        return _load_zip(fh, what, loader, mmap_path, pickle_kw)
    fh.seek(start)
    if mmap_path is not None:
        raise RuntimeError(f"{what}: mmap can only be used with files saved in the zip format "
                           "(torch.save's default since PyTorch 1.6)")
    return _load_legacy(fh, what, loader, pickle_kw)
