"""The contract between the operator and the trainer: exit codes, the exit summary, metric names.

Both sides import this module, so it stays import-light (standard library only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

SUMMARY_VERSION = 1
SUMMARY_MAX_BYTES = 4096
METRICS_PREFIX = "finetune_trainer_"


class ExitCode(IntEnum):
    """What the trainer's exit status means. Non-retriable codes fail the Job at once."""

    SUCCEEDED = 0
    INVALID_CONFIG = 2
    INVALID_DATA = 3
    QUALITY_GATE_FAILED = 4
    LOSS_NOT_FINITE = 5
    MODEL_LOAD_FAILED = 6
    MODEL_NOT_FOUND = 7
    DATASET_NOT_FOUND = 8
    STORAGE_ACCESS_DENIED = 9
    OUTPUT_LOCATION_NOT_FOUND = 10
    RETRIABLE = 75
    OUTPUT_UPLOAD_FAILED = 76
    OOM_KILLED = 137


@dataclass(frozen=True)
class ExitMeaning:
    reason: str
    retriable: bool
    description: str


EXIT_MEANINGS: dict[int, ExitMeaning] = {
    ExitCode.SUCCEEDED: ExitMeaning("Succeeded", False, "Training and evaluation finished."),
    ExitCode.INVALID_CONFIG: ExitMeaning("InvalidConfig", False, "The trainer config is invalid."),
    ExitCode.INVALID_DATA: ExitMeaning("InvalidData", False, "The dataset failed validation."),
    ExitCode.QUALITY_GATE_FAILED: ExitMeaning(
        "QualityGateFailed", False, "A test metric missed the quality gate."
    ),
    ExitCode.LOSS_NOT_FINITE: ExitMeaning(
        "LossNotFinite", False, "The loss became NaN or infinite (often: learning rate too high)."
    ),
    ExitCode.MODEL_LOAD_FAILED: ExitMeaning("ModelLoadFailed", False, "The base model could not be loaded."),
    ExitCode.MODEL_NOT_FOUND: ExitMeaning(
        "ModelNotFound", False, "The base model's repository, revision or objects do not exist."
    ),
    ExitCode.DATASET_NOT_FOUND: ExitMeaning(
        "DatasetNotFound", False, "A dataset, validation or test file (or its bucket) does not exist."
    ),
    ExitCode.STORAGE_ACCESS_DENIED: ExitMeaning(
        "StorageAccessDenied", False, "Object storage or the Hub refused the credentials or the request."
    ),
    ExitCode.OUTPUT_LOCATION_NOT_FOUND: ExitMeaning(
        "OutputLocationNotFound", False, "The output bucket or container does not exist."
    ),
    ExitCode.RETRIABLE: ExitMeaning(
        "InfrastructureError", True, "Storage, rendezvous or a collective failed; the run resumes."
    ),
    ExitCode.OUTPUT_UPLOAD_FAILED: ExitMeaning(
        "OutputUploadFailed",
        True,
        "The results could not be uploaded and verified; the local copy and the last checkpoint are "
        "kept and the run is retried.",
    ),
    ExitCode.OOM_KILLED: ExitMeaning(
        "OutOfMemory", False, "Killed for memory; retrying with the same batch size would fail again."
    ),
}

NON_RETRIABLE_EXIT_CODES: tuple[int, ...] = tuple(
    sorted(code for code, meaning in EXIT_MEANINGS.items() if code != 0 and not meaning.retriable)
)


def meaning_of(exit_code: int) -> ExitMeaning:
    """Meaning of any exit status; unknown non-zero codes count as retriable crashes."""
    if exit_code in EXIT_MEANINGS:
        return EXIT_MEANINGS[exit_code]
    return ExitMeaning("TrainerCrashed", True, f"The trainer exited with code {exit_code}.")


# Prometheus metric names (without the prefix), shared by the trainer's exporter and the
# operator's progress mirror.
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


class SummaryError(ValueError):
    """The termination message is not a summary this version understands."""


def encode_summary(summary: dict[str, Any], limit: int = SUMMARY_MAX_BYTES) -> str:
    """Serialise an exit summary within ``limit`` bytes: shorten the message first, then drop details."""
    data = {"version": SUMMARY_VERSION, **summary}
    text = _dump(data)
    if len(text.encode()) <= limit:
        return text
    message = str(data.get("message", ""))
    overflow = len(text.encode()) - limit
    if message:
        keep = max(0, len(message.encode()) - overflow - 3)
        data["message"] = message.encode()[:keep].decode(errors="ignore") + "..."
        text = _dump(data)
    for key in ("evaluation", "metrics", "checkpoint", "output", "message"):
        if len(text.encode()) <= limit:
            break
        data.pop(key, None)
        text = _dump(data)
    if len(text.encode()) > limit:
        text = _dump({"version": SUMMARY_VERSION, "phase": data.get("phase"), "reason": data.get("reason")})
    return text


def decode_summary(text: str | None) -> dict[str, Any]:
    """Parse a termination message; raises SummaryError with why it cannot be used."""
    if not text or not text.strip():
        raise SummaryError("empty termination message")
    if len(text.encode()) > SUMMARY_MAX_BYTES:
        raise SummaryError(f"termination message is {len(text.encode())} bytes, over {SUMMARY_MAX_BYTES}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SummaryError(f"termination message is not JSON: {exc.msg} at char {exc.pos}") from exc
    if not isinstance(data, dict):
        raise SummaryError("termination message is not a JSON object")
    if data.get("version") != SUMMARY_VERSION:
        raise SummaryError(f"unsupported summary version {data.get('version')!r}")
    for key in ("metrics", "evaluation", "output", "checkpoint"):
        if key in data and not isinstance(data[key], dict):
            raise SummaryError(f"summary field {key!r} is not an object")
    return data


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False, default=str)
