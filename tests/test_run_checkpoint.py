"""Run snapshots (``distgrad.train.checkpoint``) are verified: every way of damaging the
newest checkpoint is named by ``verify``, skipped by ``find_resumable`` and refused by
``load``; ``save`` never writes NaN, bare ``NaN`` tokens or a half checkpoint. In
process, real files, no MPI."""
import errno
import hashlib
import json
import os
import struct

import numpy as np
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

import distgrad as dg
from distgrad import nn, optim
from distgrad.train import checkpoint as ckpt


def make():
    dg.manual_seed(0)
    model = nn.Linear(8, 8)  # a 256-byte weight: room to flip 64 bytes inside it
    o = optim.AdamW(model.parameters(), lr=0.1)
    return model, o, optim.lr_scheduler.LambdaLR(o, lambda s: 1.0)


def train_step(model, o, sched):
    o.zero_grad()
    model(dg.tensor(np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8))).pow(2).sum().backward()
    o.step()
    sched.step()


@pytest.fixture
def run(tmp_path):
    """A run directory with checkpoints at steps 1 and 2, and the live model."""
    model, o, sched = make()
    for step in (1, 2):
        train_step(model, o, sched)
        meta = {"config_hash": "x", "epoch": 0, "batch": step}
        ckpt.save(str(tmp_path), step, model, o, sched, meta, keep=5)
    return str(tmp_path), (model, o, sched)


def strict_loads(text):
    def no(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=no)


def read_meta(run_dir, step):
    with open(ckpt.paths(run_dir, step)[1]) as f:
        return strict_loads(f.read())


def write_json(run_dir, step, obj):
    with open(ckpt.paths(run_dir, step)[1], "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def data_region(path, name):
    """(start, end) byte offsets of tensor ``name``'s data in a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8:8 + n])[name]["data_offsets"]
    return 8 + n + begin, 8 + n + end


# ------------------------------------------------------------ ways to damage step 2
def flip_64_bytes_of_the_weight(run_dir):
    path = ckpt.paths(run_dir, 2)[0]
    start, end = data_region(path, "model.weight")
    assert end - start >= 64
    with open(path, "r+b") as f:
        f.seek(start)
        chunk = f.read(64)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in chunk))


def fill_the_weight_with_nan(run_dir):
    path = ckpt.paths(run_dir, 2)[0]
    with open(path, "rb") as f:
        arrays = st_load(f.read())
    arrays["model.weight"] = np.full_like(arrays["model.weight"], np.nan)
    with open(path, "wb") as f:
        f.write(st_save(arrays))


def truncate_the_tensors(run_dir):
    path = ckpt.paths(run_dir, 2)[0]
    os.truncate(path, os.path.getsize(path) // 2)


def empty_the_tensors(run_dir):
    open(ckpt.paths(run_dir, 2)[0], "wb").close()


def delete_the_tensors(run_dir):
    os.remove(ckpt.paths(run_dir, 2)[0])


def move_the_data_position(run_dir):
    meta = read_meta(run_dir, 2)
    meta["batch"] += 7
    write_json(run_dir, 2, meta)


def set_the_learning_rate_to_123(run_dir):
    meta = read_meta(run_dir, 2)
    meta["optimizer"]["param_groups"][0]["lr"] = 123.0
    write_json(run_dir, 2, meta)


def delete_the_json(run_dir):
    os.remove(ckpt.paths(run_dir, 2)[1])


TENSORS, JSON = 0, 1
DAMAGE = {  # how -> (damage, which file is named, what the reason says)
    "64 bytes flipped inside a weight": (flip_64_bytes_of_the_weight, TENSORS,
                                         "its SHA-256 does not match the one recorded in ckpt-00000002.json"),
    "a weight filled with NaN": (fill_the_weight_with_nan, TENSORS, "SHA-256 does not match"),
    "the tensor file truncated": (truncate_the_tensors, TENSORS, "(truncated?)"),
    "the tensor file empty": (empty_the_tensors, TENSORS, "holds 0 bytes, the checkpoint recorded"),
    "the tensor file deleted": (delete_the_tensors, TENSORS, "does not exist"),
    "the JSON a list": (lambda d: write_json(d, 2, []), JSON, "is not a JSON object (it holds a list)"),
    "the JSON an empty object": (lambda d: write_json(d, 2, {}), JSON,
                                 "lacks the key(s) format, meta_sha256, optimizer, scheduler, step"),
    "the JSON not valid JSON": (lambda d: write_json(d, 2, '{"step": 2,'), JSON, "is not valid JSON"),
    "the JSON holding NaN": (lambda d: write_json(d, 2, '{"step": NaN}'), JSON,
                             "holds NaN, which is not standard JSON"),
    "the data position moved by 7": (move_the_data_position, JSON,
                                     "its content does not match the SHA-256 it records"),
    "the learning rate set to 123": (set_the_learning_rate_to_123, JSON,
                                     "its content does not match the SHA-256 it records"),
    "the JSON deleted": (delete_the_json, JSON,
                         "incomplete (its JSON was never written: the save was interrupted)"),
}


def test_fresh_checkpoints_verify_and_resume_from_the_newest(run):
    run_dir, _ = run
    assert ckpt.verify(run_dir, 1) is None
    assert ckpt.verify(run_dir, 2) is None
    assert ckpt.find_resumable(run_dir) == (2, [])


@pytest.mark.parametrize("how", DAMAGE)
def test_verify_names_the_damaged_file_and_what_is_wrong(run, how):
    run_dir, _ = run
    damage, which, says = DAMAGE[how]
    damage(run_dir)
    reason = ckpt.verify(run_dir, 2)
    assert reason is not None and reason.startswith(ckpt.paths(run_dir, 2)[which]), reason
    assert says in reason, reason


@pytest.mark.parametrize("how", DAMAGE)
def test_find_resumable_falls_back_past_the_damaged_checkpoint(run, how):
    run_dir, _ = run
    DAMAGE[how][0](run_dir)
    assert ckpt.find_resumable(run_dir) == (1, [(2, ckpt.verify(run_dir, 2))])


@pytest.mark.parametrize("how", DAMAGE)
def test_load_of_the_damaged_checkpoint_raises_checkpoint_error_naming_the_file(run, how):
    run_dir, _ = run
    damage, which, says = DAMAGE[how]
    damage(run_dir)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load(run_dir, 2, *make())
    assert ckpt.paths(run_dir, 2)[which] in str(e.value)
    assert says in str(e.value)


def test_find_resumable_reports_every_damaged_checkpoint_when_none_is_usable(run):
    run_dir, _ = run
    for step in (1, 2):
        write_json(run_dir, step, [])
    assert [s for s, _ in ckpt.find_resumable(run_dir)[1]] == [2, 1]
    assert ckpt.find_resumable(run_dir)[0] is None
    assert ckpt.find_resumable(os.path.join(run_dir, "nothing-here")) == (None, [])


def test_a_nan_tensor_is_refused_even_when_its_hashes_were_rewritten_to_match(run):
    run_dir, _ = run
    fill_the_weight_with_nan(run_dir)
    tensor_path = ckpt.paths(run_dir, 2)[0]
    with open(tensor_path, "rb") as f:
        data = f.read()
    meta = read_meta(run_dir, 2)
    meta.update(tensors_sha256=hashlib.sha256(data).hexdigest(), tensors_bytes=len(data))
    meta["meta_sha256"] = meta_digest(meta)
    write_json(run_dir, 2, meta)
    with pytest.raises(ckpt.CheckpointError, match="1 tensor\\(s\\) hold NaN or Inf: model.weight") as e:
        ckpt.load(run_dir, 2, *make())
    assert tensor_path in str(e.value)


def test_a_checkpoint_that_does_not_fit_the_model_is_refused_naming_the_file(run):
    run_dir, _ = run
    model = nn.Linear(8, 4)
    o = optim.AdamW(model.parameters(), lr=0.1)
    with pytest.raises(ckpt.CheckpointError,
                       match="(?s)does not fit the model: .*size mismatch for weight") as e:
        ckpt.load(run_dir, 2, model, o, None)
    assert ckpt.paths(run_dir, 2)[0] in str(e.value)


def downgrade_to_format_1(run_dir, step):
    meta = read_meta(run_dir, step)
    for key in ("meta_sha256", "tensors_sha256", "tensors_bytes"):
        del meta[key]
    write_json(run_dir, step, dict(meta, format=1))


def test_a_format_1_checkpoint_is_accepted_if_it_parses_and_its_tensors_load(run):
    run_dir, (model, _, _) = run
    downgrade_to_format_1(run_dir, 2)
    assert ckpt.verify(run_dir, 2) is None
    fresh = make()
    assert ckpt.load(run_dir, 2, *fresh)["step"] == 2
    assert np.array_equal(fresh[0].weight.detach().numpy(), model.weight.detach().numpy())


def test_a_format_1_checkpoint_with_a_nan_tensor_or_truncated_file_is_refused(run):
    run_dir, _ = run
    downgrade_to_format_1(run_dir, 2)
    fill_the_weight_with_nan(run_dir)
    assert "1 tensor(s) hold NaN or Inf: model.weight" in ckpt.verify(run_dir, 2)
    truncate_the_tensors(run_dir)
    assert "is not a readable safetensors file" in ckpt.verify(run_dir, 2)
    assert ckpt.find_resumable(run_dir)[0] == 1


def test_complete_steps_counts_files_and_json_objects_without_hashing(run):
    run_dir, _ = run
    flip_64_bytes_of_the_weight(run_dir)
    assert ckpt.complete_steps(run_dir) == [1, 2] and ckpt.latest(run_dir) == 2
    write_json(run_dir, 2, [])
    assert ckpt.complete_steps(run_dir) == [1] and ckpt.latest(run_dir) == 1


# ------------------------------------------------------------------------- saving
def meta_digest(meta):
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def test_the_json_records_the_hashes_of_the_tensors_and_of_itself_in_strict_json(run):
    run_dir, _ = run
    tensor_path, meta_path = ckpt.paths(run_dir, 2)
    with open(tensor_path, "rb") as f:
        data = f.read()
    meta = read_meta(run_dir, 2)
    assert meta["format"] == 2
    assert meta["tensors_sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["tensors_bytes"] == len(data)
    assert meta["meta_sha256"] == meta_digest(meta)


def test_a_load_restores_the_saved_state_bit_exactly(run):
    run_dir, (model, o, sched) = run
    fresh = make()
    meta = ckpt.load(run_dir, 2, *fresh)
    assert (meta["step"], meta["batch"]) == (2, 2)
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh[0].state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), k
    assert fresh[2].last_epoch == sched.last_epoch == 2


def files_of(run_dir):
    return sorted(os.listdir(run_dir))


def test_save_refuses_nan_parameters_and_writes_nothing(run):
    run_dir, (model, o, sched) = run
    before = files_of(run_dir)
    with dg.no_grad():
        model.weight.fill_(float("nan"))
    with pytest.raises(ckpt.NonFiniteCheckpointError,
                       match="step 3: 1 tensor\\(s\\) hold NaN or Inf: model.weight"):
        ckpt.save(run_dir, 3, model, o, sched, {"config_hash": "x"}, keep=1)
    assert issubclass(ckpt.NonFiniteCheckpointError, RuntimeError)
    assert files_of(run_dir) == before
    assert ckpt.find_resumable(run_dir) == (2, [])


def test_save_refuses_a_nan_in_the_metadata_instead_of_writing_a_bare_nan(run):
    run_dir, (model, o, sched) = run
    before = files_of(run_dir)
    with pytest.raises(ckpt.NonFiniteCheckpointError, match="step 3: .*loss=nan"):
        ckpt.save(run_dir, 3, model, o, sched, {"config_hash": "x", "loss": float("nan")}, keep=5)
    assert files_of(run_dir) == before


@pytest.mark.parametrize("failing_fsync, file", [(1, TENSORS), (2, TENSORS), (3, JSON), (4, JSON)],
                         ids=["tensor file", "directory after the tensors", "json file",
                              "directory after the json"])
def test_a_save_that_runs_out_of_space_leaves_no_temporary_or_half_checkpoint(
        run, monkeypatch, failing_fsync, file):
    run_dir, (model, o, sched) = run
    before = files_of(run_dir)
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == failing_fsync:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    train_step(model, o, sched)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.save(run_dir, 3, model, o, sched, {"config_hash": "x"}, keep=1)
    assert str(e.value) == (f"could not write checkpoint {ckpt.paths(run_dir, 3)[file]}: "
                            f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}")
    assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == errno.ENOSPC
    assert files_of(run_dir) == before  # no .tmp, nothing of step 3, steps 1 and 2 kept
    assert ckpt.find_resumable(run_dir) == (2, [])


def test_old_checkpoints_are_pruned_once_the_new_one_is_complete(run):
    run_dir, (model, o, sched) = run
    train_step(model, o, sched)
    ckpt.save(run_dir, 3, model, o, sched, {"config_hash": "x"}, keep=2)
    assert ckpt.complete_steps(run_dir) == [2, 3]
    assert files_of(run_dir) == ["ckpt-00000002.json", "ckpt-00000002.safetensors",
                                 "ckpt-00000003.json", "ckpt-00000003.safetensors"]


def test_saving_a_step_again_replaces_its_checkpoint_whole(run):
    run_dir, (model, o, sched) = run
    write_json(run_dir, 2, [])  # damaged; the run resumed from 1 and reached step 2 again
    ckpt.save(run_dir, 2, model, o, sched, {"config_hash": "y"}, keep=5)
    assert ckpt.verify(run_dir, 2) is None and read_meta(run_dir, 2)["config_hash"] == "y"


def test_dumps_strict_writes_non_finite_floats_as_null():
    text = ckpt.dumps_strict({"loss": float("nan"), "x": [float("inf"), 1.5, (-float("inf"), 2)]},
                             sort_keys=True)
    assert strict_loads(text) == {"loss": None, "x": [None, 1.5, [None, 2]]}
    assert ckpt.dumps_strict(np.float64("nan")) == "null"
