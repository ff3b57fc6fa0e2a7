"""Validation errors as people read them: each names the field as written in YAML.

``spec.dataset.splits.test: Input should be less than 1``; list items as ``[0]``. The operator puts these in
the FineTuneJob's status, ``ftj validate`` prints them, the trainer fails a bad config with them.
"""

from __future__ import annotations

from pydantic import ValidationError


def field_errors(exc: ValidationError, root: str = "", limit: int | None = None) -> list[str]:
    """One ``field: message`` line per problem (the first ``limit``), the field path below ``root``."""
    lines = []
    for error in exc.errors()[:limit]:
        where = root
        for part in error["loc"]:
            where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
        lines.append(f"{where or '(root)'}: {error['msg']}")
    return lines


def format_errors(exc: ValidationError, root: str = "", limit: int | None = None) -> str:
    """The problems of ``field_errors`` on one line."""
    return "; ".join(field_errors(exc, root, limit))
