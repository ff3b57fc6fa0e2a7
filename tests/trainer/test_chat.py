"""Chat data: every assistant turn is trained, nothing else, whichever turn a record ends with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from finetune_trainer.recipes.chat import IGNORE, tokenize_chat

pytestmark = pytest.mark.trainer

CHAT = [
    {"role": "system", "content": "You name colours."},
    {"role": "user", "content": "What colour is the sky?"},
    {"role": "assistant", "content": "It is blue."},
    {"role": "user", "content": "And the grass?"},
    {"role": "tool", "content": "lookup: grass=green"},
    {"role": "assistant", "content": "It is green."},
]


def _trained_text(tokenizer: Any, row: dict[str, Any]) -> str:
    kept = [token for token, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE]
    return str(tokenizer.decode(kept))


def test_every_assistant_turn_and_only_those_carry_labels(llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    row = tokenize_chat(tokenizer, CHAT, max_length=256)
    assert (
        row["input_ids"]
        == tokenizer(tokenizer.apply_chat_template(CHAT, tokenize=False), add_special_tokens=False)[
            "input_ids"
        ]
    )
    # both answers with their end-of-turn token (the model learns to stop), no question, no system prompt
    assert _trained_text(tokenizer, row) == "It is blue.</s>It is green.</s>"


def test_a_chat_ending_with_the_user_trains_only_its_answers(llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    row = tokenize_chat(tokenizer, CHAT[:4], max_length=256)
    assert _trained_text(tokenizer, row) == "It is blue.</s>"


def test_mixed_chats_train_on_answers_only(make_config: Any, tmp_path: Path) -> None:
    """One record that does not end with the assistant no longer switches the whole dataset to loss on
    every token: the SFT dataset labels answers only, in that record and in all the others."""
    import tiny
    import torch
    from transformers import AutoTokenizer

    from finetune_trainer.data.pipeline import prepare_data
    from finetune_trainer.modeling import LoadedModel
    from finetune_trainer.recipes import RecipeContext
    from finetune_trainer.recipes.sft import SftRecipe
    from finetune_trainer.runner import load_config

    records = tiny.messages_records(40)
    records[0]["messages"].append({"role": "user", "content": "Thanks!"})
    config = load_config(make_config("messages", records=records, name="mixed-chats"))
    data = prepare_data(config.spec, config.paths)
    tokenizer = AutoTokenizer.from_pretrained(config.paths.model)
    ctx = RecipeContext(spec=config.spec, data=data, checkpoint_dir=str(tmp_path))
    ctx.loaded = LoadedModel(model=None, tokenizer=tokenizer, quantized=False, dtype=torch.float32)
    dataset = SftRecipe().dataset(ctx, records)
    for record, row in zip(records, dataset, strict=True):
        answers = [m["content"] + "</s>" for m in record["messages"] if m["role"] == "assistant"]
        assert _trained_text(tokenizer, row) == "".join(answers)
