"""Each task x method trains a tiny model end to end through the runner and its loss falls."""

from __future__ import annotations

import json
from statistics import mean
from typing import Any

import pytest
from runs import output_of, read_summary

from finetune_api.exitcodes import ExitCode
from finetune_trainer.runner import load_config, run

pytestmark = pytest.mark.trainer

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("prompt-completion", "sft-lora", {"method": "lora"}),
    ("messages", "sft-qlora", {"method": "qlora", "quantization": {"computeDtype": "float32"}}),
    ("prompt-completion", "sft-full", {"method": "full", "hyperparameters": {"learningRate": 0.002}}),
    (
        "preference",
        "dpo-lora",
        {"method": "lora", "objective": "dpo", "hyperparameters": {"learningRate": 0.01}},
    ),
    (
        "text-label",
        "classification-lora",
        {
            "task": "classification",
            "method": "lora",
            "hyperparameters": {"learningRate": 0.01, "maxSteps": 20},
        },
    ),
    (
        "text-label",
        "classification-full",
        {
            "task": "classification",
            "method": "full",
            "hyperparameters": {"learningRate": 0.01, "maxSteps": 20},
        },
    ),
]


@pytest.mark.parametrize(("fmt", "case", "overrides"), CASES, ids=[c[1] for c in CASES])
def test_trains_and_loss_falls(make_config, fmt: str, case: str, overrides: dict[str, Any]) -> None:
    path = make_config(fmt, name=case, **overrides)
    assert run(load_config(path)) == ExitCode.SUCCEEDED
    summary = read_summary(path)
    metrics = summary["metrics"]
    assert summary["phase"] == "Succeeded"
    assert metrics["step"] == overrides.get("hyperparameters", {}).get("maxSteps", 12)

    test, base = summary["evaluation"]["test"], summary["evaluation"]["base"]
    assert test["loss"] < base["loss"], summary["evaluation"]
    if overrides.get("task") == "classification":
        assert {"accuracy", "macro_f1"} <= test.keys()
    elif overrides.get("objective") == "dpo":
        assert "reward_accuracy" in test
    else:
        assert {"perplexity", "rouge1", "rougeL", "bleu"} <= test.keys()

    out = output_of(path)
    weights = out / ("model" if overrides["method"] == "full" else "adapter")
    assert (
        weights / ("model.safetensors" if overrides["method"] == "full" else "adapter_model.safetensors")
    ).is_file()
    assert (weights / "tokenizer_config.json").is_file()
    losses = [
        entry["loss"] for entry in json.loads((out / "training_log.json").read_text()) if "loss" in entry
    ]
    assert len(losses) == metrics["step"]
    assert mean(losses[-3:]) < mean(losses[:3]), losses


def test_qlora_really_quantizes(llama_dir) -> None:
    from bitsandbytes.nn import Linear4bit

    from finetune_api.training import TrainingSpec
    from finetune_trainer.modeling import load_model, load_tokenizer

    spec = TrainingSpec.model_validate(
        {"method": "qlora", "model": {"name": "tiny"}, "dataset": {"source": {"uri": "file:///x"}}}
    )
    tokenizer = load_tokenizer(spec, str(llama_dir))
    model = load_model(spec, str(llama_dir), tokenizer).model
    # Every linear layer of the 2 decoder blocks (q, k, v, o, gate, up, down) is 4-bit; the LM head is not.
    assert sum(isinstance(module, Linear4bit) for module in model.modules()) == 14
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    quant = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.quant_state
    assert quant.quant_type == "nf4"
    assert quant.nested  # double quantization
