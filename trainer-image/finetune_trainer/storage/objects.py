"""Object storage (``s3://``, ``gs://``, ``az://``) through fsspec: verified, resumable transfers.

Downloads land in the cache directory under a name derived from the URI and keep the object's base
name (so data errors still say ``train.jsonl line 7``). A download writes ``<file>.part`` and renames
it only after its size, and its MD5 where the store's ETag/hash gives one, match; a ``.part`` left by
a killed pod is continued from where it stopped when the object has not changed. A completed file
carries a ``<file>.ftj.json`` note of the object it came from, so a retry or the next run with the
same inputs downloads nothing.

Uploads go through the store's multipart upload above ``MULTIPART_CHUNK`` and are read back
(size, and the ETag recomputed from the local bytes) before they count as done.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_trainer.storage.errors import NOT_FOUND, StorageError, with_retries
from finetune_trainer.storage.locations import join, scheme_of

log = logging.getLogger(__name__)

BLOCK = 8 << 20
READ_AHEAD = 64 << 20  # bytes per ranged GET: fewer, larger requests
MULTIPART_CHUNK = 64 << 20
UPLOAD_PARTS_IN_FLIGHT = 4
# Part sizes common clients use; a multipart ETag is checked when one of them explains it.
_PART_SIZES = (MULTIPART_CHUNK, 8 << 20, 5 << 20, 16 << 20, 50 << 20, 100 << 20)
_EXTRAS = {"s3": "s3fs", "gs": "gcsfs", "az": "adlfs"}
GCS_KEY_FILE = "gcs-key.json"


@dataclass(frozen=True)
class RemoteObject:
    key: str  # path relative to the location it was listed under ("" for a single object)
    path: str  # the filesystem path (bucket/key)
    size: int
    etag: str | None
    md5: str | None  # hex MD5 when the store gives one outright (GCS md5Hash, Azure content_md5)


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``uri`` and the path inside it.

    Credentials come from the environment the operator filled from ``spec.secrets.storage``
    (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*), or from workload identity; they are
    never passed on a command line or logged.
    """
    import fsspec

    scheme = scheme_of(uri)
    if scheme not in _EXTRAS:
        raise ValueError(f"{uri}: not an object-store URI (s3://, gs://, az://)")
    try:
        fs = fsspec.filesystem(scheme, **_options(scheme))
    except ImportError as exc:
        raise StorageError(
            NOT_FOUND, uri, "scheme", f"{_EXTRAS[scheme]} is not installed in this trainer image"
        ) from exc
    if scheme == "s3":
        fs.retries = 1  # s3fs's own retry loop (a class attribute); ours adds backoff and a budget
    return fs, fs._strip_protocol(uri)


def _options(scheme: str) -> dict[str, Any]:
    common: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config: dict[str, Any] = {
            "connect_timeout": 10,
            "read_timeout": 120,
            # One level of retries (ours, with backoff) rather than three nested ones.
            "retries": {"max_attempts": 2, "mode": "standard"},
        }
        if endpoint:
            config["s3"] = {"addressing_style": "path"}
        opts: dict[str, Any] = {**common, "config_kwargs": config}
        if endpoint:
            opts["endpoint_url"] = endpoint
        return opts
    if scheme == "gs":
        return {**common, "token": _gcs_token()}
    opts = dict(common)
    for env, key in (
        ("AZURE_STORAGE_CONNECTION_STRING", "connection_string"),
        ("AZURE_STORAGE_ACCOUNT_NAME", "account_name"),
        ("AZURE_STORAGE_ACCOUNT_KEY", "account_key"),
        ("AZURE_STORAGE_SAS_TOKEN", "sas_token"),
    ):
        if os.environ.get(env):
            opts[key] = os.environ[env]
    if "account_key" not in opts and "connection_string" not in opts and "sas_token" not in opts:
        opts["anon"] = False  # DefaultAzureCredential: workload identity or a managed identity
    return opts


def _gcs_token() -> str:
    """A key file named by GOOGLE_APPLICATION_CREDENTIALS, or the storage Secret's gcs-key.json, or
    the environment's default credentials (GKE Workload Identity, a metadata server)."""
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        return named
    mounted = os.path.join(os.environ.get("FTJ_STORAGE_CREDENTIALS_DIR", ""), GCS_KEY_FILE)
    if os.environ.get("FTJ_STORAGE_CREDENTIALS_DIR") and os.path.isfile(mounted):
        return mounted
    return "google_default"


def _etag(info: dict[str, Any]) -> str | None:
    value = info.get("ETag") or info.get("etag")
    return str(value).strip('"') if value else None


def _md5_of_info(info: dict[str, Any]) -> str | None:
    value = info.get("md5Hash")  # GCS, base64
    if value:
        return base64.b64decode(value).hex()
    settings = info.get("content_settings")
    content_md5 = getattr(settings, "content_md5", None) if settings is not None else None
    if content_md5:
        return bytes(content_md5).hex()
    etag = _etag(info)
    if etag and len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower()):
        return etag.lower()  # a single-part S3 upload: the ETag is the MD5
    return None


def list_objects(fs: Any, path: str, uri: str, field: str) -> list[RemoteObject]:
    """The object at ``path``, or every object under it when it is a prefix ("directory")."""
    info = with_retries(lambda: fs.info(path), uri, field)
    if info.get("type") != "directory":
        return [_remote("", path, info)]
    found: dict[str, dict[str, Any]] = with_retries(lambda: fs.find(path, detail=True), uri, field)
    objects = []
    root = path.rstrip("/") + "/"
    for full, entry in sorted(found.items()):
        if entry.get("type") == "directory" or full.endswith("/"):
            continue
        objects.append(_remote(full[len(root) :] if full.startswith(root) else full, full, entry))
    if not objects:
        raise StorageError(NOT_FOUND, uri, field, "the prefix holds no objects")
    return objects


def _remote(key: str, path: str, info: dict[str, Any]) -> RemoteObject:
    return RemoteObject(key, path, int(info.get("size") or 0), _etag(info), _md5_of_info(info))


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives an object uploaded from ``path`` in parts of ``part_size`` bytes."""
    digests = []
    with path.open("rb") as handle:
        for part in iter(lambda: handle.read(part_size), b""):
            digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    if len(digests) <= 1:
        return (digests[0] if digests else hashlib.md5(b"", usedforsecurity=False).digest()).hex()
    return hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest() + f"-{len(digests)}"


def content_matches(local: Path, obj: RemoteObject) -> bool | None:
    """True/False when the store's hash can be checked against ``local``; None when it cannot."""
    if obj.md5:
        return file_md5(local) == obj.md5
    if obj.etag and "-" in obj.etag:
        parts = obj.etag.rsplit("-", 1)[1]
        if parts.isdigit():
            for size in _PART_SIZES:
                if -(-obj.size // size) == int(parts) and multipart_etag(local, size) == obj.etag:
                    return True
    return None


def _note_path(local: Path) -> Path:
    return local.with_name(local.name + ".ftj.json")


def _identity(obj: RemoteObject) -> dict[str, Any]:
    return {"size": obj.size, "etag": obj.etag, "md5": obj.md5}


def download_object(fs: Any, obj: RemoteObject, local: Path, uri: str, field: str) -> bool:
    """Fetch one object to ``local`` (verified, resumable); False when the cached copy was current."""
    note = _note_path(local)
    try:
        if local.is_file() and json.loads(note.read_text()) == _identity(obj):
            return False
    except (OSError, ValueError):
        pass
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(local.name + ".part")
    part_note = local.with_name(local.name + ".part.json")
    try:
        if json.loads(part_note.read_text()) != _identity(obj):
            part.unlink(missing_ok=True)
    except (OSError, ValueError):
        part.unlink(missing_ok=True)
    part_note.write_text(json.dumps(_identity(obj)))

    def fetch() -> None:
        offset = part.stat().st_size if part.exists() else 0
        if offset > obj.size:
            part.unlink()
            offset = 0
        if offset:
            log.info("resuming %s at byte %d of %d", uri, offset, obj.size)
        if offset < obj.size:
            with fs.open(obj.path, "rb", block_size=READ_AHEAD) as src, part.open("ab") as dst:
                src.seek(offset)
                for block in iter(lambda: src.read(BLOCK), b""):
                    dst.write(block)
        size = part.stat().st_size
        if size != obj.size:
            raise ConnectionError(f"got {size} of {obj.size} bytes")

    with_retries(fetch, uri, field)
    if content_matches(part, obj) is False:
        part.unlink(missing_ok=True)
        part_note.unlink(missing_ok=True)
        raise StorageError("transient", uri, field, "the downloaded bytes do not match the object's hash")
    part.replace(local)
    part_note.unlink(missing_ok=True)
    note.write_text(json.dumps(_identity(obj)))
    return True


def download(uri: str, dest: Path, field: str) -> Path:
    """Download the object or prefix ``uri`` under ``dest``; returns the local file or directory."""
    fs, path = filesystem(uri)
    objects = list_objects(fs, path, uri, field)
    fetched = 0
    if len(objects) == 1 and objects[0].key == "":
        local = dest / (Path(path).name or "object")
        fetched += download_object(fs, objects[0], local, uri, field)
        target = local
    else:
        for obj in objects:
            fetched += download_object(fs, obj, dest / obj.key, join(uri, obj.key), field)
        target = dest
    total = sum(o.size for o in objects)
    log.info("%s: %d objects, %d bytes (%d downloaded, others cached)", uri, len(objects), total, fetched)
    return target


@dataclass(frozen=True)
class Uploaded:
    uri: str
    size: int


def upload_file(fs: Any, local: Path, remote: str, uri: str, field: str) -> Uploaded:
    """Upload one file (multipart above MULTIPART_CHUNK) and read it back before calling it done."""
    size = local.stat().st_size

    def put() -> RemoteObject:
        fs.put_file(str(local), remote, chunksize=MULTIPART_CHUNK, max_concurrency=UPLOAD_PARTS_IN_FLIGHT)
        fs.invalidate_cache(remote)
        obj = _remote("", remote, fs.info(remote))
        if obj.size != size:
            raise ConnectionError(f"{uri}: the store holds {obj.size} bytes, {size} were sent")
        if content_matches(local, obj) is False:
            raise ConnectionError(f"{uri}: the stored object's hash differs from the local file's")
        return obj

    with_retries(put, uri, field)
    return Uploaded(uri, size)


def upload_tree(
    local_dir: Path,
    uri: str,
    field: str,
    include: Callable[[Path], bool] = lambda _: True,
) -> list[Uploaded]:
    """Upload every file under ``local_dir`` for which ``include`` holds to ``uri``, verified."""
    fs, base = filesystem(uri)
    done = []
    for file in sorted(p for p in local_dir.rglob("*") if p.is_file() and include(p)):
        rel = file.relative_to(local_dir).as_posix()
        done.append(upload_file(fs, file, join(base, rel), join(uri, rel), field))
    return done


def remove_prefix(uri: str, field: str) -> None:
    """Delete every object under ``uri`` (old checkpoints); a missing prefix is fine."""
    fs, path = filesystem(uri)

    def remove() -> None:
        try:
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            return

    with_retries(remove, uri, field)
