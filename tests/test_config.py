"""The experiment config: schema validation that names the key and the file,
``key.path=value`` overrides, the batch arithmetic, the TOML round trip and the
config hash (distgrad.train.config)."""
import os
import re
import sys

import pytest

from distgrad.train.config import (SCHEMA, ConfigError, config_hash, defaults, load,
                                   parse_override, resolve, to_toml)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "configs", "quickstart.toml")

# A minimal valid config; the tests add or replace single keys.
BASE = """\
[model]
width = 32
heads = 4

[train]
global_batch = 32
micro_batch = 8
steps = 10

[dist]
np = 2
"""


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def with_keys(**sections):
    """BASE with TOML lines put into the given sections (replacing a key BASE already
    sets there, adding the section when BASE has none)."""
    text = BASE
    for sec, lines in sections.items():
        for line in lines.splitlines():
            key = line.split("=", 1)[0].strip()
            head = f"[{sec}]\n"
            if head not in text:
                text += f"\n{head}"
            before, _, rest = text.partition(head)
            body, sep, after = rest.partition("\n[")
            body_lines = [ln for ln in body.splitlines() if ln.split("=", 1)[0].strip() != key]
            body = "\n".join([line] + [ln for ln in body_lines if ln]) + "\n"
            text = before + head + body + ("\n" + sep + after if sep else "")
    tomllib.loads(text)  # the helper itself must produce valid TOML
    return text


def error_of(path, overrides=(), world_size=None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, overrides, world_size=world_size)
    return str(info.value)


def test_the_base_config_is_valid(tmp_path):
    cfg = load(write(tmp_path, BASE))
    assert cfg["train"]["accum_steps"] == 2  # 32 = 8 x 2 x 2
    assert cfg["model"]["width"] == 32 and cfg["dist"]["np"] == 2


def test_quickstart_is_valid():
    cfg = load(QUICKSTART)
    assert cfg["train"]["global_batch"] == cfg["train"]["micro_batch"] * cfg["train"]["accum_steps"] \
        * cfg["dist"]["np"]


# ----------------------------------------------------- unknown names
def test_unknown_section_names_the_file_and_suggests(tmp_path):
    path = write(tmp_path, BASE + "\n[trian]\nsteps = 3\n")
    msg = error_of(path)
    assert path in msg
    assert "[trian]" in msg
    assert "did you mean 'train'" in msg


def test_unknown_key_names_key_and_file_and_suggests(tmp_path):
    path = write(tmp_path, with_keys(train="stesp = 4"))
    msg = error_of(path)
    assert path in msg
    assert "train.stesp" in msg
    assert "did you mean 'steps'" in msg


def test_unknown_key_without_close_match_lists_the_known_keys(tmp_path):
    path = write(tmp_path, with_keys(optim="zzzzzz = 1"))
    msg = error_of(path)
    assert "optim.zzzzzz" in msg and path in msg
    assert "did you mean" not in msg
    for key in SCHEMA["optim"]:
        assert key in msg


def test_unknown_key_in_an_override_names_the_override(tmp_path):
    path = write(tmp_path, BASE)
    msg = error_of(path, ["optim.lrr=1e-3"])
    assert path in msg and "optim.lrr" in msg and "did you mean 'lr'" in msg
    assert "override" in msg


# ----------------------------------------------------------- wrong types
@pytest.mark.parametrize("section, line, key, expect", [
    ("train", 'steps = "5"', "train.steps", "integer"),
    ("train", "steps = true", "train.steps", "integer"),
    ("train", "steps = 5.0", "train.steps", "integer"),
    ("optim", "lr = [0.1]", "optim.lr", "number"),
    ("optim", 'lr = "fast"', "optim.lr", "number"),
    ("optim", "lr = false", "optim.lr", "number"),
    ("optim", "nesterov = 1", "optim.nesterov", "true or false"),
    ("run", "name = 3", "run.name", "string"),
    ("optim", "betas = 0.9", "optim.betas", "list"),
    ("model", "kwargs = 3", "model.kwargs", "table"),
])
def test_wrong_type_names_key_file_and_expected_type(tmp_path, section, line, key, expect):
    path = write(tmp_path, with_keys(**{section: line}))
    msg = error_of(path)
    assert path in msg
    assert key in msg
    assert expect in msg


def test_section_that_is_not_a_table(tmp_path):
    path = write(tmp_path, "train = 3\n")
    msg = error_of(path)
    assert path in msg and "[train]" in msg


def test_an_int_is_accepted_for_a_float():
    cfg = resolve(_merged(optim={"lr": 1}), "x.toml")
    assert isinstance(cfg["optim"]["lr"], float) and cfg["optim"]["lr"] == 1.0


def _merged(**sections):
    from distgrad.train.config import merge

    base = {"model": {"width": 32, "heads": 4},
            "train": {"global_batch": 32, "micro_batch": 8, "steps": 10}, "dist": {"np": 2}}
    for sec, table in sections.items():
        base.setdefault(sec, {}).update(table)
    return merge(defaults(), base, "x.toml")


def test_choice_not_in_the_list_suggests_the_closest(tmp_path):
    path = write(tmp_path, with_keys(optim='name = "adamm"'))
    msg = error_of(path)
    assert path in msg and "optim.name" in msg
    assert "'adamw'" in msg or "'adam'" in msg


# ------------------------------------------------------- impossible values
@pytest.mark.parametrize("section, line, key", [
    ("optim", "lr = -0.1", "optim.lr"),
    ("optim", "weight_decay = -1", "optim.weight_decay"),
    ("model", "dropout = 1.0", "model.dropout"),
    ("model", "dropout = 1.5", "model.dropout"),
    ("model", "dropout = -0.1", "model.dropout"),
    ("model", "heads = 5", "model.heads"),
    ("model", "heads = 0", "model.heads"),
    ("train", "micro_batch = 0", "train.micro_batch"),
    ("data", "val_fraction = 1.0", "data.val_fraction"),
    ("data", "val_fraction = 0.0", "data.val_fraction"),
    ("data", "max_bytes = 10", "data.max_bytes"),
    ("optim", "betas = [0.9, 1.0]", "optim.betas"),
    ("optim", "betas = [-0.1, 0.9]", "optim.betas"),
    ("optim", "betas = [0.9]", "optim.betas"),
    ("optim", "betas = [0.9, 0.95, 0.99]", "optim.betas"),
    ("optim", 'betas = ["a", 0.9]', "optim.betas"),
    ("dist", "np = 0", "dist.np"),
])
def test_impossible_value_names_key_and_file(tmp_path, section, line, key):
    path = write(tmp_path, with_keys(**{section: line}))
    msg = error_of(path)
    assert path in msg
    assert key in msg


def test_heads_must_divide_width_shows_both(tmp_path):
    msg = error_of(write(tmp_path, with_keys(model="heads = 5")))
    assert "model.heads" in msg and "5" in msg and "model.width" in msg and "32" in msg


def test_heads_need_not_divide_width_for_other_models(tmp_path):
    cfg = load(write(tmp_path, with_keys(model='name = "mlp"\nheads = 5')))
    assert cfg["model"]["heads"] == 5


def test_both_steps_and_epochs(tmp_path):
    path = write(tmp_path, with_keys(train="epochs = 2"))
    msg = error_of(path)
    assert path in msg and "train.steps" in msg and "train.epochs" in msg


def test_neither_steps_nor_epochs(tmp_path):
    path = write(tmp_path, BASE.replace("steps = 10\n", ""))
    msg = error_of(path)
    assert path in msg and "train.steps" in msg and "train.epochs" in msg


def test_epochs_alone_is_fine(tmp_path):
    cfg = load(write(tmp_path, BASE.replace("steps = 10", "epochs = 2")))
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["steps"] is None


def test_hostfile_and_hosts_both(tmp_path):
    path = write(tmp_path, with_keys(dist='hostfile = "hosts.txt"\nhosts = "a:2,b:2"'))
    msg = error_of(path)
    assert path in msg and "dist.hostfile" in msg and "dist.hosts" in msg


# ------------------------------------------------------ batch arithmetic
def test_global_batch_not_a_multiple_shows_the_numbers_and_suggestions(tmp_path):
    path = write(tmp_path, BASE.replace("global_batch = 32", "global_batch = 30"))
    msg = error_of(path)
    assert path in msg
    assert "train.global_batch" in msg and "train.micro_batch" in msg
    assert "30" in msg
    assert re.search(r"8 x 2 = 16\b", msg), msg
    # the two nearest global batches that work
    assert re.search(r"\b16\b.*\b32\b", msg.split("= 16", 1)[1]), msg


def test_world_size_replaces_dist_np_in_the_arithmetic(tmp_path):
    path = write(tmp_path, BASE.replace("global_batch = 32", "global_batch = 24"))
    msg = error_of(path, world_size=2)  # 24 is not a multiple of 8 x 2
    assert re.search(r"8 x 2 = 16\b", msg), msg
    cfg = load(path, world_size=3)  # but it is of 8 x 3
    assert cfg["dist"]["np"] == 3 and cfg["train"]["accum_steps"] == 1
    cfg = load(path, ["dist.np=1"])
    assert cfg["train"]["accum_steps"] == 3


def test_accum_steps_inconsistent_shows_the_product(tmp_path):
    path = write(tmp_path, with_keys(train="accum_steps = 3"))
    msg = error_of(path)
    assert path in msg and "train.accum_steps" in msg and "train.global_batch" in msg
    assert re.search(r"8 x 3 x 2 = 48\b", msg), msg
    assert "32" in msg


def test_accum_steps_consistent_is_accepted(tmp_path):
    cfg = load(write(tmp_path, with_keys(train="accum_steps = 2")))
    assert cfg["train"]["accum_steps"] == 2


def test_accum_steps_is_derived(tmp_path):
    cfg = load(write(tmp_path, BASE.replace("global_batch = 32", "global_batch = 64")))
    assert cfg["train"]["accum_steps"] == 4


# ------------------------------------------------------------- the file
def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.toml")
    msg = error_of(path)
    assert path in msg


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[train\nsteps = 3\n")
    msg = error_of(path)
    assert path in msg and "TOML" in msg


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# -------------------------------------------------------------- overrides
@pytest.mark.parametrize("text, expected", [
    ("optim.lr=1e-3", ("optim", "lr", 1e-3)),
    ("train.steps=5", ("train", "steps", 5)),
    ("run.name=abc", ("run", "name", "abc")),
    ('run.name="abc def"', ("run", "name", "abc def")),
    ("run.output_dir=/tmp/x y", ("run", "output_dir", "/tmp/x y")),
    ("optim.betas=[0.9,0.99]", ("optim", "betas", [0.9, 0.99])),
    ("train.progress=false", ("train", "progress", False)),
    (" train.steps = 7 ", ("train", "steps", 7)),
    ("model.kwargs={a=1, b='x'}", ("model", "kwargs", {"a": 1, "b": "x"})),
])
def test_parse_override(text, expected):
    sec, key, value = parse_override(text)
    assert (sec, key, value) == expected
    assert type(value) is type(expected[2])


@pytest.mark.parametrize("text", ["train.steps", "steps=5", "a.b.c=1", ".steps=5", "train.=5", "=5"])
def test_bad_override_syntax(text):
    with pytest.raises(ConfigError) as info:
        parse_override(text)
    msg = str(info.value)
    assert repr(text) in msg and "section.key" in msg


def test_overrides_apply_in_load_with_their_types(tmp_path):
    path = write(tmp_path, BASE)
    cfg = load(path, ["optim.lr=1e-3", "train.steps=5", "run.name=abc", "optim.betas=[0.9,0.99]"])
    assert cfg["optim"]["lr"] == 1e-3 and isinstance(cfg["optim"]["lr"], float)
    assert cfg["train"]["steps"] == 5 and isinstance(cfg["train"]["steps"], int)
    assert cfg["run"]["name"] == "abc"
    assert cfg["optim"]["betas"] == [0.9, 0.99]


def test_later_overrides_win(tmp_path):
    cfg = load(write(tmp_path, BASE), ["train.steps=5", "train.steps=6"])
    assert cfg["train"]["steps"] == 6


def test_override_with_wrong_type_names_key_file_and_override(tmp_path):
    path = write(tmp_path, BASE)
    msg = error_of(path, ["train.steps=abc"])
    assert path in msg and "train.steps" in msg and "integer" in msg and "train.steps=abc" in msg


def test_override_can_fix_the_batch_arithmetic(tmp_path):
    path = write(tmp_path, BASE.replace("global_batch = 32", "global_batch = 30"))
    with pytest.raises(ConfigError):
        load(path)
    assert load(path, ["train.global_batch=48"])["train"]["accum_steps"] == 3


# ------------------------------------------------------------- round trip
def test_resolved_config_round_trips_through_to_toml(tmp_path):
    cfg = load(QUICKSTART, ["optim.lr=1e-3", "run.name=caf\u00e9 \"quoted\" \\ back", "dist.timeout_s=30",
                            "model.kwargs={a=1, b='x', c=[1, 2], d=true, e=0.5}", "run.output_dir=/tmp/a b",
                            "optim.eps=1e-12", "dist.hosts=a:1,b:1"])
    assert cfg["run"]["name"] == 'caf\u00e9 "quoted" \\ back'
    text = to_toml(cfg)
    tomllib.loads(text)  # valid TOML
    path = write(tmp_path, text, "resolved.toml")
    again = load(path)
    assert again == cfg
    assert to_toml(again) == text


def test_round_trip_keeps_epochs_and_none(tmp_path):
    cfg = load(write(tmp_path, BASE.replace("steps = 10", "epochs = 2")))
    again = load(write(tmp_path, to_toml(cfg), "resolved.toml"))
    assert again == cfg
    assert again["train"]["steps"] is None and again["dist"]["hostfile"] is None


def test_defaults_round_trip(tmp_path):
    cfg = resolve(_merged(), "x.toml")
    assert load(write(tmp_path, to_toml(cfg), "resolved.toml")) == cfg


def test_round_trip_of_a_name_outside_the_bmp(tmp_path):
    cfg = load(QUICKSTART, ["run.name=\"run-\U0001F600\""])
    again = load(write(tmp_path, to_toml(cfg), "resolved.toml"))
    assert again == cfg


def test_round_trip_of_nested_model_kwargs(tmp_path):
    cfg = load(QUICKSTART, ["model.kwargs={a=1, sub={d=2}}"])
    again = load(write(tmp_path, to_toml(cfg), "resolved.toml"))
    assert again == cfg


# ------------------------------------------------------------------ hash
def test_config_hash_ignores_where_and_how_many(tmp_path):
    path = write(tmp_path, BASE)
    h = config_hash(load(path))
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert config_hash(load(path, ["run.output_dir=/elsewhere"])) == h
    assert config_hash(load(path, ["run.name=other"])) == h
    assert config_hash(load(path, ["dist.np=4", "train.global_batch=32"])) == h
    assert config_hash(load(path, world_size=1)) == h
    assert config_hash(load(path, ["train.progress=false", "train.log_interval=1",
                                   "train.checkpoint_interval=3", "train.keep_checkpoints=5"])) == h
    # how long the run goes on does not change the steps already taken (a resume may extend it)
    assert config_hash(load(path, ["train.steps=11"])) == h
    assert config_hash(load(path, ["dist.timeout_s=5", "train.on_nonfinite=skip_step"])) == h


@pytest.mark.parametrize("override", ["optim.lr=1e-3", "run.seed=1", "train.loss=mse", "model.width=64",
                                      "optim.betas=[0.9,0.99]", "train.global_batch=64"])
def test_config_hash_changes_with_what_shapes_training(tmp_path, override):
    path = write(tmp_path, BASE)
    assert config_hash(load(path, [override])) != config_hash(load(path))


def test_config_hash_survives_the_round_trip(tmp_path):
    cfg = load(QUICKSTART)
    again = load(write(tmp_path, to_toml(cfg), "resolved.toml"))
    assert config_hash(again) == config_hash(cfg)


# ------------------------------------------------------------------ README
def _readme():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return f.read()


def _readme_has_config_table():
    return "`train.global_batch`" in _readme()


def test_readme_documents_every_key():
    text = _readme()
    missing = [f"{sec}.{key}" for sec, keys in SCHEMA.items() for key in keys
               if f"{sec}.{key}" not in text]
    assert not missing, f"README.md does not mention: {', '.join(missing)}"
