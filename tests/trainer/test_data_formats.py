"""Formats: auto-detection, normalised shapes, and line-numbered validation messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune_api.spec import Paths
from finetune_api.training import TrainingSpec
from finetune_trainer.data import DataError, prepare_data


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_spec(task: str = "causal-lm", objective: str = "sft", **dataset: Any) -> TrainingSpec:
    dataset.setdefault("source", {"uri": "file:///unused"})
    dataset.setdefault("splits", {"validation": 0.0, "test": 0.0})
    return TrainingSpec.model_validate(
        {"task": task, "objective": objective, "model": {"name": "m"}, "dataset": dataset}
    )


def prepare(path: Path, spec: TrainingSpec) -> Any:
    return prepare_data(spec, Paths(model="m", dataset=str(path), output=str(path.parent)))


CASES = [
    (
        "causal-lm",
        "sft",
        {"prompt": "Q{i} about cats?", "completion": "Answer number {i}."},
        "prompt-completion",
    ),
    (
        "causal-lm",
        "sft",
        {
            "messages": [
                {"role": "user", "content": "Hello {i}"},
                {"role": "assistant", "content": "Hi there {i}"},
            ]
        },
        "messages",
    ),
    (
        "causal-lm",
        "dpo",
        {"prompt": "Q{i}", "chosen": "good answer {i}", "rejected": "bad one {i}"},
        "preference",
    ),
    ("classification", "sft", {"text": "message number {i}", "label": "L{k}"}, "text-label"),
    ("causal-lm", "sft", {"text": "plain document number {i}"}, "text"),
]


def _fill(template: Any, i: int) -> Any:
    if isinstance(template, str):
        return template.format(i=i * 7919, k=i % 2)
    if isinstance(template, list):
        return [_fill(t, i) for t in template]
    return {key: _fill(value, i) for key, value in template.items()}


@pytest.mark.parametrize(("task", "objective", "template", "expected"), CASES, ids=[c[3] for c in CASES])
def test_auto_detects_each_format(
    tmp_path: Path, task: str, objective: str, template: dict[str, Any], expected: str
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{**_fill(template, i), "id": i} for i in range(6)])
    data = prepare(path, make_spec(task, objective))
    assert data.format == expected
    assert data.report["format_detected"] is True
    assert len(data.train) == 6
    assert "id" not in data.train[0]
    expected_keys = {
        "prompt-completion": {"prompt", "completion"},
        "messages": {"messages"},
        "preference": {"prompt", "chosen", "rejected"},
        "text-label": {"text", "label"},
        "text": {"text"},
    }[expected]
    assert set(data.train[0]) == expected_keys
    assert data.labels == (["L0", "L1"] if expected == "text-label" else None)


def test_invalid_records_are_named_by_line(tmp_path: Path) -> None:
    records: list[Any] = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(20)]
    records[1] = {"prompt": "p", "completion": "  "}
    records[4] = {"prompt": "p", "completion": 5}
    records[6] = ["not", "an", "object"]
    records[16] = {"prompt": "p"}
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(DataError) as info:
        prepare(path, make_spec())
    assert info.value.errors == [
        'line 2: field "completion" is empty',
        'line 5: field "completion" must be a string, got number',
        "line 7: expected a JSON object, got array",
        'line 17: field "completion" is missing',
    ]
    assert info.value.total == 4
    assert "4 of 20 records are invalid" in str(info.value)
    assert info.value.report is not None and info.value.report["counts"]["invalid"] == 4


def test_message_roles_are_checked(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    bad_role = {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}
    no_answer = {"messages": [{"role": "user", "content": "only a question"}]}
    path = write_jsonl(tmp_path / "d.jsonl", [good, good, bad_role, no_answer])
    with pytest.raises(DataError) as info:
        prepare(path, make_spec())
    assert info.value.errors == [
        "line 3: messages[1].role must be one of system, user, assistant, tool",
        'line 4: field "messages" has no assistant message to learn from',
    ]


def test_errors_listed_are_capped_but_all_counted(tmp_path: Path) -> None:
    records = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(10)]
    records += [{"text": "", "label": "a"}] * 30
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(DataError) as info:
        prepare(path, make_spec("classification", maxErrorsListed=5))
    assert len(info.value.errors) == 5
    assert info.value.errors[0] == 'line 11: field "text" is empty'
    assert info.value.total == 30


def test_invalid_records_below_the_tolerance_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [json.dumps({"text": f"document {i}"}) for i in range(9)] + ["{broken"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = prepare(path, make_spec(maxInvalidFraction=0.1))
    assert len(data.train) == 9
    assert data.report["counts"] == {
        "read": 10,
        "valid": 9,
        "invalid": 1,
        "after_cleaning": 9,
        "train": 9,
        "validation": 0,
        "test": 0,
    }
    assert data.report["invalid"]["dropped"] == 1
    assert data.report["invalid"]["errors"][0].startswith("line 10: not valid JSON")


@pytest.mark.parametrize(
    ("task", "objective", "record", "needs"),
    [
        ("classification", "sft", {"prompt": "p", "completion": "c"}, "text-label"),
        ("causal-lm", "dpo", {"prompt": "p", "completion": "c"}, "preference"),
        ("causal-lm", "sft", {"text": "t", "label": "x"}, "prompt-completion or messages or text"),
    ],
)
def test_format_must_suit_task_and_objective(
    tmp_path: Path, task: str, objective: str, record: dict[str, Any], needs: str
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [record])
    spec = make_spec(task, objective)
    if record.get("label"):  # with text and label present, sft would pick "text": declare text-label
        spec = make_spec(task, objective, format="text-label")
    with pytest.raises(DataError, match=f"needs {needs} records"):
        prepare(path, spec)


def test_undetectable_columns_are_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(
        DataError, match=r"cannot detect the record format from the columns \(answer, question\)"
    ):
        prepare(path, make_spec())


def test_custom_columns_and_integer_labels(tmp_path: Path) -> None:
    records = [{"body": f"review {i}", "y": i % 2} for i in range(6)] + [{"body": "x", "y": 7}]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    spec = make_spec(
        "classification",
        columns={"text": "body", "label": "y"},
        labels=["negative", "positive"],
        maxInvalidFraction=0.2,
    )
    data = prepare(path, spec)
    assert data.labels == ["negative", "positive"]
    assert {r["label"] for r in data.train} == {"negative", "positive"}
    assert data.report["invalid"]["errors"] == [
        'line 7: label "7" is not one of the dataset labels (negative, positive)'
    ]


def test_preference_with_identical_answers_is_invalid(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "same", "rejected": "same"}])
    with pytest.raises(DataError, match='line 1: fields "chosen" and "rejected" are identical'):
        prepare(path, make_spec(objective="dpo"))
