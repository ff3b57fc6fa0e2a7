"""The base measurement under DeepSpeed: taken at step 0 of a fresh run, recovered on resume.

The measurement itself runs under ZeRO-3 in tests/trainer/test_deepspeed.py
(test_runner_full_zero3_two_processes); here only the step-0 / resume bookkeeping, with a real
TrainerState saved and loaded as a checkpoint does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerControl, TrainerState, TrainingArguments

from finetune_trainer import base_model


class Checks:
    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.losses: dict[str, float] = {}
        self.accuracies: dict[str, float] = {}


def test_fresh_run_measures_once_and_a_resumed_run_recovers_it(tmp_path: Path) -> None:
    calls: list[int] = []

    def measure() -> dict[str, Any]:
        calls.append(1)
        return {
            "evaluation": {"loss": 2.5, "perplexity": 12.18},
            "answers": ["hi"],
            "regression_loss": 3.0,
            "regression_accuracy": 0.75,
        }

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    state = TrainerState()
    fresh = base_model.MeasureBaseAtTrainBegin(measure)
    fresh.on_train_begin(args, state, TrainerControl())
    assert calls == [1] and fresh.result is not None

    # A checkpoint at step 4 saves the state; the resumed run starts from it and must not measure
    # the checkpoint's weights as "the base".
    state.global_step = 4
    state.save_to_json(str(tmp_path / "trainer_state.json"))
    resumed_state = TrainerState.load_from_json(str(tmp_path / "trainer_state.json"))
    resumed = base_model.MeasureBaseAtTrainBegin(measure)
    resumed.on_train_begin(args, resumed_state, TrainerControl())
    assert calls == [1], "the resumed run measured its checkpoint as the base"
    assert resumed.seconds == 0.0

    checks = Checks()
    assert base_model.apply(resumed.result, checks) == {"loss": 2.5, "perplexity": 12.18}
    assert checks.answers == {"base": ["hi"]} and checks.losses == {"base": 3.0}
    assert checks.accuracies == {"base": 0.75}


def test_resume_without_a_recorded_measurement_reports_no_base() -> None:
    state = TrainerState(global_step=8)
    callback = base_model.MeasureBaseAtTrainBegin(lambda: {"evaluation": {"loss": 1.0}})
    callback.on_train_begin(
        TrainingArguments(output_dir="/tmp/unused", report_to=[]), state, TrainerControl()
    )
    assert callback.result is None
    assert base_model.apply(callback.result, Checks()) == {}
