"""Training throughput of our trainer against plain TRL ``SFTTrainer``, packing off and on, on CPU.

Prints JSON: for each run (ours / plain TRL x packing off / on) tokens per second, peak RSS, wall
time and the final training loss, then the speedup ratios (ours / TRL). The goal (issue 13): at
least 1.3x TRL's tokens/s with our default settings (``packing`` off, so the default is the packing-off
pair) at an equal or lower final loss, and a peak RSS no higher than TRL's.

Our defaults that differ from TRL's (``spec.hyperparameters``, see docs/hyperparameters.md): batches
grouped by length (``groupByLength``), fused AdamW (``optimizer: auto``), no bf16 autocast on a CPU,
logging every 10 steps like TRL. Gradient checkpointing is on for ``method: full`` in both.

Diagnostic runs explain the ratio: ``ours-plain`` is our trainer with those speed options off
(random batches, plain AdamW, loss read every step), so ours / ours-plain is what the options buy;
``trl-matched`` is TRL without gradient checkpointing, and ``trl-matched-fp32`` also without bf16
autocast. The machine's load varies, so runs are interleaved and ``--repeats N`` reports the median.

Same model, data and settings for every run:

* model: a random-init tiny Llama (hidden 128, 4 layers) with a byte-level BPE tokenizer trained on
  the spot with ``tokenizers`` (the approach of tests/trainer/tiny.py), saved with ``save_pretrained``;
  every run loads the same files, in float32;
* data: generated prompt-completion records whose lengths vary a lot (prompts 4-40 words,
  completions 3-160 words), the regime where packing pays; our trainer's cleaning removes none of
  them (the run reports the record count it trained on) and no validation or test split is taken,
  so both train on the same records (ours whitespace-normalised by its cleaning: the completion's
  leading space is stripped, which changes the tokens at the prompt/completion boundary);
* settings: learning rate, epochs, batch size, max length, scheduler, warm-up, weight decay,
  gradient clipping and seed are the same; completion-only loss in both (TRL's default for
  prompt-completion data, and what our SFT recipe sets); ``method: full`` on our side.

Each run is a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. Tokens are counted once,
the same way for every run: prompt + completion (+ eos) token ids per record, truncated to max length,
times epochs; tokens/s divides that by the trainer's ``train_runtime`` (the ``trainer.train()`` call,
which excludes model loading and, on our side, the data stage, evaluation and saving; the end-to-end
wall time of each subprocess is reported too). The final loss is the mean logged training loss over
the last epoch (our trainer logs every step, TRL every 10 steps; both are token-weighted means over
completion tokens).

Usage: python bench/trainer_throughput.py [--records 300] [--epochs 2] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SETTINGS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "batch_size": 8,
    "max_length": 256,
    "warmup_ratio": 0.03,
    "scheduler": "cosine",
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "seed": 42,
}
_WORDS = (
    "the a an order invoice account refund login password screen button page report error app update "
    "install delete export import upload download share email phone card payment plan price team user "
    "admin project task file folder image video chart table search filter sort setting profile message "
    "notification calendar meeting reminder sync backup restore server network cache memory crash slow "
    "fast broken fixed works again today yesterday always never sometimes please thanks help why how "
    "what when where can could should would will is are was were be been has have had do does did not "
    "very really quite just only also still even more less most least new old first last next other "
    "same different good bad great small large long short easy hard open close start stop save load"
)
WORDS = _WORDS.split()
# ours (defaults); ours with the speed options off; plain TRL (defaults); two TRL diagnostics
KINDS = ("ours", "ours-plain", "trl", "trl-matched", "trl-matched-fp32")
PLAIN = {"groupByLength": False, "optimizer": "adamw_torch", "loggingSteps": 1}


def generate_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        prompt_len = rng.randint(4, 40)
        # long-tailed completions: most short, some long, so padding to the batch's longest wastes a lot
        completion_len = min(160, 3 + int(rng.expovariate(1 / 35)))
        prompt = f"Q{i}: " + " ".join(rng.choices(WORDS, k=prompt_len)) + "?"
        completion = " " + " ".join(rng.choices(WORDS, k=completion_len)) + "."
        records.append({"prompt": prompt, "completion": completion})
    return records


def build_model(directory: Path, records: list[dict[str, str]]) -> None:
    """A random-init tiny Llama and a BPE tokenizer trained on the records, saved like a hub checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator((r["prompt"] + r["completion"] for r in records), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(directory)


def count_tokens(model_dir: Path, records: list[dict[str, str]], max_length: int) -> int:
    """Tokens per epoch as SFT sees them: prompt ids + completion ids + eos, truncated to max_length."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    total = 0
    for r in records:
        full = tokenizer(r["prompt"] + r["completion"])["input_ids"]
        total += min(max_length, len(full) + 1)
    return total


def last_epoch_loss(history: list[dict[str, Any]]) -> float | None:
    losses = [(e["epoch"], e["loss"]) for e in history if "loss" in e and "epoch" in e]
    if not losses:
        return None
    final_epoch = max(epoch for epoch, _ in losses)
    start = final_epoch - 1.0
    tail = [loss for epoch, loss in losses if epoch > start + 1e-9] or [losses[-1][1]]
    return round(statistics.fmean(tail), 4)


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


# ---------------------------------------------------------------------------------------------- workers


def worker_ours(work: Path, packing: bool, epochs: float, plain: bool = False) -> dict[str, Any]:
    from finetune_api.spec import TrainerConfig
    from finetune_trainer.recipes.sft import SftRecipe
    from finetune_trainer.runner import run

    flags: dict[str, Any] = {}
    build = SftRecipe.build

    def build_and_note(self: Any, ctx: Any, args: Any) -> Any:
        trainer = build(self, ctx, args)
        flags.update(resolved_flags(trainer.args))
        return trainer

    SftRecipe.build = build_and_note  # type: ignore[method-assign]
    out = work / f"ours-packing-{packing}-{os.getpid()}"  # fresh: a kept output dir would resume
    config = TrainerConfig.model_validate(
        {
            "job": {"name": "throughput", "namespace": "bench"},
            "spec": {
                "task": "causal-lm",
                "method": "full",
                "model": {"name": "tiny-llama"},
                "dataset": {
                    "source": {"uri": f"file://{work / 'data.jsonl'}"},
                    "format": "prompt-completion",
                    "splits": {"validation": 0.0, "test": 0.0},
                },
                "hyperparameters": {
                    "learningRate": SETTINGS["learning_rate"],
                    "epochs": epochs,
                    "batchSize": SETTINGS["batch_size"],
                    "maxSequenceLength": SETTINGS["max_length"],
                    "warmupRatio": SETTINGS["warmup_ratio"],
                    "scheduler": SETTINGS["scheduler"],
                    "weightDecay": SETTINGS["weight_decay"],
                    "maxGradNorm": SETTINGS["max_grad_norm"],
                    "packing": packing,
                    "seed": SETTINGS["seed"],
                    **(PLAIN if plain else {}),
                },
                "evaluation": {"compareBase": False, "generationMetrics": False},
            },
            "paths": {"model": str(work / "model"), "dataset": str(work / "data.jsonl"), "output": str(out)},
            "metricsPort": 0,
            "terminationLog": str(out / "termination-log.json"),
        }
    )
    code = run(config)
    summary = json.loads((out / "termination-log.json").read_text())
    history = json.loads((out / "training_log.json").read_text()) if code == 0 else []
    report = json.loads((out / "data_report.json").read_text())
    metrics = summary.get("metrics", {})
    return {
        "exit_code": code,
        "train_runtime_s": metrics.get("train_runtime_seconds"),
        "steps": metrics.get("step"),
        "records_trained": report["counts"]["train"],
        "tokens_seen_reported": metrics.get("tokens_total"),
        "final_train_loss": last_epoch_loss(history),
        "train_loss_mean": next((e["train_loss"] for e in reversed(history) if "train_loss" in e), None),
        "flags": flags,
    }


def resolved_flags(args: Any) -> dict[str, Any]:
    """The settings that differ between the trainers, as the trainer really resolved them."""
    return {
        "bf16_autocast": bool(args.bf16),
        "gradient_checkpointing": bool(
            getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False)
        ),
        "padding_free": bool(getattr(args, "padding_free", False)),
        "sampling": str(getattr(args, "train_sampling_strategy", "random")),
        "optimizer": str(args.optim),
        "logging_steps": args.logging_steps,
        "save_strategy": str(args.save_strategy),
        "report_to": list(args.report_to or []),
    }


def worker_trl(work: Path, packing: bool, epochs: float, variant: str = "trl") -> dict[str, Any]:
    """Plain TRL with its defaults (``trl``); ``trl-matched`` turns off the one default that ours
    overrides (gradient checkpointing), to separate the wrapper from the configuration;
    ``trl-matched-fp32`` also turns off bf16 autocast, which SFTConfig enables by default even on CPU
    (and which ours inherits): what ours would gain by training in float32 on a CPU."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    records = [json.loads(line) for line in (work / "data.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    torch.manual_seed(SETTINGS["seed"])
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(work / f"trl-packing-{packing}-{os.getpid()}"),
        learning_rate=SETTINGS["learning_rate"],
        num_train_epochs=epochs,
        per_device_train_batch_size=SETTINGS["batch_size"],
        max_length=SETTINGS["max_length"],
        warmup_steps=SETTINGS["warmup_ratio"],
        lr_scheduler_type=SETTINGS["scheduler"],
        weight_decay=SETTINGS["weight_decay"],
        max_grad_norm=SETTINGS["max_grad_norm"],
        seed=SETTINGS["seed"],
        packing=packing,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        **({"gradient_checkpointing": False} if variant != "trl" else {}),
        **({"bf16": False} if variant == "trl-matched-fp32" else {}),
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer
    )
    result = trainer.train()
    history = trainer.state.log_history
    return {
        "exit_code": 0,
        "train_runtime_s": round(result.metrics["train_runtime"], 3),
        "steps": trainer.state.global_step,
        "records_trained": len(records),
        "final_train_loss": last_epoch_loss(history) or result.metrics.get("train_loss"),
        "train_loss_mean": result.metrics.get("train_loss"),
        "flags": resolved_flags(trainer.args),
    }


def worker_main(kind: str, work: Path, packing: bool, epochs: float, threads: int) -> None:
    import logging

    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    if kind in ("ours", "ours-plain"):
        result = worker_ours(work, packing, epochs, plain=kind == "ours-plain")
    else:
        result = worker_trl(work, packing, epochs, variant=kind)
    result["wall_s"] = round(time.perf_counter() - started, 2)
    result["peak_rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------- parent


def run_worker(kind: str, work: Path, packing: bool, epochs: float, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", kind, "--work", str(work), "--epochs", str(epochs)]
    command += ["--threads", str(threads)] + (["--packed"] if packing else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} packing={packing} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["process_wall_s"] = round(time.perf_counter() - started, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--repeats", type=int, default=1, help="rounds; tokens/s is the median")
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument(
        "--packing", choices=("off", "on", "both"), default="both", help="which packing settings to run"
    )
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--packed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, Path(args.work), args.packed, args.epochs, args.threads)
        return 0

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        work = Path(tmp)
        records = generate_records(args.records)
        with (work / "data.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
        build_model(work / "model", records)
        per_epoch = count_tokens(work / "model", records, SETTINGS["max_length"])
        tokens = per_epoch * args.epochs

        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.repeats):
            # interleaved, so a change in the machine's load hits both trainers alike
            for packing in {"off": (False,), "on": (True,), "both": (False, True)}[args.packing]:
                for kind in KINDS:
                    result = run_worker(kind, work, packing, args.epochs, args.threads)
                    result["tokens_per_s"] = round(tokens / result["train_runtime_s"], 1)
                    runs.setdefault(f"{kind}/packing-{'on' if packing else 'off'}", []).append(result)
                    print(f"{kind} packing={packing}: {json.dumps(result)}", file=sys.stderr, flush=True)

    def median(key: str, name: str) -> float:
        return round(statistics.median(r[key] for r in runs[name]), 2)

    table = {
        name: {
            **results[-1],
            "tokens_per_s": median("tokens_per_s", name),
            "tokens_per_s_all": [r["tokens_per_s"] for r in results],
        }
        for name, results in runs.items()
    }
    speed = {name: row["tokens_per_s"] for name, row in table.items()}
    modes = [m for m in ("off", "on") if f"ours/packing-{m}" in speed]

    def ratio(kind: str) -> dict[str, float]:
        return {m: round(speed[f"ours/packing-{m}"] / speed[f"{kind}/packing-{m}"], 3) for m in modes}

    speedup = ratio("trl")
    ours_off, trl_off = table.get("ours/packing-off"), table.get("trl/packing-off")
    if ours_off is None or trl_off is None:
        raise SystemExit("the goal is judged on the default settings: run with --packing off or both")
    loss_ok = (
        ours_off["final_train_loss"] is not None
        and trl_off["final_train_loss"] is not None
        and ours_off["final_train_loss"] <= trl_off["final_train_loss"]
    )
    report = {
        "model": "random-init Llama, hidden 128, 4 layers, BPE vocab 1024 (float32, CPU)",
        "data": {
            "records": args.records,
            "tokens_per_epoch": per_epoch,
            "epochs": args.epochs,
            "tokens_counted": tokens,
        },
        "settings": {**SETTINGS, "threads": args.threads, "repeats": args.repeats},
        "runs": table,
        "speedup_ours_over_trl": speedup,
        "speedup_ours_over_trl_matched": ratio("trl-matched"),
        "speedup_ours_over_ours_plain": ratio("ours-plain"),
        "packing_gain": {
            kind: round(speed[f"{kind}/packing-on"] / speed[f"{kind}/packing-off"], 3)
            for kind in ("ours", "trl")
            if len(modes) == 2
        },
        "goal": {
            "target": "defaults (packing off): ours/TRL tokens/s >= 1.3, final loss and peak RSS <= TRL's",
            "speedup": speedup["off"],
            "loss_ours": ours_off["final_train_loss"],
            "loss_trl": trl_off["final_train_loss"],
            "peak_rss_mib_ours": ours_off["peak_rss_mib"],
            "peak_rss_mib_trl": trl_off["peak_rss_mib"],
            "met": bool(
                speedup["off"] >= 1.3 and loss_ok and ours_off["peak_rss_mib"] <= trl_off["peak_rss_mib"]
            ),
        },
        "wall_seconds_total": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
