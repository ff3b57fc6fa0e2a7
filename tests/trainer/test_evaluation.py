"""Evaluation measures the model as it was trained: the same tokens, the model's own stop tokens, and
a perplexity in which every target token counts once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from finetune_trainer import evaluation

pytestmark = pytest.mark.trainer


def _trainer(make_config: Any, tmp_path: Path, records: list[dict[str, Any]]) -> tuple[Any, Any, Any]:
    from finetune_trainer.data.pipeline import prepare_data
    from finetune_trainer.modeling import load_model, load_tokenizer
    from finetune_trainer.recipes import RecipeContext, recipe_for
    from finetune_trainer.runner import load_config

    config = load_config(make_config(records=records, name="eval", hyperparameters={"batchSize": 8}))
    data = prepare_data(config.spec, config.paths)
    tokenizer = load_tokenizer(config.spec, config.paths.model)
    ctx = RecipeContext(spec=config.spec, data=data, checkpoint_dir=str(tmp_path / "ckpt"))
    recipe = recipe_for(config.spec)
    args = recipe.arguments(ctx)
    ctx.loaded = load_model(config.spec, config.paths.model, tokenizer)
    return recipe.build(ctx, args), recipe, ctx


def test_perplexity_weighs_every_token_once(make_config: Any, tmp_path: Path) -> None:
    short = [{"prompt": f"What colour is the plum {i}?", "completion": " red."} for i in range(12)]
    long = [
        {
            "prompt": f"Describe the sky {i}.",
            "completion": " It is blue and grey and white and red and pink " * 3,
        }
        for i in range(12)
    ]
    trainer, recipe, ctx = _trainer(make_config, tmp_path, short + long)
    dataset = recipe.dataset(ctx, short[:6] + long[:2])

    trainer.args.per_device_eval_batch_size = 1
    one_by_one = evaluation.token_weighted_loss(trainer, dataset)
    trainer.args.per_device_eval_batch_size = 8
    batched = evaluation.token_weighted_loss(trainer, dataset)
    assert math.isclose(one_by_one, batched, rel_tol=1e-4)  # independent of batching, as it should be

    # The Trainer's loss averages per-batch means: batches of one make it a mean over records, which
    # the six short answers dominate.
    trainer.args.per_device_eval_batch_size = 1
    per_record = trainer.evaluate(eval_dataset=dataset)["eval_loss"]
    assert abs(per_record - batched) > 0.01, (per_record, batched)


def test_generation_stops_at_the_models_own_end_tokens(llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|user|>")
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    assert evaluation.stop_tokens(model, tokenizer) == [tokenizer.eos_token_id, end_of_turn]
    model.generation_config.eos_token_id = None
    assert evaluation.stop_tokens(model, tokenizer) == tokenizer.eos_token_id


def test_generation_prompts_are_tokenised_as_in_training(llama_dir: Path, tmp_path: Path) -> None:
    """A tokenizer that adds BOS: training saw "<s> prompt", so generation must start from it too."""
    from tokenizers import processors
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    seen: list[list[int]] = []
    real = model.generate

    def record(**kwargs: Any) -> Any:
        seen.extend(kwargs["input_ids"].tolist())
        return real(**kwargs)

    model.generate = record
    evaluation.generate(model, tokenizer, ["What colour is the sky?"], 2, 1, add_special_tokens=True)
    assert seen[0][0] == bos
    assert seen[0] == tokenizer("What colour is the sky?")["input_ids"]  # as TRL tokenises a prompt
