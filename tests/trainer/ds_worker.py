"""A tiny DeepSpeed training run, as each torchrun worker (or a plain process) executes it.

``build DIR`` writes a random-init Llama (hidden size 32, 2 layers) and a word-level tokenizer trained
on the fly with the ``tokenizers`` library: no downloads. ``train`` fine-tunes it with the HF Trainer
and DeepSpeed (config from ``finetune_trainer.deepspeed_config``) and writes one JSON report per rank:
the world size as every layer sees it, the losses, and a checksum of the full (gathered) parameters.
``--no-fix`` skips ``finetune_trainer.distributed`` to show the world-size bug it works around.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

CORPUS = [
    "the operator starts the trainer in a pod",
    "the trainer reads the config and the data",
    "a pod runs one process per gpu",
    "the loss falls when the model learns the data",
    "deepspeed shards the optimizer state across ranks",
    "zero stage three shards the parameters too",
    "each rank sees the same world size",
    "the job finishes and the operator writes the status",
]


def build(model_dir: Path, seed: int = 0) -> None:
    """Save a tiny random Llama and its tokenizer; deterministic for a given seed."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


class _Examples:
    """Fixed-length examples (the corpus repeated); a plain map-style dataset, no `datasets` needed."""

    def __init__(self, tokenizer: Any, repeat: int = 8, length: int = 16) -> None:
        enc = tokenizer(
            [f"<s> {t} </s>" for t in CORPUS] * repeat,
            padding="max_length",
            truncation=True,
            max_length=length,
        )
        self.rows = []
        for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
            labels = [i if m else -100 for i, m in zip(ids, mask, strict=True)]
            self.rows.append({"input_ids": ids, "attention_mask": mask, "labels": labels})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def _checksum(model: Any, zero3: bool) -> tuple[str, list[dict[str, int]]]:
    """sha256 of every full parameter in name order; under ZeRO-3 also the local shard sizes."""
    import torch

    params = list(model.named_parameters())
    shards = []
    if zero3:
        import deepspeed

        shards = [{"full": int(p.ds_numel), "local": int(p.ds_tensor.numel())} for _, p in params[:3]]
        ctx: Any = deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=None)
    else:
        import contextlib

        ctx = contextlib.nullcontext()
    digest = hashlib.sha256()
    with ctx:
        for name, p in params:
            digest.update(name.encode())
            digest.update(p.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest(), shards


def train(args: argparse.Namespace) -> dict[str, Any]:
    # The order matters: process group (through deepspeed.comm) before TrainingArguments, and
    # TrainingArguments before the model so that from_pretrained builds it under zero.Init for ZeRO-3.
    from finetune_api.training import TrainingSpec
    from finetune_trainer.deepspeed_config import deepspeed_config
    from finetune_trainer.distributed import init_distributed, training_arguments_overrides, world_info

    use_cuda = False
    if args.no_fix:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        overrides: dict[str, object] = {"use_cpu": True} if args.no_fix == "use-cpu" else {}
        info = world_info()
    else:
        info = init_distributed(use_deepspeed=True, use_cuda=use_cuda)
        overrides = training_arguments_overrides(use_cuda)

    import deepspeed.comm as ds_dist
    import torch
    import torch.distributed as dist
    from transformers import (
        AutoModelForCausalLM,
        PreTrainedTokenizerFast,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    torch.set_num_threads(1)
    spec = TrainingSpec.model_validate(
        {
            "method": "full",
            "model": {"name": "tiny-llama"},
            "dataset": {"source": {"uri": "file:///unused.jsonl"}},
            "hyperparameters": {"batchSize": 4, "gradientAccumulationSteps": 1, "maxGradNorm": 1.0},
            "distributed": {
                "gpusPerNode": 0,
                "deepspeed": {"zeroStage": args.stage, "offloadOptimizer": args.offload},
            },
        }
    )
    ds_config = deepspeed_config(spec)
    targs = TrainingArguments(
        output_dir=str(args.out / "run"),
        per_device_train_batch_size=spec.hyperparameters.batch_size,
        gradient_accumulation_steps=spec.hyperparameters.gradient_accumulation_steps,
        max_grad_norm=spec.hyperparameters.max_grad_norm,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        deepspeed=ds_config,
        **overrides,  # type: ignore[arg-type]
    )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=_Examples(tokenizer),
        data_collator=default_data_collator,
    )
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    engine = trainer.model_wrapped
    checksum, shards = _checksum(trainer.model, zero3=args.stage == 3)
    return {
        "rank": info.rank,
        "env_world_size": info.world_size,
        "torch_world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "deepspeed_world_size": ds_dist.get_world_size() if ds_dist.is_initialized() else 1,
        "args_world_size": targs.world_size,
        "engine_dp_world_size": int(getattr(engine, "dp_world_size", -1)),
        "train_batch_size": int(engine.train_batch_size()) if hasattr(engine, "train_batch_size") else -1,
        "zero_stage": int(engine.zero_optimization_stage())
        if hasattr(engine, "zero_optimization_stage")
        else -1,
        "global_step": trainer.state.global_step,
        "losses": losses,
        "checksum": checksum,
        "shards": shards,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("dir", type=Path)
    t = sub.add_parser("train")
    t.add_argument("--model", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--stage", type=int, default=3)
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--lr", type=float, default=5e-3)
    t.add_argument("--offload", action="store_true", help="offload the optimizer (compiles CPU Adam)")
    t.add_argument("--no-fix", choices=["plain", "use-cpu"], default=None)
    args = parser.parse_args(argv)
    if args.cmd == "build":
        build(args.dir)
        return 0
    rank = os.environ.get("RANK", "0")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        report = train(args)
    except Exception as exc:  # the report says which rank failed and how, for the test's message
        report = {
            "rank": int(rank),
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
        (args.out / f"rank{rank}.json").write_text(json.dumps(report, indent=2))
        print(report["traceback"], file=sys.stderr, flush=True)
        return 1
    (args.out / f"rank{rank}.json").write_text(json.dumps(report, indent=2))
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Tear the process group down before the interpreter does: left to exit, a rank could abort
    ("terminate called without an active exception", SIGABRT) after a finished run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
