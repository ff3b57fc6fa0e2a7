"""Checkpoint and validation intervals: everySteps holds with early stopping; an epoch of packed data
is counted in packed sequences, not records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runs import output_of

from finetune_api.exitcodes import ExitCode
from finetune_trainer.runner import load_config, run

pytestmark = pytest.mark.trainer


def test_every_steps_is_kept_with_early_stopping(make_config: Any) -> None:
    config = make_config(
        name="every-steps",
        hyperparameters={"maxSteps": 12},
        earlyStopping={"enabled": True, "patience": 100},
        evaluation={"evalSteps": 6, "compareBase": False, "generationMetrics": False},
        checkpointing={"everySteps": 2, "keep": 10},
    )
    assert run(load_config(config)) == ExitCode.SUCCEEDED
    steps = sorted(
        int(p.name.split("-")[1]) for p in (output_of(config) / "checkpoints").rglob("checkpoint-*")
    )
    assert steps == [2, 4, 6, 8, 10, 12]


def test_an_epoch_of_packed_data_is_counted_in_packed_sequences(make_config: Any, tmp_path: Path) -> None:
    from finetune_trainer.data.pipeline import prepare_data
    from finetune_trainer.modeling import load_model, load_tokenizer
    from finetune_trainer.recipes import RecipeContext, recipe_for
    from finetune_trainer.recipes.base import steps_per_epoch

    path = make_config(
        name="packed",
        hyperparameters={
            "maxSteps": None,
            "epochs": 1,
            "packing": True,
            "batchSize": 2,
            "maxSequenceLength": 64,
        },
        earlyStopping={"enabled": True},
    )
    config = load_config(path)
    data = prepare_data(config.spec, config.paths)
    tokenizer = load_tokenizer(config.spec, config.paths.model)
    ctx = RecipeContext(spec=config.spec, data=data, checkpoint_dir=str(tmp_path / "ckpt"))
    recipe = recipe_for(config.spec)
    args = recipe.arguments(ctx)
    assert args.eval_steps == steps_per_epoch(ctx)  # per record, before packing
    ctx.loaded = load_model(config.spec, config.paths.model, tokenizer)
    trainer = recipe.build(ctx, args)
    packed = len(trainer.train_dataset)
    assert packed < len(data.train) / 2, (packed, len(data.train))  # short records: several per sequence
    assert trainer.args.eval_steps == trainer.args.save_steps == steps_per_epoch(ctx, packed)
    assert trainer.args.eval_steps < steps_per_epoch(ctx)
