"""Splits: sizes, determinism by seed, stratification, explicit files, and the leakage check."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from finetune_api.spec import Paths
from finetune_api.training import TrainingSpec
from finetune_trainer.data import DataError, prepare_data
from finetune_trainer.data.splitting import held_out_sizes, split_records

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
]


def sentence(i: int) -> str:
    """Distinct enough texts that near-dedup leaves them all alone."""
    return " ".join(WORDS[(i * k + k * k) % len(WORDS)] + str((i * 31 + k) % 97) for k in range(1, 9))


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def make_spec(task: str = "causal-lm", **dataset: Any) -> TrainingSpec:
    return TrainingSpec.model_validate(
        {"task": task, "model": {"name": "m"}, "dataset": {"source": {"uri": "file:///x"}, **dataset}}
    )


def test_held_out_sizes() -> None:
    assert held_out_sizes(100, 0.1, 0.1) == (10, 10)
    assert held_out_sizes(5, 0.1, 0.1) == (1, 1)
    assert held_out_sizes(2, 0.1, 0.1) == (0, 0)
    assert held_out_sizes(100, 0.0, 0.25) == (0, 25)


def test_split_sizes_and_determinism_by_seed() -> None:
    items = list(range(200))
    first = split_records(items, 0.1, 0.15, seed=7)
    again = split_records(items, 0.1, 0.15, seed=7)
    other = split_records(items, 0.1, 0.15, seed=8)
    assert (len(first.train), len(first.validation), len(first.test)) == (150, 20, 30)
    assert sorted(first.train + first.validation + first.test) == items
    assert (first.train, first.validation, first.test) == (again.train, again.validation, again.test)
    assert first.test != other.test


def test_stratified_split_keeps_class_proportions() -> None:
    items = [(i, "big") for i in range(160)] + [(i, "small") for i in range(40)]
    split = split_records(items, 0.1, 0.1, seed=3, label_of=lambda item: item[1])
    assert split.method == "stratified"
    for part, size in ((split.validation, 20), (split.test, 20)):
        assert len(part) == size
        assert Counter(label for _, label in part) == {"big": 16, "small": 4}


def test_rare_class_falls_back_to_a_plain_shuffle() -> None:
    items = [(i, "common") for i in range(50)] + [(0, "rare"), (1, "rare")]
    split = split_records(items, 0.1, 0.1, seed=3, label_of=lambda item: item[1])
    assert split.method == "random"
    assert "rare" in split.note


def test_pipeline_split_report(tmp_path: Path) -> None:
    records = [{"text": sentence(i), "label": "pos" if i % 4 else "neg"} for i in range(80)]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    spec = make_spec("classification", splits={"validation": 0.125, "test": 0.25, "seed": 5})
    data = prepare_data(spec, Paths(model="m", dataset=path, output=str(tmp_path)))
    assert (len(data.train), len(data.validation), len(data.test)) == (50, 10, 20)
    report = data.report
    assert report["splits"]["method"] == "stratified"
    assert report["labels"]["distribution"]["test"] == {"neg": 5, "pos": 15}
    assert report["labels"]["distribution"]["train"] == {"neg": 12, "pos": 38}
    assert report["leakage"]["checked"] and report["leakage"]["exact"] == 0
    again = prepare_data(spec, Paths(model="m", dataset=path, output=str(tmp_path)))
    assert again.test == data.test


def _leaky_files(tmp_path: Path) -> tuple[str, str]:
    train = [{"prompt": sentence(i), "completion": f"answer {i}"} for i in range(30)]
    test = [{"prompt": sentence(100 + i), "completion": f"answer {100 + i}"} for i in range(5)]
    test.append({"prompt": sentence(3), "completion": "answer 3"})  # exact copy of a training record
    test.append({"prompt": sentence(7) + " ok", "completion": "answer 7"})  # near copy
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "test.jsonl", test)


def test_leakage_from_an_explicit_test_file_fails(tmp_path: Path) -> None:
    train, test = _leaky_files(tmp_path)
    spec = make_spec(splits={"validation": 0.0, "testSource": {"uri": "file:///x"}})
    with pytest.raises(DataError) as info:
        prepare_data(spec, Paths(model="m", dataset=train, test=test, output=str(tmp_path)))
    assert info.value.total == 2
    assert info.value.errors == [
        "test record (test.jsonl line 6) is an exact duplicate of train record (line 4)",
        "test record (test.jsonl line 7) is a near duplicate of train record (line 8)",
    ]
    assert "dataset.leakage is fail" in str(info.value)
    assert info.value.report is not None and info.value.report["leakage"]["by_split"] == {
        "test/train": {"exact": 1, "near": 1}
    }


def test_leakage_warn_records_and_off_skips(tmp_path: Path) -> None:
    train, test = _leaky_files(tmp_path)
    paths = Paths(model="m", dataset=train, test=test, output=str(tmp_path))
    warned = prepare_data(make_spec(leakage="warn", splits={"validation": 0.0}), paths)
    assert len(warned.test) == 7
    assert warned.report["splits"]["test"] == "file"
    assert (warned.report["leakage"]["exact"], warned.report["leakage"]["near"]) == (1, 1)
    assert any("duplicate other splits" in w for w in warned.report["warnings"])
    off = prepare_data(make_spec(leakage="off", splits={"validation": 0.0}), paths)
    assert off.report["leakage"] == {
        "policy": "off",
        "checked": False,
        "exact": 0,
        "near": 0,
        "by_split": {},
        "findings": [],
    }


def test_near_duplicates_that_slip_through_are_caught_after_the_split(tmp_path: Path) -> None:
    records = [{"text": sentence(i)} for i in range(20)]
    records += [{"text": sentence(i) + " again"} for i in range(20)]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    spec = make_spec(
        leakage="warn", cleaning={"dedup": {"near": False}}, splits={"validation": 0.2, "test": 0.2}
    )
    data = prepare_data(spec, Paths(model="m", dataset=path, output=str(tmp_path)))
    assert data.report["cleaning"]["duplicates_removed"]["near"] == 0
    assert data.report["leakage"]["near"] > 0
