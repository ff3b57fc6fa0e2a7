"""Cleaning before the split: markup stripping, PII redaction, too-short records, deduplication.

Cleaning never changes what the model is trained to produce: markup stripping (and the whitespace
tidying that comes with it) runs only on prompts and other inputs, never on completions, chosen or
rejected answers, or assistant turns. Redaction runs on every field: personal data must not be
learned as an answer either.

Redaction runs before deduplication so that two messages that differ only in an e-mail address
count as the duplicates they are. Every change is counted for the data report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from finetune_api.inputs import Cleaning
from finetune_trainer.data.dedup import find_duplicates, join_fields
from finetune_trainer.data.formats import map_texts, texts_of
from finetune_trainer.data.loading import Row
from finetune_trainer.data.markup import strip_markup
from finetune_trainer.data.pii import PII_KINDS, Redactor


@dataclass
class CleaningStats:
    markup_stripped: int = 0
    records_redacted: int = 0
    redactions: Counter[str] = field(default_factory=Counter)
    too_short: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    label_conflicts: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, other: CleaningStats) -> None:
        self.markup_stripped += other.markup_stripped
        self.records_redacted += other.records_redacted
        self.redactions.update(other.redactions)
        self.too_short += other.too_short
        self.exact_duplicates += other.exact_duplicates
        self.near_duplicates += other.near_duplicates
        self.label_conflicts += other.label_conflicts
        self.examples.extend(other.examples)

    def as_dict(self) -> dict[str, Any]:
        return {
            "markup_stripped": self.markup_stripped,
            "records_redacted": self.records_redacted,
            "redactions": {kind: self.redactions.get(kind, 0) for kind in PII_KINDS},
            "redactions_total": sum(self.redactions.values()),
            "too_short_removed": self.too_short,
            "duplicates_removed": {
                "exact": self.exact_duplicates,
                "near": self.near_duplicates,
                "total": self.exact_duplicates + self.near_duplicates,
            },
            "label_conflicts": self.label_conflicts,
            "duplicate_examples": self.examples[:10],
        }


@dataclass
class Item:
    """A normalised record with the row it came from (for messages that name lines)."""

    record: dict[str, Any]
    row: Row


def dedup_text(record: dict[str, Any], fmt: str) -> str:
    """What two records must share to be duplicates; for text-label the text alone, so that the
    same text under two labels is caught (and counted as a label conflict) rather than kept twice.
    A chat's system prompt is left out: datasets repeat one long system prompt in every record, and
    it would make distinct conversations look like near-duplicates of each other."""
    if fmt == "messages":
        turns = [m for m in record["messages"] if m["role"] != "system"]
        return join_fields([f"{m['role']}: {m['content']}" for m in turns])
    return join_fields(texts_of(record, fmt, skip_system=True))


def clean(items: list[Item], fmt: str, config: Cleaning) -> tuple[list[Item], CleaningStats]:
    stats = CleaningStats()
    redactor = Redactor(config.pii.kinds) if config.pii.enabled and config.pii.kinds else None
    cleaned: list[Item] = []
    for item in items:
        record = item.record
        if config.strip_markup:
            stripped = map_texts(record, fmt, strip_markup, inputs_only=True)
            if stripped != record:
                stats.markup_stripped += 1
                record = stripped
        if redactor is not None:
            before = sum(redactor.counts.values())
            record = map_texts(record, fmt, redactor)
            if sum(redactor.counts.values()) > before:
                stats.records_redacted += 1
        if any(len(text.strip()) < max(config.min_characters, 1) for text in texts_of(record, fmt)):
            stats.too_short += 1
            continue
        cleaned.append(Item(record, item.row))
    if redactor is not None:
        stats.redactions.update(redactor.counts)

    dedup = config.dedup
    if not (dedup.exact or dedup.near):
        return cleaned, stats
    texts = [dedup_text(item.record, fmt) for item in cleaned]
    keep, dropped = find_duplicates(texts, dedup.exact, dedup.near, dedup.near_threshold)
    for position, kept, kind in dropped:
        if kind == "exact":
            stats.exact_duplicates += 1
        else:
            stats.near_duplicates += 1
        if fmt == "text-label" and cleaned[position].record["label"] != cleaned[kept].record["label"]:
            stats.label_conflicts += 1
        stats.examples.append(f"{cleaned[position].row.where} {kind}-duplicates {cleaned[kept].row.where}")
    return [cleaned[i] for i in keep], stats
