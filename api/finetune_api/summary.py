"""The exit summary the trainer writes to its termination log and the operator reads back."""

from __future__ import annotations

import json
from typing import Any

SUMMARY_VERSION = 1
SUMMARY_MAX_BYTES = 4096


class SummaryError(ValueError):
    """The termination message is not a summary this version understands."""


def encode_summary(summary: dict[str, Any], limit: int = SUMMARY_MAX_BYTES) -> str:
    """Serialise an exit summary within ``limit`` bytes: shorten the message first, then drop details."""
    data = {"version": SUMMARY_VERSION, **summary}
    text = _dump(data)
    if len(text.encode()) <= limit:
        return text
    message = str(data.get("message", ""))
    overflow = len(text.encode()) - limit
    if message:
        keep = max(0, len(message.encode()) - overflow - 3)
        data["message"] = message.encode()[:keep].decode(errors="ignore") + "..."
        text = _dump(data)
    for key in ("plan", "evaluation", "metrics", "checkpoint", "output", "message"):
        if len(text.encode()) <= limit:
            break
        data.pop(key, None)
        text = _dump(data)
    if len(text.encode()) > limit:
        text = _dump({"version": SUMMARY_VERSION, "phase": data.get("phase"), "reason": data.get("reason")})
    return text


def decode_summary(text: str | None) -> dict[str, Any]:
    """Parse a termination message; raises SummaryError with why it cannot be used."""
    if not text or not text.strip():
        raise SummaryError("empty termination message")
    if len(text.encode()) > SUMMARY_MAX_BYTES:
        raise SummaryError(f"termination message is {len(text.encode())} bytes, over {SUMMARY_MAX_BYTES}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SummaryError(f"termination message is not JSON: {exc.msg} at char {exc.pos}") from exc
    if not isinstance(data, dict):
        raise SummaryError("termination message is not a JSON object")
    if data.get("version") != SUMMARY_VERSION:
        raise SummaryError(f"unsupported summary version {data.get('version')!r}")
    for key in ("metrics", "evaluation", "output", "checkpoint", "plan"):
        if key in data and not isinstance(data[key], dict):
            raise SummaryError(f"summary field {key!r} is not an object")
    return data


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False, default=str)
