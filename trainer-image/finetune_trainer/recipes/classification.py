"""Sequence classification with the plain transformers Trainer and a classification head.

Labels are the class names the data pipeline resolved, in order; their indices are the head's
outputs and go into the saved config (id2label), so the saved model predicts names, not numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finetune_trainer.recipes.base import RecipeContext, training_arguments


def classification_scores(predictions: Any, label_ids: Any) -> dict[str, float]:
    """Accuracy and macro-F1 (every class counts the same, however rare)."""
    from sklearn.metrics import accuracy_score, f1_score

    logits = predictions[0] if isinstance(predictions, tuple) else predictions
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(label_ids)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


def _compute_metrics(prediction: Any) -> dict[str, float]:
    return classification_scores(prediction.predictions, prediction.label_ids)


class ClassificationRecipe:
    name = "classification"

    def dataset(self, ctx: RecipeContext, records: list[dict[str, Any]]) -> Any:
        from datasets import Dataset

        labels = ctx.data.labels or []
        index = {label: i for i, label in enumerate(labels)}
        tokenizer = ctx.model.tokenizer
        max_length = ctx.spec.hyperparameters.max_sequence_length
        encoded = tokenizer([r["text"] for r in records], truncation=True, max_length=max_length)
        rows = {key: list(value) for key, value in encoded.items()}
        rows["labels"] = [index[r["label"]] for r in records]
        return Dataset.from_dict(rows)

    def arguments(self, ctx: RecipeContext) -> Any:
        from transformers import TrainingArguments

        return TrainingArguments(**training_arguments(ctx), label_names=["labels"])

    def build(self, ctx: RecipeContext, args: Any) -> Any:
        from transformers import DataCollatorWithPadding, Trainer

        return Trainer(
            model=ctx.model.model,
            args=args,
            train_dataset=self.dataset(ctx, ctx.data.train),
            eval_dataset=self.dataset(ctx, ctx.data.validation) if ctx.data.validation else None,
            processing_class=ctx.model.tokenizer,
            data_collator=DataCollatorWithPadding(ctx.model.tokenizer),
            compute_metrics=_compute_metrics,
            callbacks=ctx.callbacks,
        )
