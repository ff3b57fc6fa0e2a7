"""Small OCI image archives, as ``buildah push oci-archive:`` writes them (uncompressed layers, the
reference in the index's ``org.opencontainers.image.ref.name``), for tests of the node's image store:
a real image containerd imports and unpacks, without building one."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from pathlib import Path

LAYER = "application/vnd.oci.image.layer.v1.tar"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def layer(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer holding ``files`` (path -> bytes), executable, owned by root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def write(path: Path, ref: str, layers: list[bytes]) -> str:
    """Write an image of ``layers`` (bottom first) named ``ref`` to ``path``; returns its manifest digest."""
    config = json.dumps({
        "architecture": ARCH,
        "os": "linux",
        "config": {"Cmd": ["/app"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(b) for b in layers]},
    }).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": _digest(b), "size": len(b)} for b in layers],
    }).encode()  # fmt: skip
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest),
                       "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": ref}}],
    }).encode()  # fmt: skip
    entries = {f"blobs/sha256/{_digest(b)[7:]}": b for b in [*layers, config, manifest]}
    entries |= {"index.json": index, "oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return _digest(manifest)
