"""What the trainer's exit status means: the codes, their reasons, which ones are retried."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


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
