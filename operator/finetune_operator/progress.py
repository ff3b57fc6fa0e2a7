"""Fold the rank-0 trainer's metrics into status while a run is Running, and decide when to write them
(pure; scrape.py reads them, progress_loop.py writes them)."""

from __future__ import annotations

from datetime import UTC, datetime

from finetune_api.conditions import ConditionType, Reason
from finetune_api.metrics import Metric, Stage
from finetune_api.results import TrainingMetrics
from finetune_api.status import FineTuneJobStatus, Progress
from finetune_api.wellknown import timestamp
from finetune_operator.status import condition, parse_time, set_condition


def stage_name(values: dict[str, float]) -> str | None:
    """The trainer's stage from ``scrape.parse_metrics``' values, or None when it exports none."""
    code = values.get(Metric.STAGE)
    return Stage.ALL[int(code)] if code is not None and 0 <= code < len(Stage.ALL) else None


def _finite(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def apply_progress(
    status: FineTuneJobStatus,
    values: dict[str, float],
    now: datetime,
    stall_timeout_seconds: int,
    generation: int | None,
) -> None:
    """Fold one scrape into status; the Stalled condition flips when the step stops advancing."""
    prev = status.progress or Progress()
    scraped = Metric.STEP in values
    if not scraped:
        # A failed or empty scrape keeps the last good numbers (the PROGRESS column must not flap);
        # the Stalled check below still runs on the last heartbeat.
        values = {
            **{k: float(v) for k, v in ((Metric.STEP, prev.step), (Metric.TOTAL_STEPS, prev.total_steps))
               if v is not None},
            **{k: float(v) for k, v in ((Metric.EPOCH, prev.epoch), (Metric.ETA_SECONDS, prev.eta_seconds))
               if v is not None},
        }  # fmt: skip
    step = int(values[Metric.STEP]) if Metric.STEP in values else None
    total = int(values[Metric.TOTAL_STEPS]) if values.get(Metric.TOTAL_STEPS) else None
    heartbeat = prev.last_heartbeat
    stamp = values.get(Metric.LAST_STEP_TIMESTAMP_SECONDS)
    now_s = timestamp(now)
    if stamp:
        heartbeat = timestamp(datetime.fromtimestamp(stamp, UTC))
    elif step is not None and step != prev.step:
        heartbeat = now_s
    stage = stage_name(values) if scraped else prev.stage
    stage_since = prev.stage_since
    if stage != prev.stage:
        # First sight of training: its latest step is the best known start (a trainer an hour past
        # its last step is stalled now, not 15 minutes from now); a change of stage starts now.
        first_training = prev.stage is None and stage == Stage.TRAINING and heartbeat
        stage_since = (heartbeat if first_training else now_s) if stage else None
    percent = int(100 * step / total) if step is not None and total else None
    status.progress = Progress(
        step=step,
        total_steps=total,
        percent=percent,
        summary=f"{step}/{total}" if step is not None and total else None,
        epoch=_round(values.get(Metric.EPOCH)),
        eta_seconds=_round(values.get(Metric.ETA_SECONDS), 0),
        last_heartbeat=heartbeat,
        stage=stage,
        stage_since=stage_since,
    )
    old = status.metrics or TrainingMetrics()
    status.metrics = TrainingMetrics.model_validate(
        {
            **old.model_dump(exclude_none=True),
            **{
                k: v
                for k, v in {
                    "train_loss": _round(_finite(values.get(Metric.TRAIN_LOSS)), 4),
                    "eval_loss": _round(_finite(values.get(Metric.EVAL_LOSS)), 4),
                    "best_eval_loss": _round(_finite(values.get(Metric.BEST_EVAL_LOSS)), 4),
                    "learning_rate": _finite(values.get(Metric.LEARNING_RATE)),
                    "tokens_per_second": _round(values.get(Metric.TOKENS_PER_SECOND), 1),
                    "gpu_memory_bytes": values.get(Metric.MEMORY_BYTES),
                }.items()
                if v is not None
            },
        }
    )
    _judge_stall(status, stage, stage_since, heartbeat, now, stall_timeout_seconds, generation)


def _judge_stall(
    status: FineTuneJobStatus,
    stage: str | None,
    stage_since: str | None,
    heartbeat: str | None,
    now: datetime,
    timeout: int,
    generation: int | None,
) -> None:
    """Stalled: no step for ``timeout`` seconds of training. The clock starts at the latest step, or
    when training (re)started after another stage; a trainer that exports no stage is judged from
    its steps alone. Outside training (evaluating, merging, uploading ...) no step is expected."""
    training = stage in (None, Stage.TRAINING)
    since = max((parse_time(t) for t in (heartbeat, stage_since if stage else None) if t), default=None)
    stalled = training and since is not None and (now - since).total_seconds() > timeout
    current = condition(status, ConditionType.STALLED)
    if not stalled and current is None:
        return
    if stalled:
        reason, message = Reason.NO_PROGRESS, f"No step completed since {timestamp(since)}."
    elif not training:
        reason, message = Reason.NOT_TRAINING, f"The trainer is {stage}; no training step is expected."
    else:
        reason, message = Reason.PROGRESSING, ""
    status.conditions = set_condition(
        status.conditions,
        ConditionType.STALLED,
        stalled,
        reason,
        message,
        timestamp(now),
        generation,
    )


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def due(
    last_written_at: float | None, now: float, old: FineTuneJobStatus, new: FineTuneJobStatus, interval: float
) -> bool:
    """Write ``new`` (the status with the latest scrape folded in) over ``old`` (the status as stored) now?

    Progress moves on every scrape; writing each move was one status PUT per training job per sweep.
    So a moved step, loss or ETA waits until ``interval`` seconds passed since the run's last progress
    write (``last_written_at``, None when unknown, e.g. after a restart), while what a user or a
    controller acts on is written at once (``urgent``). Times are monotonic seconds."""
    if new.wire() == old.wire():
        return False
    if last_written_at is None or now - last_written_at >= interval:
        return True
    return urgent(old, new)


def urgent(old: FineTuneJobStatus, new: FineTuneJobStatus) -> bool:
    """A change someone acts on: a phase or condition (Stalled) flips, the run's first progress, the
    trainer's stage or planned steps, a new evaluation result, checkpoint or final evaluation."""
    if old.phase != new.phase or _flags(old) != _flags(new):
        return True
    was, now = old.progress or Progress(), new.progress or Progress()
    if (was.step is None) != (now.step is None):
        return True
    if (was.stage, was.total_steps) != (now.stage, now.total_steps):
        return True
    before, after = old.metrics or TrainingMetrics(), new.metrics or TrainingMetrics()
    if (before.eval_loss, before.best_eval_loss) != (after.eval_loss, after.best_eval_loss):
        return True
    return old.last_checkpoint != new.last_checkpoint or old.evaluation != new.evaluation


def _flags(status: FineTuneJobStatus) -> set[tuple[str, str, str]]:
    return {(c.type, c.status, c.reason) for c in status.conditions}
