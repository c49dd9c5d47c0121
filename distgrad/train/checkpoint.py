"""Training checkpoints that survive crashes and are verified before use.

A checkpoint is two files in the run directory: ``ckpt-STEP.safetensors`` (model
and optimizer tensors; loading it runs no code, unlike pickle) and
``ckpt-STEP.json`` (step, config hash, RNG state, data position, optimizer
hyper-parameters, schedule). Each is written to a temporary file, flushed to disk
and renamed into place, the JSON last: a checkpoint counts only once its JSON
exists, so a job killed in the middle of saving leaves the previous one intact.

The JSON (format 2) records the SHA-256 and size of the tensor file and the
SHA-256 of its own content, so a file damaged or edited after it was written is
refused by :func:`verify` and :func:`load` instead of being resumed from;
:func:`find_resumable` walks back to the newest checkpoint that verifies. A
checkpoint holding NaN or Inf is never written.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
from ..dtype import BFLOAT16_NP as _BF16, kind_of as _kind_of

from ..backend import to_numpy
from ..ops.creation import from_numpy
from ..tensor import Tensor
from .records import atomic_write, dumps_strict, non_finite_paths

__all__ = ["CheckpointError", "NonFiniteCheckpointError", "complete_steps", "dumps_strict",
           "find_resumable", "latest", "load", "paths", "save", "verify"]

FORMAT = 2
_NAME = re.compile(r"^ckpt-(\d{8})\.(?:json|safetensors)$")
_KEYS = ("format", "optimizer", "scheduler", "step")
_HASH_KEYS = ("meta_sha256", "tensors_bytes", "tensors_sha256")
_SHOWN = 5  # offending names listed in an error before "and N more"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or used; the message names the file and why."""


class NonFiniteCheckpointError(CheckpointError):
    """The state to be saved holds NaN or Inf; nothing was written."""


def _reject_constant(name: str):
    raise ValueError(f"it holds {name}, which is not standard JSON")


def _meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def _listing(names: list) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


# ----------------------------------------------------------------------- files
def paths(run_dir: str, step: int) -> tuple:
    base = os.path.join(run_dir, f"ckpt-{step:08d}")
    return base + ".safetensors", base + ".json"


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _atomic_write(path: str, data: bytes) -> None:
    """``records.atomic_write``, with the failure named as a checkpoint's."""
    try:
        atomic_write(path, data)
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e}") from e


def _host(arr):
    """A C-contiguous host copy with the same shape (0-d arrays stay 0-d)."""
    a = to_numpy(arr)
    return np.ascontiguousarray(a).reshape(a.shape)


def _non_finite(arrays: dict) -> list:
    return [k for k, a in arrays.items() if _kind_of(a.dtype) in "fc" and not np.isfinite(a).all()]


# ------------------------------------------------------------------------ save
def save(run_dir: str, step: int, model, optimizer, scheduler, meta: dict, keep: int) -> str:
    """Write the checkpoint of ``step`` atomically and keep only the last ``keep``.

    Raises :class:`NonFiniteCheckpointError` (writing nothing) if a tensor or a value
    of the metadata is NaN or Inf, and :class:`CheckpointError` if writing fails (no
    temporary file and no half of this checkpoint is left; earlier ones are untouched).
    Returns the path of the JSON."""
    from safetensors.numpy import save as st_save

    tensors = {f"model.{k}": _host(v._data) for k, v in model.state_dict().items()}
    osd = optimizer.state_dict()
    plain_state = {}
    for idx, state in osd["state"].items():
        for name, val in state.items():
            if isinstance(val, Tensor):
                tensors[f"optim.{idx}.{name}"] = _host(val._data)
            else:
                plain_state.setdefault(str(idx), {})[name] = val
    bad = _non_finite(tensors)
    if bad:
        raise NonFiniteCheckpointError(
            f"refusing to save the checkpoint of step {step}: {len(bad)} tensor(s) hold NaN "
            f"or Inf: {_listing(bad)}")
    blob = st_save(tensors)
    meta = dict(meta, step=step, format=FORMAT,
                optimizer={"param_groups": osd["param_groups"], "state": plain_state},
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                tensors_sha256=hashlib.sha256(blob).hexdigest(), tensors_bytes=len(blob))
    bad = non_finite_paths(meta)
    if bad:
        raise NonFiniteCheckpointError(
            f"refusing to save the checkpoint of step {step}: {len(bad)} metadata value(s) "
            f"are NaN or Inf: {_listing(bad)}")
    # The digest is taken of the metadata as it will read back (tuples become lists).
    meta = json.loads(json.dumps(meta, allow_nan=False))
    meta["meta_sha256"] = _meta_digest(meta)
    text = json.dumps(meta, indent=1, allow_nan=False).encode()

    tensor_path, meta_path = paths(run_dir, step)
    # A JSON left from an earlier save of this step would pair with the new tensors.
    _remove(meta_path)
    try:
        _atomic_write(tensor_path, blob)
        _pause_for_tests(step)
        _atomic_write(meta_path, text)
    except BaseException:
        _remove(meta_path)
        _remove(tensor_path)
        raise
    for old in complete_steps(run_dir)[:-keep]:
        for p in reversed(paths(run_dir, old)):
            _remove(p)
    return meta_path


def _pause_for_tests(step: int) -> None:
    """``DISTGRAD_TEST_PAUSE_IN_SAVE=FLAG@STEP``: when saving STEP, touch FLAG and wait
    between the two files, so a test can kill the job in the middle of a save."""
    spec = os.environ.get("DISTGRAD_TEST_PAUSE_IN_SAVE")
    if not spec:
        return
    flag, _, at = spec.rpartition("@")
    if int(at) == step:
        import time

        open(flag, "w").close()
        time.sleep(120)


# ---------------------------------------------------------------------- checks
_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number",
          bool: "a boolean", type(None): "null"}


def _read_meta(meta_path: str) -> dict:
    """The parsed JSON object of a checkpoint (strict JSON), or CheckpointError."""
    try:
        with open(meta_path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"{meta_path} cannot be read: {e}") from e
    try:
        meta = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as e:
        raise CheckpointError(f"{meta_path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{meta_path} is not a JSON object (it holds {_KINDS.get(type(meta), type(meta).__name__)})")
    return meta


def _checked_meta(run_dir: str, step: int) -> dict:
    """The metadata of the checkpoint of ``step``, its keys and own SHA-256 checked."""
    tensor_path, meta_path = paths(run_dir, step)
    if not os.path.exists(meta_path) and os.path.exists(tensor_path):
        raise CheckpointError(f"{meta_path} does not exist: the checkpoint of step {step} is "
                              "incomplete (its JSON was never written: the save was interrupted)")
    meta = _read_meta(meta_path)
    if "format" in meta and meta["format"] not in (1, FORMAT):
        raise CheckpointError(f"{meta_path} has format {meta['format']!r}; this version reads "
                              f"formats 1 and {FORMAT}")
    needed = _KEYS + (_HASH_KEYS if meta.get("format") != 1 else ())
    missing = sorted(k for k in needed if k not in meta)
    if missing:
        raise CheckpointError(f"{meta_path} lacks the key(s) {', '.join(missing)}")
    if meta["format"] == FORMAT and meta["meta_sha256"] != _meta_digest(meta):
        raise CheckpointError(f"{meta_path}: its content does not match the SHA-256 it records "
                              "(edited or damaged after it was written)")
    if meta["step"] != step:
        raise CheckpointError(f"{meta_path} records step {meta['step']!r}, not {step}")
    return meta


def _read_tensor_bytes(run_dir: str, step: int, meta: dict) -> bytes:
    """The tensor file's bytes, checked against the size and SHA-256 the JSON records."""
    tensor_path, meta_path = paths(run_dir, step)
    try:
        with open(tensor_path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{tensor_path} does not exist (the tensors of the checkpoint "
                              "are missing)") from None
    except OSError as e:
        raise CheckpointError(f"{tensor_path} cannot be read: {e}") from e
    if meta["format"] == 1:
        return data
    if len(data) != meta["tensors_bytes"]:
        hint = " (truncated?)" if len(data) < meta["tensors_bytes"] else ""
        raise CheckpointError(f"{tensor_path} holds {len(data)} bytes, the checkpoint recorded "
                              f"{meta['tensors_bytes']}{hint}")
    if hashlib.sha256(data).hexdigest() != meta["tensors_sha256"]:
        raise CheckpointError(
            f"{tensor_path}: its SHA-256 does not match the one recorded in "
            f"{os.path.basename(meta_path)} (damaged or changed after it was written)")
    return data


# safetensors' dtype names; its numpy loader does not know BF16, so the file is read here.
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": _BF16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_}


def _st_load(data: bytes) -> dict:
    from safetensors import deserialize

    arrays = {}
    for name, v in deserialize(data):
        if v["dtype"] not in _ST_DTYPES:
            raise ValueError(f"tensor {name!r} has the unsupported dtype {v['dtype']}")
        arrays[name] = np.frombuffer(v["data"], _ST_DTYPES[v["dtype"]]).reshape(v["shape"])
    return arrays


def _parse_tensors(tensor_path: str, data: bytes) -> dict:
    from safetensors import SafetensorError

    try:
        arrays = _st_load(data)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{tensor_path} is not a readable safetensors file: {e}") from e
    bad = _non_finite(arrays)
    if bad:
        raise CheckpointError(f"{tensor_path}: {len(bad)} tensor(s) hold NaN or Inf: {_listing(bad)}")
    return arrays


def verify(run_dir: str, step: int) -> str | None:
    """Why the checkpoint of ``step`` cannot be used (naming the file), or None if it can.

    Format 2: the JSON must be strict JSON matching its own SHA-256, and the tensor
    file must have the size and SHA-256 it records (save never writes NaN or Inf).
    Format 1 (older versions, no hashes) cannot be verified: it is accepted if the
    JSON parses, has the needed keys and the tensor file loads and is finite."""
    try:
        meta = _checked_meta(run_dir, step)
        data = _read_tensor_bytes(run_dir, step, meta)
        if meta["format"] == 1:
            _parse_tensors(paths(run_dir, step)[0], data)
    except CheckpointError as e:
        return str(e)
    return None


def _steps_on_disk(run_dir: str) -> set:
    if not os.path.isdir(run_dir):
        return set()
    return {int(m.group(1)) for m in map(_NAME.match, os.listdir(run_dir)) if m}


def find_resumable(run_dir: str) -> tuple:
    """``(step, skipped)``: the newest step whose checkpoint verifies (None if none) and
    ``(step, reason)`` for each newer checkpoint that does not, newest first."""
    skipped = []
    for step in sorted(_steps_on_disk(run_dir), reverse=True):
        reason = verify(run_dir, step)
        if reason is None:
            return step, skipped
        skipped.append((step, reason))
    return None, skipped


def complete_steps(run_dir: str) -> list:
    """Steps with both files and a JSON object, oldest first (cheap: nothing is hashed,
    so a listed checkpoint may still fail :func:`verify`)."""
    steps = []
    for step in _steps_on_disk(run_dir):
        tensor_path, meta_path = paths(run_dir, step)
        try:
            _read_meta(meta_path)
        except CheckpointError:
            continue
        if os.path.exists(tensor_path):
            steps.append(step)
    return sorted(steps)


def latest(run_dir: str) -> int | None:
    steps = complete_steps(run_dir)
    return steps[-1] if steps else None


# ------------------------------------------------------------------------ load
def load(run_dir: str, step: int, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer and schedule from the checkpoint of ``step``; returns
    its metadata. The tensor file is read once and its bytes checked against the
    SHA-256 the JSON records, so each rank verifies the copy it read. Raises
    :class:`CheckpointError` naming the file if anything is wrong."""
    tensor_path, meta_path = paths(run_dir, step)
    meta = _checked_meta(run_dir, step)
    arrays = _parse_tensors(tensor_path, _read_tensor_bytes(run_dir, step, meta))
    model_sd = {k[len("model."):]: from_numpy(v) for k, v in arrays.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_sd)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{tensor_path} does not fit the model: {e}") from e
    try:
        state = {}
        for k, v in arrays.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = from_numpy(v)
        for idx, extra in meta["optimizer"]["state"].items():
            state.setdefault(int(idx), {}).update(extra)
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
        if scheduler is not None and meta["scheduler"] is not None:
            scheduler.load_state_dict(meta["scheduler"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{meta_path} and {tensor_path} do not fit the optimizer or "
                              f"schedule: {type(e).__name__}: {e}") from e
    return meta
