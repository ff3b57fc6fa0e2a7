#!/usr/bin/env python3
"""The memory plan's device-independent terms against torch's own accounting, on the CPU, as JSON.

For tiny and medium models built from configs (random weights, nothing downloaded) and for full
fine-tuning and LoRA (all linear layers, r=8): the parameter count from ``config.json`` against the
model's, and the weights, gradients and AdamW states the estimator predicts against the bytes torch
holds after one forward, backward and optimizer step (``finetune_trainer.plan_at_run.state_bytes``,
the same count the trainer reports in its summary). Each figure is a ratio estimated/measured and a
signed error in percent; the measured side is the baseline of the same run.

The activation, logits and runtime terms depend on the device and its kernels: ``bench/gpu_check.sh``
measures them against ``torch.cuda.max_memory_allocated`` when a GPU is lent.

Usage: python bench/plan_accuracy.py [--tiny-only] [--out FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

# Tiny: the shapes the unit tests use; medium: the sizes of GPT-2 small, BERT-base and a 12-layer GQA Llama.
MODELS: dict[str, dict[str, Any]] = {
    "llama-gqa-tiny": {
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 176, "vocab_size": 512,
    },
    "qwen2-tied-tiny": {
        "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 500, "tie_word_embeddings": True,
    },
    "mistral-tiny": {
        "model_type": "mistral", "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 6,
        "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 300,
    },
    "gpt2-tiny": {
        "model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 400, "n_positions": 128,
    },
    "bert-tiny": {
        "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "vocab_size": 300, "max_position_embeddings": 128,
    },
    "llama-gqa-medium": {
        "model_type": "llama", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "num_key_value_heads": 4, "intermediate_size": 2048, "vocab_size": 32000,
    },
    "gpt2-small": {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257},
    "bert-base": {
        "model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512,
    },
}  # fmt: skip
MEDIUM = ("llama-gqa-medium", "gpt2-small", "bert-base")


def build(cfg: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(**cfg)
    factory = AutoModel if cfg["model_type"] == "bert" else AutoModelForCausalLM
    return factory.from_config(config, dtype=torch.float32)


def step_and_count(model: Any, cfg: dict[str, Any]) -> dict[str, int]:
    """One forward, backward and AdamW step; then the bytes of weights, gradients and optimizer states."""
    import torch

    from finetune_trainer.plan_at_run import state_bytes

    ids = torch.randint(0, cfg["vocab_size"], (2, 16))
    out = model(input_ids=ids)
    if hasattr(out, "logits"):
        loss = out.logits.float().logsumexp(-1).mean()
    else:  # an encoder: its pooler too, as a classification head uses it
        loss = out.last_hidden_state.pow(2).mean() + out.pooler_output.pow(2).mean()
    loss.backward()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    optimizer.step()
    return state_bytes(model, optimizer)


def spec(method: str) -> Any:
    from finetune_api.training import TrainingSpec

    body: dict[str, Any] = {
        "method": method,
        "model": {"name": "m"},
        "dataset": {"source": {"uri": "s3://b/t"}},
    }
    if method == "lora":
        body["lora"] = {"r": 8}
    return TrainingSpec.model_validate(body)


def figure(estimated: int, measured: int) -> dict[str, Any]:
    from finetune_api.planning.measured import error_percent

    return {
        "estimated": estimated,
        "measured": measured,
        "ratio": round(estimated / measured, 4),
        "error_percent": error_percent(estimated, measured),
    }


def measure(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig

    from finetune_api.planning import architecture
    from finetune_api.planning.measured import STATE_TERMS
    from finetune_api.planning.memory import estimate

    start = time.monotonic()
    # What the trainer reads: the config as transformers loads it (the file plus the family's defaults).
    arch = architecture.from_config(AutoConfig.for_model(**cfg).to_dict())
    model = build(cfg)
    counted = sum(p.numel() for p in model.parameters())
    result: dict[str, Any] = {"model": name, "parameters": figure(arch.parameters, counted)}
    full = step_and_count(model, cfg)
    est = estimate(spec("full"), arch, "cpu")
    result["full"] = {t: figure(getattr(est, t), full[t]) for t in STATE_TERMS}
    del model
    gc.collect()
    adapted = get_peft_model(build(cfg), LoraConfig(r=8, target_modules="all-linear"))
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    lora = step_and_count(adapted, cfg)
    est = estimate(spec("lora"), arch, "cpu")
    result["lora"] = {
        "trainable_parameters": figure(est.trainable_parameters, trainable),
        **{t: figure(getattr(est, t), lora[t]) for t in STATE_TERMS},
    }
    del adapted
    gc.collect()
    result["seconds"] = round(time.monotonic() - start, 1)
    return result


def worst(results: list[dict[str, Any]]) -> float:
    errors = [r["parameters"]["error_percent"] for r in results]
    for r in results:
        for method in ("full", "lora"):
            errors += [f["error_percent"] for f in r[method].values()]
    return max(abs(e) for e in errors)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-only", action="store_true", help="skip the ~110M-parameter models")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    names = [n for n in MODELS if not (args.tiny_only and n in MEDIUM)]
    results = [measure(n, MODELS[n]) for n in names]
    report = {
        "device": "cpu",
        "baseline": "torch's own accounting: parameter count, .grad bytes, AdamW state bytes after one step",
        "models": results,
        "max_abs_error_percent": worst(results),
        "tolerance_percent": 10.0,
    }
    report["ok"] = report["max_abs_error_percent"] <= report["tolerance_percent"]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
