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
    STAGE = "stage"  # labelled {stage=<Stage>}: 1 for the current stage, 0 for the others

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
        STAGE,
    )


class Stage:
    """What the trainer is doing (the ``stage`` label of ``finetune_trainer_stage``).

    Training steps are expected only in ``TRAINING``: the operator's Stalled condition and the
    FineTuneJobStalled alert judge the step heartbeat in that stage alone, so a long final
    evaluation, merge or upload is not a stall.
    """

    LOADING = "loading"  # configuration, inputs fetched, model and tokenizer loaded, trainer set up
    DATA = "data"  # the dataset loaded, validated, cleaned and split
    TRAINING = "training"  # optimizer steps (a checkpoint save between steps included)
    EVALUATING = "evaluating"  # evaluation rounds during training, the base and the final evaluation
    SAVING = "saving"  # the adapter or model, reports and the model card written
    MERGING = "merging"  # the adapter merged into the base model
    UPLOADING = "uploading"  # results uploaded to the output location and verified

    ALL: tuple[str, ...] = (LOADING, DATA, TRAINING, EVALUATING, SAVING, MERGING, UPLOADING)


def metric_name(short: str) -> str:
    return METRICS_PREFIX + short
