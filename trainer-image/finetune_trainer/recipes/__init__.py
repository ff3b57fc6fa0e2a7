"""One recipe per objective/task, behind the small ``Recipe`` protocol in ``base``.

A recipe knows how its records become a dataset for its trainer class and how to build that
trainer; everything shared (arguments, callbacks, checkpoints, evaluation) lives outside it.
"""

from __future__ import annotations

from finetune_api.training import TrainingSpec
from finetune_trainer.recipes.base import Recipe, RecipeContext


def recipe_for(spec: TrainingSpec) -> Recipe:
    """The recipe for the spec's task and objective (the CRD already refuses dpo for classification)."""
    if spec.task == "classification":
        from finetune_trainer.recipes.classification import ClassificationRecipe

        return ClassificationRecipe()
    if spec.objective == "dpo":
        from finetune_trainer.recipes.dpo import DpoRecipe

        return DpoRecipe()
    from finetune_trainer.recipes.sft import SftRecipe

    return SftRecipe()


__all__ = ["Recipe", "RecipeContext", "recipe_for"]
