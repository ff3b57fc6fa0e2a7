"""Which exit code of the contract an exception means, so the operator can tell a bad spec (fail the
Job at once) from a broken node (retry and resume)."""

from __future__ import annotations

import logging
import traceback

from pydantic import ValidationError

from finetune_api.exitcodes import ExitCode

log = logging.getLogger(__name__)


class Failure(Exception):
    """A failure whose exit code is already decided."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[Failure], tuple[ExitCode, str]]:
        return Failure, (self.code, self.message)  # travels between ranks (broadcast_from_rank0)


def classify(exc: BaseException, stage: str) -> tuple[ExitCode, str]:
    """The contract's exit code and a message for an exception raised in ``stage``."""
    from finetune_trainer.callbacks import LossNotFinite, Terminated
    from finetune_trainer.data.pipeline import DataError
    from finetune_trainer.evaluation import QualityGateFailed
    from finetune_trainer.modeling import ModelLoadFailed, ModelSourceUnavailable
    from finetune_trainer.storage import StorageError, UploadFailed, exit_code_of

    known: list[tuple[type[BaseException], ExitCode]] = [
        (DataError, ExitCode.INVALID_DATA),
        (ModelLoadFailed, ExitCode.MODEL_LOAD_FAILED),
        (ModelSourceUnavailable, ExitCode.RETRIABLE),
        (LossNotFinite, ExitCode.LOSS_NOT_FINITE),
        (QualityGateFailed, ExitCode.QUALITY_GATE_FAILED),
        (Terminated, ExitCode.RETRIABLE),
        (ValidationError, ExitCode.INVALID_CONFIG),
        (MemoryError, ExitCode.OOM_KILLED),
        (KeyboardInterrupt, ExitCode.RETRIABLE),
    ]
    if isinstance(exc, Failure):
        return exc.code, exc.message
    if isinstance(exc, StorageError):
        return exit_code_of(exc), str(exc)
    if isinstance(exc, UploadFailed):
        return ExitCode.OUTPUT_UPLOAD_FAILED, (
            f"{exc}; the local results and the last checkpoint are kept and the next attempt retries"
        )
    for kind, code in known:
        if isinstance(exc, kind):
            return code, str(exc) or kind.__name__
    if _is_out_of_memory(exc):
        return (
            ExitCode.OOM_KILLED,
            f"out of memory in stage {stage}: {exc}; lower batchSize or maxSequenceLength",
        )
    if stage == "setup" and isinstance(exc, (ValueError, TypeError)):
        # Trainer and TRL configs refuse argument combinations the CRD cannot express as rules.
        return ExitCode.INVALID_CONFIG, f"the trainer refused the configuration: {exc}"
    log.error("unexpected error in stage %s:\n%s", stage, "".join(traceback.format_exception(exc)))
    # Storage, network and collective failures, and anything unforeseen: retried a bounded number of
    # times (backoffLimit), each retry resuming from the last checkpoint.
    return ExitCode.RETRIABLE, f"stage {stage} failed: {type(exc).__name__}: {exc}"


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, torch.OutOfMemoryError)
