"""The datasets a config can name."""
from __future__ import annotations

from ..data.datasets import CharCorpus, digits
from .models import import_object


def build_datasets(cfg: dict):
    """(train, val, info) for ``cfg['data']``; info says what kind of model fits."""
    d = cfg["data"]
    if d["name"] == "chars":
        block = cfg["model"]["context"]
        train = CharCorpus(block, "train", d["val_fraction"], d["max_bytes"])
        val = CharCorpus(block, "val", d["val_fraction"], d["max_bytes"])
        return train, val, {"kind": "tokens", "vocab": CharCorpus.vocab_size, "tokens_per_sample": block}
    if d["name"] == "digits":
        train = digits("train", d["val_fraction"], cfg["run"]["seed"])
        val = digits("val", d["val_fraction"], cfg["run"]["seed"])
        return train, val, {"kind": "features", "features": 64, "classes": 10, "tokens_per_sample": 0}
    fn = import_object(d["name"], "data.name")
    train, val = fn(**d["kwargs"])
    return train, val, {"kind": "custom", "tokens_per_sample": 0}
