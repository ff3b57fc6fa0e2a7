"""The trainer's side of the operator contract: metrics endpoint, termination summary, exit codes,
outputs; and ``ftj run`` on a manifest end to end."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import tiny
import yaml
from runs import free_port, read_summary

from finetune_api.exitcodes import ExitCode
from finetune_api.metrics import Metric, Stage, metric_name
from finetune_api.summary import SUMMARY_MAX_BYTES, parse_summary
from finetune_trainer.run_record import RunRecord, write_summary
from finetune_trainer.runner import load_config, run, run_config_file

pytestmark = pytest.mark.trainer


class Scraper(threading.Thread):
    """Scrapes the endpoint until stopped, keeping the last page taken after the first step."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stop = threading.Event()
        self.page: str | None = None
        self.scrapes = 0
        self.stages: list[str] = []  # the stages the endpoint reported, in order

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    page = response.read().decode()
            except OSError:
                continue
            self.scrapes += 1
            if f"{metric_name(Metric.STEP)} 0.0" not in page:
                self.page = page
            stage = next((st for st in Stage.ALL if f'{{stage="{st}"}} 1.0' in page), None)
            if stage and (not self.stages or self.stages[-1] != stage):
                self.stages.append(stage)


@pytest.fixture(scope="module")
def ftj_run(tmp_path_factory: pytest.TempPathFactory, llama_dir: Path) -> dict[str, Any]:
    """``ftj run`` on a manifest whose paths are relative file:// URIs, scraped while it trains."""
    from finetune_trainer.cli import main

    root = tmp_path_factory.mktemp("ftj-run")
    tiny.write_jsonl(root / "data" / "train.jsonl", tiny.prompt_completion_records(80))
    (root / "models").mkdir()
    (root / "models" / "tiny").symlink_to(llama_dir)
    manifest = {
        "apiVersion": "finetuning.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "colours"},
        "spec": {
            "model": {"name": "tiny-llama", "source": {"uri": "file://models/tiny"}},
            "dataset": {
                "source": {"uri": "file://data/train.jsonl"},
                "leakage": "warn",
                "cleaning": {"dedup": {"near": False}},
            },
            "hyperparameters": {
                "maxSteps": 16,
                "batchSize": 8,
                "learningRate": 0.005,
                "maxSequenceLength": 64,
            },
            "checkpointing": {"everySteps": 8},
            "evaluation": {"maxNewTokens": 8},
            "output": {"mergeAdapter": True},
        },
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(manifest))
    port = free_port()
    scraper = Scraper(port)
    scraper.start()
    try:
        code = main(["run", str(path), "--output", str(root / "out"), "--metrics-port", str(port)])
    finally:
        scraper.stop.set()
        scraper.join()
    return {
        "code": code,
        "out": root / "out",
        "page": scraper.page,
        "scrapes": scraper.scrapes,
        "stages": scraper.stages,
        "manifest": path,
    }


def test_ftj_run_trains_a_manifest(ftj_run: dict[str, Any]) -> None:
    assert ftj_run["code"] == ExitCode.SUCCEEDED
    out: Path = ftj_run["out"]
    summary = parse_summary((out / "termination-log").read_text())
    assert summary["phase"] == "Succeeded"
    assert summary["metrics"]["step"] == 16
    assert summary["output"]["uri"] == out.resolve().as_uri()
    assert summary["checkpoint"]["step"] == 16
    assert re.fullmatch(  # checkpoints live under a per-run directory: run number and spec hash
        rf"{out.resolve().as_uri()}/checkpoints/run-1-[0-9a-f]{{10}}/checkpoint-16",
        summary["checkpoint"]["uri"],
    )
    assert summary["evaluation"]["test"]["loss"] < summary["evaluation"]["base"]["loss"]
    assert summary["evaluation"]["delta"]["loss"] < 0
    assert summary["metrics"]["tokens_per_second"] > 0
    dataset = summary["dataset"]
    assert dataset["train"] + dataset["validation"] + dataset["test"] == 80
    assert dataset["tokens"]["max"] > 0


def test_ftj_validate_checks_the_same_manifest(
    ftj_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from finetune_trainer.cli import main

    assert main(["validate", str(ftj_run["manifest"])]) == ExitCode.SUCCEEDED
    assert "the data is valid" in capsys.readouterr().out


def test_outputs_and_model_card(ftj_run: dict[str, Any]) -> None:
    out: Path = ftj_run["out"]
    for name in ("data_report.json", "evaluation.json", "training_log.json", "README.md"):
        assert (out / name).is_file(), name
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    report = json.loads((out / "data_report.json").read_text())
    assert report["tokens"]["max"] > 0
    card = (out / "README.md").read_text()
    sha = report["files"][0]["sha256"]
    assert sha in card
    assert "seed: 42" in card
    assert "- transformers " in card and "- peft " in card
    assert '"task": "causal-lm"' in card


def test_merged_model_is_16_bit_and_loads(ftj_run: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    merged = ftj_run["out"] / "merged"
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name for name, _ in model.named_parameters())
    config = json.loads((merged / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size


def test_metrics_endpoint_serves_every_contract_metric(ftj_run: dict[str, Any]) -> None:
    page = ftj_run["page"]
    assert page, f"no scrape caught the run training ({ftj_run['scrapes']} scrapes)"
    samples = [line for line in page.splitlines() if line and not line.startswith("#")]
    names = {line.split("{")[0].split(" ")[0] for line in samples}
    for short in Metric.ALL:
        assert metric_name(short) in names, short
    assert f'{metric_name(Metric.MEMORY_BYTES)}{{device="cpu"}}' in page
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in page.splitlines() if line[:1] != "#"}
    assert values[metric_name(Metric.TOTAL_STEPS)] == 16
    assert values[metric_name(Metric.STEP)] >= 1
    assert values[metric_name(Metric.TOKENS_TOTAL)] > 0


def test_metrics_endpoint_reports_the_stage_and_training_only_while_steps_run(
    ftj_run: dict[str, Any],
) -> None:
    """The operator judges a stall only in ``training``: after the last step the stage must leave it."""
    stages = ftj_run["stages"]
    assert stages[0] in (Stage.LOADING, Stage.DATA) and Stage.TRAINING in stages, stages
    last = len(stages) - 1 - stages[::-1].index(Stage.TRAINING)
    after = stages[last + 1 :]
    # The runner's stages after the last step, in order (mergeAdapter is on); a short one may fall
    # between two scrapes, the merge (a child process that loads the base again) does not.
    order = [Stage.EVALUATING, Stage.SAVING, Stage.MERGING, Stage.UPLOADING]
    assert after and after == sorted(after, key=order.index), stages
    assert Stage.MERGING in after, stages


def test_summary_fits_4_kib_with_a_huge_message(tmp_path: Path) -> None:
    record = RunRecord(
        metrics={f"m{i}": i * 1.5 for i in range(40)},
        evaluation={"test": {f"e{i}": float("nan") if i == 0 else i for i in range(40)}},
        output_uri="s3://bucket/out",
        checkpoint={"step": 7, "uri": "s3://bucket/out/checkpoints/checkpoint-7"},
    )
    path = tmp_path / "termination-log"
    write_summary(str(path), ExitCode.INVALID_DATA, "line 3: bad record; " * 1000, record)
    text = path.read_text()
    assert len(text.encode()) <= SUMMARY_MAX_BYTES
    summary = parse_summary(text)
    assert summary["reason"] == "InvalidData"
    assert summary["message"].endswith("...")
    assert summary["checkpoint"]["step"] == 7


def test_invalid_config_file_exits_2_with_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    log = tmp_path / "termination-log"
    path.write_text(json.dumps({"version": 1, "terminationLog": str(log), "spec": {"task": "poetry"}}))
    assert run_config_file(path) == ExitCode.INVALID_CONFIG
    summary = parse_summary(log.read_text())
    assert summary["reason"] == "InvalidConfig"
    assert "spec.task" in summary["message"]


def test_bad_data_exits_3_with_line_numbers(make_config) -> None:
    records: list[dict[str, Any]] = [{"prompt": "a", "completion": "b"}, {"prompt": 3}, {"nonsense": True}]
    config = make_config(records=records, dataset={"format": "prompt-completion"})
    assert run(load_config(config)) == ExitCode.INVALID_DATA
    summary = read_summary(config)
    assert summary["reason"] == "InvalidData"
    assert "line 2" in summary["message"]
    assert summary["dataset"]["invalid"] == 2


def test_missing_model_exits_6(make_config, tmp_path: Path) -> None:
    config = make_config()
    raw = json.loads(config.read_text())
    raw["paths"]["model"] = str(tmp_path / "no-such-model")
    config.write_text(json.dumps(raw))
    assert run(load_config(config)) == ExitCode.MODEL_LOAD_FAILED
    assert read_summary(config)["reason"] == "ModelLoadFailed"


def test_quality_gate_on_an_unknown_metric_is_a_config_error(make_config) -> None:
    config = make_config(evaluation={"qualityGate": {"metric": "accuracy", "min": 0.9}})
    assert run(load_config(config)) == ExitCode.INVALID_CONFIG


def test_missed_quality_gate_exits_4_after_saving(make_config) -> None:
    config = make_config(
        hyperparameters={"maxSteps": 2},
        evaluation={"qualityGate": {"metric": "perplexity", "max": 1.5}, "compareBase": False},
    )
    assert run(load_config(config)) == ExitCode.QUALITY_GATE_FAILED
    summary = read_summary(config)
    assert summary["reason"] == "QualityGateFailed"
    assert "perplexity" in summary["message"]
    assert summary["evaluation"]["test"]["perplexity"] > 1.5
