"""Experiment configs: the schema, TOML loading, ``key.path=value`` overrides and
validation that names the key and the file.

Every key, its type, default and meaning is in ``SCHEMA``; the README's table is
generated from it (``python -m distgrad.train.config --markdown``).
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the file."""


class Key:
    def __init__(self, type_, default, doc, choices=None, minimum=None, optional=False):
        self.type = type_
        self.default = default
        self.doc = doc
        self.choices = choices
        self.minimum = minimum
        self.optional = optional


_NUM = (int, float)

SCHEMA = {
    "run": {
        "name": Key(str, "run", "name of the experiment; the run directory is output_dir/name"),
        "output_dir": Key(str, "runs", "where run directories are created"),
        "seed": Key(int, 0, "seed for initialization, data order and dropout"),
        "device": Key(str, "cpu", "'cpu' or 'cuda' (each rank takes its local GPU)", choices=("cpu", "cuda")),
        "dtype": Key(str, "float32", "parameter and activation dtype", choices=("float32", "float64")),
    },
    "model": {
        "name": Key(str, "gpt", "'gpt', 'mlp', or a class by import path 'package.module:Class' "
                                "(built with the keys of [model.kwargs])"),
        "width": Key(int, 64, "gpt: embedding width; mlp: hidden width", minimum=1),
        "layers": Key(int, 2, "gpt: transformer blocks; mlp: hidden layers", minimum=1),
        "heads": Key(int, 4, "gpt: attention heads (must divide width)", minimum=1),
        "context": Key(int, 32, "gpt: context length in tokens (the data's block size)", minimum=1),
        "dropout": Key(float, 0.0, "dropout probability (0 keeps debug and distributed runs identical)", minimum=0.0),
        "kwargs": Key(dict, {}, "keyword arguments for a model given by import path"),
    },
    "data": {
        "name": Key(str, "chars", "'chars' (the standard library's source, byte level), 'digits' "
                                  "(scikit-learn's 8x8 digits), or 'package.module:function' "
                                  "returning (train_dataset, val_dataset)"),
        "val_fraction": Key(float, 0.1, "fraction of the data held out for evaluation", minimum=0.0),
        "max_bytes": Key(int, 1_000_000, "chars: bytes of source text to use", minimum=1000),
        "kwargs": Key(dict, {}, "keyword arguments for a dataset function given by import path"),
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
                                         "'package.module:fn' taking (output, target)"),
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
        "launcher": Key(str, "mpiexec", "how ranks are started", choices=("mpiexec", "srun")),
        "hostfile": Key(str, None, "hostfile ('host slots=N' lines) for multi-node runs", optional=True),
        "hosts": Key(str, None, "hosts as 'h1:4,h2:4' for multi-node runs", optional=True),
    },
}


def _type_name(t) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list", dict: "a table"}[t]


def defaults() -> dict:
    return {sec: {k: copy.deepcopy(spec.default) for k, spec in keys.items()} for sec, keys in SCHEMA.items()}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(options))}"


def _check_value(where: str, spec: Key, value, source: str):
    if value is None:
        if spec.optional:
            return None
        raise ConfigError(f"{source}: {where} cannot be empty")
    t = spec.type
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, t) and not (t in (int, float) and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{source}: {where} must be {_type_name(t)}, got {value!r} ({type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: {where} = {value!r} is not a finite number")
    if spec.choices and value not in spec.choices:
        raise ConfigError(
            f"{source}: {where} = {value!r} is not one of {', '.join(map(repr, spec.choices))}"
            + _suggest(str(value), spec.choices).replace("known keys", "choices")
        )
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"{source}: {where} = {value!r} must be at least {spec.minimum}")
    return value


def merge(base: dict, data: dict, source: str) -> dict:
    """Validate ``data`` (parsed TOML) against the schema and lay it over ``base``."""
    out = copy.deepcopy(base)
    for sec, table in data.items():
        if sec not in SCHEMA:
            raise ConfigError(f"{source}: unknown section [{sec}]" + _suggest(sec, SCHEMA))
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{sec}] must be a table, got {table!r}")
        for key, value in table.items():
            if key not in SCHEMA[sec]:
                raise ConfigError(f"{source}: unknown key {sec}.{key}" + _suggest(key, SCHEMA[sec]))
            out[sec][key] = _check_value(f"{sec}.{key}", SCHEMA[sec][key], value, source)
    return out


def parse_override(text: str) -> tuple:
    """``section.key=value`` with a TOML value (bare words are taken as strings)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. train.steps=100")
    path, _, raw = text.partition("=")
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be section.key, e.g. optim.lr=1e-3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts[0], parts[1], value


def load(path: str, overrides=(), world_size: int | None = None) -> dict:
    """Read, override, validate and resolve a config. ``world_size`` (from --np or
    the debug run) replaces dist.np for the batch arithmetic."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    cfg = merge(defaults(), data, path)
    for text in overrides:
        sec, key, value = parse_override(text)
        cfg = merge(cfg, {sec: {key: value}}, f"{path} (override {text})")
    return resolve(cfg, path, world_size)


def resolve(cfg: dict, source: str, world_size: int | None = None) -> dict:
    """Check the keys that depend on each other and derive the rest."""
    cfg = copy.deepcopy(cfg)
    t, d = cfg["train"], cfg["dist"]
    world = world_size if world_size is not None else d["np"]
    d["np"] = world
    per_rank = t["micro_batch"] * world
    if t["accum_steps"] is not None and t["accum_steps"] * per_rank != t["global_batch"]:
        raise ConfigError(
            f"{source}: train.global_batch must equal train.micro_batch x train.accum_steps x "
            f"world size, but {t['micro_batch']} x {t['accum_steps']} x {world} = "
            f"{t['accum_steps'] * per_rank}, not {t['global_batch']}. Omit accum_steps to have it derived."
        )
    if t["global_batch"] % per_rank:
        lo = max(per_rank, t["global_batch"] // per_rank * per_rank)
        raise ConfigError(
            f"{source}: train.global_batch = {t['global_batch']} is not a multiple of "
            f"train.micro_batch x world size = {t['micro_batch']} x {world} = {per_rank}, so the "
            f"accumulation steps would not be whole; use global_batch = {lo} or {lo + per_rank}, "
            "or another micro_batch"
        )
    t["accum_steps"] = t["global_batch"] // per_rank
    if (t["steps"] is None) == (t["epochs"] is None):
        raise ConfigError(f"{source}: give exactly one of train.steps and train.epochs")
    m = cfg["model"]
    if m["name"] == "gpt" and m["width"] % m["heads"]:
        raise ConfigError(f"{source}: model.heads = {m['heads']} must divide model.width = {m['width']}")
    if not 0.0 <= m["dropout"] < 1.0:
        raise ConfigError(f"{source}: model.dropout = {m['dropout']} must be in [0, 1)")
    if not 0.0 < cfg["data"]["val_fraction"] < 1.0:
        raise ConfigError(f"{source}: data.val_fraction = {cfg['data']['val_fraction']} must be in (0, 1)")
    b = cfg["optim"]["betas"]
    if len(b) != 2 or not all(isinstance(x, _NUM) and not isinstance(x, bool) and 0 <= x < 1 for x in b):
        raise ConfigError(f"{source}: optim.betas must be two numbers in [0, 1), got {b!r}")
    if d["hostfile"] and d["hosts"]:
        raise ConfigError(f"{source}: give dist.hostfile or dist.hosts, not both")
    return cfg


# Keys a resumed run may change: they do not change the trajectory up to a checkpoint
# (how long to train, how often to log, evaluate and save, how the ranks share the
# work and talk, where the run is written).
RESUMABLE = {
    "run": {"name", "output_dir"},
    "train": {"steps", "epochs", "accum_steps", "log_interval", "eval_interval", "eval_batches",
              "checkpoint_interval", "keep_checkpoints", "progress", "on_nonfinite", "max_skipped_steps"},
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
    loaded for another world size, e.g. a debug run of a distributed job."""
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
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def markdown_table() -> str:
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for sec, keys in SCHEMA.items():
        for k, spec in keys.items():
            default = "(none)" if spec.default is None else _toml_value(spec.default) if not isinstance(spec.default, dict) else "{}"
            choices = f" One of {', '.join(map(repr, spec.choices))}." if spec.choices else ""
            rows.append(f"| `{sec}.{k}` | {spec.type.__name__} | `{default}` | {spec.doc}.{choices} |")
    return "\n".join(rows)


if __name__ == "__main__" and "--markdown" in sys.argv:
    print(markdown_table())
