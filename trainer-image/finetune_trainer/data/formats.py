"""Record formats: detect which one a file holds, check each record, and bring it to one shape.

The trainer codes against the normalised shapes only, whatever the column names were:

- prompt-completion: ``{"prompt", "completion"}``
- messages: ``{"messages": [{"role", "content"}, ...]}``
- preference: ``{"prompt", "chosen", "rejected"}``, each a string, or each a list of messages (a chat)
- text-label: ``{"text", "label"}`` (label always a str)
- text: ``{"text"}``
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from finetune_api.inputs import Columns

FORMATS = ("prompt-completion", "messages", "preference", "text-label", "text")
ROLES = ("system", "user", "assistant", "tool")

# Most specific first: a file with prompt, chosen and rejected is preference even if it has text.
_DETECTION_ORDER = ("messages", "preference", "prompt-completion", "text-label", "text")


def required_columns(fmt: str, columns: Columns) -> tuple[str, ...]:
    return {
        "prompt-completion": (columns.prompt, columns.completion),
        "messages": (columns.messages,),
        "preference": (columns.prompt, columns.chosen, columns.rejected),
        "text-label": (columns.text, columns.label),
        "text": (columns.text,),
    }[fmt]


def common_keys(records: Iterable[Any]) -> set[str]:
    """Keys present in at least half of the object records, so a few broken ones do not sway detection."""
    counts: Counter[str] = Counter()
    total = 0
    for record in records:
        if isinstance(record, dict):
            total += 1
            counts.update(str(key) for key in record)
    return {key for key, count in counts.items() if count * 2 >= total} if total else set()


def candidate_formats(keys: set[str], columns: Columns) -> list[str]:
    return [fmt for fmt in _DETECTION_ORDER if set(required_columns(fmt, columns)) <= keys]


def accepted_formats(task: str, objective: str) -> tuple[str, ...]:
    """Formats the trainer can use for this task and objective."""
    if task == "classification":
        return ("text-label",)
    if objective == "dpo":
        return ("preference",)
    return ("prompt-completion", "messages", "text")


def detect_format(keys: set[str], columns: Columns, task: str, objective: str) -> str | None:
    """The format these columns hold, preferring one the task can use; None when nothing fits."""
    candidates = candidate_formats(keys, columns)
    usable = [fmt for fmt in candidates if fmt in accepted_formats(task, objective)]
    if usable:
        return usable[0]
    return candidates[0] if candidates else None


def normalise(
    record: Any, fmt: str, columns: Columns, labels: Sequence[str] | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """Check one record and return it in its normalised shape, or None and every problem found.

    Messages name the field as the user wrote it, e.g. ``field "completion" is empty``; the caller
    prefixes the line.
    """
    if not isinstance(record, dict):
        return None, [f"expected a JSON object, got {_type_name(record)}"]
    errors: list[str] = []
    out: dict[str, Any]
    if fmt == "prompt-completion":
        out = {
            "prompt": _text(record, columns.prompt, errors),
            "completion": _text(record, columns.completion, errors),
        }
    elif fmt == "preference":
        out = _preference(record, columns, errors)
    elif fmt == "messages":
        out = {"messages": _messages(record, columns.messages, errors)}
    elif fmt == "text-label":
        out = {
            "text": _text(record, columns.text, errors),
            "label": _label(record, columns.label, labels, errors),
        }
    elif fmt == "text":
        out = {"text": _text(record, columns.text, errors)}
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return (None, errors) if errors else (out, [])


def denormalise(record: dict[str, Any], fmt: str, columns: Columns) -> dict[str, Any]:
    """A normalised record under the column names the user's file uses (the inverse of normalise)."""
    names = {
        "prompt": columns.prompt,
        "completion": columns.completion,
        "chosen": columns.chosen,
        "rejected": columns.rejected,
        "messages": columns.messages,
        "text": columns.text,
        "label": columns.label,
    }
    return {names[key]: value for key, value in record.items()}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _text(record: dict[str, Any], name: str, errors: list[str]) -> str:
    if name not in record or record[name] is None:
        errors.append(f'field "{name}" is missing')
        return ""
    value = record[name]
    if not isinstance(value, str):
        errors.append(f'field "{name}" must be a string, got {_type_name(value)}')
        return ""
    if not value.strip():
        errors.append(f'field "{name}" is empty')
    return value


def _label(record: dict[str, Any], name: str, labels: Sequence[str] | None, errors: list[str]) -> str:
    """Labels become strings; an integer is taken as an index into ``labels`` when it is not a name."""
    if name not in record or record[name] is None:
        errors.append(f'field "{name}" is missing')
        return ""
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors.append(f'field "{name}" must be a string or an integer, got {_type_name(value)}')
        return ""
    label = str(value).strip()
    if not label:
        errors.append(f'field "{name}" is empty')
        return ""
    if labels is not None and label not in labels:
        if isinstance(value, int) and 0 <= value < len(labels):
            return labels[value]
        shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
        errors.append(f'label "{label}" is not one of the dataset labels ({shown})')
    return label


def _preference(record: dict[str, Any], columns: Columns, errors: list[str]) -> dict[str, Any]:
    """Strings (``prompt`` text, ``chosen``/``rejected`` answers), or a chat: ``prompt`` the messages
    before the answer (at least one user turn), ``chosen``/``rejected`` the assistant turn(s) that follow,
    as TRL's conversational preference format has it; the chat template renders them for training."""
    names = (columns.prompt, columns.chosen, columns.rejected)
    chat = [_is_message_list(record.get(name)) for name in names]
    if any(chat) and not all(chat):
        shown = ", ".join(f'"{n}"' for n in names[:-1]) + f' and "{names[-1]}"'
        errors.append(f"fields {shown} must all be strings or all be arrays of messages")
        return {}
    if not all(chat):
        out: dict[str, Any] = {
            "prompt": _text(record, columns.prompt, errors),
            "chosen": _text(record, columns.chosen, errors),
            "rejected": _text(record, columns.rejected, errors),
        }
        if not errors and out["chosen"].strip() == out["rejected"].strip():
            errors.append(f'fields "{columns.chosen}" and "{columns.rejected}" are identical')
        return out
    before = len(errors)
    out = {
        "prompt": _messages(record, columns.prompt, errors, needs="user"),
        "chosen": _messages(record, columns.chosen, errors, only="assistant"),
        "rejected": _messages(record, columns.rejected, errors, only="assistant"),
    }
    if len(errors) == before and texts_of_messages(out["chosen"]) == texts_of_messages(out["rejected"]):
        errors.append(f'fields "{columns.chosen}" and "{columns.rejected}" are identical')
    return out


def _is_message_list(value: Any) -> bool:
    return isinstance(value, list) or (isinstance(value, str) and value.lstrip().startswith("[{"))


def texts_of_messages(messages: list[dict[str, str]]) -> list[str]:
    return [m["content"].strip() for m in messages]


def _messages(
    record: dict[str, Any], name: str, errors: list[str], needs: str = "assistant", only: str | None = None
) -> list[dict[str, str]]:
    """A list of role/content messages; ``needs``: a role that must occur, ``only``: the one role allowed."""
    if name not in record or record[name] is None:
        errors.append(f'field "{name}" is missing')
        return []
    value = record[name]
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:  # a CSV cell holding the list as JSON
            value = json.loads(value)
        except json.JSONDecodeError:
            errors.append(f'field "{name}" is a string that is not a JSON array')
            return []
    if not isinstance(value, list):
        errors.append(f'field "{name}" must be an array of messages, got {_type_name(value)}')
        return []
    if not value:
        errors.append(f'field "{name}" is empty')
        return []
    out: list[dict[str, str]] = []
    before = len(errors)
    for index, message in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(message, dict):
            errors.append(f"{where} must be an object with role and content, got {_type_name(message)}")
            continue
        role = message.get("role")
        content = message.get("content")
        if only is not None and role != only:
            errors.append(f"{where}.role must be {only}")
        elif role not in ROLES:
            errors.append(f"{where}.role must be one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            errors.append(f"{where}.content must be a string, got {_type_name(content)}")
        elif not content.strip():
            errors.append(f"{where}.content is empty")
        if isinstance(role, str) and isinstance(content, str):
            out.append({"role": role, "content": content})
    if len(errors) == before and not any(m["role"] == needs for m in out):
        what = "assistant message to learn from" if needs == "assistant" else f"{needs} message"
        errors.append(f'field "{name}" has no {what}')
    return out


def texts_of(record: dict[str, Any], fmt: str, *, skip_system: bool = False) -> list[str]:
    """The free-text fields of a normalised record, in a fixed order (cleaning and dedup work on these);
    a chat's messages one by one (``skip_system``: without system prompts)."""
    if fmt == "messages":
        return [m["content"] for m in record["messages"] if not (skip_system and m["role"] == "system")]
    out: list[str] = []
    for key in text_fields(fmt):
        value = record[key]
        if isinstance(value, str):
            out.append(value)
        else:
            out += [m["content"] for m in value if not (skip_system and m["role"] == "system")]
    return out


def text_fields(fmt: str) -> tuple[str, ...]:
    return {
        "prompt-completion": ("prompt", "completion"),
        "preference": ("prompt", "chosen", "rejected"),
        "text-label": ("text",),
        "text": ("text",),
        "messages": (),
    }[fmt]


# What the model reads, as opposed to what it is trained to write. Cleaning that changes text (markup
# stripping, whitespace tidying) touches only these: a completion, a chosen or rejected answer, or an
# assistant turn is the target, and "### Response:\n", indented code or an HTML answer must stay exact.
INPUT_FIELDS = {
    "prompt-completion": ("prompt",),
    "preference": ("prompt",),
    "text-label": ("text",),
    "text": ("text",),
    "messages": (),
}
TARGET_ROLES = frozenset({"assistant"})


def map_texts(
    record: dict[str, Any], fmt: str, change: Callable[[str], str], *, inputs_only: bool = False
) -> dict[str, Any]:
    """A copy of the record with ``change(text) -> text`` applied to each free-text field (with
    ``inputs_only``, to the fields the model reads but is not trained to produce: see INPUT_FIELDS).

    A leading space survives cleaning: prompt and completion are joined as they are, so " works"
    after a prompt must not become "works" (different tokens than inference sees).
    """

    def changed(text: str) -> str:
        out = change(text)
        return " " + out if out and text[:1].isspace() and not out[:1].isspace() else out

    if fmt == "messages":
        return {
            "messages": [
                m if inputs_only and m["role"] in TARGET_ROLES else {**m, "content": changed(m["content"])}
                for m in record["messages"]
            ]
        }
    out = dict(record)
    for key in INPUT_FIELDS[fmt] if inputs_only else text_fields(fmt):
        value = record[key]
        if isinstance(value, str):
            out[key] = changed(value)
        else:  # a chat preference record: every message of a field
            out[key] = [{**m, "content": changed(m["content"])} for m in value]
    return out


def render(record: dict[str, Any], fmt: str) -> str:
    """One plain string per record, for token statistics when no chat template is at hand."""
    if fmt == "messages":
        return "\n".join(f"{m['role']}: {m['content']}" for m in record["messages"])
    return "\n".join(texts_of(record, fmt))
