"""Seeded train/validation/test splits and the leakage check between them.

A test set is only worth its numbers if none of its records (or close copies of them) were trained
on, so the check runs after every split, whether the held-out sets came from fractions or files.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from finetune_trainer.data.dedup import NearIndex, normalise_text

T = TypeVar("T")


@dataclass
class Split:
    train: list[Any]
    validation: list[Any]
    test: list[Any]
    method: str  # random | stratified | none
    note: str = ""


def held_out_sizes(n: int, validation: float, test: float) -> tuple[int, int]:
    """Rounded sizes; a non-zero fraction gets at least one record while two remain for training."""
    n_test = round(n * test)
    n_val = round(n * validation)
    if test > 0 and n_test == 0 and n >= 3:
        n_test = 1
    if validation > 0 and n_val == 0 and n - n_test >= 3:
        n_val = 1
    while n_test + n_val >= n and (n_test or n_val):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def split_records(
    items: Sequence[T],
    validation: float,
    test: float,
    seed: int,
    label_of: Callable[[T], str] | None = None,
) -> Split:
    """Shuffle with ``seed`` and cut; stratified by ``label_of`` when every class can be in every split.

    Stratification needs each class to have a member for training and for each non-empty held-out
    set; otherwise (rare classes) the split falls back to a plain shuffle and says so.
    """
    n = len(items)
    n_val, n_test = held_out_sizes(n, validation, test)
    if not (n_val or n_test):
        return Split(list(items), [], [], "none")  # nothing held out: keep the file's order
    rng = random.Random(seed)
    if label_of is not None:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            groups[label_of(item)].append(index)
        needed = 1 + (n_val > 0) + (n_test > 0)
        small = sorted(label for label, members in groups.items() if len(members) < needed)
        if not small:
            return _stratified(items, groups, n_val, n_test, rng)
        note = f"not stratified: classes with fewer than {needed} records: {', '.join(small[:10])}"
    else:
        note = ""
    order = list(range(n))
    rng.shuffle(order)
    test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return Split(
        [items[i] for i in train_idx],
        [items[i] for i in val_idx],
        [items[i] for i in test_idx],
        "random",
        note,
    )


def _allocate(sizes: dict[str, int], total: int, cap: dict[str, int]) -> dict[str, int]:
    """Split ``total`` over classes in proportion to ``sizes`` (largest remainder), within ``cap``."""
    n = sum(sizes.values())
    quotas = {label: total * size / n for label, size in sizes.items()}
    out = {label: min(int(quota), cap[label]) for label, quota in quotas.items()}
    by_remainder = sorted(sizes, key=lambda label: (-(quotas[label] - int(quotas[label])), label))
    while sum(out.values()) < total:
        progressed = False
        for label in by_remainder:
            if sum(out.values()) >= total:
                break
            if out[label] < cap[label]:
                out[label] += 1
                progressed = True
        if not progressed:
            break
    return out


def _stratified(
    items: Sequence[T], groups: dict[str, list[int]], n_val: int, n_test: int, rng: random.Random
) -> Split:
    labels = sorted(groups)
    for label in labels:
        rng.shuffle(groups[label])
    sizes = {label: len(groups[label]) for label in labels}
    # every class keeps one record for training, and one for each held-out set when it has any
    test_cap = {label: sizes[label] - 1 - (n_val > 0) for label in labels}
    test_n = _allocate(sizes, n_test, test_cap)
    val_cap = {label: sizes[label] - 1 - test_n[label] for label in labels}
    val_n = _allocate(sizes, n_val, val_cap)
    train_idx: list[int] = []
    val_idx: list[int] = []
    test_idx: list[int] = []
    for label in labels:
        members = groups[label]
        test_idx += members[: test_n[label]]
        val_idx += members[test_n[label] : test_n[label] + val_n[label]]
        train_idx += members[test_n[label] + val_n[label] :]
    for part in (train_idx, val_idx, test_idx):
        rng.shuffle(part)
    return Split(
        [items[i] for i in train_idx], [items[i] for i in val_idx], [items[i] for i in test_idx], "stratified"
    )


@dataclass
class Leak:
    split: str
    against: str
    kind: str  # exact | near
    record: str  # where the held-out record came from
    matches: str  # where the record it duplicates came from

    def message(self) -> str:
        article = "an" if self.kind == "exact" else "a"
        return (
            f"{self.split} record ({self.record}) is {article} {self.kind} duplicate of "
            f"{self.against} record ({self.matches})"
        )


@dataclass
class LeakageReport:
    policy: str
    checked: bool
    leaks: list[Leak] = field(default_factory=list)

    def as_dict(self, limit: int = 20) -> dict[str, Any]:
        counts: dict[str, dict[str, int]] = {}
        for leak in self.leaks:
            pair = counts.setdefault(f"{leak.split}/{leak.against}", {"exact": 0, "near": 0})
            pair[leak.kind] += 1
        return {
            "policy": self.policy,
            "checked": self.checked,
            "exact": sum(1 for leak in self.leaks if leak.kind == "exact"),
            "near": sum(1 for leak in self.leaks if leak.kind == "near"),
            "by_split": counts,
            "findings": [leak.message() for leak in self.leaks[:limit]],
        }


def check_leakage(
    splits: Mapping[str, Sequence[T]],
    text_of: Callable[[T], str],
    where_of: Callable[[T], str],
    near: bool,
    threshold: float,
    policy: str,
) -> LeakageReport:
    """Held-out records that (nearly) repeat a training record, and test records that repeat validation."""
    report = LeakageReport(policy=policy, checked=policy != "off")
    if policy == "off":
        return report
    indexes: dict[str, tuple[dict[str, T], NearIndex | None]] = {}
    for held, against in (("validation", "train"), ("test", "train"), ("test", "validation")):
        reference = splits.get(against) or []
        probes = splits.get(held) or []
        if not reference or not probes:
            continue
        if against not in indexes:
            indexes[against] = _index(reference, text_of, near, threshold)
        exact, index = indexes[against]
        for item in probes:
            text = text_of(item)
            match = exact.get(normalise_text(text))
            if match is not None:
                report.leaks.append(Leak(held, against, "exact", where_of(item), where_of(match)))
                continue
            if index is not None:
                other = index.match(index.minhash(text))
                if other is not None:
                    report.leaks.append(
                        Leak(held, against, "near", where_of(item), where_of(reference[int(other)]))
                    )
    return report


def _index(
    items: Sequence[T], text_of: Callable[[T], str], near: bool, threshold: float
) -> tuple[dict[str, T], NearIndex | None]:
    exact: dict[str, T] = {}
    for item in items:
        exact.setdefault(normalise_text(text_of(item)), item)
    index = NearIndex(threshold) if near else None
    if index is not None:
        for position, item in enumerate(items):
            index.add(str(position), index.minhash(text_of(item)))
    return exact, index
