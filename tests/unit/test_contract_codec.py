from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic.alias_generators import to_snake

from finetune_api.exitcodes import NON_RETRIABLE_EXIT_CODES, ExitCode, meaning_of
from finetune_api.spec import FineTuneJobSpec, Paths
from finetune_api.status import FineTuneJobStatus
from finetune_api.summary import SUMMARY_MAX_BYTES, Summary, SummaryError, parse_summary
from finetune_operator.status import apply_summary, read_summary
from finetune_trainer.data.pipeline import prepare_data
from finetune_trainer.data.report import length_stats
from finetune_trainer.evaluation import delta
from finetune_trainer.review import regression_delta
from finetune_trainer.run_record import dataset_summary
from summaries import trainer_summary


def test_exit_code_classes():
    assert ExitCode.RETRIABLE not in NON_RETRIABLE_EXIT_CODES
    assert {2, 3, 4, 5, 6, 7, 8, 9, 10, 137} == set(NON_RETRIABLE_EXIT_CODES)
    assert ExitCode.OUTPUT_UPLOAD_FAILED not in NON_RETRIABLE_EXIT_CODES
    assert meaning_of(1).retriable and meaning_of(1).reason == "TrainerCrashed"


def _data_report(tmp_path: Path) -> dict[str, Any]:
    """A real data report: the trainer's data stage on a file with a duplicate and an e-mail address."""
    rows = [
        {"prompt": f"question {i} about topic {i % 7}", "completion": f"answer number {i}"} for i in range(40)
    ]
    rows += [rows[3], {"prompt": "mail me at someone@example.com", "completion": "no"}]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    spec = FineTuneJobSpec.model_validate(
        {"model": {"name": "m"}, "dataset": {"source": {"uri": f"file://{data}"}, "leakage": "warn"}}
    )
    prepared = prepare_data(spec, Paths(model="m", dataset=str(data), output=str(tmp_path / "out")))
    prepared.report["tokens"] = length_stats([len(r["prompt"].split()) for r in rows], 6)
    return prepared.report


def _snake_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {to_snake(k) if k != "rougeL" else k: _snake_keys(v) for k, v in value.items()}
    return value


def test_the_summary_round_trips_from_the_trainers_encoder_into_status(tmp_path):
    """Everything the trainer reports arrives in status unchanged: a figure the trainer emits that the
    contract's models do not know (or a renamed one) fails here, not in a cluster."""
    tuned = {"loss": 0.51, "perplexity": 1.67, "rougeL": 0.42, "bleu": 12.5}
    base = {"loss": 2.5, "perplexity": 12.2, "rougeL": 0.1, "bleu": 2.0}
    metrics = {
        "step": 40, "total_steps": 40, "epoch": 2.0, "tokens_total": 5120, "first_train_loss": 3.1,
        "train_loss": 0.42, "eval_loss": 0.5123, "best_eval_loss": 0.5, "best_step": 30,
        "learning_rate": 2e-4, "train_runtime_seconds": 12.5, "tokens_per_second": 409.6,
        "gpu_memory_bytes": 2**30,
    }  # fmt: skip
    evaluation = {
        "test": tuned,
        "base": base,
        "delta": delta(tuned, base),
        "review": {"samples": 5, "file": "review_samples.jsonl", "with_base": True},
        "regression": {
            **regression_delta(2.0, 2.1),
            "base_accuracy": 0.5,
            "tuned_accuracy": 0.48,
            "records": 50,
        },
    }
    dataset = dataset_summary(_data_report(tmp_path))
    assert {"read", "train", "test", "duplicates_removed", "redactions", "tokens"} <= set(dataset)
    checkpoint = {"step": 40, "uri": "s3://bucket/run/checkpoints/checkpoint-40"}
    text = trainer_summary(
        0, "done", metrics=metrics, evaluation=evaluation, dataset=dataset,
        output_uri="s3://bucket/run", checkpoint=checkpoint,
    )  # fmt: skip

    summary = read_summary(text)
    st = FineTuneJobStatus()
    apply_summary(st, summary)
    wire = json.loads(json.dumps(st.wire()))

    assert _snake_keys(wire["metrics"]) == metrics
    assert _snake_keys(wire["evaluation"]) == _snake_keys(evaluation)
    assert _snake_keys(wire["dataset"]) == _snake_keys(dataset)
    assert wire["output"] == {"uri": "s3://bucket/run"}
    assert wire["lastCheckpoint"] == checkpoint
    assert summary.phase == "Succeeded" and summary.reason == "Succeeded" and summary.message == "done"


def test_a_failure_summary_names_the_exit_codes_reason():
    summary = read_summary(trainer_summary(int(ExitCode.INVALID_DATA), "line 3: bad JSON"))
    assert (summary.phase, summary.reason, summary.message) == ("Failed", "InvalidData", "line 3: bad JSON")
    assert summary.metrics is None and summary.evaluation is None


def test_oversized_summary_is_trimmed_message_first():
    text = trainer_summary(int(ExitCode.INVALID_DATA), "x" * 10000, metrics={"train_loss": 1.0})
    assert len(text.encode()) <= SUMMARY_MAX_BYTES
    summary = read_summary(text)
    assert summary.reason == "InvalidData" and summary.metrics is not None
    assert summary.metrics.train_loss == 1.0
    assert summary.message.endswith("...")


def test_huge_details_are_dropped_but_reason_survives():
    evaluation = {"test": {f"metric_{i}_{'k' * 50}": float(i) for i in range(64)}}
    text = trainer_summary(0, "done", evaluation=evaluation)
    assert len(text.encode()) <= SUMMARY_MAX_BYTES
    summary = read_summary(text)
    assert summary.reason == "Succeeded" and summary.evaluation is None


def test_a_figure_outside_the_contract_is_left_out_not_the_summary(caplog):
    text = trainer_summary(0, "done", metrics={"train_loss": 0.4, "step": "many"})
    summary = Summary.model_validate_json(text)
    assert summary.metrics is not None and summary.metrics.train_loss == 0.4 and summary.metrics.step is None
    assert "metrics.step" in caplog.text


def test_a_figure_the_contract_does_not_know_is_named_when_the_trainer_writes(caplog):
    """A trainer change that adds a figure without adding it to finetune_api says so in its log (the
    closed models would drop it silently otherwise)."""
    trainer_summary(
        0, "done", evaluation={"test": {"loss": 1.0}, "regression": {"records": 3, "new_score": 1}}
    )
    assert "evaluation.regression.new_score" in caplog.text


def test_an_older_trainers_snake_case_summary_still_reads():
    """Trainer images before the typed contract wrote snake_case keys (and may still run during an
    operator upgrade)."""
    text = json.dumps(
        {
            "version": 1, "phase": "Succeeded", "reason": "Succeeded", "message": "done",
            "metrics": {"best_step": 30, "eval_loss": 0.5},
            "dataset": {"read": 10, "duplicatesRemoved": {"exact": 1}},
            "evaluation": {"test": {"loss": 0.5}, "regression": {"tuned_loss": 1.0, "records": 5}},
        }
    )  # fmt: skip
    summary = read_summary(text)
    assert summary.metrics is not None and summary.metrics.best_step == 30
    assert summary.dataset is not None and summary.dataset.duplicates_removed == {"exact": 1}
    assert summary.evaluation is not None and summary.evaluation.regression is not None
    assert summary.evaluation.regression.tuned_loss == 1.0


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"version": 9}', "version"),
        (json.dumps({"version": 1, "metrics": 3}), "metrics"),
        ("{}" + " " * 5000, "over"),
    ],
)
def test_bad_summaries_say_why(text, why):
    with pytest.raises(SummaryError, match=why):
        parse_summary(text)


def test_shared_modules_never_import_torch_or_the_trainer():
    code = (
        "import sys, pkgutil, importlib, finetune_api, finetune_operator.__main__;"
        "api = pkgutil.walk_packages(finetune_api.__path__, 'finetune_api.');"
        "[importlib.import_module(m.name) for m in api];"
        "print(sorted(m for m in ('torch', 'finetune_trainer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
