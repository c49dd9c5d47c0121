"""Training checkpoints that survive crashes.

A checkpoint is two files in the run directory: ``ckpt-STEP.safetensors`` (model
and optimizer tensors; loading it runs no code, unlike pickle) and
``ckpt-STEP.json`` (step, config hash, RNG state, data position, optimizer
hyper-parameters, schedule). Each is written to a temporary file, flushed to disk
and renamed into place, the JSON last: a checkpoint counts only once its JSON
exists, so a job killed in the middle of saving leaves the previous one intact.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from ..backend import to_numpy
from ..ops.creation import from_numpy
from ..tensor import Tensor

_NAME = re.compile(r"^ckpt-(\d{8})\.json$")


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def paths(run_dir: str, step: int) -> tuple:
    base = os.path.join(run_dir, f"ckpt-{step:08d}")
    return base + ".safetensors", base + ".json"


def _host(arr):
    """A C-contiguous host copy with the same shape (0-d arrays stay 0-d)."""
    a = to_numpy(arr)
    return np.ascontiguousarray(a).reshape(a.shape)


def save(run_dir: str, step: int, model, optimizer, scheduler, meta: dict, keep: int) -> str:
    """Write the checkpoint of ``step`` atomically and keep only the last ``keep``."""
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
    meta = dict(meta, step=step, format=1,
                optimizer={"param_groups": osd["param_groups"], "state": plain_state},
                scheduler=scheduler.state_dict() if scheduler is not None else None)
    tensor_path, meta_path = paths(run_dir, step)
    _atomic_write(tensor_path, st_save(tensors))
    _pause_for_tests(step)
    _atomic_write(meta_path, json.dumps(meta, indent=1).encode())
    _fsync_dir(run_dir)
    for old in complete_steps(run_dir)[:-keep]:
        for p in reversed(paths(run_dir, old)):
            if os.path.exists(p):
                os.remove(p)
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


def complete_steps(run_dir: str) -> list:
    """Steps with a complete checkpoint (both files, readable JSON), oldest first."""
    steps = []
    if not os.path.isdir(run_dir):
        return steps
    for name in os.listdir(run_dir):
        m = _NAME.match(name)
        if not m:
            continue
        step = int(m.group(1))
        tensor_path, meta_path = paths(run_dir, step)
        if not os.path.exists(tensor_path):
            continue
        try:
            with open(meta_path) as f:
                json.load(f)
        except (OSError, ValueError):
            continue
        steps.append(step)
    return sorted(steps)


def latest(run_dir: str) -> int | None:
    steps = complete_steps(run_dir)
    return steps[-1] if steps else None


def load(run_dir: str, step: int, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer and schedule from the checkpoint of ``step``; returns
    its metadata."""
    from safetensors.numpy import load_file

    tensor_path, meta_path = paths(run_dir, step)
    with open(meta_path) as f:
        meta = json.load(f)
    arrays = load_file(tensor_path)
    model_sd = {k[len("model."):]: from_numpy(v) for k, v in arrays.items() if k.startswith("model.")}
    model.load_state_dict(model_sd)
    state = {}
    for k, v in arrays.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = from_numpy(v)
    for idx, extra in meta["optimizer"]["state"].items():
        state.setdefault(int(idx), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    return meta
