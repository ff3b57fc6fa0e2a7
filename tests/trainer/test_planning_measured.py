"""The memory plan's device-independent terms against torch's own accounting.

Parameters, gradients and optimizer states are counted on real models built from configs (random
weights, nothing downloaded): the model's parameter count, the bytes of every ``.grad`` after a
backward pass, and the bytes of AdamW's state after one step. The estimate must be within 10%.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from finetune_api.planning import architecture
from finetune_api.planning.memory import estimate, lora_parameters
from finetune_api.training import TrainingSpec

pytestmark = pytest.mark.trainer

CONFIGS: dict[str, dict[str, Any]] = {
    "llama-gqa": {
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 176, "vocab_size": 512,
    },
    "qwen2-tied": {
        "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 500, "tie_word_embeddings": True,
    },
    "mistral": {
        "model_type": "mistral", "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 6,
        "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 300,
    },
    "gpt2": {
        "model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 400, "n_positions": 128,
    },
    "bert": {
        "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "vocab_size": 300, "max_position_embeddings": 128,
    },
    "llama-medium": {
        "model_type": "llama", "hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
        "num_key_value_heads": 8, "intermediate_size": 1376, "vocab_size": 8000,
    },
}  # fmt: skip


def build(cfg: dict[str, Any]) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.for_model(**cfg)
    factory = AutoModel if cfg["model_type"] == "bert" else AutoModelForCausalLM
    return factory.from_config(config, dtype=torch.float32)


def full_spec() -> TrainingSpec:
    return TrainingSpec.model_validate(
        {"method": "full", "model": {"name": "m"}, "dataset": {"source": {"uri": "s3://b/t.jsonl"}}}
    )


def within(estimated: int, measured: int, tolerance: float = 0.10) -> bool:
    return abs(estimated - measured) <= tolerance * measured


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameter_gradient_and_optimizer_bytes_match_torch(name: str) -> None:
    cfg = CONFIGS[name]
    arch = architecture.from_config(cfg)
    model = build(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    measured_params = sum(p.numel() for p in params)
    assert within(arch.parameters, measured_params), (arch.parameters, measured_params)

    ids = torch.randint(0, cfg["vocab_size"], (2, 16))
    out = model(input_ids=ids)
    out.last_hidden_state.float().pow(2).mean().backward() if cfg["model_type"] == "bert" else (
        out.logits.float().logsumexp(-1).mean().backward()
    )
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    optimizer.step()
    states = sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for key, t in state.items()
        if key != "step" and isinstance(t, torch.Tensor)
    )
    est = estimate(full_spec(), arch)
    assert within(est.gradients, grads), (est.gradients, grads)
    assert within(est.optimizer, states), (est.optimizer, states)
    assert within(est.weights, sum(p.numel() * p.element_size() for p in params))


@pytest.mark.parametrize("name", ["llama-gqa", "qwen2-tied", "mistral", "llama-medium"])
def test_lora_trainable_parameters_match_peft(name: str) -> None:
    from peft import LoraConfig, get_peft_model

    cfg = CONFIGS[name]
    arch = architecture.from_config(cfg)
    model = get_peft_model(build(cfg), LoraConfig(r=8, target_modules="all-linear"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_parameters(arch, 8, None) == trainable
    subset = get_peft_model(build(cfg), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = sum(p.numel() for p in subset.parameters() if p.requires_grad)
    assert lora_parameters(arch, 4, ["q_proj", "v_proj"]) == trainable
