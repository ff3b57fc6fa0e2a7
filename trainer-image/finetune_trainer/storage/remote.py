"""A run's output directory mirrored to object storage (or the Hub), and its checkpoints with it.

Local layout and remote layout are the same (see ``finetune_trainer.outputs``); checkpoints live
under ``checkpoints/<run key>/`` where the run key is the run number plus a hash of the training
spec, so a rerun or a changed spec never resumes another run's optimizer state.

A checkpoint counts as synced only when its ``ftj-complete.json`` (written last, listing every file
and its size) is there; a pod killed mid-sync leaves a checkpoint that a restore skips. The results
count as published only when every file was uploaded and read back; until then the trainer reports
no remote output location.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import uuid
from pathlib import Path

from finetune_api.spec import TrainerConfig
from finetune_trainer.storage import objects
from finetune_trainer.storage.errors import StorageError, UploadFailed, with_retries
from finetune_trainer.storage.locations import HUB_SCHEME, is_remote, join, parse_hub, scheme_of

log = logging.getLogger(__name__)

FIELD = "spec.output.source.uri"
COMPLETE = "ftj-complete.json"
CHECKPOINTS = "checkpoints"
# Local files that are not results: the termination summary `ftj run` writes next to them.
NOT_RESULTS = ("termination-log",)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def run_key(config: TrainerConfig) -> str:
    """``run-<number>-<spec hash>``: unique to this run of this spec."""
    text = json.dumps(config.spec.wire(), sort_keys=True, separators=(",", ":"))
    return f"run-{config.job.run}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def remote_output_of(config: TrainerConfig) -> str | None:
    source = config.spec.output.source
    if source is not None and source.uri and is_remote(source.uri):
        return source.uri
    return None


class RemoteOutput:
    """Upload side of a run whose ``spec.output.source.uri`` is s3://, gs://, az:// or hf://."""

    def __init__(self, uri: str, local: Path, key: str) -> None:
        self.uri = uri.rstrip("/")
        self.local = local
        self.key = key
        self.hub = scheme_of(uri) == HUB_SCHEME
        self.synced: dict[int, str] = {}

    @property
    def checkpoints_uri(self) -> str:
        return join(self.uri, CHECKPOINTS, self.key)

    def preflight(self) -> None:
        """Write, read back and delete a small object, so a wrong bucket or a refusing policy fails
        the run before any GPU time is spent (permanent errors raise StorageError)."""
        if self.hub:
            return
        probe = join(self.uri, f".ftj-write-check-{uuid.uuid4().hex}")
        fs, path = objects.filesystem(probe)

        def check() -> None:
            fs.pipe_file(path, b"ok")
            if fs.cat_file(path) != b"ok":
                raise ConnectionError("the write check read back different bytes")
            fs.rm_file(path)

        with_retries(check, probe, FIELD)

    # --- checkpoints -------------------------------------------------------------------------
    def sync_checkpoint(self, checkpoint: Path) -> str:
        """Upload one finished checkpoint, then its completion note; prune remote ones gone locally."""
        match = _CHECKPOINT.match(checkpoint.name)
        if self.hub or match is None:
            return ""
        target = join(self.checkpoints_uri, checkpoint.name)
        uploaded = objects.upload_tree(checkpoint, target, FIELD)
        files = {u.uri[len(target) + 1 :]: u.size for u in uploaded}
        note = checkpoint.parent / f".{checkpoint.name}.{COMPLETE}"
        note.write_text(json.dumps({"step": int(match.group(1)), "files": files}))
        done = join(target, COMPLETE)
        fs, done_path = objects.filesystem(done)
        objects.upload_file(fs, note, done_path, done, FIELD)
        note.unlink(missing_ok=True)
        self.synced[int(match.group(1))] = target
        self._prune(checkpoint.parent)
        log.info("checkpoint %s synced to %s (%d files)", checkpoint.name, target, len(files))
        return target

    def _prune(self, local_root: Path) -> None:
        """Remote checkpoints the trainer rotated away locally go too (checkpointing.keep holds)."""
        kept = {p.name for p in local_root.iterdir() if _CHECKPOINT.match(p.name)}
        for step, uri in list(self.synced.items()):
            if f"checkpoint-{step}" not in kept:
                objects.remove_prefix(uri, FIELD)
                del self.synced[step]

    def remote_checkpoints(self) -> list[tuple[int, str]]:
        """Complete remote checkpoints of this run, newest first."""
        if self.hub:
            return []
        fs, path = objects.filesystem(self.checkpoints_uri)

        def listing() -> list[str]:
            try:
                return [str(p) for p in fs.ls(path, detail=False)]
            except FileNotFoundError:
                return []

        found = []
        for entry in with_retries(listing, self.checkpoints_uri, FIELD):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            match = _CHECKPOINT.match(name)
            marker = functools.partial(fs.exists, f"{entry}/{COMPLETE}")
            complete = with_retries(marker, self.checkpoints_uri, FIELD)
            if match and complete:
                found.append((int(match.group(1)), join(self.checkpoints_uri, name)))
        return sorted(found, reverse=True)

    def restore_checkpoint(self, local_root: Path, local_step: int | None) -> Path | None:
        """Download the newest complete remote checkpoint when it is newer than the local one."""
        for step, uri in self.remote_checkpoints():
            if local_step is not None and local_step >= step:
                return None
            target = local_root / f"checkpoint-{step}"
            objects.download(uri, target, FIELD)
            (target / COMPLETE).unlink(missing_ok=True)
            self.synced[step] = uri
            log.info("restored checkpoint %s from %s", target.name, uri)
            return target
        return None

    # --- results -----------------------------------------------------------------------------
    def publish(self, latest_checkpoint: Path | None) -> list[objects.Uploaded]:
        """Upload every result (and the latest checkpoint if not yet synced); raises UploadFailed."""

        def is_result(path: Path) -> bool:
            rel = path.relative_to(self.local)
            return rel.parts[0] != CHECKPOINTS and rel.as_posix() not in NOT_RESULTS

        try:
            if latest_checkpoint is not None:
                match = _CHECKPOINT.match(latest_checkpoint.name)
                if match and int(match.group(1)) not in self.synced:
                    self.sync_checkpoint(latest_checkpoint)
            if self.hub:
                return self._publish_to_hub()
            return objects.upload_tree(self.local, self.uri, FIELD, include=is_result)
        except StorageError as exc:
            raise UploadFailed(self.uri, str(exc)) from exc

    def _publish_to_hub(self) -> list[objects.Uploaded]:
        """The results without checkpoints, as one commit to the repository."""
        import shutil
        import tempfile

        from finetune_trainer.storage import hub

        with tempfile.TemporaryDirectory(dir=self.local.parent) as tmp:
            staging = Path(tmp) / "results"
            shutil.copytree(self.local, staging, ignore=shutil.ignore_patterns(CHECKPOINTS, *NOT_RESULTS))
            return hub.upload(staging, parse_hub(self.uri), FIELD)
