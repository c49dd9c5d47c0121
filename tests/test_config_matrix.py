"""A matrix of bad configs, overrides, hostfiles and import paths: each must be refused
with a message that names the offending key (and its value where that helps); and
good configs that load and survive the TOML round trip unchanged."""
import os
import sys

import pytest

from distgrad.train.config import ConfigError, check_imports, load, to_toml
from launch.hostfile import HostError, parse_hostfile, parse_hosts

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "configs", "quickstart.toml")

# A valid config: 32 = 8 x 2 x 2.
BASE = {
    "model": {"width": "32", "heads": "4"},
    "train": {"global_batch": "32", "micro_batch": "8", "steps": "10"},
    "dist": {"np": "2"},
}


def config_text(changes: dict) -> str:
    """BASE with ``changes`` ({section: {key: TOML text or None to drop it}})."""
    sections = {sec: dict(keys) for sec, keys in BASE.items()}
    for sec, keys in changes.items():
        table = sections.setdefault(sec, {})
        for k, v in keys.items():
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
    text = "".join(f"[{sec}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
                   for sec, keys in sections.items())
    tomllib.loads(text)
    return text


# (changes to BASE, overrides, texts the message must contain)
BAD = {
    # ---- wrong types, every section
    "run.name int": ({"run": {"name": "3"}}, [], ["run.name", "string", "3"]),
    "run.seed str": ({"run": {"seed": '"0"'}}, [], ["run.seed", "integer", "'0'"]),
    "run.device bool": ({"run": {"device": "true"}}, [], ["run.device", "string"]),
    "run.output_dir int": ({"run": {"output_dir": "5"}}, [], ["run.output_dir", "string", "5"]),
    "model.width str": ({"model": {"width": '"32"'}}, [], ["model.width", "integer", "'32'"]),
    "model.layers float": ({"model": {"layers": "2.5"}}, [], ["model.layers", "integer", "2.5"]),
    "model.heads list": ({"model": {"heads": "[4]"}}, [], ["model.heads", "integer", "[4]"]),
    "model.dropout str": ({"model": {"dropout": '"0"'}}, [], ["model.dropout", "number"]),
    "model.kwargs list": ({"model": {"kwargs": "[1]"}}, [], ["model.kwargs", "table", "[1]"]),
    "model.name int": ({"model": {"name": "5"}}, [], ["model.name", "string"]),
    "data.val_fraction str": ({"data": {"val_fraction": '"x"'}}, [], ["data.val_fraction", "number", "'x'"]),
    "data.max_bytes float": ({"data": {"max_bytes": "1.5e6"}}, [], ["data.max_bytes", "integer"]),
    "data.kwargs str": ({"data": {"kwargs": '"a=1"'}}, [], ["data.kwargs", "table", "'a=1'"]),
    "optim.lr str": ({"optim": {"lr": '"fast"'}}, [], ["optim.lr", "number", "'fast'"]),
    "optim.betas number": ({"optim": {"betas": "0.9"}}, [], ["optim.betas", "list", "0.9"]),
    "optim.nesterov str": ({"optim": {"nesterov": '"yes"'}}, [], ["optim.nesterov", "true or false", "'yes'"]),
    "optim.eps bool": ({"optim": {"eps": "true"}}, [], ["optim.eps", "number", "True"]),
    "optim.grad_clip table": ({"optim": {"grad_clip": "{}"}}, [], ["optim.grad_clip", "number"]),
    "schedule.name int": ({"schedule": {"name": "1"}}, [], ["schedule.name", "string"]),
    "schedule.warmup_steps float": ({"schedule": {"warmup_steps": "1.5"}}, [], ["schedule.warmup_steps", "integer"]),
    "schedule.gamma bool": ({"schedule": {"gamma": "false"}}, [], ["schedule.gamma", "number"]),
    "train.global_batch str": ({"train": {"global_batch": '"32"'}}, [], ["train.global_batch", "integer", "'32'"]),
    "train.micro_batch float": ({"train": {"micro_batch": "8.0"}}, [], ["train.micro_batch", "integer", "8.0"]),
    "train.steps bool": ({"train": {"steps": "true"}}, [], ["train.steps", "integer", "True"]),
    "train.loss int": ({"train": {"loss": "1"}}, [], ["train.loss", "string"]),
    "train.progress str": ({"train": {"progress": '"no"'}}, [], ["train.progress", "true or false"]),
    "train.checkpoint_activations int": ({"train": {"checkpoint_activations": "1"}}, [],
                                         ["train.checkpoint_activations", "true or false"]),
    "dist.np str": ({"dist": {"np": '"2"'}}, [], ["dist.np", "integer", "'2'"]),
    "dist.timeout_s bool": ({"dist": {"timeout_s": "false"}}, [], ["dist.timeout_s", "number"]),
    "dist.find_unused_parameters str": ({"dist": {"find_unused_parameters": '"no"'}}, [],
                                        ["dist.find_unused_parameters", "true or false"]),
    "dist.hostfile int": ({"dist": {"hostfile": "3"}}, [], ["dist.hostfile", "string", "3"]),
    "dist.hosts list": ({"dist": {"hosts": '["a"]'}}, [], ["dist.hosts", "string"]),
    "dist.env str": ({"dist": {"env": '"A=1"'}}, [], ["dist.env", "table", "'A=1'"]),
    "section not a table": ({}, [], ["[optim]", "table"]),  # replaced below
    # ---- out of range and choices
    "optim.lr negative": ({"optim": {"lr": "-0.1"}}, [], ["optim.lr", "-0.1", "at least 0"]),
    "dist.timeout_s zero": ({"dist": {"timeout_s": "0"}}, [], ["dist.timeout_s", "at least 0.001"]),
    "dist.stall_report_s negative": ({"dist": {"stall_report_s": "-1"}}, [], ["dist.stall_report_s", "-1"]),
    "schedule.warmup_steps negative": ({"schedule": {"warmup_steps": "-1"}}, [], ["schedule.warmup_steps", "-1"]),
    "train.keep_checkpoints zero": ({"train": {"keep_checkpoints": "0"}}, [], ["train.keep_checkpoints", "at least 1"]),
    "train.eval_batches zero": ({"train": {"eval_batches": "0"}}, [], ["train.eval_batches", "at least 1"]),
    "data.max_bytes small": ({"data": {"max_bytes": "999"}}, [], ["data.max_bytes", "999", "at least 1000"]),
    "model.dropout one": ({"model": {"dropout": "1.0"}}, [], ["model.dropout", "1.0", "[0, 1)"]),
    "data.val_fraction big": ({"data": {"val_fraction": "1.5"}}, [], ["data.val_fraction", "1.5", "(0, 1)"]),
    "optim.betas three": ({"optim": {"betas": "[0.9, 0.95, 0.99]"}}, [], ["optim.betas", "two numbers"]),
    "model.heads divide": ({"model": {"heads": "5"}}, [], ["model.heads = 5", "model.width = 32"]),
    "run.device choice": ({"run": {"device": '"gpu"'}}, [], ["run.device", "'gpu'", "'cpu', 'cuda'"]),
    "run.dtype choice": ({"run": {"dtype": '"float16"'}}, [], ["run.dtype", "'float16'", "float32"]),
    "schedule.name choice": ({"schedule": {"name": '"cosin"'}}, [], ["schedule.name", "'cosin'", "'cosine'?"]),
    "dist.backend choice": ({"dist": {"backend": '"gloo"'}}, [], ["dist.backend", "'gloo'", "'nccl'"]),
    "dist.launcher choice": ({"dist": {"launcher": '"mpirun"'}}, [], ["dist.launcher", "'mpirun'", "'mpiexec', 'srun'"]),
    "train.on_nonfinite choice": ({"train": {"on_nonfinite": '"skip"'}}, [], ["train.on_nonfinite", "'skip'"]),
    "optim.lr nan": ({"optim": {"lr": "nan"}}, [], ["optim.lr", "nan", "finite"]),
    "dist.bucket_cap_mb inf": ({"dist": {"bucket_cap_mb": "inf"}}, [], ["dist.bucket_cap_mb", "inf", "finite"]),
    # ---- unknown names, with the closest suggested
    "unknown run.nmae": ({"run": {"nmae": '"x"'}}, [], ["run.nmae", "did you mean 'name'"]),
    "unknown model.widht": ({"model": {"widht": "32"}}, [], ["model.widht", "did you mean 'width'"]),
    "unknown optim.betass": ({"optim": {"betass": "[0.9, 0.9]"}}, [], ["optim.betass", "did you mean 'betas'"]),
    "unknown section schedul": ({"schedul": {"name": '"cosine"'}}, [], ["[schedul]", "did you mean 'schedule'"]),
    "unknown dist.hostfiles": ({"dist": {"hostfiles": '"h"'}}, [], ["dist.hostfiles", "did you mean 'hostfile'"]),
    "unknown dist.environment": ({"dist": {"environ": "{}"}}, [], ["dist.environ", "did you mean 'env'"]),
    "unknown override key": ({}, ["train.stpes=5"], ["train.stpes", "did you mean 'steps'", "override"]),
    "unknown override section": ({}, ["optimizer.lr=1"], ["[optimizer]", "did you mean 'optim'"]),
    # ---- batch arithmetic
    "global batch not a multiple": ({"train": {"global_batch": "30"}}, [],
                                    ["train.global_batch = 30", "8 x 2 = 16", "16 or 32"]),
    "accum_steps inconsistent": ({"train": {"accum_steps": "3"}}, [], ["train.accum_steps", "8 x 3 x 2 = 48"]),
    "np override breaks the arithmetic": ({}, ["dist.np=3"], ["train.global_batch = 32", "8 x 3 = 24"]),
    "steps and epochs": ({"train": {"epochs": "2"}}, [], ["train.steps", "train.epochs"]),
    "neither steps nor epochs": ({"train": {"steps": None}}, [], ["train.steps", "train.epochs"]),
    # ---- dist.env
    "env name digit": ({}, ["dist.env.1X=1"], ["dist.env.1X", "'1X'", "environment variable name"]),
    "env name dash": ({"dist": {"env": '{"A-B" = "1"}'}}, [], ["dist.env.A-B", "'A-B'"]),
    "env value number": ({"dist": {"env": "{X = 3}"}}, [], ["dist.env.X", "string", "3", 'X = "3"']),
    "env value list": ({"dist": {"env": "{X = [1]}"}}, [], ["dist.env.X", "string", "[1]"]),
    "env value NUL": ({"dist": {"env": '{X = "a\\u0000b"}'}}, [], ["dist.env.X", "NUL"]),
    # ---- dist.mpiexec_args
    "mpiexec_args int": ({"dist": {"mpiexec_args": "3"}}, [], ["dist.mpiexec_args", "a list or one string", "3"]),
    "mpiexec_args bool": ({"dist": {"mpiexec_args": "true"}}, [], ["dist.mpiexec_args", "a list"]),
    "mpiexec_args int item": ({"dist": {"mpiexec_args": '["-n", 3]'}}, [], ["dist.mpiexec_args[1]", "string", "3"]),
    "mpiexec_args table": ({}, ["dist.mpiexec_args={a=1}"], ["dist.mpiexec_args", "a list", "{'a': 1}"]),
    "mpiexec_args unbalanced": ({"dist": {"mpiexec_args": "\"--mca 'btl\""}}, [],
                                ["dist.mpiexec_args", "cannot be split", "--mca 'btl"]),
    # ---- run.name
    "run.name empty": ({"run": {"name": '""'}}, [], ["run.name = ''", "empty"]),
    "run.name slash": ({}, ["run.name=a/b"], ["run.name = 'a/b'", "'/'"]),
    "run.name dot": ({}, ["run.name=."], ["run.name = '.'", "directory name"]),
    "run.name dotdot": ({"run": {"name": '".."'}}, [], ["run.name = '..'", "directory name"]),
    "run.name NUL": ({"run": {"name": '"a\\u0000"'}}, [], ["run.name", "NUL"]),
    # ---- names of built-ins
    "model.name typo": ({}, ["model.name=gtp"], ["model.name = 'gtp'", "did you mean 'gpt'"]),
    "data.name typo": ({"data": {"name": '"digit"'}}, [], ["data.name = 'digit'", "did you mean 'digits'"]),
    "train.loss typo": ({}, ["train.loss=mes"], ["train.loss = 'mes'", "did you mean 'mse'"]),
    "model.name empty attribute": ({}, ["model.name=pkg.mod:"], ["model.name = 'pkg.mod:'", "import path"]),
    "gpt on digits": ({"data": {"name": '"digits"'}}, [], ["model.name = 'gpt'", "data.name = 'digits'"]),
    # ---- overrides
    "override without =": ({}, ["train.steps"], ["'train.steps'", "section.key=value"]),
    "override without section": ({}, ["steps=5"], ["'steps=5'", "section.key"]),
    "override into a number": ({}, ["train.steps.x=1"], ["train.steps.x=1", "train.steps is not a table"]),
    "override into a list": ({}, ["optim.betas.0=0.5"], ["optim.betas is not a table"]),
    "override of an int with a word": ({}, ["train.steps=ten"], ["train.steps", "integer", "'ten'"]),
    "override nan": ({}, ["optim.lr=nan"], ["optim.lr", "nan", "finite"]),
    "override -inf": ({}, ["optim.momentum=-inf"], ["optim.momentum", "-inf", "finite"]),
    "override through a value": ({"model": {"kwargs": "{a = 1}"}}, ["model.kwargs.a.b=2"],
                                 ["model.kwargs.a is 1", "model.kwargs.a.b"]),
    "override of a must-have key to nothing": ({}, ["train.global_batch="], ["train.global_batch", "integer"]),
    # ---- hosts
    "hostfile and hosts in the file": ({"dist": {"hostfile": '"h.txt"', "hosts": '"a:2"'}}, [],
                                       ["dist.hostfile", "dist.hosts", "not both"]),
    "hostfile and hosts on the command line": ({}, ["dist.hostfile=h.txt", "dist.hosts=a:2"],
                                               ["dist.hostfile", "dist.hosts", "give one"]),
    "empty hostfile path": ({"dist": {"hostfile": '""'}}, [], ["dist.hostfile is empty"]),
}
# A section that is not a table cannot be written by config_text.
NOT_A_TABLE = "optim = 3\n"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config(tmp_path, case):
    changes, overrides, expected = BAD[case]
    text = NOT_A_TABLE + config_text({}) if case == "section not a table" else config_text(changes)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(str(path), overrides)
    msg = str(info.value)
    assert str(path) in msg, msg
    for part in expected:
        assert part in msg, f"{part!r} not in: {msg}"
    assert "Traceback" not in msg


def test_the_matrix_is_large():
    assert len(BAD) >= 60


def test_many_problems_are_all_reported(tmp_path):
    path = tmp_path / "many.toml"
    path.write_text(config_text({"run": {"name": '"a/b"', "device": '"gpu"'}, "optim": {"lr": "-1", "betass": "[]"},
                                 "model": {"dropout": "1.5"}, "train": {"global_batch": "30"},
                                 "dist": {"env": "{1X = 2}", "mpiexec_args": "3"}}))
    with pytest.raises(ConfigError) as info:
        load(str(path), ["schedule.name=cosin", "train.steps.x=1"])
    errors = info.value.errors
    keys = ["run.name", "run.device", "optim.lr", "optim.betass", "model.dropout", "train.global_batch",
            "dist.env.1X", "dist.mpiexec_args", "schedule.name", "train.steps.x=1"]
    for key in keys:
        assert sum(key in m for m in errors) >= 1, f"{key} not reported: {errors}"
    assert len(errors) == len(keys) + 1, errors  # and dist.env.1X's value 2 is not a string
    lines = str(info.value).splitlines()
    assert lines[0] == f"{len(errors)} problems in {path}:" and lines[1:] == errors


# ---------------------------------------------------------- the file itself
def test_a_directory_as_config(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a TOML file"):
        load(str(tmp_path))


def test_a_missing_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(str(tmp_path / "none.toml"))


@pytest.mark.parametrize("blob, expected", [
    (b"\xff\xfe[train]\n", "not UTF-8"),
    (b"[train\nsteps = 1\n", "not valid TOML"),
    (b"steps = 1\nsteps = 2\n", "not valid TOML"),
])
def test_a_config_that_cannot_be_read(tmp_path, blob, expected):
    path = tmp_path / "x.toml"
    path.write_bytes(blob)
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert str(path) in str(info.value) and expected in str(info.value)


# ------------------------------------------------------------- hostfiles
@pytest.mark.parametrize("text, expected", [
    ("node1 slots=x\n", [":1", "'x'"]),
    ("node1 slots=0\n", [":1", "at least 1"]),
    ("node1 cpus=4\n", [":1", "cpus=4"]),
    ("node1 slots=2\nnode1 slots=2\n", [":2", "'node1'", "line 1"]),
    ("a slots=1\nb\n\na:3\n", [":4", "'a'", "line 1"]),
    (":4\n", [":1", "empty"]),
    ("a,b slots=2\n", [":1", "'a,b'", "comma"]),
    ("a:b:2\n", [":1", "slots"]),
    ("# none\n", ["lists no hosts"]),
])
def test_bad_hostfile(tmp_path, text, expected):
    path = tmp_path / "hosts"
    path.write_text(text)
    with pytest.raises(HostError) as info:
        parse_hostfile(str(path))
    for part in expected:
        assert part in str(info.value), str(info.value)
    assert str(path) in str(info.value)


def test_a_hostfile_that_is_a_directory(tmp_path):
    with pytest.raises(HostError, match="is a directory"):
        parse_hostfile(str(tmp_path))


@pytest.mark.parametrize("text, expected", [
    ("a:2,a:2", ["'a'", "twice", "items 1 and 2"]),
    ("a:x", ["a:x", "'x'"]),
    ("a:0", ["at least 1"]),
    ("a b:2", ["'a b'", "space"]),
    (":2", ["empty"]),
    (",,", ["lists no hosts"]),
])
def test_bad_hosts(text, expected):
    with pytest.raises(HostError) as info:
        parse_hosts(text)
    for part in expected:
        assert part in str(info.value), str(info.value)


def test_every_bad_hosts_item_is_reported():
    with pytest.raises(HostError) as info:
        parse_hosts("a:x,b:0,a:1,a:2, c d")
    assert len(info.value.errors) == 4, info.value.errors


# ------------------------------------------------------------ import paths
@pytest.fixture
def code_dir(tmp_path, monkeypatch):
    """tmp_path as the current directory, holding small modules; forgotten afterwards."""
    (tmp_path / "mx_good.py").write_text(
        "class Net:\n    def __init__(self, hidden=4):\n        pass\n"
        "def data(n=1):\n    return [], []\n"
        "def loss(output, target):\n    return output\n"
        "NUMBER = 3\nNAME = 'x'\n")
    (tmp_path / "mx_raises.py").write_text("raise RuntimeError('needs a GPU')\n")
    (tmp_path / "mx_exits.py").write_text("import sys\nsys.exit('no config')\n")
    (tmp_path / "mx_needs.py").write_text("import mx_not_installed_anywhere\n")
    (tmp_path / "mx_syntax.py").write_text("def f(:\n    pass\n")
    (tmp_path / "mx_pkg").mkdir()
    (tmp_path / "mx_pkg" / "__init__.py").write_text("")
    (tmp_path / "mx_pkg" / "models.py").write_text("class Model:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", "") or ""):
            del sys.modules[name]


IMPORTS = {
    "missing module": ("model.name=mx_nothing:Net", ["model.name = 'mx_nothing:Net'", "no module named 'mx_nothing'"]),
    "missing submodule": ("model.name=mx_pkg.modles:Model", ["no module named 'mx_pkg.modles'",
                                                             "did you mean 'models'"]),
    "missing attribute": ("model.name=mx_good:Nett", ["model.name", "no attribute 'Nett'", "did you mean 'Net'"]),
    "missing function": ("data.name=mx_good:dat", ["data.name = 'mx_good:dat'", "'data'"]),
    "not callable int": ("data.name=mx_good:NUMBER", ["data.name", "int", "not a class or function"]),
    "not callable str": ("train.loss=mx_good:NAME", ["train.loss = 'mx_good:NAME'", "str", "not a class or function"]),
    "raises on import": ("model.name=mx_raises:Net", ["model.name", "RuntimeError: needs a GPU"]),
    "exits on import": ("train.loss=mx_exits:f", ["train.loss", "SystemExit: no config"]),
    "imports a missing module": ("data.name=mx_needs:d", ["data.name", "ModuleNotFoundError",
                                                          "mx_not_installed_anywhere"]),
    "syntax error": ("model.name=mx_syntax:Net", ["model.name", "SyntaxError", "mx_syntax.py, line 1"]),
    "kwargs do not fit": ("model.kwargs.hiden=3", ["model.name = 'mx_good:Net'", "'hiden'", "did you mean 'hidden'"]),
    "loss takes one argument": ("train.loss=mx_good:data", ["train.loss", "(output, target)"]),
    "dotted form, missing": ("model.name=mx_good.Nope", ["model.name = 'mx_good.Nope'", "no attribute 'Nope'"]),
}


@pytest.mark.parametrize("case", sorted(IMPORTS))
def test_bad_import_path(code_dir, case):
    override, expected = IMPORTS[case]
    base = ["model.name=mx_good:Net", "data.name=mx_good:data"]
    cfg = load(QUICKSTART, base + [override])
    problems = check_imports(cfg)
    assert len(problems) == 1, problems
    for part in expected:
        assert part in problems[0], problems[0]
    assert "Traceback" not in problems[0]


def test_good_import_paths(code_dir):
    cfg = load(QUICKSTART, ["model.name=mx_good:Net", "model.kwargs.hidden=2", "data.name=mx_good:data",
                            "train.loss=mx_good:loss"])
    assert check_imports(cfg) == []
    assert check_imports(load(QUICKSTART, ["model.name=mx_pkg.models:Model", "data.name=mx_good.data"])) == []


def test_every_import_problem_is_reported(code_dir):
    cfg = load(QUICKSTART, ["model.name=mx_raises:Net", "data.name=mx_good:NUMBER", "train.loss=mx_nothing:f"])
    problems = check_imports(cfg)
    assert [p.split(" = ")[0] for p in problems] == ["model.name", "data.name", "train.loss"], problems


# ------------------------------------------------------------ good configs
GOOD = [
    [],
    ["train.epochs=2", "train.steps="],
    ["dist.np=4", "train.global_batch=64"],
    ["dist.env.NCCL_DEBUG=INFO", "dist.env.OMP_PROC_BIND=true", "dist.mpiexec_args=--mca btl tcp,self"],
    ["model.kwargs.a.b=1", "model.kwargs.c=x", "data.kwargs={x=[1, 2]}"],
    ["run.name=nan", "run.output_dir=rel/out", "dist.hostfile=~/hosts.txt"],
    ["dist.hosts=a:2,b:2", "optim.name=sgd", "optim.nesterov=true", "schedule.name=step"],
    ["run.name=\"caf\u00e9 \\\"x\\\"\"", "optim.lr=1e-5", "train.accum_steps=2"],
]


@pytest.mark.parametrize("overrides", GOOD, ids=lambda o: " ".join(o) or "plain")
def test_good_config_round_trips(tmp_path, monkeypatch, overrides):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load(QUICKSTART, overrides)
    for key in ("output_dir",):
        assert os.path.isabs(cfg["run"][key])
    if cfg["dist"]["hostfile"]:
        assert os.path.isabs(cfg["dist"]["hostfile"])
    text = to_toml(cfg)
    (tmp_path / "run").mkdir()
    saved = tmp_path / "run" / "config.toml"
    saved.write_text(text)
    monkeypatch.chdir(tmp_path / "run")  # loaded from elsewhere, as a resume may be
    again = load(str(saved))
    assert again == cfg
    assert to_toml(again) == text
