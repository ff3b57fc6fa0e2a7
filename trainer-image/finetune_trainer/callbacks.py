"""Trainer callbacks that turn training events into the operator contract.

- ``FiniteLossGuard``: a NaN/Inf loss stops the run before the poisoned weights are checkpointed;
  the runner then exits with ``ExitCode.LOSS_NOT_FINITE``.
- ``GracefulStop``: SIGTERM (preemption, eviction, node drain) saves a checkpoint at the next step
  boundary and stops; the runner exits ``RETRIABLE`` and the next pod resumes from it.
- ``MetricsCallback``: feeds the Prometheus gauges the operator mirrors into status.
- ``ProgressLog``: one plain log line per logging step (kubectl logs shows no progress bars well).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from types import FrameType
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from finetune_api.metrics import Metric, Stage
from finetune_trainer.distributed import cpu_group, gather_from_all, is_multi_process
from finetune_trainer.metrics_server import TrainerMetrics, memory_in_use

log = logging.getLogger(__name__)


class LossNotFinite(Exception):
    """The training or validation loss became NaN or infinite."""


class Terminated(BaseException):
    """SIGTERM arrived; a checkpoint was saved if training had started.

    A BaseException, like KeyboardInterrupt: raised from the signal handler wherever the main thread
    is (a model load, a Parquet read), it must pass through the ``except Exception`` blocks that turn
    errors there into permanent failures (ModelLoadFailed, DataError). Preemption is always retriable.
    """


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


class FiniteLossGuard(TrainerCallback):
    """Stop at the first non-finite loss or gradient norm and keep that step out of the checkpoints.

    A NaN gradient norm comes before the NaN loss: the optimizer has just written NaN into the weights,
    and the loss only shows it a step later. (With fp16 loss scaling an infinite norm is normal: the
    scaler skips that step.)

    Sees each logged loss: with ``loggingSteps`` N the mean of N steps, which any NaN step turns NaN
    (``logging_nan_inf_filter=False``: the HF default silently replaces a NaN step loss by the running
    mean, which would hide exactly what this guard looks for); ``LogBeforeSave`` makes every save step
    a logging step, so no checkpoint is written past an unchecked step.
    """

    def __init__(self) -> None:
        self.failure: str | None = None

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        for key in ("loss", "eval_loss", "grad_norm"):
            if logs and key in logs and not _finite(logs[key]):
                if key == "grad_norm" and args.fp16 and not math.isnan(float(logs[key])):
                    continue  # fp16 loss scaling: an infinite norm skips the step and lowers the scale
                self._trip(state, control, key, logs[key])

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if metrics and "eval_loss" in metrics and not _finite(metrics["eval_loss"]):
            self._trip(state, control, "eval_loss", metrics["eval_loss"])

    def _trip(self, state: TrainerState, control: TrainerControl, key: str, value: Any) -> None:
        if self.failure is None:
            what = {"loss": "training loss", "eval_loss": "validation loss", "grad_norm": "gradient norm"}[
                key
            ]
            self.failure = (
                f"{what} became {value} at step {state.global_step}; the learning rate "
                "may be too high, or the data holds extreme values"
            )
            log.error("%s", self.failure)
        control.should_training_stop = True
        control.should_save = False
        control.should_evaluate = False


class LogBeforeSave(TrainerCallback):
    """A step that saves a checkpoint also logs, so the NaN guard has checked that step's loss first.

    With ``hyperparameters.loggingSteps`` above 1 the loss is read (a host sync) only every N steps,
    as the mean over them (a NaN in any of them makes the mean NaN: ``logging_nan_inf_filter`` is
    off). A checkpoint between two logging steps could hold weights a NaN step already wrote; this
    makes each save step a logging step, and the trainer logs before it saves. It must run after
    every callback that sets ``should_save`` (the trainer's own, ``SaveEvery``, ``GracefulStop``).
    """

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if control.should_save:
            control.should_log = True


class GracefulStop(TrainerCallback):
    """SIGTERM handling: all ranks stop at the same step boundary, save one checkpoint, and stop.

    Ranks must agree: in a multi-node run only the preempted pod's workers get SIGTERM, and even on
    one node the signal lands in the middle of different steps. A rank that stopped alone would leave
    its peers waiting in a collective (the next step's gradient all-reduce, the checkpoint's gather)
    until the collective timeout. So after every optimizer step the ranks all-reduce their "stop"
    flags (max) on a CPU (gloo) group, which needs no GPU synchronisation; when any rank was signalled,
    every rank saves at that same step and stops.

    The pod's grace period has to cover one optimizer step plus a checkpoint write; the operator sets
    terminationGracePeriodSeconds accordingly. Before training starts there is nothing to save, so
    the signal ends the run at once (``Terminated``, exit 75).
    """

    def __init__(self) -> None:
        self.requested = False  # this rank was signalled
        self.agreed = False  # some rank was signalled: every rank stops at ``stopped_at``
        self.stopped_at: int | None = None
        self.training = False
        self._previous: Any = None
        self._group: Any = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if not self.training:
            raise Terminated("SIGTERM before training started")
        log.warning("SIGTERM: saving a checkpoint at the end of this step, then stopping")

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._group = cpu_group() if is_multi_process() else False
        self.training = True
        if self._any_rank(self.requested):  # arrived while the trainer was being set up
            self._stop(state, control, save=False)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.training = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._any_rank(self.requested):
            self._stop(state, control, save=True)

    def _stop(self, state: TrainerState, control: TrainerControl, *, save: bool) -> None:
        if not self.agreed:
            self.agreed, self.stopped_at = True, state.global_step
            if not self.requested:
                log.warning("another rank got SIGTERM: saving a checkpoint at this step, then stopping")
        control.should_save = save
        control.should_training_stop = True

    def _any_rank(self, flag: bool) -> bool:
        if self._group is False:
            return flag
        import torch
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self._group)
        return bool(value.item())


class SaveEvery(TrainerCallback):
    """A checkpoint every ``steps`` optimizer steps, whatever the trainer's own save interval is.

    With early stopping the trainer saves at each validation (the best checkpoint must exist to be
    loaded at the end), which by default is once per epoch; ``checkpointing.everySteps`` still holds.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.steps > 0 and state.global_step % self.steps == 0:
            control.should_save = True


class MetricsCallback(TrainerCallback):
    """Prometheus gauges from trainer events; rates are measured between logging steps. The stage
    reads ``training`` from the first step, ``evaluating`` while an evaluation round runs between
    steps and once training ended (the final evaluation comes next): no step is expected then."""

    def __init__(self, metrics: TrainerMetrics, samples_per_step: int) -> None:
        self.metrics = metrics
        self.samples_per_step = samples_per_step
        self._last: tuple[float, int, int] | None = None  # time, step, tokens

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.metrics.set_stage(Stage.TRAINING)
        self.metrics.set(Metric.TOTAL_STEPS, state.max_steps)
        self.metrics.set(Metric.STEP, state.global_step)
        self._last = (time.time(), state.global_step, state.num_input_tokens_seen)
        if state.best_metric is not None:
            self.metrics.on_eval_loss(state.best_metric)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.metrics.set_stage(Stage.TRAINING)

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.metrics.stage == Stage.TRAINING:
            self.metrics.set_stage(Stage.EVALUATING)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.metrics.set_stage(Stage.EVALUATING)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.metrics.on_step(state.global_step, state.max_steps, state.epoch or 0.0)
        self.metrics.on_tokens(state.num_input_tokens_seen)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        # Every rank logs at the same steps, so the memory of every rank's GPU can be gathered here.
        self.metrics.update_memory(gather_from_all(memory_in_use()))
        for key, metric in (
            ("loss", Metric.TRAIN_LOSS),
            ("learning_rate", Metric.LEARNING_RATE),
            ("grad_norm", Metric.GRAD_NORM),
        ):
            if key in logs and isinstance(logs[key], (int, float)):
                self.metrics.set(metric, float(logs[key]))
        now = time.time()
        if self._last is not None and "loss" in logs:
            then, step, tokens = self._last
            elapsed = now - then
            if elapsed > 0 and state.global_step > step:
                self.metrics.set(Metric.TOKENS_PER_SECOND, (state.num_input_tokens_seen - tokens) / elapsed)
                self.metrics.set(
                    Metric.SAMPLES_PER_SECOND, (state.global_step - step) * self.samples_per_step / elapsed
                )
            self._last = (now, state.global_step, state.num_input_tokens_seen)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if metrics and "eval_loss" in metrics and _finite(metrics["eval_loss"]):
            self.metrics.on_eval_loss(float(metrics["eval_loss"]))


class ProgressLog(TrainerCallback):
    """``step 40/200 (20%) epoch 0.80 loss 1.9312 lr 1.8e-04 eta 3m12s`` lines for ``kubectl logs``."""

    def __init__(self, metrics: TrainerMetrics) -> None:
        self.metrics = metrics

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs or not ({"loss", "eval_loss"} & logs.keys()):
            return
        parts = [f"step {state.global_step}/{state.max_steps}"]
        if state.max_steps:
            parts[0] += f" ({100 * state.global_step // state.max_steps}%)"
        parts.append(f"epoch {state.epoch or 0.0:.2f}")
        for key, label, fmt in (
            ("loss", "loss", ".4f"),
            ("eval_loss", "eval_loss", ".4f"),
            ("learning_rate", "lr", ".2e"),
            ("grad_norm", "grad_norm", ".3f"),
        ):
            if key in logs and isinstance(logs[key], (int, float)):
                parts.append(f"{label} {logs[key]:{fmt}}")
        eta = self.metrics.value(Metric.ETA_SECONDS)
        if math.isfinite(eta) and eta > 0:
            parts.append(f"eta {_duration(eta)}")
        log.info("%s", " ".join(parts))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
