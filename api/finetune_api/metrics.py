"""Prometheus metric names, shared by the trainer's exporter and the operator's progress mirror."""

from __future__ import annotations

METRICS_PREFIX = "finetune_trainer_"


class Metric:
    STEP = "step"
    TOTAL_STEPS = "total_steps"
    EPOCH = "epoch"
    TRAIN_LOSS = "train_loss"
    EVAL_LOSS = "eval_loss"
    BEST_EVAL_LOSS = "best_eval_loss"
    LEARNING_RATE = "learning_rate"
    GRAD_NORM = "grad_norm"
    TOKENS_PER_SECOND = "tokens_per_second"
    TOKENS_TOTAL = "tokens_total"
    SAMPLES_PER_SECOND = "samples_per_second"
    MEMORY_BYTES = "memory_bytes"
    ETA_SECONDS = "eta_seconds"
    LAST_STEP_TIMESTAMP_SECONDS = "last_step_timestamp_seconds"

    ALL: tuple[str, ...] = (
        STEP,
        TOTAL_STEPS,
        EPOCH,
        TRAIN_LOSS,
        EVAL_LOSS,
        BEST_EVAL_LOSS,
        LEARNING_RATE,
        GRAD_NORM,
        TOKENS_PER_SECOND,
        TOKENS_TOTAL,
        SAMPLES_PER_SECOND,
        MEMORY_BYTES,
        ETA_SECONDS,
        LAST_STEP_TIMESTAMP_SECONDS,
    )


def metric_name(short: str) -> str:
    return METRICS_PREFIX + short
