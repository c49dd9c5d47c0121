"""The built-in models a config can name: a GPT-style decoder and an MLP."""
from __future__ import annotations

import importlib

from .. import nn
from ..ops.creation import arange
from ..utils.checkpoint import checkpoint


class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention, then a GELU MLP."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.CausalSelfAttention(width, heads, dropout=dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * width, width), nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token and position embeddings, ``layers`` blocks, a final LayerNorm and a
    linear head over the vocabulary. Input: (batch, time) token ids."""

    def __init__(self, vocab: int = 256, width: int = 128, heads: int = 4, layers: int = 2,
                 context: int = 64, dropout: float = 0.0, checkpoint_blocks: bool = False):
        super().__init__()
        self.context = context
        self.checkpoint_blocks = checkpoint_blocks
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx):
        T = idx.shape[1]
        if T > self.context:
            raise ValueError(f"GPT: sequence of {T} tokens is longer than the context of {self.context}")
        x = self.drop(self.tok(idx) + self.pos(arange(T, device=idx.device)))
        for block in self.blocks:
            x = checkpoint(block, x) if self.checkpoint_blocks and self.training else block(x)
        return self.head(self.ln_f(x))


class MLP(nn.Module):
    """``layers`` hidden ReLU layers of ``width``; input (batch, features)."""

    def __init__(self, in_features: int, out_features: int, width: int = 256, layers: int = 2,
                 dropout: float = 0.0, checkpoint_blocks: bool = False):
        super().__init__()
        self.checkpoint_blocks = checkpoint_blocks
        dims = [in_features] + [width] * layers
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)) for a, b in zip(dims, dims[1:])
        )
        self.head = nn.Linear(width, out_features)

    def forward(self, x):
        for block in self.blocks:
            x = checkpoint(block, x) if self.checkpoint_blocks and self.training else block(x)
        return self.head(x)


def import_object(path: str, what: str):
    """``package.module:Name`` (or ``package.module.Name``) -> the object."""
    mod, sep, name = path.partition(":")
    if not sep:
        mod, _, name = path.rpartition(".")
    if not mod or not name:
        raise ValueError(f"{what} {path!r}: expected 'package.module:Name'")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what} {path!r} cannot be imported: {e}") from None


def build_model(cfg: dict, data_info: dict) -> nn.Module:
    m = cfg["model"]
    ckpt = cfg["train"]["checkpoint_activations"]
    if m["name"] == "gpt":
        if data_info.get("kind") != "tokens":
            raise ValueError("model.name = 'gpt' needs a token dataset such as data.name = 'chars'")
        return GPT(data_info["vocab"], m["width"], m["heads"], m["layers"], m["context"], m["dropout"], ckpt)
    if m["name"] == "mlp":
        if data_info.get("kind") != "features":
            raise ValueError("model.name = 'mlp' needs a feature dataset such as data.name = 'digits'")
        return MLP(data_info["features"], data_info["classes"], m["width"], m["layers"], m["dropout"], ckpt)
    cls = import_object(m["name"], "model.name")
    kwargs = dict(m["kwargs"])
    if ckpt:
        if not _takes(cls, "checkpoint_blocks"):
            raise ValueError(
                f"train.checkpoint_activations = true, but model.name = {m['name']!r} takes no "
                "checkpoint_blocks argument, so distgrad cannot know which of its parts to "
                "recompute. Give its __init__ a checkpoint_blocks=False parameter and, when it is "
                "true, run each block through distgrad.utils.checkpoint.checkpoint in forward (as "
                "distgrad.train.models.GPT does); or set train.checkpoint_activations = false")
        kwargs["checkpoint_blocks"] = True
    return cls(**kwargs)


def _takes(cls, name: str) -> bool:
    """Whether ``cls(...)`` names the parameter ``name`` (a bare **kwargs does not count:
    it could swallow the argument unused)."""
    import inspect

    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
