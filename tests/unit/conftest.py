from __future__ import annotations

from typing import Any

import pytest

from finetune_api.spec import FineTuneJobSpec
from finetune_operator.builders import Owner
from finetune_operator.settings import OperatorSettings


@pytest.fixture
def owner() -> Owner:
    return Owner(name="support-classifier", namespace="ml", uid="0000-1111")


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(trainer_image="registry.local/trainer:test")


@pytest.fixture
def make_spec():
    def make(**overrides: Any) -> FineTuneJobSpec:
        raw: dict[str, Any] = {
            "model": {"name": "org/base"},
            "dataset": {"source": {"uri": "file:///data/train.jsonl"}},
        }
        raw.update(overrides)
        return FineTuneJobSpec.model_validate(raw)

    return make
