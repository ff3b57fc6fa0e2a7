"""The untuned base measured on the test split (and the review and regression checks) for comparison.

Without DeepSpeed the base is measured before ``train()``: the model is already where it trains.
Under DeepSpeed it cannot be: before ``train()`` a ZeRO-3 model is only parameter shards with no
engine to gather them, and a ZeRO-1/2 model still sits in host memory in float32. Transformers' own
"evaluate before train" path builds a second, inference-only engine (ZeRO-3 only) and deletes the
optimizer from the shared DeepSpeed config. So under DeepSpeed the base is measured when training
begins (``on_train_begin``): the engine exists, the weights are still the base's, and the forward
passes go through the same engine, dtype and devices as the tuned model's evaluation afterwards.

On resume the weights at ``on_train_begin`` are the checkpoint's, not the base's; the measurement made
at step 0 is therefore kept in the trainer state's log history (saved with every checkpoint in
``trainer_state.json``) and recovered from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

log = logging.getLogger(__name__)

LOG_KEY = "base_measurement"

Measurement = dict[str, Any]


def recorded(log_history: list[dict[str, Any]]) -> Measurement | None:
    """The base measurement kept in a (resumed) trainer state, or None when there is none."""
    for entry in log_history:
        value = entry.get(LOG_KEY)
        if isinstance(value, dict):
            return value
    return None


class MeasureBaseAtTrainBegin(TrainerCallback):
    """Runs ``measure`` once, when a fresh run begins training, and keeps its result in the state.

    ``seconds`` is the time the measurement took: it falls inside the trainer's ``train_runtime``,
    which the run's tokens/s must not count.
    """

    def __init__(self, measure: Callable[[], Measurement]) -> None:
        self.measure = measure
        self.result: Measurement | None = None
        self.seconds = 0.0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step == 0:
            start = time.monotonic()
            self.result = self.measure()
            self.seconds = time.monotonic() - start
            history: list[dict[str, Any]] = state.log_history  # typed as floats; JSON holds any value
            history.append({"step": 0, LOG_KEY: self.result})
            return
        self.result = recorded(state.log_history)
        if self.result is None:
            log.warning(
                "resumed at step %d from a checkpoint without the base measurement: no base comparison",
                state.global_step,
            )


def measure(trainer: Any, recipe: Any, ctx: Any, tests: list[dict[str, Any]], checks: Any) -> Measurement:
    """The trainer's current (base) model on the test split, plus the checks' base answers and loss."""
    from finetune_trainer import evaluation

    result: Measurement = {"evaluation": {}}
    if ctx.spec.evaluation.compare_base and tests:
        result["evaluation"] = evaluation.evaluate(trainer, recipe, ctx, tests, "base")
        log.info(
            "base model on the test split: %s", {k: round(v, 4) for k, v in result["evaluation"].items()}
        )
    checks.measure(trainer, recipe, ctx, "base")
    _forget_zero3_trace(trainer)
    if "base" in checks.answers:
        result["answers"] = checks.answers["base"]
    if "base" in checks.losses:
        result["regression_loss"] = checks.losses["base"]
    if "base" in checks.accuracies:
        result["regression_accuracy"] = checks.accuracies["base"]
    return result


def apply(result: Measurement | None, checks: Any) -> dict[str, float]:
    """Puts a (recovered) measurement's answers and loss back into ``checks``; returns its test metrics."""
    if result is None:
        return {}
    if isinstance(result.get("answers"), list):
        checks.answers["base"] = [str(a) for a in result["answers"]]
    if isinstance(result.get("regression_loss"), int | float):
        checks.losses["base"] = float(result["regression_loss"])
    if isinstance(result.get("regression_accuracy"), int | float):
        checks.accuracies["base"] = float(result["regression_accuracy"])
    metrics = result.get("evaluation")
    return {str(k): float(v) for k, v in metrics.items()} if isinstance(metrics, dict) else {}


def _forget_zero3_trace(trainer: Any) -> None:
    """Under ZeRO-3 the first forward passes record the order in which parameters are gathered, and
    later steps prefetch by it. Recorded from these evaluation passes (no backward), it misleads the
    first training step ("Cannot partition a param in flight"); so every gathered parameter is released
    and the trace dropped, and the first training step records its own, as in a run without this."""
    engine: Any = getattr(trainer, "deepspeed", None)
    offload = getattr(getattr(engine, "optimizer", None), "parameter_offload", None)
    if offload is None:  # no engine yet, or not ZeRO-3
        return
    coordinator = offload.get_param_coordinator()
    coordinator.release_and_reset_all(engine.module)
    if not coordinator.is_invalid_trace():  # nothing recorded (no forward ran) or already dropped
        coordinator._invalidate_trace()  # no public way to drop the trace in deepspeed 0.19
