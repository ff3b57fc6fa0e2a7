"""Supervised fine-tuning of a causal LM with TRL's SFTTrainer, the loss on completions only.

prompt-completion records go to TRL as they are (its completion mask excludes the prompt from the
loss). Chats are tokenised here with the chat template, the loss on every assistant turn (see
``recipes.chat``), whether or not a record ends with the assistant. Plain text trains on every token.
"""

from __future__ import annotations

from typing import Any

from finetune_trainer import speed
from finetune_trainer.recipes.base import RecipeContext, follow_packed_length, training_arguments
from finetune_trainer.recipes.chat import tokenize_chat


def as_sft_records(records: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    if fmt == "prompt-completion":
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in records]
    if fmt == "text":
        return [{"text": r["text"]} for r in records]
    raise ValueError(f"SFT cannot train on {fmt} records")


class SftRecipe:
    name = "sft"

    def dataset(self, ctx: RecipeContext, records: list[dict[str, Any]]) -> Any:
        from datasets import Dataset

        if ctx.data.format == "messages":
            tokenizer, limit = ctx.model.tokenizer, ctx.spec.hyperparameters.max_sequence_length
            return Dataset.from_list([tokenize_chat(tokenizer, r["messages"], limit) for r in records])
        return Dataset.from_list(as_sft_records(records, ctx.data.format))

    def arguments(self, ctx: RecipeContext) -> Any:
        from trl import SFTConfig

        hp = ctx.spec.hyperparameters
        return SFTConfig(
            **training_arguments(ctx),
            max_length=hp.max_sequence_length,
            packing=hp.packing,
            eval_packing=False,
            completion_only_loss=True if ctx.data.format in ("prompt-completion", "messages") else None,
        )

    def build(self, ctx: RecipeContext, args: Any) -> Any:
        from trl import SFTTrainer
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        trainer = SFTTrainer(
            model=ctx.model.model,
            args=args,
            train_dataset=self.dataset(ctx, ctx.data.train),
            eval_dataset=self.dataset(ctx, ctx.data.validation) if ctx.data.validation else None,
            processing_class=ctx.model.tokenizer,
            callbacks=ctx.callbacks,
        )
        if ctx.spec.hyperparameters.packing:
            follow_packed_length(ctx, trainer)
        elif speed.for_spec(ctx.spec).padding_free:
            # Unpacked and padding-free: TRL refuses max_length with padding_free (it would not truncate),
            # so the trainer is built padded, which tokenises and truncates every record to
            # maxSequenceLength, and only its collator then lays each batch end to end.
            collator = trainer.data_collator
            if not isinstance(collator, DataCollatorForLanguageModeling):
                raise TypeError(f"padding-free batches need TRL's collator, not {type(collator).__name__}")
            collator.padding_free = True
        return trainer
