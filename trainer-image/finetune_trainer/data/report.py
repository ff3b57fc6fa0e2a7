"""Pieces of the data report: label distributions and token-length statistics.

The report is a plain JSON-serialisable dict because it travels three ways: into the output
directory, into the model card, and (summarised) into the FineTuneJob's status.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REPORT_VERSION = 1


def label_distribution(labels: Iterable[str], names: Sequence[str] | None = None) -> dict[str, int]:
    """Count per label, in the order of ``names`` (zeros included) and then any others sorted."""
    counts = Counter(labels)
    ordered = list(names or [])
    ordered += sorted(label for label in counts if label not in set(ordered))
    return {label: counts.get(label, 0) for label in ordered}


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without numpy."""
    if not sorted_values:
        return 0.0
    position = (len(sorted_values) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low))


def length_stats(lengths: Sequence[int], max_len: int | None = None) -> dict[str, Any]:
    values = sorted(lengths)
    out: dict[str, Any] = {
        "count": len(values),
        "min": values[0] if values else 0,
        "mean": round(sum(values) / len(values), 2) if values else 0.0,
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "max": values[-1] if values else 0,
        "total": sum(values),
    }
    if max_len is not None:
        out["max_length"] = max_len
        out["truncated"] = sum(1 for value in values if value > max_len)
    return out


def token_lengths(texts: Sequence[str], tokenizer: Any) -> list[int]:
    """Token counts with special tokens, using a fast batch call when the tokenizer offers one.

    Works with Hugging Face tokenizers (callable, returning ``input_ids``) and with anything that has
    ``encode(text) -> list[int]``.
    """
    if not texts:
        return []
    if callable(tokenizer):
        try:
            encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False)
        except TypeError:
            encoded = None
        if isinstance(encoded, Mapping) and "input_ids" in encoded:
            return [len(ids) for ids in encoded["input_ids"]]
    return [len(tokenizer.encode(text)) for text in texts]


def token_stats(texts: Sequence[str], tokenizer: Any, max_len: int) -> dict[str, Any]:
    """min/mean/p50/p95/max token length and how many records exceed ``max_len`` (will be truncated)."""
    return length_stats(token_lengths(texts, tokenizer), max_len)


def record_token_stats(
    records: Sequence[dict[str, Any]], fmt: str, tokenizer: Any, max_len: int
) -> dict[str, Any]:
    """token_stats over normalised records rendered as plain text (no chat template applied)."""
    from finetune_trainer.data.formats import render

    return token_stats([render(record, fmt) for record in records], tokenizer, max_len)
