"""After training: review samples, the forgetting check and the licence, on a tiny model that trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import tiny
from runs import output_of, read_summary

from finetune_api.exitcodes import ExitCode
from finetune_trainer.review import DEFAULT_REVIEW_PROMPTS, REVIEW_FILE
from finetune_trainer.runner import load_config, run

pytestmark = pytest.mark.trainer


def with_paths(config_path: Path, **paths: str) -> Path:
    config = json.loads(config_path.read_text())
    config["paths"].update(paths)
    config_path.write_text(json.dumps(config))
    return config_path


def test_review_samples_and_regression_delta_are_written(make_config, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What colour is the snow?"}) + "\n")
    same_kind = tiny.write_jsonl(tmp_path / "general.jsonl", tiny.prompt_completion_records(40))
    path = make_config(
        "prompt-completion",
        name="review",
        evaluation={"reviewPrompts": ["Say something rude.", "What colour is the sky?"],
                    "regressionSet": {"source": {"uri": same_kind.as_uri()}, "maxSamples": 16}},
    )  # fmt: skip
    with_paths(path, reviewPrompts=str(prompts), regression=str(same_kind))
    assert run(load_config(path)) == ExitCode.SUCCEEDED
    summary = read_summary(path)
    lines = (output_of(path) / REVIEW_FILE).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in rows] == [
        "Say something rude.",
        "What colour is the sky?",
        "What colour is the snow?",
    ]
    assert all(isinstance(r["base"], str) and isinstance(r["tuned"], str) for r in rows)
    assert summary["evaluation"]["review"] == {"samples": 3, "file": REVIEW_FILE, "with_base": True}
    regression = summary["evaluation"]["regression"]
    assert regression["records"] == 16
    # The set is like the training data: training lowered its loss.
    assert regression["tuned_loss"] < regression["base_loss"]
    assert regression["relative_change"] == pytest.approx(
        (regression["tuned_loss"] - regression["base_loss"]) / regression["base_loss"], rel=1e-3
    )


def test_default_review_prompts_for_causal_lm(make_config) -> None:
    path = make_config("prompt-completion", name="defaults")
    assert run(load_config(path)) == ExitCode.SUCCEEDED
    rows = (output_of(path) / REVIEW_FILE).read_text().splitlines()
    assert len(rows) == len(DEFAULT_REVIEW_PROMPTS)
    assert read_summary(path)["evaluation"]["review"]["samples"] == len(DEFAULT_REVIEW_PROMPTS)


def test_forgetting_beyond_max_regression_fails_the_run_with_exit_4(make_config, tmp_path: Path) -> None:
    # Answers made of bytes the training data never has: training moves probability to the tokens it
    # has, so the loss on these rises.
    other = [{"prompt": f"Is the {t} alive?", "completion": " 7#9@3% 8&2! 5^4*6"} for t in tiny.THINGS]
    general = tiny.write_jsonl(tmp_path / "general.jsonl", other)
    path = make_config(
        "prompt-completion",
        name="forgets",
        evaluation={
            "reviewPrompts": [],
            "regressionSet": {"source": {"uri": general.as_uri()}, "maxRegression": 0.01},
        },
    )
    with_paths(path, regression=str(general))
    assert run(load_config(path)) == ExitCode.QUALITY_GATE_FAILED
    summary = read_summary(path)
    assert summary["reason"] == "QualityGateFailed"
    assert "regression gate" in summary["message"] and "maxRegression" in summary["message"]
    assert summary["evaluation"]["regression"]["relative_change"] > 0.01
    assert not (output_of(path) / REVIEW_FILE).exists()


def test_invalid_regression_records_fail_as_invalid_data_naming_the_field(
    make_config, tmp_path: Path
) -> None:
    bad = tiny.write_jsonl(tmp_path / "bad.jsonl", [{"text": "not a prompt-completion record"}])
    path = make_config(
        "prompt-completion", name="badreg", evaluation={"regressionSet": {"source": {"uri": bad.as_uri()}}}
    )
    with_paths(path, regression=str(bad))
    assert run(load_config(path)) == ExitCode.INVALID_DATA
    message = read_summary(path)["message"]
    assert "spec.evaluation.regressionSet.source" in message and "line 1" in message


def card(model_dir: Path, tmp_path: Path, front_matter: dict[str, Any]) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / "README.md").write_text("---\n" + json.dumps(front_matter) + "\n---\n# A model\n")
    return copy


def test_model_card_licence_not_allowed_stops_before_training(make_config, llama_dir, tmp_path: Path) -> None:
    model = card(llama_dir, tmp_path, {"license": "other", "license_name": "Llama3.1"})
    path = with_paths(make_config("prompt-completion", name="licence"), model=str(model))
    config = json.loads(path.read_text())
    config["allowedLicences"] = ["apache-2.0", "mit"]
    path.write_text(json.dumps(config))
    assert run(load_config(path)) == ExitCode.INVALID_CONFIG
    summary = read_summary(path)
    assert "LicenceNotAllowed" in summary["message"] and "'llama3.1'" in summary["message"]
    assert not (output_of(path) / "checkpoints").exists()


def test_the_licence_goes_into_the_output_model_card(make_config, llama_dir, tmp_path: Path) -> None:
    model = card(llama_dir, tmp_path, {"license": "apache-2.0"})
    path = with_paths(
        make_config("prompt-completion", name="carded", evaluation={"reviewPrompts": []}), model=str(model)
    )
    config = json.loads(path.read_text())
    config["allowedLicences"] = ["apache-2.0"]
    path.write_text(json.dumps(config))
    assert run(load_config(path)) == ExitCode.SUCCEEDED
    front = (output_of(path) / "README.md").read_text().split("---")[1]
    assert "license: apache-2.0" in front


def test_licence_from_spec_then_card_then_config_json(llama_dir, tmp_path: Path) -> None:
    from finetune_trainer.licence import model_licence

    model = tmp_path / "bare"
    shutil.copytree(llama_dir, model)
    (model / "README.md").unlink(missing_ok=True)
    assert model_licence(None, model) is None
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "license": "Apache-2.0"}))
    assert model_licence(None, model) == "apache-2.0"
    carded = card(model, tmp_path / "c", {"license": "mit"})
    assert model_licence(None, carded) == "mit"
    assert model_licence("Llama3.1", carded) == "llama3.1"


def test_classification_regression_set_reports_accuracy_too(make_config, tmp_path: Path) -> None:
    general = tiny.write_jsonl(tmp_path / "general.jsonl", tiny.text_label_records(30))
    path = make_config(
        "text-label",
        name="clsreg",
        task="classification",
        evaluation={"regressionSet": {"source": {"uri": general.as_uri()}, "maxSamples": 20}},
    )
    with_paths(path, regression=str(general))
    assert run(load_config(path)) == ExitCode.SUCCEEDED
    regression = read_summary(path)["evaluation"]["regression"]
    assert regression["records"] == 20 and "relative_change" in regression, regression
    for which in ("base", "tuned"):  # a share of the 20 records
        assert 0.0 <= regression[f"{which}_accuracy"] <= 1.0, regression
        assert regression[f"{which}_accuracy"] * 20 == pytest.approx(
            round(regression[f"{which}_accuracy"] * 20)
        )
