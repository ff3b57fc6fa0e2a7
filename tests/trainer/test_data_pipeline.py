"""The whole data stage: report contents, CSV and Parquet end to end, token statistics, the example file."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from finetune_api.spec import Paths
from finetune_api.training import TrainingSpec
from finetune_trainer.data import DataError, prepare_data
from finetune_trainer.data.report import percentile, token_stats

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "customer-feedback.jsonl"


def make_spec(task: str = "causal-lm", **dataset: Any) -> TrainingSpec:
    return TrainingSpec.model_validate(
        {"task": task, "model": {"name": "m"}, "dataset": {"source": {"uri": "file:///x"}, **dataset}}
    )


def test_csv_end_to_end_with_line_numbered_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    rows = ["text,label"] + [f"review number {i} is here,{'good' if i % 2 else 'bad'}" for i in range(10)]
    rows.insert(4, "this line has no label,")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = make_spec("classification", maxInvalidFraction=0.2, splits={"validation": 0.0, "test": 0.2})
    data = prepare_data(spec, Paths(model="m", dataset=str(path), output=str(tmp_path)))
    assert data.format == "text-label"
    assert data.report["invalid"]["errors"] == ['line 5: field "label" is empty']
    assert (len(data.train), len(data.test)) == (8, 2)
    assert data.labels == ["bad", "good"]
    assert data.report["files"][0]["file_format"] == "csv"


def test_parquet_end_to_end(tmp_path: Path) -> None:
    pa = importlib.import_module("pyarrow")
    pq = importlib.import_module("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    prompts = [f"Question {i}: what is {i} squared?" for i in range(10)]
    pq.write_table(pa.table({"prompt": prompts, "completion": [str(i * i) for i in range(10)]}), path)
    data = prepare_data(
        make_spec(splits={"validation": 0.1, "test": 0.1}), Paths(model="m", dataset=str(path), output=".")
    )
    assert data.format == "prompt-completion"
    assert len(data.train) + len(data.validation) + len(data.test) == 10
    assert len(data.test) == 1


def test_report_is_json_and_hashes_every_input(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(
        "".join(json.dumps({"text": f"doc {i} " * 5}) + "\n" for i in range(12)), encoding="utf-8"
    )
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"text": "a validation document"}) + "\n", encoding="utf-8")
    spec = make_spec(splits={"validation": 0.5, "test": 0.0})
    data = prepare_data(spec, Paths(model="m", dataset=str(train), validation=str(val), output="."))
    report = json.loads(json.dumps(data.report))
    assert [(f["role"], f["sha256"]) for f in report["files"]] == [
        ("train", hashlib.sha256(train.read_bytes()).hexdigest()),
        ("validation", hashlib.sha256(val.read_bytes()).hexdigest()),
    ]
    assert data.validation == [{"text": "a validation document"}]
    assert report["counts"]["train"] == 12 and report["counts"]["validation"] == 1
    assert report["splits"]["validation"] == "file"


def test_empty_or_missing_inputs_are_data_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no records"):
        prepare_data(make_spec(format="text"), Paths(model="m", dataset=str(empty), output="."))
    with pytest.raises(DataError, match="no such file") as info:
        prepare_data(make_spec(), Paths(model="m", dataset=str(tmp_path / "missing.jsonl"), output="."))
    assert info.value.total == 1


def test_classification_needs_two_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"t {i}", "label": "x"}) + "\n" for i in range(5)), encoding="utf-8"
    )
    with pytest.raises(DataError, match="at least two labels"):
        prepare_data(make_spec("classification"), Paths(model="m", dataset=str(path), output="."))


class BatchTokenizer:
    """Stands in for a Hugging Face tokenizer: callable on a batch, one token per word plus BOS."""

    def __call__(self, texts: list[str], **_: Any) -> dict[str, list[list[int]]]:
        return {"input_ids": [[1] + [2] * len(t.split()) for t in texts]}


class EncodeOnlyTokenizer:
    def encode(self, text: str) -> list[int]:
        return [0] * len(text.split())


def test_token_stats() -> None:
    texts = [" ".join(["w"] * n) for n in (1, 2, 3, 4, 10)]
    stats = token_stats(texts, BatchTokenizer(), max_len=4)
    assert stats == {
        "count": 5,
        "min": 2,
        "mean": 5.0,
        "p50": 4.0,
        "p95": pytest.approx(9.8),
        "max": 11,
        "total": 25,
        "max_length": 4,
        "truncated": 2,
    }
    assert token_stats(texts, EncodeOnlyTokenizer(), max_len=100)["truncated"] == 0
    assert percentile([], 0.5) == 0.0


def test_customer_feedback_example_duplicates_and_pii_are_found() -> None:
    spec = make_spec("classification")
    data = prepare_data(spec, Paths(model="m", dataset=str(EXAMPLE), output="."))
    report = data.report
    cleaning = report["cleaning"]
    assert report["counts"]["read"] == 500 and report["counts"]["invalid"] == 0
    assert cleaning["duplicates_removed"]["exact"] == 6
    assert cleaning["duplicates_removed"]["near"] >= 3
    assert cleaning["redactions"]["email"] == 8 and cleaning["redactions"]["phone"] == 4
    assert cleaning["records_redacted"] >= 10
    assert cleaning["markup_stripped"] == 0  # line 280 talks about "<b>" tags; that is prose
    assert report["splits"]["method"] == "stratified"
    assert len(data.labels or []) == 5
    assert report["leakage"]["exact"] == report["leakage"]["near"] == 0
    for record in data.train + data.validation + data.test:
        assert "@example." not in record["text"]
    loose = prepare_data(
        make_spec("classification", cleaning={"dedup": {"nearThreshold": 0.6}}),
        Paths(model="m", dataset=str(EXAMPLE), output="."),
    )
    assert loose.report["cleaning"]["duplicates_removed"] == {"exact": 6, "near": 4, "total": 10}
