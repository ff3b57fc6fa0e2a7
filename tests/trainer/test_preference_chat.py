"""DPO on chat-format preference data: prompt, chosen and rejected as message lists.

An instruct model is tuned on the turns its chat template writes; TRL's DPOTrainer renders a
conversational record through the template, so the records must reach it as messages. Before, the
data stage refused anything but strings (``field "prompt" must be a string, got array``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetune_api.inputs import Columns
from finetune_trainer.data.formats import map_texts, normalise, texts_of

pytestmark = pytest.mark.trainer


def chat_preference_records(n: int) -> list[dict[str, Any]]:
    import tiny

    return [
        {
            "prompt": [
                {"role": "system", "content": "You name colours."},
                {"role": "user", "content": r["prompt"]},
            ],
            "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
        }
        for r in tiny.preference_records(n)
    ]


def test_chat_preference_records_are_normalised_as_messages() -> None:
    record = chat_preference_records(1)[0]
    out, errors = normalise(record, "preference", Columns())
    assert errors == [] and out == record
    question = record["prompt"][1]["content"]
    assert texts_of(out, "preference")[:2] == ["You name colours.", question]
    assert texts_of(out, "preference", skip_system=True)[0] == question
    # cleaning of inputs only leaves the answers exactly as written
    shouted = map_texts(out, "preference", str.upper, inputs_only=True)
    assert shouted["prompt"][1]["content"] == question.upper()
    assert shouted["chosen"] == record["chosen"] and shouted["rejected"] == record["rejected"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chosen": "It is red."}, 'fields "prompt", "chosen" and "rejected" must all be strings or all'),
        ({"chosen": [{"role": "user", "content": "x"}]}, "chosen[0].role must be assistant"),
        ({"prompt": [{"role": "assistant", "content": "x"}]}, 'field "prompt" has no user message'),
        ({"rejected": []}, 'field "rejected" is empty'),
    ],
)
def test_chat_preference_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    record = {**chat_preference_records(1)[0], **change}
    out, errors = normalise(record, "preference", Columns())
    assert out is None and any(message in e for e in errors), errors


def test_dpo_renders_chat_preference_records_with_the_chat_template(make_config: Any, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune_trainer.data.pipeline import prepare_data
    from finetune_trainer.modeling import LoadedModel
    from finetune_trainer.recipes import RecipeContext
    from finetune_trainer.recipes.dpo import DpoRecipe
    from finetune_trainer.runner import load_config

    config = load_config(
        make_config("preference", records=chat_preference_records(40), name="dpo-chat", objective="dpo")
    )
    data = prepare_data(config.spec, config.paths)
    assert data.format == "preference" and isinstance(data.train[0]["prompt"], list)
    tokenizer = AutoTokenizer.from_pretrained(config.paths.model)
    model = AutoModelForCausalLM.from_pretrained(config.paths.model)
    ctx = RecipeContext(spec=config.spec, data=data, checkpoint_dir=str(tmp_path))
    recipe = DpoRecipe()
    args = recipe.arguments(ctx)
    ctx.loaded = LoadedModel(model=model, tokenizer=tokenizer, quantized=False, dtype=torch.float32)
    trainer = recipe.build(ctx, args)
    row = trainer.train_dataset[0]
    record = data.train[0]
    expected_prompt = tokenizer.apply_chat_template(
        record["prompt"], tokenize=False, add_generation_prompt=True
    )
    assert tokenizer.decode(row["prompt_ids"]) == expected_prompt
    assert expected_prompt.startswith("<|system|>You name colours.</s><|user|>")
    # the answer as the template closes an assistant turn, its end-of-turn token included
    assert tokenizer.decode(row["chosen_ids"]) == record["chosen"][0]["content"] + "</s>"
    assert tokenizer.decode(row["rejected_ids"]) == record["rejected"][0]["content"] + "</s>"


def test_dpo_trains_on_chat_preference_records(make_config: Any) -> None:
    from runs import read_summary

    from finetune_trainer.runner import run_config_file

    path = make_config(
        "preference",
        records=chat_preference_records(60),
        name="dpo-chat-run",
        objective="dpo",
        hyperparameters={"maxSteps": 4},
    )
    assert run_config_file(path) == 0
    summary = read_summary(path)
    assert summary["phase"] == "Succeeded", summary
    assert {"loss", "reward_accuracy"} <= set(summary["evaluation"]["test"]), summary["evaluation"]
