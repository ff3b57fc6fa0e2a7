"""Cleaning what pods say before it reaches status, conditions, Events or logs.

A termination message and a metrics body are written by the job image, which the operator does not
trust: strings are length-capped and stripped of control characters (terminal escapes, NULs, fake
log lines), numbers must be finite (a NaN makes the API server refuse the whole status write), and
a failure reason must be one the contract defines.
"""

from __future__ import annotations

import math
import re
from typing import Any

from finetune_api.exitcodes import EXIT_MEANINGS, meaning_of

TEXT_LIMIT = 1024
KEY_LIMIT = 64
DEPTH_LIMIT = 4
ITEMS_LIMIT = 64

# C0 and C1 controls (tab and newline kept), DEL, and the Unicode line/paragraph separators and bidi
# overrides that can make text display as something else.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# Reasons a trainer may give for a failed run (the contract's exit meanings, success excluded).
FAILURE_REASONS: frozenset[str] = frozenset(
    {m.reason for code, m in EXIT_MEANINGS.items() if code != 0} | {meaning_of(1).reason}
)


def clean_text(value: Any, limit: int = TEXT_LIMIT) -> str:
    """``value`` as a string without control characters, at most ``limit`` characters."""
    text = _CONTROL.sub("", str(value))
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def trainer_reason(reason: Any, exit_code: int | None) -> str:
    """The trainer's failure reason if the contract defines it, else what the exit code means."""
    if isinstance(reason, str) and reason in FAILURE_REASONS:
        return reason
    return meaning_of(exit_code if exit_code is not None else 1).reason


def clean_summary(data: dict[str, Any]) -> dict[str, Any]:
    """A decoded termination summary with every value safe to store: finite numbers, short strings,
    bounded nesting and size. Values that cannot be made safe are dropped, not guessed."""
    cleaned = _clean(data, 0)
    return cleaned if isinstance(cleaned, dict) else {}


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) <= 2**53 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clean_text(value)
    if depth >= DEPTH_LIMIT:
        return None
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in list(value.items())[:ITEMS_LIMIT]:
            safe = _clean(item, depth + 1)
            if safe is not None:
                out[clean_text(key, KEY_LIMIT)] = safe
        return out
    if isinstance(value, list):
        items = [_clean(item, depth + 1) for item in value[:ITEMS_LIMIT]]
        return [item for item in items if item is not None]
    return None
