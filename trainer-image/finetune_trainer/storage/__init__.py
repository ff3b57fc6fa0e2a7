"""Models, datasets and outputs wherever they live: local paths and PVCs, object storage (s3://,
gs://, az:// through fsspec) and the Hugging Face Hub (hf:// through huggingface_hub).

- ``inputs.stage_inputs``: remote model and data files into the local cache, verified;
- ``remote.RemoteOutput``: results and checkpoints up to the output URI, verified;
- ``exit_code_of``: the contract's exit code for a storage failure.
"""

from __future__ import annotations

from finetune_api.exitcodes import ExitCode
from finetune_trainer.storage.errors import ACCESS_DENIED, NOT_FOUND, StorageError, UploadFailed

__all__ = ["StorageError", "UploadFailed", "exit_code_of"]


def exit_code_of(error: StorageError) -> ExitCode:
    """Missing things and refused credentials are permanent; everything else is retried."""
    if error.kind == ACCESS_DENIED:
        return ExitCode.STORAGE_ACCESS_DENIED
    if error.kind == NOT_FOUND:
        if error.field.startswith("spec.model"):
            return ExitCode.MODEL_NOT_FOUND
        if error.field.startswith("spec.output"):
            return ExitCode.OUTPUT_LOCATION_NOT_FOUND
        return ExitCode.DATASET_NOT_FOUND
    return ExitCode.RETRIABLE
