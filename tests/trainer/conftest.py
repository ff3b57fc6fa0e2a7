"""Fixtures for trainer tests: tiny models saved once per session, data files, and a config factory.

Nothing here downloads: the Llama and BERT are random-init and their tokenizers are trained on the
spot (see ``tiny``). ``make_config`` writes a complete TrainerConfig JSON for the runner with the
test defaults below (few steps, small batches, no near-duplicate pass) and returns its path.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny
from runs import REPO  # noqa: F401

from finetune_api.spec import TrainerConfig

# Two shared cores: more threads only fight over them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

BASE_SPEC: dict[str, Any] = {
    "task": "causal-lm",
    "method": "lora",
    "objective": "sft",
    "model": {"name": "tiny-llama"},
    "dataset": {
        "source": {"uri": "file:///placeholder"},
        "leakage": "warn",
        "cleaning": {"dedup": {"near": False}},
    },
    "hyperparameters": {
        "maxSteps": 12,
        "batchSize": 8,
        "learningRate": 0.005,
        "maxSequenceLength": 64,
        "warmupRatio": 0.0,
        # Runs of a dozen steps: the tests read every step's loss (the default, 10, is tested in
        # test_speed.py: test_default_logging_interval_logs_every_save_step).
        "loggingSteps": 1,
    },
    "earlyStopping": {"enabled": False},
    "checkpointing": {"everySteps": 4, "keep": 2},
    "evaluation": {"maxNewTokens": 8, "maxTestSamples": 8},
}

DATA = {
    "prompt-completion": lambda: tiny.prompt_completion_records(80),
    "messages": lambda: tiny.messages_records(80),
    "preference": lambda: tiny.preference_records(80),
    "text-label": lambda: tiny.text_label_records(90),
}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a None value removes the key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_bert(tmp_path_factory.mktemp("tiny-bert"))


MakeConfig = Callable[..., Path]


@pytest.fixture
def make_config(tmp_path: Path, llama_dir: Path, bert_dir: Path) -> MakeConfig:
    """``make_config(fmt="prompt-completion", records=None, metrics_port=0, **spec_overrides) -> path``."""

    def make(
        fmt: str = "prompt-completion",
        records: list[dict[str, Any]] | None = None,
        metrics_port: int = 0,
        name: str = "run",
        **spec_overrides: Any,
    ) -> Path:
        root = tmp_path / name
        data = tiny.write_jsonl(root / "data.jsonl", records if records is not None else DATA[fmt]())
        spec = merge(BASE_SPEC, spec_overrides)
        spec["dataset"]["source"] = {"uri": data.as_uri()}
        model = bert_dir if spec.get("task") == "classification" else llama_dir
        config = {
            "version": 1,
            "job": {"name": name, "namespace": "test"},
            "spec": spec,
            "paths": {"model": str(model), "dataset": str(data), "output": str(root / "out")},
            "metricsPort": metrics_port,
            "terminationLog": str(root / "termination-log"),
        }
        TrainerConfig.model_validate(config)  # a broken fixture fails here, not inside the run
        path = root / "config.json"
        path.write_text(json.dumps(config))
        return path

    return make
