"""What a model, data or output location names: a local path, an object-store URI or a Hub repo.

Served schemes: ``file://`` and plain paths (a PVC mount or this machine), ``s3://``, ``gs://``,
``az://`` (fsspec: s3fs, gcsfs, adlfs) and ``hf://`` (huggingface_hub), plus a bare Hub id
(``org/name``) for the model. ``hf://org/name@revision`` pins a revision; a revision in the URI and
one in ``model.revision`` must agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

OBJECT_SCHEMES = ("s3", "gs", "az")
HUB_SCHEME = "hf"
REMOTE_SCHEMES = (*OBJECT_SCHEMES, HUB_SCHEME)
# A Hub repository id: optional owner, name; letters, digits, '-', '_', '.' (no '--' or '..').
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


class LocationError(ValueError):
    """A location string that names nothing this trainer can read or write."""


def scheme_of(location: str) -> str:
    """``s3``, ``gs``, ``az``, ``hf``, ``file`` (plain paths too) or the unknown scheme as written."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", location)
    return match.group(1).lower() if match else "file"


def is_remote(location: str) -> bool:
    return scheme_of(location) in REMOTE_SCHEMES


@dataclass(frozen=True)
class HubRef:
    """A Hub repository and optional revision; ``path`` is a file or folder inside it ("" = all)."""

    repo_id: str
    revision: str | None = None
    path: str = ""
    repo_type: str = "model"

    @property
    def uri(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        tail = f"/{self.path}" if self.path else ""
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        return f"hf://{prefix}{self.repo_id}{rev}{tail}"


def parse_hub(location: str, revision: str | None = None) -> HubRef:
    """``hf://[datasets/]org/name[@rev][/path]`` or a bare ``org/name``; ``revision`` from the spec.

    Raises LocationError when the id is malformed or two different revisions are given.
    """
    text = location[len("hf://") :] if location.startswith("hf://") else location
    repo_type = "model"
    if text.startswith("datasets/"):
        repo_type, text = "dataset", text[len("datasets/") :]
    parts = text.split("/")
    owner_and_name = parts[:2] if len(parts) >= 2 else parts
    repo = "/".join(owner_and_name)
    rest = "/".join(parts[2:])
    uri_revision = None
    if "@" in repo:
        repo, uri_revision = repo.split("@", 1)
    elif "@" in rest.split("/", 1)[0]:
        head, _, tail = rest.partition("/")
        raise LocationError(
            f"{location}: put @revision right after the repository name, not in {head}/{tail}"
        )
    if not _HUB_ID.match(repo) or "--" in repo or ".." in repo:
        raise LocationError(f"{location}: {repo!r} is not a Hub repository id (org/name)")
    if uri_revision is not None and not uri_revision:
        raise LocationError(f"{location}: empty revision after '@'")
    if uri_revision and revision and uri_revision != revision:
        raise LocationError(
            f"{location}: revision {uri_revision!r} in the URI differs from model.revision {revision!r}"
        )
    return HubRef(repo_id=repo, revision=uri_revision or revision, path=rest.strip("/"), repo_type=repo_type)


def looks_like_hub_id(location: str) -> bool:
    """A bare ``org/name`` that is not an existing local path."""
    return (
        scheme_of(location) == "file"
        and "://" not in location
        and bool(_HUB_ID.match(location))
        and not Path(location).exists()
    )


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for URIs and paths alike, without doubled slashes."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out += "/" + part
    return out
