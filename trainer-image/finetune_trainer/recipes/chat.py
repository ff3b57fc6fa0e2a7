"""Chats tokenised with the model's chat template, the loss on every assistant turn and nothing else.

TRL trains a conversation either on its last assistant message (as a prompt-completion pair) or, when
the chat does not end with the assistant, on every token, system prompt and user turns included. Here
each record is rendered once with the template, and the characters of each assistant turn (from the
end of the generation prompt before it to the end of the turn, its end-of-turn token included, so the
model learns to stop) become the labels; everything else is -100. The spans come from rendering the
growing conversation: the text up to turn i with the generation prompt, and the text through turn i.
A template that renders earlier turns differently once more follow (some strip reasoning from old
turns) is caught, and the turn is then found by its content.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100


class ChatTemplateError(ValueError):
    """The tokenizer cannot render this conversation (no chat template, or a role it refuses)."""


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return str(text)


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    try:
        text = _render(tokenizer, messages)
    except Exception as exc:  # jinja raises TemplateError, ValueError... for an unsupported role
        raise ChatTemplateError(f"the chat template cannot render this conversation: {exc}") from exc
    spans: list[tuple[int, int]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1])
        if text.startswith(through) and through.startswith(before) and len(before) >= cursor:
            start, end = len(before), len(through)
        else:
            start = text.find(message["content"], cursor)
            if start < 0:
                raise ChatTemplateError(f"assistant turn {index} is not in the rendered conversation")
            end = start + len(message["content"])
        spans.append((start, end))
        cursor = end
    return text, spans


def tokenize_chat(tokenizer: Any, messages: list[dict[str, str]], max_length: int | None) -> dict[str, Any]:
    """``input_ids`` and ``labels`` (-100 outside assistant turns), truncated to ``max_length``."""
    if not getattr(tokenizer, "is_fast", False):
        raise ChatTemplateError("training on chats needs a fast tokenizer (character offsets)")
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(
        text,
        add_special_tokens=False,  # the template writes BOS and the turn markers itself
        return_offsets_mapping=True,
        truncation=max_length is not None,
        max_length=max_length,
    )
    labels = []
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        inside = any(s <= start < e or (start == end and s < start <= e) for s, e in spans)
        labels.append(token if inside else IGNORE)
    return {"input_ids": list(encoded["input_ids"]), "labels": labels}
