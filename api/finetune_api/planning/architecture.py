"""A model's shape from its ``config.json`` (never the weights), or from its name as a last resort.

The parameter count is computed from the shape, the way the modelling code builds the layers, so
that a plan can be made before anything is downloaded. Import-light: no torch, no transformers.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ShapeSource = Literal["config.json", "model name"]

# Families whose MLP has a gate projection next to up/down (three matrices, not two).
_GATED = {
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3_text", "phi3", "olmo", "olmo2", "cohere", "granite", "deepseek_v2", "deepseek_v3",
    "stablelm", "internlm2", "yi",
}  # fmt: skip
# Families with learned absolute position embeddings and biases everywhere (BERT/GPT-2 style).
# Families with one fused query/key/value projection, and with one fused gate/up projection.
_FUSED_QKV = {"gpt2", "gpt_bigcode", "gpt_neox", "phi3", "falcon", "bloom"}
_FUSED_GATE_UP = {"phi3"}
_ABSOLUTE = {"bert", "roberta", "distilbert", "gpt2", "gpt_neo", "opt", "xlm-roberta", "electra"}


@dataclass(frozen=True)
class Architecture:
    """The numbers a memory plan needs; ``parameters`` counts every weight once."""

    parameters: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    gated_mlp: bool
    experts: int
    tied_embeddings: bool
    model_type: str
    source: ShapeSource

    @property
    def head_dim(self) -> int:
        return self.hidden // max(self.heads, 1)

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every linear layer in one transformer block."""
        return [(i, o) for _, i, o in self.named_linears()]

    def named_linears(self) -> list[tuple[str, int, int]]:
        """Every linear layer of one block by its Llama name, fused where the family fuses it (GPT-2's
        ``c_attn``, Phi-3's ``qkv_proj`` and ``gate_up_proj``): what LoRA's ``all-linear`` adapts."""
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * self.head_dim
        attn = [("q_proj", h, h), ("k_proj", h, kv), ("v_proj", h, kv)]
        if self.model_type in _FUSED_QKV:
            attn = [("qkv_proj", h, h + 2 * kv)]
        if not self.gated_mlp:
            up = [("up_proj", h, i)]
        elif self.model_type in _FUSED_GATE_UP:
            up = [("gate_up_proj", h, 2 * i)]
        else:
            up = [("gate_proj", h, i), ("up_proj", h, i)]
        return [*attn, ("o_proj", h, h), *[*up, ("down_proj", i, h)] * self.experts]

    def embedding_parameters(self) -> int:
        """Input embeddings plus an untied output head: the weights QLoRA keeps in 16 bits."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)


def _first(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def from_config(cfg: dict[str, Any]) -> Architecture:
    """The shape of a Hugging Face ``config.json`` (decoder LMs and BERT-style encoders)."""
    text = cfg.get("text_config")
    if isinstance(text, dict) and "hidden_size" not in cfg:
        cfg = {**text, "model_type": text.get("model_type", cfg.get("model_type", ""))}
    model_type = str(cfg.get("model_type") or "")
    hidden = int(_first(cfg, "hidden_size", "n_embd", "d_model", "dim", default=0))
    layers = int(_first(cfg, "num_hidden_layers", "n_layer", "num_layers", "n_layers", default=0))
    vocab = int(_first(cfg, "vocab_size", default=0))
    if not (hidden and layers and vocab):
        raise ValueError("config.json has no hidden_size, num_hidden_layers or vocab_size")
    heads = int(_first(cfg, "num_attention_heads", "n_head", "num_heads", default=max(hidden // 64, 1)))
    kv_heads = int(_first(cfg, "num_key_value_heads", "num_kv_heads", default=heads))
    intermediate = int(
        _first(cfg, "intermediate_size", "n_inner", "ffn_dim", "hidden_dim", default=4 * hidden)
    )
    gated = model_type in _GATED or str(cfg.get("hidden_act", "")) in ("silu", "swiglu")
    gated = gated and model_type not in _ABSOLUTE
    experts = int(_first(cfg, "num_local_experts", "num_experts", default=1))
    tied = bool(cfg.get("tie_word_embeddings", model_type in _ABSOLUTE))
    arch = Architecture(
        parameters=0,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        vocab=vocab,
        gated_mlp=gated,
        experts=experts,
        tied_embeddings=tied,
        model_type=model_type,
        source="config.json",
    )
    return _with_count(arch, cfg)


def _with_count(arch: Architecture, cfg: dict[str, Any]) -> Architecture:
    h = arch.hidden
    biases = arch.model_type in _ABSOLUTE
    per_layer = sum(i * o + (o if biases else 0) for i, o in arch.linear_shapes())
    if arch.model_type in ("qwen2", "qwen2_moe") or cfg.get("attention_bias"):
        per_layer += h + 2 * arch.kv_heads * arch.head_dim  # q/k/v biases
    if arch.experts > 1:
        per_layer += h * arch.experts  # router
    norms = (2 if biases else 1) * 2 * h  # two norms per block (weight, and bias for LayerNorm)
    # The final norm; BERT-style encoders (post-norm) have none, but one LayerNorm on the embeddings.
    total = arch.layers * (per_layer + norms) + arch.embedding_parameters() + h * (2 if biases else 1)
    if arch.model_type in _ABSOLUTE:
        total += int(_first(cfg, "max_position_embeddings", "n_positions", default=512)) * h
        bert_like = arch.model_type in ("bert", "roberta", "xlm-roberta", "electra")
        total += int(cfg.get("type_vocab_size", 2 if bert_like else 0)) * h
        if bert_like:
            total += h * h + h  # pooler
    return Architecture(**{**arch.__dict__, "parameters": total})


# Shapes of the common dense decoders by size, for a model known only by its name ("…-70B").
_BY_SIZE: list[tuple[float, int, int, int, int]] = [
    # billions, hidden, layers, intermediate, vocab
    (0.5, 896, 24, 4864, 151936),
    (1.5, 1536, 28, 8960, 151936),
    (3.0, 3072, 28, 8192, 128256),
    (7.0, 4096, 32, 14336, 128256),
    (13.0, 5120, 40, 13824, 32000),
    (34.0, 8192, 48, 22016, 32000),
    (70.0, 8192, 80, 28672, 128256),
    (405.0, 16384, 126, 53248, 128256),
]

_SIZE_IN_NAME = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


def from_name(name: str) -> Architecture | None:
    """A Llama-like shape for the size written in the model's name (``Llama-3.1-70B`` → 70e9)."""
    sizes = [float(m) for m in _SIZE_IN_NAME.findall(name.split("/")[-1])]
    if not sizes:
        return None
    billions = max(sizes)
    _, hidden, layers, inter, vocab = min(_BY_SIZE, key=lambda row: abs(math.log(row[0] / billions)))
    return Architecture(
        parameters=int(billions * 1e9),
        hidden=hidden,
        layers=layers,
        heads=hidden // 128,
        kv_heads=8,
        intermediate=inter,
        vocab=vocab,
        gated_mlp=True,
        experts=1,
        tied_embeddings=False,
        model_type="unknown",
        source="model name",
    )


def hub_cache_config(name: str, revision: str | None = None, hf_home: str | None = None) -> Path | None:
    """``config.json`` of a Hub model already in the local Hub cache (the offline layout)."""
    home = Path(hf_home or os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    repo = home / "hub" / ("models--" + name.replace("/", "--"))
    if not repo.is_dir():
        return None
    ref = revision or "main"
    ref_file = repo / "refs" / ref
    commit = ref_file.read_text().strip() if ref_file.is_file() else ref
    candidate = repo / "snapshots" / commit / "config.json"
    if candidate.is_file():
        return candidate
    found = sorted((repo / "snapshots").glob("*/config.json"))
    return found[0] if found and revision is None else None


def load(path: Path) -> Architecture:
    """Read a ``config.json`` (or a model directory holding one)."""
    if path.is_dir():
        path = path / "config.json"
    with path.open(encoding="utf-8") as f:
        return from_config(json.load(f))
