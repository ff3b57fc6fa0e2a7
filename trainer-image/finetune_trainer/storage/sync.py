"""A Trainer callback that copies each checkpoint to the remote output as soon as it is saved.

A failed sync does not stop training (the next checkpoint tries again, and the results upload at
the end must succeed for the run to succeed); it is logged with the URI and the cause.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from finetune_trainer.storage.errors import StorageError
from finetune_trainer.storage.remote import RemoteOutput

log = logging.getLogger(__name__)


class SyncCheckpoints(TrainerCallback):
    def __init__(self, remote: RemoteOutput) -> None:
        self.remote = remote
        self.failures = 0

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or args.output_dir is None:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            return
        try:
            self.remote.sync_checkpoint(checkpoint)
        except StorageError as exc:
            self.failures += 1
            log.warning("checkpoint %s not synced (training goes on): %s", checkpoint.name, exc)
