"""Experiment configs: the schema, TOML loading, ``key.path=value`` overrides and
validation that names the key and the file.

Every key, its type, default and meaning is in ``SCHEMA``; the README's table is
generated from it (``python -m distgrad.train.config --markdown``).

``load`` reports every problem of a config at once: one ``ConfigError`` whose
``errors`` lists them all (unknown keys, wrong types and values, the checks of keys
against each other, bad overrides). It never imports user code; ``check_imports``
does that, for the launcher to call before it starts anything.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import shlex
import sys
from typing import NamedTuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A config that cannot run. ``errors`` lists every problem found, each message
    naming the key and the file; ``str()`` gives them one per line (after a line
    counting them when there are several)."""

    def __init__(self, errors, source: str | None = None):
        if isinstance(errors, str):
            errors = [errors]
        self.errors = list(errors)
        self.source = source
        if len(self.errors) == 1:
            text = self.errors[0]
        else:
            where = f" in {source}" if source else ""
            text = "\n".join([f"{len(self.errors)} problems{where}:"] + self.errors)
        super().__init__(text)

    def __reduce__(self):
        return type(self), (self.errors, self.source)


class Key:
    """One config key. ``path``: a file or folder, made absolute when loaded (from the
    config file's folder, or from the current directory for an override); ``items``:
    the type of a list's elements (``split``: one string is split as a shell would);
    ``values``: the type of a table's values; ``check(value) -> str | None``: a
    further test, returning what is wrong."""

    def __init__(self, type_, default, doc, choices=None, minimum=None, optional=False, path=False,
                 items=None, split=False, values=None, check=None):
        self.type = type_
        self.default = default
        self.doc = doc
        self.choices = choices
        self.minimum = minimum
        self.optional = optional
        self.path = path
        self.items = items
        self.split = split
        self.values = values
        self.check = check


_NUM = (int, float)

# The names the trainer knows without an import path (distgrad/train/models.py,
# datasets.py and losses.py).
BUILTIN_MODELS = ("gpt", "mlp")
BUILTIN_DATA = ("chars", "digits")
BUILTIN_LOSSES = ("cross_entropy", "mse", "l1", "smooth_l1", "bce_with_logits")
# The data each built-in model needs.
_MODEL_DATA = {"gpt": "chars", "mlp": "digits"}

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _dir_name(value: str):
    """Why ``value`` cannot be one directory name (None if it can)."""
    why = ("it is empty" if value == "" else
           "it is not a name of its own" if value in (".", "..") else
           "it contains '/' (give the folder in run.output_dir)" if "/" in value or os.sep in value else
           "it contains a NUL character" if "\x00" in value else None)
    return f"cannot be a directory name: {why}" if why else None


def _import_name(what: str, builtins: tuple, form: str):
    """A check for a key naming a built-in or an import path ('package.module:attr');
    only the form is checked here, the import is ``check_imports``'s."""
    def check(value: str):
        if value in builtins:
            return None
        mod, colon, attr = value.partition(":")
        if colon:
            if not mod or not attr:
                return f"is not an import path: they look like {form!r}"
            return None
        if "." in value.strip(".") and not value.endswith("."):
            return None  # 'package.module.attr', as the trainer also reads it
        close = difflib.get_close_matches(value, builtins, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (f"is neither a built-in {what} ({', '.join(map(repr, builtins))}) nor an import "
                f"path {form!r}{hint}")
    return check


SCHEMA = {
    "run": {
        "name": Key(str, "run", "name of the experiment; the run directory is output_dir/name-TIMESTAMP "
                                "(one folder name: no '/')", check=_dir_name),
        "output_dir": Key(str, "runs", "where run directories are created (a relative path is taken "
                                       "from the config file's folder, or on the command line, like "
                                       "the default, from the current directory)", path=True),
        "seed": Key(int, 0, "seed for initialization, data order and dropout"),
        "device": Key(str, "cpu", "'cpu' or 'cuda' (each rank takes its local GPU)", choices=("cpu", "cuda")),
        "dtype": Key(str, "float32", "parameter and activation dtype", choices=("float32", "float64")),
        "precision": Key(str, "32", "'32' (everything in run.dtype), 'bf16-mixed' or 'fp16-mixed' (Lightning's "
                                    "names; '16-mixed' is 'fp16-mixed'): float32 weights, forward under "
                                    "autocast in bfloat16 or float16, and for float16 a dynamic loss scale",
                         choices=("32", "32-true", "bf16-mixed", "fp16-mixed", "16-mixed")),
    },
    "model": {
        "name": Key(str, "gpt", "'gpt', 'mlp', or a class by import path 'package.module:Class' "
                                "(built with the keys of [model.kwargs])",
                    check=_import_name("model", BUILTIN_MODELS, "package.module:Class")),
        "width": Key(int, 64, "gpt: embedding width; mlp: hidden width", minimum=1),
        "layers": Key(int, 2, "gpt: transformer blocks; mlp: hidden layers", minimum=1),
        "heads": Key(int, 4, "gpt: attention heads (must divide width)", minimum=1),
        "context": Key(int, 32, "gpt: context length in tokens (the data's block size)", minimum=1),
        "dropout": Key(float, 0.0, "dropout probability (0 keeps debug and distributed runs identical)", minimum=0.0),
        "kwargs": Key(dict, {}, "keyword arguments for a model given by import path "
                                "(one on the command line: model.kwargs.NAME=VALUE)"),
    },
    "data": {
        "name": Key(str, "chars", "'chars' (the standard library's source, byte level), 'digits' "
                                  "(scikit-learn's 8x8 digits), or 'package.module:function' "
                                  "returning (train_dataset, val_dataset)",
                    check=_import_name("dataset", BUILTIN_DATA, "package.module:function")),
        "val_fraction": Key(float, 0.1, "fraction of the data held out for evaluation", minimum=0.0),
        "max_bytes": Key(int, 1_000_000, "chars: bytes of source text to use", minimum=1000),
        "kwargs": Key(dict, {}, "keyword arguments for a dataset function given by import path "
                                "(one on the command line: data.kwargs.NAME=VALUE)"),
    },
    "optim": {
        "name": Key(str, "adamw", "optimizer", choices=("adamw", "adam", "sgd")),
        "lr": Key(float, 3e-3, "peak learning rate", minimum=0.0),
        "weight_decay": Key(float, 0.0, "weight decay (decoupled for adamw)", minimum=0.0),
        "betas": Key(list, [0.9, 0.95], "adam/adamw: (beta1, beta2)"),
        "eps": Key(float, 1e-8, "adam/adamw: epsilon", minimum=0.0),
        "momentum": Key(float, 0.9, "sgd: momentum", minimum=0.0),
        "nesterov": Key(bool, False, "sgd: Nesterov momentum"),
        "grad_clip": Key(float, 1.0, "clip the gradients' total 2-norm to this (0 disables)", minimum=0.0),
    },
    "schedule": {
        "name": Key(str, "cosine", "learning-rate schedule after warm-up",
                    choices=("cosine", "constant", "step", "linear")),
        "warmup_steps": Key(int, 0, "linear warm-up from lr/100 over this many steps", minimum=0),
        "min_lr": Key(float, 0.0, "cosine/linear: the final learning rate", minimum=0.0),
        "step_size": Key(int, 100, "step: decay every this many steps", minimum=1),
        "gamma": Key(float, 0.5, "step: decay factor", minimum=0.0),
    },
    "train": {
        "global_batch": Key(int, 32, "samples per optimizer step over all ranks "
                                     "(= micro_batch x accum_steps x world size)", minimum=1),
        "micro_batch": Key(int, 16, "samples per forward/backward on one rank", minimum=1),
        "accum_steps": Key(int, None, "microbatches per step on each rank (derived when omitted)",
                           minimum=1, optional=True),
        "steps": Key(int, None, "optimizer steps to run (give steps or epochs)", minimum=1, optional=True),
        "epochs": Key(int, None, "passes over the training data (give steps or epochs)", minimum=1, optional=True),
        "loss": Key(str, "cross_entropy", "training loss: 'cross_entropy' (class indices or probabilities "
                                         "along the output's last dim), 'mse', 'l1', 'smooth_l1', "
                                         "'bce_with_logits', or a function by import path "
                                         "'package.module:fn' taking (output, target)",
                    check=_import_name("loss", BUILTIN_LOSSES, "package.module:fn")),
        "on_nonfinite": Key(str, "stop", "when the loss or gradient norm is NaN/Inf: 'stop' the run "
                                         "(naming step, rank and value) or 'skip_step' (no update)",
                            choices=("stop", "skip_step")),
        "max_skipped_steps": Key(int, 10, "skip_step: stop after this many consecutive skipped steps",
                                 minimum=1),
        "checkpoint_activations": Key(bool, False, "recompute each block's activations in backward "
                                                   "(gpt, mlp, or a model class taking checkpoint_blocks)"),
        "log_interval": Key(int, 10, "steps between log lines", minimum=1),
        "eval_interval": Key(int, 0, "steps between evaluations (0: only at the end)", minimum=0),
        "eval_batches": Key(int, 4, "global batches of validation data per evaluation", minimum=1),
        "checkpoint_interval": Key(int, 0, "steps between checkpoints (0: only at the end)", minimum=0),
        "keep_checkpoints": Key(int, 2, "how many of the latest checkpoints to keep", minimum=1),
        "progress": Key(bool, True, "show a progress bar on rank 0"),
        "trace_steps": Key(list, [], "steps to record a timeline of, e.g. [5, 6]: trace.json in the run "
                                     "directory (Chrome trace JSON for Perfetto or chrome://tracing) with "
                                     "every rank's data, forward, backward, optimizer, evaluation and "
                                     "checkpoint phases and each gradient bucket's all-reduce, on one "
                                     "time axis (distgrad-launch --trace 5-6 sets it)", items=int,
                           check=lambda v: None if all(s >= 1 for s in v) else "must hold steps >= 1"),
        "trace_autograd_nodes": Key(bool, False, "traced steps also show each autograd node's backward "
                                                 "(a longer trace)"),
        "tensorboard": Key(bool, False, "also write TensorBoard event files (tensorboard/ in the run "
                                        "directory; needs the tensorboard or tensorboardX package)"),
    },
    "dist": {
        "np": Key(int, 1, "ranks to start (overridden by --np)", minimum=1),
        "backend": Key(str, "auto", "collectives backend", choices=("auto", "mpi", "nccl")),
        "bucket_cap_mb": Key(float, 25.0, "gradient bucket size for the all-reduce", minimum=0.0),
        "timeout_s": Key(float, 600.0, "seconds any collective may wait before the job is stopped, "
                                       "naming the ranks that did not join", minimum=0.001),
        "stall_report_s": Key(float, 60.0, "print where every rank is when a collective has waited "
                                           "this long (0: never)", minimum=0.0),
        "find_unused_parameters": Key(bool, False, "allow parameters that get no gradient"),
        "zero_stage": Key(int, 0, "ZeRO sharding: 0 none; 1 optimizer state sharded among the ranks; "
                                  "2 also the averaged gradients (reduce-scattered). Memory only: the "
                                  "losses are those of stage 0, and checkpoints hold the full state, so "
                                  "a run may resume at another stage or world size", choices=(0, 1, 2)),
        "launcher": Key(str, "mpiexec", "how ranks are started", choices=("mpiexec", "srun")),
        "hostfile": Key(str, None, "hostfile ('host slots=N' lines) for multi-node runs (a relative "
                                   "path is taken from the config file's folder, or on the command "
                                   "line from the current directory)", optional=True, path=True),
        "hosts": Key(str, None, "hosts as 'h1:4,h2:4' for multi-node runs (dist.hosts and dist.hostfile "
                                "on the command line replace the other one of the file)", optional=True),
        "env": Key(dict, {}, "environment variables set for every rank on every host, added to what is "
                             "forwarded by default: VAR = \"value\" (strings; one on the command line: "
                             "dist.env.VAR=value)", values=str),
        "mpiexec_args": Key(list, [], "extra arguments passed to mpiexec/mpirun/srun as given, e.g. "
                                      "['-iface', 'eth0'] or ['--mca', 'btl', 'tcp,self'] (one string is "
                                      "split as a shell would)", items=str, split=True),
    },
}

# Table keys an override may reach into (model.kwargs.hidden=128).
TABLE_KEYS = tuple(f"{sec}.{k}" for sec, keys in SCHEMA.items() for k, spec in keys.items() if spec.type is dict)
PATH_KEYS = tuple(f"{sec}.{k}" for sec, keys in SCHEMA.items() for k, spec in keys.items() if spec.path)
# Keys naming user code by import path, checked by ``check_imports``.
IMPORT_KEYS = {"model.name": BUILTIN_MODELS, "data.name": BUILTIN_DATA, "train.loss": BUILTIN_LOSSES}


def _type_name(t) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list", dict: "a table"}[t]


def defaults() -> dict:
    return {sec: {k: copy.deepcopy(spec.default) for k, spec in keys.items()} for sec, keys in SCHEMA.items()}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(options))}"


def _close(name: str, options):
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return close[0] if close else None


def _absolute(value: str, base_dir: str | None) -> str:
    """A path made absolute: ``~`` expanded, a relative one taken from ``base_dir``
    (the current directory when None)."""
    value = os.path.expanduser(value)
    if not os.path.isabs(value):
        value = os.path.join(base_dir if base_dir is not None else os.getcwd(), value)
    return os.path.normpath(value)


def _check_value(where: str, spec: Key, value, source: str, errors: list, base_dir: str | None = None):
    """``value`` checked against ``spec`` (converted where the schema says: an int for
    a float, a path made absolute, a string split into a list). Every problem is added
    to ``errors``; the return value is meaningful only when none was."""
    n = len(errors)
    if value is None:
        if not spec.optional:
            errors.append(f"{source}: {where} cannot be empty")
        return None
    t = spec.type
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.split and isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as e:
            errors.append(f"{source}: {where} = {value!r} cannot be split into arguments: {e}")
            return None
    ok = isinstance(value, t) and not (t in (int, float) and isinstance(value, bool))
    if not ok:
        also = " or one string" if spec.split else ""
        errors.append(f"{source}: {where} must be {_type_name(t)}{also}, got {value!r} ({type(value).__name__})")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{source}: {where} = {value!r} is not a finite number")
        return None
    if spec.choices and value not in spec.choices:
        errors.append(
            f"{source}: {where} = {value!r} is not one of {', '.join(map(repr, spec.choices))}"
            + _suggest(str(value), spec.choices).replace("known keys", "choices"))
        return None
    if spec.minimum is not None and value < spec.minimum:
        errors.append(f"{source}: {where} = {value!r} must be at least {spec.minimum}")
        return None
    if spec.items is not None:
        for i, item in enumerate(value):
            if not isinstance(item, spec.items) or (spec.items is int and isinstance(item, bool)):
                example = "[5, 6]" if spec.items is int else "['-iface', 'eth0']"
                errors.append(f"{source}: {where}[{i}] must be {_type_name(spec.items)}, got {item!r} "
                              f"({type(item).__name__}); e.g. {where} = {example}")
            elif isinstance(item, str) and "\x00" in item:
                errors.append(f"{source}: {where}[{i}] = {item!r} contains a NUL character")
    if spec.values is not None:
        for name, item in value.items():
            if not _ENV_NAME.match(name):
                errors.append(f"{source}: {where}.{name}: {name!r} is not a valid environment variable "
                              "name (letters, digits and '_', not starting with a digit)")
            if not isinstance(item, spec.values):
                errors.append(f"{source}: {where}.{name} must be {_type_name(spec.values)}, got {item!r} "
                              f"({type(item).__name__}); write {name} = {json.dumps(str(item))}")
            elif "\x00" in item:
                errors.append(f"{source}: {where}.{name} = {item!r} contains a NUL character")
    if spec.check is not None and len(errors) == n:
        why = spec.check(value)
        if why:
            errors.append(f"{source}: {where} = {value!r} {why}")
    if spec.path and len(errors) == n:
        if value == "":
            errors.append(f"{source}: {where} is empty; leave the key out"
                          + (f" (on the command line, {where}= unsets it)" if spec.optional else ""))
            return None
        if "\x00" in value:
            errors.append(f"{source}: {where} = {value!r} contains a NUL character")
            return None
        value = _absolute(value, base_dir)
    return value


def _merge(cfg: dict, data: dict, source: str, errors: list, invalid: set, base_dir: str | None) -> dict:
    """Lay ``data`` (parsed TOML) over ``cfg`` in place, adding every problem to
    ``errors`` and the keys whose value could not be taken to ``invalid``."""
    for sec, table in data.items():
        if sec not in SCHEMA:
            errors.append(f"{source}: unknown section [{sec}]" + _suggest(sec, SCHEMA))
            close = _close(sec, SCHEMA)
            if close and isinstance(table, dict):  # a misspelled section: its keys are not given
                invalid.update(f"{close}.{k}" for k in table if k in SCHEMA[close])
            continue
        if not isinstance(table, dict):
            errors.append(f"{source}: [{sec}] must be a table, got {table!r}")
            invalid.update(f"{sec}.{k}" for k in SCHEMA[sec])
            continue
        for key, value in table.items():
            if key not in SCHEMA[sec]:
                errors.append(f"{source}: unknown key {sec}.{key}" + _suggest(key, SCHEMA[sec]))
                close = _close(key, SCHEMA[sec])
                if close:  # a misspelled key: the one meant is not given
                    invalid.add(f"{sec}.{close}")
                continue
            n = len(errors)
            checked = _check_value(f"{sec}.{key}", SCHEMA[sec][key], value, source, errors, base_dir)
            if len(errors) == n:
                cfg[sec][key] = checked
                invalid.discard(f"{sec}.{key}")
            else:
                invalid.add(f"{sec}.{key}")
    return cfg


def merge(base: dict, data: dict, source: str, base_dir: str | None = None) -> dict:
    """Validate ``data`` (parsed TOML) against the schema and lay it over ``base``;
    relative paths are taken from ``base_dir`` (default: the current directory).
    Raises one ConfigError listing every problem."""
    errors = []
    out = _merge(copy.deepcopy(base), data, source, errors, set(), base_dir)
    if errors:
        raise ConfigError(errors, source)
    return out


class Override(NamedTuple):
    """A parsed ``section.key=value`` (``path``: the keys below a table key, as in
    ``model.kwargs.a.b=1``)."""
    section: str
    key: str
    value: object
    path: tuple = ()
    text: str = ""


_UNSET = object()


def _toml_value_of(raw: str):
    """The TOML value written ``raw``, or _UNSET if it is none (or more than one)."""
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return _UNSET
    return parsed["v"] if list(parsed) == ["v"] else _UNSET


def parse_override(text: str) -> Override:
    """``section.key=value``, or ``section.key.name[.name...]=value`` for a key inside
    a table-typed key (model.kwargs, data.kwargs, dist.env).

    The value is TOML (``1e-3``, ``[0.9, 0.99]``, ``true``, ``{a = 1}``), bare words
    being taken as strings. A key whose type is a string takes the text as given
    (``run.name=123`` is "123", ``run.name=nan`` is "nan"), or the value of a TOML
    string literal (``run.name="a b"`` is "a b"); so do the values of dist.env.
    ``dist.mpiexec_args`` takes a TOML list or string, or else the text, split as a
    shell would.
    Nothing after '=' unsets a key that may be empty (``train.epochs=``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. train.steps=100")
    path, _, raw = text.partition("=")
    parts = path.strip().split(".")
    raw = raw.strip()
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be section.key, e.g. optim.lr=1e-3 "
                          f"(or a name inside a table key: {', '.join(f'{k}.NAME' for k in TABLE_KEYS)})")
    sec, key, sub = parts[0], parts[1], tuple(parts[2:])
    spec = SCHEMA.get(sec, {}).get(key)
    if sub and (spec is None or spec.type is not dict):
        if sec not in SCHEMA:
            why = f"there is no section [{sec}]" + _suggest(sec, SCHEMA)
        elif spec is None:
            why = f"there is no key {sec}.{key}" + _suggest(key, SCHEMA[sec])
        else:
            why = f"{sec}.{key} is not a table, so it takes {sec}.{key}=VALUE"
        raise ConfigError(f"override {text!r}: the key must be section.key, or a name inside a table "
                          f"key ({', '.join(f'{k}.NAME' for k in TABLE_KEYS)}); {why}")
    if spec is not None and not sub and raw == "" and spec.optional:
        return Override(sec, key, None, sub, text)
    as_text = spec is not None and (spec.type is str and not sub or spec.values is str and sub)
    value = _toml_value_of(raw)
    if as_text:
        value = value if isinstance(value, str) else raw
    elif value is _UNSET or spec is not None and spec.split and isinstance(value, _NUM) \
            and not isinstance(value, bool):
        value = raw  # a bare word, or an argument that reads as a number (-5)
    return Override(sec, key, value, sub, text)


def _apply_override(cfg: dict, o: Override, source: str, errors: list, invalid: set) -> bool:
    """Lay one override over ``cfg`` (paths from the current directory); False if it
    could not be taken."""
    n = len(errors)
    if not o.path:
        _merge(cfg, {o.section: {o.key: o.value}}, source, errors, invalid, None)
        return len(errors) == n
    spec = SCHEMA[o.section][o.key]
    table = copy.deepcopy(cfg[o.section][o.key])
    node = table
    for i, name in enumerate(o.path[:-1]):
        nxt = node.setdefault(name, {})
        if not isinstance(nxt, dict):
            where = ".".join((o.section, o.key) + o.path[:i + 1])
            errors.append(f"{source}: {where} is {nxt!r}, not a table, so {'.'.join((o.section, o.key) + o.path)} "
                          "cannot be set")
            return False
        node = nxt
    node[o.path[-1]] = o.value
    where = f"{o.section}.{o.key}"
    checked = _check_value(where, spec, table, source, errors)
    if len(errors) > n:
        return False
    cfg[o.section][o.key] = checked
    invalid.discard(where)
    return True


def _read(path: str) -> dict:
    """The parsed TOML of ``path``; a ConfigError saying plainly what is wrong with it."""
    shown = os.fspath(path)
    if os.path.isdir(shown):
        raise ConfigError(f"config file {shown} is a directory, not a TOML file")
    try:
        with open(shown, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {shown} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {shown} cannot be read: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {shown} is a directory, not a TOML file") from None
    except OSError as e:
        raise ConfigError(f"config file {shown} cannot be read: {e.strerror or e}") from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        line = blob[:e.start].count(b"\n") + 1
        raise ConfigError(f"{shown}: not a TOML file: it is not UTF-8 text (byte {e.start}, line {line})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{shown}: not valid TOML: {e}") from None


def load(path: str, overrides=(), world_size: int | None = None) -> dict:
    """Read, override, validate and resolve a config; one ConfigError lists every
    problem (``.errors``).

    ``overrides`` are ``key.path=value`` texts from the command line, applied in order
    after the file (see ``parse_override``). ``world_size`` (from --np or the debug
    run) replaces dist.np for the batch arithmetic.

    Paths (``PATH_KEYS``) in the file are taken from the file's folder, those of an
    override from the current directory, and come back absolute (``~`` expanded).

    Hosts: a file, or the overrides, giving both dist.hostfile and dist.hosts is an
    error. The command line comes after the file and wins: an override of one of them
    (``dist.hosts=a:4,b:4``, or ``dist.hostfile=hosts.txt``) drops the other one if
    the file gave it, so a launcher's --hosts or --hostfile replaces the file's hosts.
    """
    errors, invalid = [], set()
    source = os.fspath(path)
    cfg = defaults()
    data = None
    try:
        data = _read(path)
    except ConfigError as e:
        errors.extend(e.errors)
    base_dir = os.path.dirname(os.path.abspath(source))
    if data is not None:
        _merge(cfg, data, source, errors, invalid, base_dir)
        dist_table = data.get("dist") if isinstance(data.get("dist"), dict) else {}
        if dist_table.get("hostfile") is not None and dist_table.get("hosts") is not None:
            errors.append(f"{source}: give dist.hostfile or dist.hosts, not both")
            invalid.update(("dist.hostfile", "dist.hosts"))
    given = {}  # dist.hostfile / dist.hosts: the override that set each
    for text in overrides:
        try:
            o = parse_override(text)
        except ConfigError as e:
            errors.extend(f"{source}: {m}" for m in e.errors)
            continue
        if _apply_override(cfg, o, f"{source} (override {text})", errors, invalid) \
                and o.section == "dist" and o.key in ("hostfile", "hosts"):
            given[o.key] = text if o.value is not None else None
    if given.get("hostfile") and given.get("hosts"):
        errors.append(f"{source}: the overrides {given['hostfile']} and {given['hosts']} give "
                      "dist.hostfile and dist.hosts; give one")
        invalid.update(("dist.hostfile", "dist.hosts"))
    else:
        for key, other in (("hostfile", "hosts"), ("hosts", "hostfile")):
            if given.get(key) and other not in given:
                cfg["dist"][other] = None  # the command line's hosts replace the file's
                invalid.discard(f"dist.{other}")
    if world_size is not None and (not isinstance(world_size, int) or isinstance(world_size, bool)
                                   or world_size < 1):
        errors.append(f"{source}: the world size must be a whole number of at least 1, got {world_size!r}")
        world_size = None
        invalid.add("dist.np")
    if data is not None:
        cfg = _resolve(cfg, source, world_size, errors, invalid)
    if errors:
        raise ConfigError(errors, source)
    return cfg


def resolve(cfg: dict, source: str, world_size: int | None = None) -> dict:
    """Check the keys that depend on each other and derive the rest; one ConfigError
    lists every problem."""
    errors = []
    cfg = _resolve(cfg, source, world_size, errors, set())
    if errors:
        raise ConfigError(errors, source)
    return cfg


def _resolve(cfg: dict, source: str, world_size, errors: list, invalid: set) -> dict:
    """``resolve``, adding problems to ``errors``; a check one of whose keys is in
    ``invalid`` (its value could not be taken) is skipped."""
    cfg = copy.deepcopy(cfg)

    def usable(*keys):
        return not invalid.intersection(keys)

    t, d, m = cfg["train"], cfg["dist"], cfg["model"]
    world = world_size if world_size is not None else d["np"]
    d["np"] = world
    arithmetic = ["train.micro_batch", "train.global_batch", "train.accum_steps"]
    if world_size is None:
        arithmetic.append("dist.np")
    if usable(*arithmetic):
        per_rank = t["micro_batch"] * world
        if t["accum_steps"] is not None and t["accum_steps"] * per_rank != t["global_batch"]:
            errors.append(
                f"{source}: train.global_batch must equal train.micro_batch x train.accum_steps x "
                f"world size, but {t['micro_batch']} x {t['accum_steps']} x {world} = "
                f"{t['accum_steps'] * per_rank}, not {t['global_batch']}. Omit accum_steps to have it derived.")
        elif t["global_batch"] % per_rank:
            lo = max(per_rank, t["global_batch"] // per_rank * per_rank)
            errors.append(
                f"{source}: train.global_batch = {t['global_batch']} is not a multiple of "
                f"train.micro_batch x world size = {t['micro_batch']} x {world} = {per_rank}, so the "
                f"accumulation steps would not be whole; use global_batch = {lo} or {lo + per_rank}, "
                "or another micro_batch")
        else:
            t["accum_steps"] = t["global_batch"] // per_rank
    if usable("train.steps", "train.epochs") and (t["steps"] is None) == (t["epochs"] is None):
        errors.append(f"{source}: give exactly one of train.steps and train.epochs")
    if usable("model.name", "model.width", "model.heads") and m["name"] == "gpt" and m["width"] % m["heads"]:
        errors.append(f"{source}: model.heads = {m['heads']} must divide model.width = {m['width']}")
    if (usable("dist.zero_stage", "run.precision") and cfg["dist"]["zero_stage"] == 2
            and cfg["run"]["precision"] in ("fp16-mixed", "16-mixed")):
        errors.append(f"{source}: dist.zero_stage = 2 cannot be combined with run.precision = "
                      f"{cfg['run']['precision']!r}: each rank would check only its shard of the gradients "
                      "for float16 overflow, and the ranks could disagree on skipping a step; use "
                      "dist.zero_stage = 1 or run.precision = 'bf16-mixed'")
    if usable("model.dropout") and not 0.0 <= m["dropout"] < 1.0:
        errors.append(f"{source}: model.dropout = {m['dropout']} must be in [0, 1)")
    if usable("data.val_fraction") and not 0.0 < cfg["data"]["val_fraction"] < 1.0:
        errors.append(f"{source}: data.val_fraction = {cfg['data']['val_fraction']} must be in (0, 1)")
    b = cfg["optim"]["betas"]
    if usable("optim.betas") and (len(b) != 2 or not all(
            isinstance(x, _NUM) and not isinstance(x, bool) and math.isfinite(x) and 0 <= x < 1 for x in b)):
        errors.append(f"{source}: optim.betas must be two numbers in [0, 1), got {b!r}")
    if usable("model.name", "data.name"):
        needs = _MODEL_DATA.get(m["name"])
        if needs and cfg["data"]["name"] != needs:
            errors.append(f"{source}: model.name = {m['name']!r} needs data.name = {needs!r}, got "
                          f"data.name = {cfg['data']['name']!r} (a model by import path takes any data)")
    if usable("run.precision", "run.dtype") and cfg["run"]["precision"].endswith("-mixed") \
            and cfg["run"]["dtype"] != "float32":
        errors.append(f"{source}: run.precision = {cfg['run']['precision']!r} keeps float32 weights and needs "
                      f"run.dtype = 'float32', got {cfg['run']['dtype']!r}")
    if usable("dist.hostfile", "dist.hosts") and d["hostfile"] and d["hosts"]:
        errors.append(f"{source}: give dist.hostfile or dist.hosts, not both")
    # Paths not given anywhere (the defaults) are taken from the current directory.
    for sec, keys in SCHEMA.items():
        for k, spec in keys.items():
            if spec.path and isinstance(cfg[sec][k], str) and cfg[sec][k]:
                cfg[sec][k] = _absolute(cfg[sec][k], None)
    return cfg


def check_imports(cfg: dict) -> list:
    """Import the user code a config names (``model.name``, ``data.name``,
    ``train.loss`` given as 'package.module:attr', or 'package.module.attr') as the
    ranks will, with the current directory first on the path, and return one message
    per problem: a module that is not found, an exception raised while importing it
    (its type and message), a missing attribute (with the closest names the module
    has), one that is not a class or function, or keyword arguments
    ([model.kwargs], [data.kwargs]) its signature does not take. Built-in names are
    not imported; a bare name that is not one is reported too. [] when all is well."""
    problems = []
    modules = {}
    importlib.invalidate_caches()  # modules written since the last import are found
    added = False
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
        added = True
    try:
        for key, builtins in IMPORT_KEYS.items():
            sec, name = key.split(".")
            value = cfg.get(sec, {}).get(name)
            if not isinstance(value, str) or value in builtins:
                continue
            msg = _check_import(key, value, builtins, cfg, modules)
            if msg:
                problems.append(msg)
    finally:
        if added:
            try:
                sys.path.remove(cwd)
            except ValueError:
                pass
    if cfg.get("train", {}).get("tensorboard") is True:
        from .records import tensorboard_writer_class

        try:
            tensorboard_writer_class()
        except ImportError as e:
            problems.append(f"train.tensorboard = true: {e}")
    return problems


def _check_import(key: str, value: str, builtins: tuple, cfg: dict, modules: dict):
    head = f"{key} = {value!r}"
    mod_name, colon, attr = value.partition(":")
    if not colon:
        mod_name, _, attr = value.rpartition(".")
    if not mod_name or not attr:
        close = _close(value, builtins)
        hint = f"; did you mean {close!r}?" if close else ""
        return (f"{head} is neither a built-in name ({', '.join(map(repr, builtins))}) nor an import "
                f"path 'package.module:name'{hint}")
    if mod_name not in modules:
        modules[mod_name] = _import(mod_name)
    module, failure = modules[mod_name]
    if failure:
        return f"{head} cannot be imported: {failure}"
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("__")]
        close = difflib.get_close_matches(attr, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return f"{head} cannot be imported: module {mod_name!r} has no attribute {attr!r}{hint}"
    obj = getattr(module, attr)
    if not callable(obj):
        return (f"{head}: {mod_name}.{attr} is {type(obj).__name__} {_short(obj)}, not a class or function "
                "(it must be callable)")
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if key == "model.name":
        args, kwargs, what = (), dict(cfg["model"].get("kwargs") or {}), "[model.kwargs]"
    elif key == "data.name":
        args, kwargs, what = (), dict(cfg["data"].get("kwargs") or {}), "[data.kwargs]"
    else:
        args, kwargs, what = (None, None), {}, "(output, target)"
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        given = f" {kwargs}" if kwargs or key != "train.loss" else ""
        unknown = [k for k in kwargs if k not in sig.parameters]
        close = [c for k in unknown for c in difflib.get_close_matches(k, list(sig.parameters), n=1, cutoff=0.6)]
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return f"{head}: {attr}{sig} cannot be called with {what}{given}: {e}{hint}"
    return None


def _short(obj) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


def _import(mod_name: str):
    """(module, None) or (None, what went wrong, in one line)."""
    try:
        return importlib.import_module(mod_name), None
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (mod_name == missing or mod_name.startswith(missing + ".")):
            where = f"no module named {missing!r} (looked in the current directory {os.getcwd()} and sys.path)"
            top = missing.rpartition(".")[2]
            close = _close(top, _module_names(missing.rpartition(".")[0]))
            return None, where + (f"; did you mean {close!r}?" if close else "")
        return None, f"importing {mod_name!r} raised ModuleNotFoundError: {e}"
    # The module's own code failed, whatever it raised: report its error, not a traceback.
    except (Exception, SystemExit) as e:  # noqa: BLE001
        where = ""
        if isinstance(e, SyntaxError) and e.filename:
            where = f" ({os.path.basename(e.filename)}, line {e.lineno})"
        text = e.msg if isinstance(e, SyntaxError) else str(e)
        return None, f"importing {mod_name!r} raised {type(e).__name__}: {text}{where}"


def _module_names(package: str) -> list:
    """The modules importable at the top level (or inside ``package``)."""
    import pkgutil

    try:
        if package:
            pkg = importlib.import_module(package)
            return [m.name for m in pkgutil.iter_modules(getattr(pkg, "__path__", []))]
        return [m.name for m in pkgutil.iter_modules()] + list(sys.builtin_module_names)
    except Exception:  # noqa: BLE001 (only suggestions: a package that fails gives none)
        return []


# Keys a resumed run may change: they do not change the trajectory up to a checkpoint
# (how long to train, how often to log, evaluate and save, how the ranks share the
# work and talk, where the run is written).
RESUMABLE = {
    "run": {"name", "output_dir"},
    "train": {"steps", "epochs", "accum_steps", "log_interval", "eval_interval", "eval_batches",
              "checkpoint_interval", "keep_checkpoints", "progress", "on_nonfinite", "max_skipped_steps",
              "trace_steps", "trace_autograd_nodes", "tensorboard"},
    "dist": set(SCHEMA["dist"]),
}


def trajectory(cfg: dict) -> dict:
    """The part of a config that shapes the training trajectory (JSON types only)."""
    out = {}
    for sec, table in cfg.items():
        if sec.startswith("_"):
            continue
        keep = {k: v for k, v in table.items() if k not in RESUMABLE.get(sec, ())}
        if keep:
            out[sec] = keep
    return json.loads(json.dumps(out))


def config_hash(cfg: dict) -> str:
    """A digest of everything that shapes the training run (not where it is written,
    how long it runs, nor how many ranks share the work)."""
    return hashlib.sha256(json.dumps(trajectory(cfg), sort_keys=True).encode()).hexdigest()[:16]


def differences(saved: dict, cfg: dict, resumable: bool = False) -> list:
    """[(key, saved value, new value)] where two configs differ, among the keys that
    shape the trajectory (or, with ``resumable``, among those a resume may change).
    A key missing from ``saved`` has its schema default."""
    a, b = (json.loads(json.dumps(c)) for c in (saved, cfg))
    out = []
    for sec, table in SCHEMA.items():
        for k, spec in table.items():
            if (k in RESUMABLE.get(sec, ())) != resumable or (sec, k) == ("train", "accum_steps"):
                continue
            va = a.get(sec, {}).get(k, spec.default)
            vb = b.get(sec, {}).get(k, spec.default)
            if va != vb:
                out.append((f"{sec}.{k}", va, vb))
    return out


def resume_refusal(saved: dict | None, saved_hash: str | None, cfg: dict) -> str | None:
    """Why a run whose checkpoint records the config ``saved`` (older checkpoints record
    only its hash) cannot go on with ``cfg``, naming every differing key with both
    values; None if it can."""
    if saved is None:
        if saved_hash == config_hash(cfg):
            return None
        return ("it was made with a different config (this older checkpoint records only a "
                "digest of its config, so the keys cannot be named)")
    changed = differences(saved, cfg)
    if not changed:
        return None
    return "it was made with a different config: " + "; ".join(
        f"{k} = {a!r} in the run, {b!r} now" for k, a, b in changed)


def to_toml(cfg: dict) -> str:
    """The resolved config as TOML (written into the run directory). Derived values
    (``train.accum_steps``, keys starting with '_') are left out, so the file can be
    loaded for another world size, e.g. a debug run of a distributed job. Paths are
    absolute in a resolved config, so the file loads the same from anywhere."""
    lines = []
    for sec, table in cfg.items():
        if sec.startswith("_"):
            continue
        lines.append(f"[{sec}]")
        for k, v in table.items():
            if v is None or (sec, k) == ("train", "accum_steps"):
                continue
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        # JSON string syntax is TOML's basic string, except that TOML wants DEL escaped.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def markdown_table() -> str:
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for sec, keys in SCHEMA.items():
        for k, spec in keys.items():
            default = "(none)" if spec.default is None else _toml_value(spec.default) if not isinstance(spec.default, dict) else "{}"
            choices = f" One of {', '.join(map(repr, spec.choices))}." if spec.choices else ""
            kind = "path" if spec.path else f"list of {spec.items.__name__}" if spec.items else \
                f"table of {spec.values.__name__}" if spec.values else spec.type.__name__
            rows.append(f"| `{sec}.{k}` | {kind} | `{default}` | {spec.doc}.{choices} |")
    return "\n".join(rows)


if __name__ == "__main__" and "--markdown" in sys.argv:
    print(markdown_table())
