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
from finetune_trainer.plan_at_run import state_bytes

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


def as_the_trainer_reads(cfg: dict[str, Any]) -> architecture.Architecture:
    """The shape from the config as transformers loads it (the file plus the family's defaults)."""
    from transformers import AutoConfig

    return architecture.from_config(AutoConfig.for_model(**cfg).to_dict())


def full_spec() -> TrainingSpec:
    return TrainingSpec.model_validate(
        {"method": "full", "model": {"name": "m"}, "dataset": {"source": {"uri": "s3://b/t.jsonl"}}}
    )


def within(estimated: int, measured: int, tolerance: float = 0.10) -> bool:
    return abs(estimated - measured) <= tolerance * measured


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameter_gradient_and_optimizer_bytes_match_torch(name: str) -> None:
    cfg = CONFIGS[name]
    arch = as_the_trainer_reads(cfg)
    model = build(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    measured_params = sum(p.numel() for p in params)
    assert arch.parameters == measured_params, (arch.parameters, measured_params)

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
    weights = sum(p.numel() * p.element_size() for p in params)
    # The trainer's own count (what its summary reports) is this independent one.
    assert state_bytes(model, optimizer) == {"weights": weights, "gradients": grads, "optimizer": states}
    est = estimate(full_spec(), arch)
    assert within(est.gradients, grads), (est.gradients, grads)
    assert within(est.optimizer, states), (est.optimizer, states)
    assert within(est.weights, weights)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_lora_trainable_parameters_match_peft(name: str) -> None:
    """``all-linear`` on every family (GPT-2 fuses q/k/v into one ``c_attn``; BERT adds its pooler)."""
    from peft import LoraConfig, get_peft_model

    cfg = CONFIGS[name]
    arch = as_the_trainer_reads(cfg)
    model = get_peft_model(build(cfg), LoraConfig(r=8, target_modules="all-linear"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_parameters(arch, 8, None) == trainable


@pytest.mark.parametrize(
    ("name", "targets"),
    [("llama-gqa", ["q_proj", "v_proj"]), ("mistral", ["q_proj", "v_proj"]), ("gpt2", ["c_attn"]),
     ("gpt2", ["c_proj"]), ("bert", ["query", "value"])],
)  # fmt: skip
def test_lora_named_targets_match_peft(name: str, targets: list[str]) -> None:
    from peft import LoraConfig, get_peft_model

    cfg = CONFIGS[name]
    arch = as_the_trainer_reads(cfg)
    subset = get_peft_model(build(cfg), LoraConfig(r=4, target_modules=targets))
    trainable = sum(p.numel() for p in subset.parameters() if p.requires_grad)
    assert lora_parameters(arch, 4, targets) == trainable


# --- in a real run: the trainer's plan from the config.json it loads, against its own measurements ----


@pytest.mark.parametrize(
    ("method", "task"),
    [("lora", "causal-lm"), ("full", "causal-lm"), ("qlora", "causal-lm"), ("lora", "classification")],
)
def test_trainer_reports_its_plan_and_what_torch_measured(make_config, method: str, task: str) -> None:
    from runs import read_summary

    from finetune_api.exitcodes import ExitCode
    from finetune_api.planning.measured import BASIS_STATES, compare
    from finetune_trainer.runner import load_config, run

    fmt = "text-label" if task == "classification" else "prompt-completion"
    path = make_config(fmt, name=f"plan-{method}-{task}", method=method, task=task,
                       hyperparameters={"maxSteps": 2}, evaluation={"compareBase": False})  # fmt: skip
    config = load_config(path)
    assert run(config) == ExitCode.SUCCEEDED
    plan = read_summary(path)["plan"]

    from transformers import AutoModel

    base = AutoModel.from_pretrained(config.paths.model)
    assert plan["shapeSource"] == "config.json"
    # The encoder/decoder without a head: the config.json count is the model's, exactly.
    body = sum(p.numel() for p in base.parameters())
    assert body <= plan["parameters"] <= body + base.config.vocab_size * base.config.hidden_size
    assert plan["device"] == "cpu" and set(plan["measuredBytes"]) == {"weights", "gradients", "optimizer"}
    found = compare(plan["estimatedBytes"], plan["measuredBytes"])
    assert found is not None and found.basis == BASIS_STATES
    assert abs(found.error_percent) <= 10, (found, plan)
    assert all(abs(e) <= 10 for e in found.term_errors.values()), found.term_errors
