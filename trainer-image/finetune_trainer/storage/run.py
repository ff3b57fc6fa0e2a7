"""Everything storage does for one run, behind four calls the runner makes at its stage boundaries:
``prepare`` (check the output is writable, fetch inputs), ``resume_point`` (the newest checkpoint,
local or remote), ``callbacks`` (checkpoint sync) and ``publish`` (results up, verified)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from finetune_api.spec import Paths, TrainerConfig
from finetune_trainer.outputs import checkpoint_dir, checkpoint_step, latest_checkpoint
from finetune_trainer.storage.inputs import stage_inputs
from finetune_trainer.storage.remote import RemoteOutput, remote_output_of, run_key

log = logging.getLogger(__name__)


class RunStorage:
    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.output = Path(config.paths.output)
        self.key = run_key(config)
        uri = remote_output_of(config)
        self.remote = RemoteOutput(uri, self.output, self.key) if uri else None

    @property
    def checkpoint_root(self) -> Path:
        return checkpoint_dir(self.output) / self.key

    def prepare(self) -> Paths:
        """Fail fast on an output that cannot be written, then stage the inputs locally."""
        if self.remote is not None:
            self.remote.preflight()
        return stage_inputs(self.config.spec, self.config.paths)

    def resume_point(self, world: Any = None) -> Path | None:
        """This run's newest checkpoint: the local one, or the remote one when it is newer.

        One process per node (local rank 0) restores; the others wait for it at a barrier and then
        find the same checkpoint on the node's disk.
        """
        local_rank = getattr(world, "local_rank", 0)
        if self.remote is not None and local_rank == 0:
            local = latest_checkpoint(self.output, self.key)
            self.remote.restore_checkpoint(self.checkpoint_root, checkpoint_step(local))
        if getattr(world, "is_distributed", False):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()
        return latest_checkpoint(self.output, self.key)

    def callbacks(self) -> list[Any]:
        if self.remote is None:
            return []
        from finetune_trainer.storage.sync import SyncCheckpoints

        return [SyncCheckpoints(self.remote)]

    def publish(self) -> str | None:
        """Upload the results; returns the remote URI once all of them are verified (None: local)."""
        if self.remote is None:
            return None
        uploaded = self.remote.publish(latest_checkpoint(self.output, self.key))
        log.info(
            "results published to %s: %d objects, %d bytes",
            self.remote.uri,
            len(uploaded),
            sum(u.size for u in uploaded),
        )
        return self.remote.uri

    def checkpoint_uri(self, checkpoint: Path, base: str) -> str:
        """Where the user finds ``checkpoint``: its synced remote copy, else under ``base``."""
        step = checkpoint_step(checkpoint)
        if self.remote is not None:
            if step is not None and step in self.remote.synced:
                return self.remote.synced[step]
            return checkpoint.resolve().as_uri()
        try:
            return f"{base}/{checkpoint.relative_to(self.output).as_posix()}"
        except ValueError:
            return checkpoint.resolve().as_uri()
