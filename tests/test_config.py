"""The experiment config: schema validation that names the key and the file,
``key.path=value`` overrides, the batch arithmetic, the TOML round trip and the
config hash (distgrad.train.config)."""
import os
import re
import sys

import pytest

from distgrad.train.config import (
    PATH_KEYS,
    RESUMABLE,
    SCHEMA,
    ConfigError,
    check_imports,
    config_hash,
    defaults,
    differences,
    load,
    merge,
    parse_override,
    resolve,
    to_toml,
)
from launch.hostfile import HostError, parse_hostfile, parse_hosts

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
    cfg = load(write(tmp_path, with_keys(model='name = "mlp"\nheads = 5', data='name = "digits"')))
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
    o = parse_override(text)
    assert (o.section, o.key, o.value) == expected
    assert type(o.value) is type(expected[2])
    assert o.path == () and o.text == text


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


# ------------------------------------------------- every problem at once
def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, with_keys(train="stesp = 4\nmicro_batch = 0", optim='name = "adamm"\nlr = "fast"',
                                     run='name = "a/b"'))
    with pytest.raises(ConfigError) as info:
        load(path, ["model.width=wide", "dist.np=0"])
    errors = info.value.errors
    expected = ["train.stesp", "train.micro_batch", "optim.name", "optim.lr", "run.name", "model.width", "dist.np"]
    assert len(errors) == len(expected), errors
    for key, message in zip(sorted(expected), sorted(errors, key=lambda m: next(k for k in expected if k in m))):
        assert key in message and path in message
    text = str(info.value)
    lines = text.splitlines()
    assert lines[0] == f"{len(expected)} problems in {path}:"
    assert lines[1:] == errors  # one per line
    assert "did you mean 'steps'" in text and "did you mean 'adamw'" in text or "'adam'" in text
    # overrides are named as overrides
    assert any("override model.width=wide" in m for m in errors)


def test_one_problem_is_just_its_message(tmp_path):
    path = write(tmp_path, with_keys(optim="lr = -1"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.errors == [str(info.value)]
    assert "problems" not in str(info.value) and "optim.lr" in str(info.value)


def test_a_check_of_keys_together_is_skipped_when_one_of_them_is_invalid(tmp_path):
    # micro_batch is not a number: no batch arithmetic on the default in its place
    errors = _errors(write(tmp_path, with_keys(train='micro_batch = "8"', model='heads = "x"')))
    assert len(errors) == 2, errors
    assert "train.micro_batch" in errors[0] + errors[1] and "model.heads" in errors[0] + errors[1]
    assert not any("multiple" in m or "must divide" in m for m in errors)
    # a misspelled key is not also reported as missing
    errors = _errors(write(tmp_path, BASE.replace("steps = 10", "stesp = 10")))
    assert len(errors) == 1 and "did you mean 'steps'" in errors[0], errors
    # while the checks whose keys are fine still run
    errors = _errors(write(tmp_path, with_keys(train='micro_batch = "8"', model="heads = 5")))
    assert len(errors) == 2 and any("must divide" in m for m in errors), errors


def test_steps_given_as_text_is_one_problem(tmp_path):
    errors = _errors(write(tmp_path, with_keys(train='steps = "ten"')))
    assert len(errors) == 1 and "train.steps" in errors[0] and "integer" in errors[0]


def _errors(path, overrides=(), world_size=None) -> list:
    with pytest.raises(ConfigError) as info:
        load(path, overrides, world_size=world_size)
    return info.value.errors


def test_merge_and_resolve_report_every_problem():
    with pytest.raises(ConfigError) as info:
        merge(defaults(), {"optim": {"lr": -1, "eps": "x"}, "trian": {}}, "x.toml")
    assert len(info.value.errors) == 3
    cfg = defaults()
    cfg["model"].update(heads=5, dropout=2.0)
    with pytest.raises(ConfigError) as info:
        resolve(cfg, "x.toml")  # heads, dropout, and neither steps nor epochs
    assert len(info.value.errors) == 3, info.value.errors


def test_config_error_keeps_its_list_through_pickle():
    import pickle

    e = pickle.loads(pickle.dumps(ConfigError(["a: one", "a: two"], "a")))
    assert e.errors == ["a: one", "a: two"] and str(e).splitlines()[1:] == ["a: one", "a: two"]
    assert isinstance(e, ValueError)


def test_a_missing_file_and_a_bad_override_are_both_reported(tmp_path):
    errors = _errors(str(tmp_path / "nope.toml"), ["optim.lrr=1"])
    assert len(errors) == 2 and "does not exist" in errors[0] and "optim.lrr" in errors[1]


def test_bad_override_syntax_is_collected_with_the_rest(tmp_path):
    errors = _errors(write(tmp_path, BASE), ["train.steps", "optim.lr=-1"])
    assert len(errors) == 2 and "'train.steps'" in errors[0] and "optim.lr" in errors[1]


def test_an_invalid_world_size_is_an_error(tmp_path):
    errors = _errors(write(tmp_path, BASE), world_size=0)
    assert len(errors) == 1 and "world size" in errors[0]


# ------------------------------------------------------- nested overrides
def test_an_override_inside_a_table_key_keeps_the_rest_of_it(tmp_path):
    path = write(tmp_path, with_keys(model='name = "m:Net"\nkwargs = {depth = 2, act = "relu"}'))
    cfg = load(path, ["model.kwargs.hidden=128", "model.kwargs.act=gelu", "data.kwargs.a.b=1",
                      "data.kwargs.a.c=x", "dist.env.MY_SETTING=42"])
    assert cfg["model"]["kwargs"] == {"depth": 2, "act": "gelu", "hidden": 128}
    assert isinstance(cfg["model"]["kwargs"]["hidden"], int)
    assert cfg["data"]["kwargs"] == {"a": {"b": 1, "c": "x"}}
    assert cfg["dist"]["env"] == {"MY_SETTING": "42"}


@pytest.mark.parametrize("text, key", [
    ("train.steps.x=1", "train.steps"),
    ("run.name.first=a", "run.name"),
    ("optim.betas.0=0.9", "optim.betas"),
    ("dist.mpiexec_args.x=1", "dist.mpiexec_args"),
])
def test_a_longer_path_into_a_key_that_is_not_a_table(tmp_path, text, key):
    with pytest.raises(ConfigError) as info:
        parse_override(text)
    msg = str(info.value)
    assert repr(text) in msg and f"{key} is not a table" in msg and "model.kwargs.NAME" in msg
    errors = _errors(write(tmp_path, BASE), [text])
    assert len(errors) == 1 and key in errors[0]


def test_a_longer_path_under_an_unknown_key_suggests(tmp_path):
    msg = "\n".join(_errors(write(tmp_path, BASE), ["model.kwarg.hidden=1"]))
    assert "model.kwarg" in msg and "did you mean 'kwargs'" in msg


def test_a_path_through_a_value_that_is_not_a_table(tmp_path):
    path = write(tmp_path, with_keys(data="kwargs = {a = 3}"))
    errors = _errors(path, ["data.kwargs.a.b=1"])
    assert len(errors) == 1 and "data.kwargs.a is 3" in errors[0] and "data.kwargs.a.b" in errors[0]


# ------------------------------------------------------------ string keys
@pytest.mark.parametrize("text, value", [
    ("run.name=nan", "nan"),
    ("run.name=inf", "inf"),
    ("run.name=123", "123"),
    ("run.name=1e3", "1e3"),
    ("run.name=true", "true"),
    ("run.name=[1]", "[1]"),
    ('run.name="quoted"', "quoted"),
    ('run.name="x y"', "x y"),
    ("run.name='lit'", "lit"),
    ('run.name="unbalanced', '"unbalanced'),
    ("dist.hosts=a:2", "a:2"),
    ("model.name=pkg.mod:Net", "pkg.mod:Net"),
])
def test_a_string_key_takes_the_text_as_given(tmp_path, text, value):
    assert parse_override(text).value == value
    assert type(parse_override(text).value) is str
    cfg = load(write(tmp_path, BASE), [text])
    sec, key = text.split("=", 1)[0].split(".")
    assert cfg[sec][key] == value


def test_values_in_kwargs_keep_their_toml_types():
    assert parse_override("model.kwargs.n=5").value == 5
    assert parse_override("model.kwargs.f=0.5").value == 0.5
    assert parse_override("model.kwargs.b=true").value is True
    assert parse_override("model.kwargs.s=word").value == "word"
    assert parse_override('model.kwargs.s="5"').value == "5"
    assert parse_override("dist.env.X=5").value == "5"  # environment values are text


@pytest.mark.parametrize("text", ["optim.lr=nan", "optim.lr=inf", "optim.lr=-inf", "dist.timeout_s=+inf",
                                  "model.dropout=nan"])
def test_non_finite_numbers_are_refused(tmp_path, text):
    errors = _errors(write(tmp_path, BASE), [text])
    assert len(errors) == 1 and "not a finite number" in errors[0] and text.split("=")[0] in errors[0]


def test_non_finite_numbers_in_the_file_are_refused(tmp_path):
    errors = _errors(write(tmp_path, with_keys(optim="lr = nan\neps = inf")))
    assert len(errors) == 2 and all("not a finite number" in m for m in errors)


def test_an_empty_override_unsets_a_key_that_may_be_empty(tmp_path):
    path = write(tmp_path, BASE.replace("steps = 10", "epochs = 2"))
    cfg = load(path, ["train.epochs=", "train.steps=5"])
    assert cfg["train"]["epochs"] is None and cfg["train"]["steps"] == 5
    errors = _errors(path, ["train.micro_batch="])  # a key that must have a value
    assert len(errors) == 1 and "train.micro_batch" in errors[0]


# ------------------------------------------------------------------ paths
def test_path_keys():
    assert {"run.output_dir", "dist.hostfile"} <= set(PATH_KEYS)
    assert all(SCHEMA[k.split(".")[0]][k.split(".")[1]].type is str for k in PATH_KEYS)


def test_paths_in_the_file_are_taken_from_its_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", with_keys(run='output_dir = "../out"', dist='hostfile = "hosts.txt"'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load(path)
    assert cfg["run"]["output_dir"] == str(tmp_path / "out")
    assert cfg["dist"]["hostfile"] == str(tmp_path / "conf" / "hosts.txt")


def test_paths_in_overrides_are_taken_from_the_current_directory(tmp_path, monkeypatch):
    path = write(tmp_path, with_keys(run='output_dir = "inside"'))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    cfg = load(path, ["run.output_dir=out", "dist.hostfile=../h.txt"])
    assert cfg["run"]["output_dir"] == str(tmp_path / "cwd" / "out")
    assert cfg["dist"]["hostfile"] == str(tmp_path / "h.txt")


def test_default_paths_are_taken_from_the_current_directory(tmp_path, monkeypatch):
    path = write(tmp_path, BASE)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert load(path)["run"]["output_dir"] == str(tmp_path / "sub" / "runs")


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load(write(tmp_path, with_keys(run='output_dir = "~/runs"')), ["dist.hostfile=~/hosts"])
    assert cfg["run"]["output_dir"] == str(tmp_path / "home" / "runs")
    assert cfg["dist"]["hostfile"] == str(tmp_path / "home" / "hosts")


def test_absolute_paths_survive_the_round_trip_from_anywhere(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", with_keys(run='output_dir = "runs"', dist='hostfile = "hosts"'))
    cfg = load(path)
    assert os.path.isabs(cfg["run"]["output_dir"]) and os.path.isabs(cfg["dist"]["hostfile"])
    text = to_toml(cfg)
    assert f'output_dir = "{tmp_path / "conf" / "runs"}"' in text
    (tmp_path / "run").mkdir()
    saved = write(tmp_path / "run", text, "config.toml")  # as the run directory holds it
    monkeypatch.chdir(tmp_path / "run")
    again = load(saved)
    assert again == cfg


def test_an_empty_path_is_an_error(tmp_path):
    errors = _errors(write(tmp_path, with_keys(run='output_dir = ""', dist='hostfile = ""')))
    assert len(errors) == 2, errors
    assert any("run.output_dir is empty" in m for m in errors) and any("dist.hostfile is empty" in m for m in errors)
    assert load(write(tmp_path, BASE), ["dist.hostfile="])["dist"]["hostfile"] is None


def test_shipped_configs_from_the_repository_root(monkeypatch):
    monkeypatch.chdir(REPO)
    for name in ("quickstart", "debug", "gpt_chars", "multinode"):
        cfg = load(os.path.join("configs", f"{name}.toml"))
        assert cfg["run"]["output_dir"] == os.path.join(REPO, "runs"), name
    multi = load(os.path.join(REPO, "configs", "multinode.toml"))
    assert multi["dist"]["hostfile"] == os.path.join(REPO, "configs", "hosts.example")
    assert parse_hostfile(multi["dist"]["hostfile"]) == [("node1", 4), ("node2", 4)]
    assert multi["train"]["accum_steps"] == 4


def test_shipped_configs_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load(QUICKSTART)["run"]["output_dir"] == os.path.join(REPO, "runs")
    assert load(QUICKSTART, ["run.output_dir=runs"])["run"]["output_dir"] == str(tmp_path / "runs")


# ---------------------------------------------------- dist.env, mpiexec_args
def test_dist_env_and_mpiexec_args(tmp_path):
    path = write(tmp_path, BASE + '\n[dist.env]\nNCCL_DEBUG = "INFO"\n_X1 = ""\n')
    cfg = load(path, ["dist.mpiexec_args=--mca btl 'tcp,self'"])
    assert cfg["dist"]["env"] == {"NCCL_DEBUG": "INFO", "_X1": ""}
    assert cfg["dist"]["mpiexec_args"] == ["--mca", "btl", "tcp,self"]
    assert load(path, ["dist.mpiexec_args=['-iface', 'eth0']"])["dist"]["mpiexec_args"] == ["-iface", "eth0"]
    assert load(path, ['dist.mpiexec_args="-iface eth0"'])["dist"]["mpiexec_args"] == ["-iface", "eth0"]
    assert load(path, ["dist.mpiexec_args=-5"])["dist"]["mpiexec_args"] == ["-5"]
    assert load(path, ["dist.env={A='1'}"])["dist"]["env"] == {"A": "1"}  # a whole table replaces it
    assert load(write(tmp_path, with_keys(dist='mpiexec_args = "-iface eth0"')))["dist"]["mpiexec_args"] \
        == ["-iface", "eth0"]
    assert defaults()["dist"]["env"] == {} and defaults()["dist"]["mpiexec_args"] == []


def test_dist_env_values_must_be_strings_and_names_valid(tmp_path):
    errors = _errors(write(tmp_path, BASE + "\n[dist.env]\nX = 42\n1BAD = \"a\"\n\"A-B\" = \"c\"\n"))
    assert len(errors) == 3, errors
    assert "dist.env.X must be a string" in errors[0] and 'X = "42"' in errors[0]
    assert "'1BAD'" in errors[1] and "'A-B'" in errors[2]
    errors = _errors(write(tmp_path, BASE), ["dist.env.A.B=1"])  # A.B is not a variable name
    assert len(errors) == 1 and "dist.env" in errors[0]


@pytest.mark.parametrize("value", ["3", "[1, 2]", '["a", 3]', "true", "{a = 1}", '"unbalanced \'quote"'])
def test_bad_mpiexec_args(tmp_path, value):
    errors = _errors(write(tmp_path, with_keys(dist=f"mpiexec_args = {value}")))
    assert len(errors) >= 1 and all("dist.mpiexec_args" in m for m in errors), errors


def test_env_and_mpiexec_args_may_change_on_resume(tmp_path):
    assert {"env", "mpiexec_args"} <= RESUMABLE["dist"]
    path = write(tmp_path, BASE)
    cfg = load(path)
    new = load(path, ["dist.env.X=1", "dist.mpiexec_args=-iface eth0"])
    assert config_hash(new) == config_hash(cfg)
    assert differences(cfg, new) == []
    assert {k for k, _, _ in differences(cfg, new, resumable=True)} == {"dist.env", "dist.mpiexec_args"}
    # a checkpoint's config from before these keys existed compares with their defaults
    old = {sec: dict(t) for sec, t in cfg.items()}
    del old["dist"]["env"], old["dist"]["mpiexec_args"]
    assert differences(old, cfg, resumable=True) == []
    again = load(write(tmp_path, to_toml(new), "resolved.toml"))
    assert again == new


# ---------------------------------------------------------------- run.name
@pytest.mark.parametrize("name, why", [
    ("", "empty"), (".", "name of its own"), ("..", "name of its own"), ("a/b", "'/'"), ("/", "'/'"),
    ("a\\u0000b", "NUL"),
])
def test_run_name_must_be_one_directory_name(tmp_path, name, why):
    errors = _errors(write(tmp_path, with_keys(run=f'name = "{name}"')))
    assert len(errors) == 1 and "run.name" in errors[0] and why in errors[0], errors
    assert "directory name" in errors[0]


@pytest.mark.parametrize("name", ["my run", "a.b", "run-1", "caf\u00e9", "..x"])
def test_run_name_that_is_a_directory_name(tmp_path, name):
    assert load(write(tmp_path, BASE), [f"run.name={name}"])["run"]["name"] == name


# ---------------------------------------------------------- hosts/hostfile
def test_hostfile_and_hosts_in_the_overrides_is_an_error(tmp_path):
    errors = _errors(write(tmp_path, BASE), ["dist.hostfile=h.txt", "dist.hosts=a:2"])
    assert len(errors) == 1 and "dist.hostfile" in errors[0] and "dist.hosts" in errors[0]


def test_command_line_hosts_replace_the_hostfile_of_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, with_keys(dist='hostfile = "hosts.txt"'))
    cfg = load(path, ["dist.hosts=a:2,b:2"])
    assert cfg["dist"]["hosts"] == "a:2,b:2" and cfg["dist"]["hostfile"] is None
    path = write(tmp_path, with_keys(dist='hosts = "a:2,b:2"'))
    monkeypatch.chdir(tmp_path)
    cfg = load(path, ["dist.hostfile=cli_hosts.txt"])
    assert cfg["dist"]["hosts"] is None and cfg["dist"]["hostfile"] == str(tmp_path / "cli_hosts.txt")
    # a resumed run's config (what to_toml wrote) with other hosts
    saved = write(tmp_path, to_toml(cfg), "config.toml")
    again = load(saved, ["dist.hosts=c:4"])
    assert again["dist"]["hosts"] == "c:4" and again["dist"]["hostfile"] is None


def test_hostfile_and_hosts_in_the_file_stays_an_error_with_an_override(tmp_path):
    path = write(tmp_path, with_keys(dist='hostfile = "h.txt"\nhosts = "a:2"'))
    errors = _errors(path, ["dist.hosts=b:2"])
    assert len(errors) == 1 and path in errors[0] and "not both" in errors[0]


def test_an_override_that_unsets_one_leaves_the_other(tmp_path):
    path = write(tmp_path, with_keys(dist='hosts = "a:2"'))
    cfg = load(path, ["dist.hostfile="])
    assert cfg["dist"]["hosts"] == "a:2" and cfg["dist"]["hostfile"] is None


# ----------------------------------------------------------- the file itself
def test_a_directory_as_config(tmp_path):
    errors = _errors(str(tmp_path))
    assert errors == [f"config file {tmp_path} is a directory, not a TOML file"]


def test_an_unreadable_config(tmp_path, monkeypatch):
    from distgrad.train import config

    path = write(tmp_path, BASE)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(config, "open", refuse, raising=False)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"config file {path} cannot be read: permission denied"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_config_for_real(tmp_path):
    path = write(tmp_path, BASE)
    os.chmod(path, 0)
    assert "permission denied" in error_of(path)


def test_a_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"[train]\nsteps = 3\n\xff\xfe\x00binary")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    msg = str(info.value)
    assert str(path) in msg and "UTF-8" in msg and "line 3" in msg
    assert _no_chained_traceback(info.value)


def test_a_config_that_is_not_toml_has_no_chained_traceback(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "this is = = not toml"))
    assert "not valid TOML" in str(info.value) and _no_chained_traceback(info.value)


def _no_chained_traceback(e) -> bool:
    return e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)


# ----------------------------------------------------------- check_imports
@pytest.fixture
def code_dir(tmp_path, monkeypatch):
    """tmp_path as the current directory, for modules written there; they are
    forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", "") or ""):
            del sys.modules[name]


def test_built_in_names_import_nothing():
    assert check_imports(load(QUICKSTART)) == []


def test_check_imports_imports_from_the_current_directory(code_dir):
    (code_dir / "cfgmod_ok.py").write_text(
        "class Net:\n    def __init__(self, hidden=4):\n        pass\n"
        "def data(n=1):\n    return [], []\n"
        "def loss(output, target):\n    return output\n")
    path_before = list(sys.path)
    cfg = load(QUICKSTART, ["model.name=cfgmod_ok:Net", "model.kwargs.hidden=8", "data.name=cfgmod_ok:data",
                            "train.loss=cfgmod_ok.loss"])
    assert check_imports(cfg) == []
    assert sys.path == path_before  # the current directory is put first only while importing


def test_load_does_not_import_user_code(code_dir):
    (code_dir / "cfgmod_side.py").write_text("open('imported', 'w').close()\nclass Net:\n    pass\n")
    cfg = load(QUICKSTART, ["model.name=cfgmod_side:Net"])
    assert not (code_dir / "imported").exists()
    assert check_imports(cfg) == []
    assert (code_dir / "imported").exists()


def test_check_imports_reports_every_problem(code_dir):
    (code_dir / "cfgmod_some.py").write_text("class Network:\n    pass\nVALUE = 3\n")
    (code_dir / "cfgmod_raises.py").write_text("raise RuntimeError('no GPU here')\n")
    cfg = load(QUICKSTART, ["model.name=cfgmod_some:Netwrk", "data.name=cfgmod_some:VALUE",
                            "train.loss=cfgmod_raises:fn"])
    problems = check_imports(cfg)
    assert len(problems) == 3, problems
    model, data, loss = problems
    assert "model.name = 'cfgmod_some:Netwrk'" in model and "no attribute 'Netwrk'" in model
    assert "did you mean 'Network'" in model
    assert "data.name = 'cfgmod_some:VALUE'" in data and "not a class or function" in data and "int" in data
    assert "train.loss = 'cfgmod_raises:fn'" in loss and "RuntimeError: no GPU here" in loss
    assert "Traceback" not in "".join(problems)


def test_check_imports_names_a_missing_module(code_dir):
    (code_dir / "cfgmod_model.py").write_text("class Net:\n    pass\n")
    problems = check_imports(load(QUICKSTART, ["model.name=cfgmod_modle:Net"]))
    assert len(problems) == 1
    assert "model.name = 'cfgmod_modle:Net' cannot be imported" in problems[0]
    assert "no module named 'cfgmod_modle'" in problems[0] and "did you mean 'cfgmod_model'" in problems[0]


def test_a_bare_name_that_is_not_built_in_is_refused_by_load(tmp_path):
    errors = _errors(write(tmp_path, BASE), ["model.name=gtp", "data.name=char", "train.loss=cross_entropi"])
    assert len(errors) == 3
    assert "model.name = 'gtp'" in errors[0] and "did you mean 'gpt'" in errors[0]
    assert "data.name = 'char'" in errors[1] and "did you mean 'chars'" in errors[1]
    assert "train.loss = 'cross_entropi'" in errors[2] and "did you mean 'cross_entropy'" in errors[2]


def test_built_in_names_match_the_trainer():
    from distgrad.train import losses
    from distgrad.train.config import BUILTIN_LOSSES

    assert tuple(BUILTIN_LOSSES) == tuple(losses.BUILT_IN)


def test_built_in_models_need_their_data(tmp_path):
    errors = _errors(write(tmp_path, with_keys(data='name = "digits"')))
    assert len(errors) == 1 and "model.name = 'gpt' needs data.name = 'chars'" in errors[0]
    cfg = load(write(tmp_path, with_keys(model='name = "pkg.mod:Net"', data='name = "digits"')))
    assert cfg["model"]["name"] == "pkg.mod:Net"


# ------------------------------------------------------------- hostfiles
def test_every_bad_hostfile_line_is_reported(tmp_path):
    path = tmp_path / "hosts.txt"
    path.write_text("node1 slots=x\nnode2 slots=2\nnode3 cores=4\nnode2 slots=1\n:4\nnode5,node6\n")
    with pytest.raises(HostError) as info:
        parse_hostfile(str(path))
    errors = info.value.errors
    assert len(errors) == 5, errors
    assert f"{path}:1" in errors[0] and "'x'" in errors[0]
    assert f"{path}:3" in errors[1] and "cores=4" in errors[1]
    assert f"{path}:4" in errors[2] and "'node2'" in errors[2] and "line 2" in errors[2]
    assert f"{path}:5" in errors[3] and "empty" in errors[3]
    assert f"{path}:6" in errors[4] and "comma" in errors[4]
    assert str(info.value).splitlines()[0] == f"5 problems in hostfile {path}:"


def test_a_hostfile_that_is_a_directory(tmp_path):
    with pytest.raises(HostError) as info:
        parse_hostfile(str(tmp_path))
    assert str(info.value) == f"hostfile {tmp_path} is a directory, not a file of 'host slots=N' lines"


def test_hosts_duplicates_and_bad_names():
    with pytest.raises(HostError) as info:
        parse_hosts("a:2,b:2,a:1,c d:1,:3,e:0")
    errors = info.value.errors
    assert len(errors) == 4, errors
    assert "'a'" in errors[0] and "items 1 and 3" in errors[0]
    assert "'c d'" in errors[1] and "space" in errors[1]
    assert "empty" in errors[2]
    assert "at least 1" in errors[3]


def test_readme_holds_the_generated_key_table():
    from distgrad.train.config import markdown_table

    assert markdown_table() in _readme(), "regenerate it: python -m distgrad.train.config --markdown"
