#!/usr/bin/env python3
"""The trainer's GPU paths in one run of a few minutes, as JSON (``bench/gpu_check.sh`` runs this).

Cases, each the real trainer started by the pod's own command (``python -m finetune_trainer.launch``)
on a small random Llama built here (no download):

* ``lora`` and ``qlora``: SFT with an adapter; QLoRA quantizes the base to 4 bits with bitsandbytes;
* ``lora-fast``: the LoRA case with the speed options of ``spec.hyperparameters`` that only a GPU
  uses (FlashAttention 2 when ``flash-attn`` is installed, Liger kernels, padding-free packing, fused
  AdamW), against ``lora`` run with the plain ones (SDPA, no Liger, padded batches, plain AdamW):
  ``speedup_lora_fast`` is the tokens/s ratio of the two in the same run; each case lists the
  settings the trainer resolved (a kernel that is not installed falls back, and says so);
* ``zero3``: full fine-tuning under DeepSpeed ZeRO-3, in 2 processes when there are 2 GPUs or more,
  else in one with the parameters and the optimizer offloaded to the CPU (CPU Adam).

For each: tokens/s (non-padding tokens the trainer counted / its train runtime), peak GPU memory (the
highest of any rank, from the trainer's summary), an MFU estimate (6 x parameters x tokens/s over the
GPU's dense bf16 peak, when the GPU is one of those listed), the first and last logged training loss,
the exit code and wall time, and the CUDA-only paths the case exercised. ``plan``: the memory plan the
trainer made from the model's ``config.json`` against what it measured (``summary.plan``): on a GPU the
peak allocated (``torch.cuda.max_memory_allocated``) against every estimated term but ``runtime``, with
the weights/gradients/optimizer terms compared one by one where torch holds them (not under DeepSpeed);
on the CPU the model-state terms only. ``plan_max_abs_error_percent`` is the worst case's error.

Without a GPU (or with ``--cpu``) the same cases run on the CPU with a tinier model and fewer steps,
ZeRO-3 in two gloo processes: a test runs this fallback, so the script cannot rot between GPU days.

Usage: python bench/gpu_check.py [--cpu] [--steps N] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path[1:1] = [str(REPO / "api"), str(REPO / "trainer-image")]

from trainer_throughput import build_model, generate_records  # noqa: E402

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' datasheets; MFU is null for other GPUs.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


def gpu() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"count": 0, "name": None}
    return {"count": torch.cuda.device_count(), "name": torch.cuda.get_device_name(0)}


def build(work: Path, on_gpu: bool) -> tuple[Path, int]:
    """The model (bigger on a GPU, so the numbers mean something) and the data; returns its size."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    records = generate_records(400 if on_gpu else 120)
    (work / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    model_dir = work / "model"
    build_model(model_dir, records)
    if on_gpu:  # same tokenizer, a 12-layer 768-wide model (~90M parameters)
        config = LlamaConfig.from_pretrained(model_dir)
        config.update(
            {
                "hidden_size": 768,
                "intermediate_size": 2048,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
            }
        )
        config.num_key_value_heads = 4
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(model_dir)
    parameters = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    return model_dir, parameters


# The plain settings (``lora``) and the fast ones (``lora-fast``): the ratio is what the options buy.
PLAIN = {
    "attentionImplementation": "sdpa",
    "ligerKernels": False,
    "paddingFree": False,
    "packing": False,
    "optimizer": "adamw_torch",
}
FAST = {
    "attentionImplementation": "auto",
    "ligerKernels": True,
    "packing": True,
    "optimizer": "adamw_torch_fused",
}


def case_spec(case: str, procs: int, steps: int, on_gpu: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "causal-lm",
        "method": {"lora": "lora", "lora-fast": "lora", "qlora": "qlora", "zero3": "full"}[case],
        "model": {"name": "gpu-check-llama"},
        "dataset": {
            "source": {"uri": "file:///placeholder"},
            "format": "prompt-completion",
            "splits": {"validation": 0.0, "test": 0.05},
            "cleaning": {"dedup": {"near": False}},
        },
        "hyperparameters": {
            "maxSteps": steps,
            "batchSize": 8 if on_gpu else 4,
            "maxSequenceLength": 256 if on_gpu else 96,
            "learningRate": 2e-4 if case != "zero3" else 5e-5,
            "warmupRatio": 0.0,
        },
        "earlyStopping": {"enabled": False},
        "checkpointing": {"everySteps": 10 * steps},
        # No review generations: minutes of CPU in the fallback, and no GPU path of their own.
        "evaluation": {
            "compareBase": False,
            "generationMetrics": False,
            "maxTestSamples": 8,
            "reviewPrompts": [],
        },
        "distributed": {"gpusPerNode": procs if on_gpu else 0},
    }
    if case in ("lora", "lora-fast"):
        spec["hyperparameters"].update(PLAIN if case == "lora" else FAST)
    if case == "zero3":
        offload = procs == 1
        spec["distributed"]["deepspeed"] = {
            "zeroStage": 3,
            "offloadParameters": offload,
            "offloadOptimizer": offload,
        }
    return spec


def cuda_paths(case: str, procs: int, on_gpu: bool) -> list[str]:
    """What the case exercises that a CPU run cannot (empty on the CPU fallback)."""
    if not on_gpu:
        return []
    paths = ["cuda", "bf16 autocast"]
    paths.append("flash/liger/padding-free per speed_settings" if case == "lora-fast" else "sdpa attention")
    if case == "qlora":
        paths += ["bitsandbytes 4-bit nf4 (Linear4bit on cuda)", "paged/kbit training prep"]
    if case == "zero3":
        paths += ["deepspeed zero3", "nccl" if procs > 1 else "single-process zero3"]
        if procs == 1:
            paths += ["parameter offload", "DeepSpeedCPUAdam (prebuilt op)"]
    return paths


def run_case(
    case: str, work: Path, model_dir: Path, parameters: int, steps: int, info: dict[str, Any]
) -> dict[str, Any]:
    on_gpu = info["count"] > 0
    procs = (2 if info["count"] >= 2 else 1) if case == "zero3" and on_gpu else (2 if case == "zero3" else 1)
    root = work / case
    root.mkdir()
    config = {
        "version": 1,
        "job": {"name": f"gpu-check-{case}", "namespace": "bench"},
        "spec": case_spec(case, procs, steps, on_gpu),
        "paths": {"model": str(model_dir), "dataset": str(work / "data.jsonl"), "output": str(root / "out")},
        "metricsPort": 0,
        "terminationLog": str(root / "termination-log.json"),
    }
    config["spec"]["dataset"]["source"]["uri"] = (work / "data.jsonl").as_uri()
    (root / "config.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "finetune_trainer.launch", f"--nproc-per-node={procs}"]
    cmd = [*cmd, "--config", str(root / "config.json")]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "trainer-image"), str(REPO / "api"), env.get("PYTHONPATH", "")) if p
    )
    if not on_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["OMP_NUM_THREADS"] = "1" if procs > 1 else env.get("OMP_NUM_THREADS", "2")
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    (root / "output.log").write_text(proc.stdout + proc.stderr)
    try:
        summary = json.loads((root / "termination-log.json").read_text())
    except (OSError, ValueError):
        summary = {}
    metrics = summary.get("metrics", {})
    rate = metrics.get("tokens_per_second")
    peak = PEAK_BF16.get(next((k for k in PEAK_BF16 if info["name"] and k in info["name"]), ""))
    return {
        "case": case,
        "processes": procs,
        "exit_code": proc.returncode,
        "phase": summary.get("phase"),
        "message": summary.get("message"),
        "wall_seconds": round(wall, 1),
        "steps": metrics.get("step"),
        "tokens_per_second": rate,
        "peak_gpu_memory_bytes": metrics.get("gpu_memory_bytes"),
        # 6 FLOPs per parameter and token (forward + backward); an adapter's frozen base needs no weight
        # gradients, so for LoRA/QLoRA this overstates the work by up to a third.
        "mfu": round(6 * parameters * rate / (peak * procs), 4) if rate and peak else None,
        "loss_start": metrics.get("first_train_loss"),
        "loss_end": metrics.get("train_loss"),
        "cuda_paths": cuda_paths(case, procs, on_gpu),
        "plan": plan_accuracy(summary.get("plan")),
        "speed_settings": speed_settings(proc.stdout + proc.stderr),
        **({"log_tail": (proc.stdout + proc.stderr)[-3000:]} if proc.returncode else {}),
    }


def plan_accuracy(plan: Any) -> dict[str, Any] | None:
    """The trainer's estimate against its measurement (``finetune_api.planning.measured``)."""
    from finetune_api.planning.measured import compare

    if not isinstance(plan, dict) or not isinstance(plan.get("estimatedBytes"), dict):
        return None
    measured = plan.get("measuredBytes") or {}
    found = compare(plan["estimatedBytes"], measured)
    out: dict[str, Any] = {
        "shape_source": plan.get("shapeSource"),
        "parameters": plan.get("parameters"),
        "verdict": plan.get("verdict"),
        "estimated_bytes": plan["estimatedBytes"],
        "measured_bytes": measured,
    }
    if found is not None:
        out.update(
            basis=found.basis,
            estimated=found.estimated,
            measured=found.measured,
            error_percent=found.error_percent,
            term_error_percent=found.term_errors,
        )
    return out


def speed_settings(output: str) -> dict[str, Any]:
    """The speed options the trainer resolved (its ``speed settings: {...}`` log line) and its fallbacks."""
    settings: dict[str, Any] = {}
    fallbacks: list[str] = []
    for line in output.splitlines():
        if "speed settings: " in line and not settings:
            with contextlib.suppress(ValueError):
                settings = json.loads(line.split("speed settings: ", 1)[1])
        elif "hyperparameters." in line and "; using " in line:
            fallback = line.split(": ", 1)[-1]
            if fallback not in fallbacks:
                fallbacks.append(fallback)
    return {**settings, "fallbacks": fallbacks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the CPU fallback even when a GPU is there")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per case (GPU 60, CPU 6)")
    parser.add_argument("--cases", default="lora,lora-fast,qlora,zero3")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    info = gpu()
    on_gpu = info["count"] > 0
    steps = args.steps or (60 if on_gpu else 6)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        model_dir, parameters = build(work, on_gpu)
        results = [run_case(c, work, model_dir, parameters, steps, info) for c in args.cases.split(",")]
        report = {
            "device": info["name"] or "cpu",
            "gpus": info["count"],
            "fallback": not on_gpu,
            "parameters": parameters,
            "steps": steps,
            "cases": results,
            "ok": all(r["exit_code"] == 0 for r in results),
        }
        errors = [abs(e) for r in results if (e := (r["plan"] or {}).get("error_percent")) is not None]
        report["plan_max_abs_error_percent"] = max(errors, default=None)
        rates = {r["case"]: r["tokens_per_second"] for r in results}
        if rates.get("lora") and rates.get("lora-fast"):
            report["speedup_lora_fast"] = round(rates["lora-fast"] / rates["lora"], 3)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
