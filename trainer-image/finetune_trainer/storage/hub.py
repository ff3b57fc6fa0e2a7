"""The Hugging Face Hub through ``huggingface_hub``: models and dataset files down, results up.

Downloads use the library's own cache layout (``snapshot_download``), so ``HF_HUB_OFFLINE=1`` with a
pre-filled cache (or a model-cache volume) works without network, and a revision may be a branch,
a tag or a commit. The token comes from ``HF_TOKEN`` (the operator fills it from
``spec.secrets.hubToken``) and is only ever handed to the library, never logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from finetune_trainer.storage.errors import StorageError, UploadFailed, with_retries
from finetune_trainer.storage.locations import HubRef
from finetune_trainer.storage.objects import Uploaded

log = logging.getLogger(__name__)


def token() -> str | None:
    """The Hub token from HF_TOKEN, or from the file HF_TOKEN_PATH names; None means anonymous."""
    value = os.environ.get("HF_TOKEN", "").strip()
    if value:
        return value
    path = os.environ.get("HF_TOKEN_PATH")
    if path and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8").strip() or None
    return None


def download_kwargs(ref: HubRef, cache_dir: Path | None) -> dict[str, Any]:
    """Arguments for ``snapshot_download``: the pinned revision, the token, only the files asked for."""
    kwargs: dict[str, Any] = {
        "repo_id": ref.repo_id,
        "repo_type": ref.repo_type,
        "revision": ref.revision,
        "token": token(),
    }
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    if ref.path:
        kwargs["allow_patterns"] = [ref.path, f"{ref.path}/*"]
    return kwargs


def fetch(ref: HubRef, field: str, cache_dir: Path | None = None) -> Path:
    """Download (or find in the cache) ``ref``; returns the snapshot folder or the file in it."""
    from huggingface_hub import snapshot_download

    kwargs = download_kwargs(ref, cache_dir)
    folder = Path(with_retries(lambda: snapshot_download(**kwargs), ref.uri, field))
    target = folder / ref.path if ref.path else folder
    if not target.exists():
        raise StorageError("not-found", ref.uri, field, f"{ref.path} is not in the repository")
    log.info("%s: %s", ref.uri, target)
    return target


def upload(local_dir: Path, ref: HubRef, field: str) -> list[Uploaded]:
    """Push ``local_dir`` to a (private, created if missing) repository and check every file landed."""
    from huggingface_hub import HfApi

    api = HfApi(token=token())
    try:
        with_retries(
            lambda: api.create_repo(ref.repo_id, repo_type=ref.repo_type, private=True, exist_ok=True),
            ref.uri,
            field,
        )
        commit = with_retries(
            lambda: api.upload_folder(
                repo_id=ref.repo_id,
                repo_type=ref.repo_type,
                folder_path=str(local_dir),
                path_in_repo=ref.path or None,
                revision=ref.revision,
                commit_message="finetune-operator results",
            ),
            ref.uri,
            field,
        )
        oid = getattr(commit, "oid", None) or ref.revision
        listed = with_retries(
            lambda: list(
                api.list_repo_tree(
                    ref.repo_id,
                    path_in_repo=ref.path or None,
                    recursive=True,
                    revision=oid,
                    repo_type=ref.repo_type,
                )
            ),
            ref.uri,
            field,
        )
    except StorageError as exc:
        raise UploadFailed(ref.uri, str(exc)) from exc
    remote = {entry.path: getattr(entry, "size", None) for entry in listed}
    done = []
    for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = file.relative_to(local_dir).as_posix()
        key = f"{ref.path}/{rel}" if ref.path else rel
        if remote.get(key) != file.stat().st_size:
            raise UploadFailed(ref.uri, f"{key} is missing or has the wrong size after the commit")
        done.append(Uploaded(f"{ref.uri.rstrip('/')}/{rel}", file.stat().st_size))
    return done
