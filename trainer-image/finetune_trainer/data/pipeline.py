"""The data stage of the trainer: load, validate, clean, split, check for leakage, report.

Everything that can be wrong with a dataset is found here, before a GPU is spent, and reported in
one go: every invalid line is counted and the first ones are listed by number.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from finetune_api.spec import Paths
from finetune_api.training import TrainingSpec
from finetune_trainer.data.cleaning import CleaningStats, Item, clean, dedup_text
from finetune_trainer.data.formats import (
    FORMATS,
    accepted_formats,
    common_keys,
    detect_format,
    normalise,
    required_columns,
)
from finetune_trainer.data.loading import Loaded, LoadError, load_file
from finetune_trainer.data.report import REPORT_VERSION, label_distribution
from finetune_trainer.data.splitting import Split, check_leakage, split_records

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class PreparedData:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]
    format: str  # resolved: prompt-completion | messages | preference | text-label | text
    labels: list[str] | None  # class names for text-label (spec.dataset.labels or sorted found labels)
    report: dict[str, Any]  # JSON-serialisable data report


class DataError(Exception):
    """The dataset cannot be trained on; the trainer exits with ExitCode.INVALID_DATA.

    ``errors`` holds the first messages (line-numbered where a line is to blame), ``total`` counts
    them all, ``summary`` says what went wrong as a whole, and ``report`` is the data report as far
    as it got (None when loading failed).
    """

    def __init__(
        self,
        errors: list[str],
        total: int | None = None,
        *,
        summary: str | None = None,
        report: dict[str, Any] | None = None,
    ) -> None:
        self.errors = list(errors)
        self.total = len(self.errors) if total is None else total
        self.summary = summary or (self.errors[0] if self.errors else "invalid data")
        self.report = report
        shown = [e for e in self.errors[:3] if e != self.summary]
        more = self.total - len(shown) - (1 if self.summary in self.errors[:3] else 0)
        text = "; ".join([self.summary, *shown]) + (f"; and {more} more" if more > 0 else "")
        super().__init__(text)


@dataclass
class _Source:
    role: str  # train | validation | test
    loaded: Loaded


def prepare_data(spec: TrainingSpec, paths: Paths) -> PreparedData:
    """Turn the files named in ``paths`` into normalised train/validation/test records and a report.

    Raises DataError when the data cannot be used: unreadable files, an undetectable or unsuitable
    format, more invalid records than ``dataset.maxInvalidFraction`` allows, an empty training set,
    or leakage between splits under policy ``fail``.
    """
    ds = spec.dataset
    limit = ds.max_errors_listed
    sources = _load(paths, ds.file_format)
    main = sources[0].loaded

    fmt = _resolve_format(spec, main)
    labels_declared = list(ds.labels) if ds.labels else None

    items, per_file, messages = _validate(sources, fmt, spec, labels_declared)
    read = sum(entry["read"] for entry in per_file)
    invalid = sum(entry["invalid"] for entry in per_file)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "format": fmt,
        "format_detected": ds.format == "auto",
        "files": per_file,
        "counts": {"read": read, "valid": read - invalid, "invalid": invalid},
        "invalid": {
            "records": invalid,
            "errors_total": len(messages),
            "errors": messages[:limit],
            "dropped": 0,
        },
        "warnings": [],
    }
    if read == 0:
        raise DataError([f"{main.path}: the file holds no records"], report=report)
    if invalid / read > ds.max_invalid_fraction:
        allowed = f"maxInvalidFraction is {ds.max_invalid_fraction:g}"
        summary = f"{invalid} of {read} records are invalid ({allowed})"
        raise DataError(messages[:limit], len(messages), summary=summary, report=report)
    report["invalid"]["dropped"] = invalid
    if invalid:
        log.warning("dropped %d invalid records (first: %s)", invalid, messages[0] if messages else "")

    # clean each file on its own: duplicates within a file are dropped, across files it is leakage
    stats = CleaningStats()
    for role, role_items in items.items():
        items[role], file_stats = clean(role_items, fmt, ds.cleaning)
        stats.add(file_stats)
    report["cleaning"] = stats.as_dict()
    report["counts"]["after_cleaning"] = sum(len(v) for v in items.values())

    split = _split(spec, paths, fmt, items)
    if split.note:
        report["warnings"].append(split.note)
    parts = {"train": split.train, "validation": split.validation, "test": split.test}
    report["splits"] = {
        "method": split.method,
        "seed": ds.splits.seed,
        "validation": "file" if paths.validation else ds.splits.validation,
        "test": "file" if paths.test else ds.splits.test,
    }
    for name in SPLITS:
        report["counts"][name] = len(parts[name])

    labels: list[str] | None = None
    if fmt == "text-label":
        found = sorted({item.record["label"] for items_ in parts.values() for item in items_})
        labels = labels_declared or found
        report["labels"] = {
            "names": labels,
            "distribution": {
                name: label_distribution((item.record["label"] for item in parts[name]), labels)
                for name in SPLITS
            },
        }
        missing = [label for label in labels if label not in {item.record["label"] for item in split.train}]
        if missing:
            report["warnings"].append(f"labels without training records: {', '.join(missing[:10])}")

    leakage = check_leakage(
        parts,
        text_of=lambda item: dedup_text(item.record, fmt),
        where_of=lambda item: item.row.where,
        near=True,
        threshold=ds.cleaning.dedup.near_threshold,
        policy=ds.leakage,
    )
    report["leakage"] = leakage.as_dict(limit)

    problems = _fatal(split, fmt, labels)
    if problems:
        raise DataError(problems, report=report)
    if leakage.leaks:
        findings = [leak.message() for leak in leakage.leaks]
        if ds.leakage == "fail":
            summary = f"{len(findings)} held-out records duplicate other splits (dataset.leakage is fail)"
            raise DataError(findings[:limit], len(findings), summary=summary, report=report)
        report["warnings"].append(f"{len(findings)} held-out records duplicate other splits: {findings[0]}")
        log.warning("leakage between splits: %d records, e.g. %s", len(findings), findings[0])

    return PreparedData(
        train=[item.record for item in split.train],
        validation=[item.record for item in split.validation],
        test=[item.record for item in split.test],
        format=fmt,
        labels=labels,
        report=report,
    )


def _validate(
    sources: list[_Source], fmt: str, spec: TrainingSpec, labels: list[str] | None
) -> tuple[dict[str, list[Item]], list[dict[str, Any]], list[str]]:
    """Normalised records per role, a summary per file, and every error message in line order."""
    errors: list[tuple[int, int, str]] = []
    items: dict[str, list[Item]] = {}
    per_file: list[dict[str, Any]] = []
    for order, source in enumerate(sources):
        loaded = source.loaded
        good: list[Item] = []
        bad = len(loaded.errors)
        errors += [(order, _line_of(message), message) for message in loaded.errors]
        for row in loaded.rows:
            record, problems = normalise(row.data, fmt, spec.dataset.columns, labels)
            if record is None:
                bad += 1
                errors += [(order, row.number, f"{row.where}: {problem}") for problem in problems]
            else:
                good.append(Item(record, row))
        items[source.role] = good
        per_file.append(
            {
                "role": source.role,
                "path": loaded.path,
                "file_format": loaded.file_format,
                "sha256": loaded.sha256,
                "read": loaded.read,
                "valid": len(good),
                "invalid": bad,
            }
        )
    errors.sort(key=lambda entry: (entry[0], entry[1]))
    return items, per_file, [message for _, _, message in errors]


def _load(paths: Paths, file_format: str) -> list[_Source]:
    """Explicit validation/test files are named by file in messages; the training file is not."""
    sources: list[_Source] = []
    for role, path in (("train", paths.dataset), ("validation", paths.validation), ("test", paths.test)):
        if not path:
            continue
        origin = "" if role == "train" else path.rsplit("/", 1)[-1]
        try:
            sources.append(_Source(role, load_file(path, file_format if role == "train" else "auto", origin)))
        except LoadError as exc:
            raise DataError([str(exc)]) from exc
    return sources


def _resolve_format(spec: TrainingSpec, main: Loaded) -> str:
    ds = spec.dataset
    accepted = accepted_formats(spec.task, spec.objective)
    if main.read == 0:
        raise DataError([f"{main.path}: the file holds no records"])
    fmt: str
    if ds.format != "auto":
        fmt = ds.format
    else:
        keys = common_keys(row.data for row in main.rows)
        detected = detect_format(keys, ds.columns, spec.task, spec.objective)
        if detected is None:
            expected = "; ".join(f"{f}: {', '.join(required_columns(f, ds.columns))}" for f in FORMATS)
            shown = ", ".join(sorted(keys)) or "none"
            raise DataError(
                [
                    f"cannot detect the record format from the columns ({shown}); expected {expected}; "
                    "set dataset.format and dataset.columns"
                ]
            )
        fmt = detected
    if fmt not in accepted:
        need = " or ".join(accepted)
        what = f"task {spec.task}" + (f" with objective {spec.objective}" if spec.task == "causal-lm" else "")
        raise DataError([f"{what} needs {need} records, but the data is {fmt}"])
    return fmt


def _split(spec: TrainingSpec, paths: Paths, fmt: str, items: dict[str, list[Item]]) -> Split:
    splits = spec.dataset.splits
    validation = 0.0 if paths.validation else splits.validation
    test = 0.0 if paths.test else splits.test
    label_of = (lambda item: item.record["label"]) if fmt == "text-label" else None
    split = split_records(items["train"], validation, test, splits.seed, label_of)
    if paths.validation:
        split.validation = items.get("validation", [])
    if paths.test:
        split.test = items.get("test", [])
    if split.method == "none" and (paths.validation or paths.test):
        split.method = "files"
    return split


def _fatal(split: Split, fmt: str, labels: list[str] | None) -> list[str]:
    problems: list[str] = []
    if not split.train:
        problems.append("no training records remain after validation, cleaning and splitting")
    if fmt == "text-label":
        classes = Counter(item.record["label"] for item in split.train)
        if len(classes) < 2:
            problems.append(
                f"classification needs at least two labels in the training split; found {len(classes)}"
            )
    return problems


def _line_of(message: str) -> int:
    for word, following in zip(message.split(), message.split()[1:], strict=False):
        if word in ("line", "record", "row"):
            try:
                return int(following.rstrip(":"))
            except ValueError:
                continue
    return 0
