"""The Hub path through the real huggingface_hub code, offline (HF_HUB_OFFLINE=1) against a local
directory laid out as a Hub cache: the Hub itself cannot be reached from the test machines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tiny
from runs import read_summary, trainer_env

from finetune_api.exitcodes import ExitCode

pytestmark = pytest.mark.trainer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_offlinetesttoken0123"


def hub_repo(cache: Path, kind: str, repo_id: str, files: Path, refs: tuple[str, ...]) -> None:
    """``<cache>/hub/<kind>s--org--name/{refs/<ref>, snapshots/<commit>/...}`` as the library writes it."""
    repo = cache / "hub" / f"{kind}s--{repo_id.replace('/', '--')}"
    shutil.copytree(files, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(COMMIT)


@pytest.fixture
def offline_hub(tmp_path: Path, llama_dir: Path) -> Path:
    cache = tmp_path / "cache"
    hub_repo(cache, "model", "org/tiny-llama", llama_dir, ("main", "v1"))
    data = tmp_path / "dataset-files"
    tiny.write_jsonl(data / "train.jsonl", tiny.prompt_completion_records(80))
    hub_repo(cache, "dataset", "org/colours", data, ("main",))
    return cache


def run_offline(tmp_path: Path, cache: Path, model: dict[str, str]) -> tuple[int, Path, str]:
    spec = {
        "model": model,
        "dataset": {
            "source": {"uri": "hf://datasets/org/colours/train.jsonl"},
            "leakage": "warn",
            "cleaning": {"dedup": {"near": False}},
        },
        "hyperparameters": {"maxSteps": 4, "batchSize": 8, "learningRate": 0.005, "maxSequenceLength": 64},
        "earlyStopping": {"enabled": False},
        "evaluation": {
            "maxNewTokens": 8,
            "maxTestSamples": 8,
            "compareBase": False,
            "generationMetrics": False,
        },
    }
    config = {
        "version": 1,
        "job": {"name": "hub", "namespace": "test"},
        "spec": spec,
        "paths": {
            "model": model["name"],  # no model.source: the operator passes the Hub id
            "dataset": "hf://datasets/org/colours/train.jsonl",
            "output": str(tmp_path / "out"),
        },
        "metricsPort": 0,
        "terminationLog": str(tmp_path / "termination-log"),
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    env = {**trainer_env(), "HF_HUB_OFFLINE": "1", "FTJ_STORAGE_CACHE": str(cache), "HF_TOKEN": TOKEN}
    proc = subprocess.run(
        [sys.executable, "-m", "finetune_trainer", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, path, proc.stdout + proc.stderr


def test_model_and_dataset_from_the_hub_cache_at_a_pinned_revision(offline_hub: Path, tmp_path: Path) -> None:
    code, config, log = run_offline(tmp_path, offline_hub, {"name": "org/tiny-llama", "revision": "v1"})
    assert code == ExitCode.SUCCEEDED, log[-3000:]
    assert f"snapshots/{COMMIT}" in log  # the pinned revision resolved to the cached commit
    assert read_summary(config)["metrics"]["step"] == 4
    assert TOKEN not in log


def test_an_unknown_revision_is_model_not_found(offline_hub: Path, tmp_path: Path) -> None:
    code, config, log = run_offline(tmp_path, offline_hub, {"name": "org/tiny-llama", "revision": "v9"})
    assert code == ExitCode.MODEL_NOT_FOUND, log[-3000:]
    summary = read_summary(config)
    assert summary["reason"] == "ModelNotFound"
    assert summary["message"].startswith("spec.model.name: hf://org/tiny-llama@v9: not found")
    assert TOKEN not in log


def test_an_unknown_repository_is_model_not_found(offline_hub: Path, tmp_path: Path) -> None:
    code, config, log = run_offline(tmp_path, offline_hub, {"name": "org/missing"})
    assert code == ExitCode.MODEL_NOT_FOUND, log[-3000:]
    assert read_summary(config)["message"].startswith("spec.model.name: hf://org/missing: not found")
