"""Direct preference optimisation with TRL's DPOTrainer on prompt/chosen/rejected records.

With an adapter (lora, qlora) the reference model is the same network with the adapter switched
off, so no second copy of the base is held in memory; with full fine-tuning TRL keeps a frozen copy.
"""

from __future__ import annotations

from typing import Any

from finetune_trainer.recipes.base import RecipeContext, training_arguments


class DpoRecipe:
    name = "dpo"

    def dataset(self, ctx: RecipeContext, records: list[dict[str, Any]]) -> Any:
        from datasets import Dataset

        if ctx.data.format != "preference":
            raise ValueError(f"DPO needs preference records, not {ctx.data.format}")
        return Dataset.from_list(
            [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in records]
        )

    def arguments(self, ctx: RecipeContext) -> Any:
        from trl import DPOConfig

        hp = ctx.spec.hyperparameters
        return DPOConfig(**training_arguments(ctx), beta=hp.dpo_beta, max_length=hp.max_sequence_length)

    def build(self, ctx: RecipeContext, args: Any) -> Any:
        from trl import DPOTrainer

        return DPOTrainer(
            model=ctx.model.model,
            ref_model=None,
            args=args,
            train_dataset=self.dataset(ctx, ctx.data.train),
            eval_dataset=self.dataset(ctx, ctx.data.validation) if ctx.data.validation else None,
            processing_class=ctx.model.tokenizer,
            callbacks=ctx.callbacks,
        )
