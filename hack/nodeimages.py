"""The real node's image store: import the project's OCI archives into containerd and remove the builds
they replace.

The store lives in the cache (hack/realnode.py), so images imported once survive the cluster and a warm
start imports nothing. Every rebuild of an image is a new build (hack/images.py tags it with a hash of
its inputs). containerd keeps a build's content (the archive's blobs) and its unpacked snapshots while
any image record points to it, and its CRI plugin adds one of its own to every image, the image ID
(``sha256:<config digest>``): removing the old tag alone freed nothing, so each trainer build stayed
(≈10 GB: 3.4 GB of gzip layers and 6.6 GB unpacked), and the store grew to 29 GB and filled the disk.

So an import of ``repository:tag`` first removes the other images of that repository and every image
ID no name points to any more, except what a container was created from, with containerd's
synchronous garbage collection: their content and snapshots are gone before the new build is written,
so the store holds one build per image, never two. Layers a build shares with others stay, images of
other repositories are left alone, and a tag whose archive holds another build than the store (the
same tag rebuilt) is imported again instead of skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ``ctr -n k8s.io ARGS...`` against the node's containerd: positional ctr arguments, keyword options
# ``check`` and ``timeout``.
Ctr = Callable[..., "subprocess.CompletedProcess[str]"]
SNAPSHOTTER = "overlayfs"
IMPORT_TIMEOUT = 1800.0
REGISTER_TIMEOUT = 30.0


def repository(ref: str) -> str:
    """``localhost/finetune-trainer:cpu-ab12`` -> ``localhost/finetune-trainer``; a registry's port
    (``host:5000/name``) is not a tag, and a digest reference keeps its name only."""
    name = ref.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


def _is_id(name: str) -> bool:
    """An image ID (``sha256:<config digest>``) rather than a name."""
    return name.startswith("sha256:")


@dataclass(frozen=True)
class Build:
    """What an OCI archive holds under a reference: the manifest digest containerd's image of that name
    points to once imported, and the config digest that is the image's ID."""

    manifest: str
    config: str


def archive_build(archive: str | Path, ref: str) -> Build:
    """The build the OCI archive's index names ``ref``."""

    def blob(tar: tarfile.TarFile, name: str) -> Any:
        member = tar.extractfile(name)
        if member is None:
            raise ValueError(f"{archive}: {name} is not a file")
        return json.load(member)

    with tarfile.open(archive) as tar:
        for desc in blob(tar, "index.json").get("manifests", []):
            if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
                manifest = blob(tar, f"blobs/{desc['digest'].replace(':', '/', 1)}")
                return Build(str(desc["digest"]), str(manifest["config"]["digest"]))
    raise ValueError(f"{archive}: its index names no image {ref!r}")


@dataclass(frozen=True)
class Usage:
    """What the store holds: images, content blobs, snapshots, and their bytes on disk."""

    images: int
    blobs: int
    snapshots: int
    content_bytes: int
    snapshot_bytes: int


class ImageStore:
    """containerd's images in the node's namespace, driven through ``ctr``."""

    def __init__(self, ctr: Ctr, log: Callable[[str], None] = lambda _msg: None) -> None:
        self._ctr = ctr
        self._log = log

    def images(self) -> dict[str, str]:
        """Image name -> the digest of its target (manifest or index)."""
        out: dict[str, str] = {}
        for line in self._ctr("images", "ls").stdout.splitlines()[1:]:
            cols = line.split()  # REF TYPE DIGEST SIZE PLATFORMS LABELS
            if len(cols) >= 3:
                out[cols[0]] = cols[2]
        return out

    def in_use(self) -> set[str]:
        """Image names containers were created from (running or not: each pins its image's snapshots)."""
        used: set[str] = set()
        for line in self._ctr("containers", "ls").stdout.splitlines()[1:]:
            cols = line.split()  # CONTAINER IMAGE RUNTIME
            if len(cols) >= 2:
                used.add(cols[1])
        return used

    def import_archives(self, archives: Mapping[str, str]) -> dict[str, float]:
        """Import each archive (ref -> path) whose build the store lacks; returns seconds per imported
        ref (nothing imported: a warm start). The builds they replace are removed first, so the store
        never holds two builds of an image (the old archive is gone already: hack/images.py keeps one
        per image), and what the import itself drops (the archive's index) is collected after."""
        have = self.images()
        builds = {ref: archive_build(archive, ref) for ref, archive in archives.items()}
        todo = [ref for ref, build in builds.items() if have.get(ref) != build.manifest]
        for ref in todo:
            if ref in have:
                # The same tag rebuilt: re-pointing the name would keep the CRI plugin's ID of the old
                # build and add none for the new one (the kubelet would not see it). Without its name
                # the old build is an ID no name points to, which ``prune`` removes.
                self._ctr("images", "rm", ref)
        self.prune(archives)
        took: dict[str, float] = {}
        for ref in todo:
            t0 = time.monotonic()
            archive = archives[ref]
            self._log(f"importing {ref} ({Path(archive).stat().st_size / 1e6:.0f} MB)")
            self._ctr("images", "import", "--snapshotter", SNAPSHOTTER, str(archive), timeout=IMPORT_TIMEOUT)
            self._registered(ref, builds[ref])
            took[ref] = round(time.monotonic() - t0, 1)
        if took:
            self.collect_garbage()
        return took

    def _registered(self, ref: str, build: Build, timeout: float = REGISTER_TIMEOUT) -> None:
        """Wait until the image has its name and the ID the CRI plugin adds (``sha256:<config>``, from an
        event, so a moment after the import): the kubelet sees it then, and ``prune`` sees the store
        as it stays."""
        deadline = time.monotonic() + timeout
        while True:
            images = self.images()
            if images.get(ref) == build.manifest and images.get(build.config) == build.manifest:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{ref}: after its import containerd has {ref} -> {images.get(ref)} and "
                    f"{build.config} -> {images.get(build.config)}, not {build.manifest} ({timeout:g}s)"
                )
            time.sleep(0.1)

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Remove the builds ``keep`` replaced, with their content and snapshots (synchronously): the
        other images of ``keep``'s repositories, and the image IDs no name points to any more (the CRI
        plugin names every build also by its ID, ``sha256:<config>``, and that alias alone keeps a
        build). What a container was created from stays. Returns the names removed."""
        keep = set(keep)
        repos = {repository(ref) for ref in keep}
        images = self.images()
        used = {images[name] for name in self.in_use() if name in images}
        replaced = {n for n in images if not _is_id(n) and repository(n) in repos and n not in keep}
        named = {d for n, d in images.items() if not _is_id(n) and n not in replaced}
        stale = sorted(
            n
            for n, d in images.items()
            if d not in used and (n in replaced or (_is_id(n) and d not in named))
        )
        if stale:
            self._log(f"removing replaced images: {', '.join(stale)}")
            self._ctr("images", "rm", "--sync", *stale)
        return stale

    def collect_garbage(self) -> None:
        """Run containerd's garbage collection now (ctr has no command for it, but deleting a lease with
        ``--sync`` waits for a full collection)."""
        lease = f"ftj-gc-{os.getpid()}-{time.monotonic_ns()}"
        self._ctr("leases", "create", "--id", lease, "--expires", "10m")
        self._ctr("leases", "delete", "--sync", lease)

    def usage(self, root: Path) -> Usage:
        """Counts from containerd and bytes on disk under its root (content and overlayfs snapshots)."""
        blobs = self._ctr("content", "ls", "-q").stdout.split()
        snaps = self._ctr("snapshots", "--snapshotter", SNAPSHOTTER, "ls").stdout.splitlines()[1:]
        return Usage(
            images=len(self.images()),
            blobs=len(blobs),
            snapshots=len([s for s in snaps if s.strip()]),
            content_bytes=_du(root / "io.containerd.content.v1.content"),
            snapshot_bytes=_du(root / f"io.containerd.snapshotter.v1.{SNAPSHOTTER}"),
        )


def _du(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (hard links once), as ``du`` counts them."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in [path, *path.rglob("*")] if path.exists() else []:
        try:
            st = p.lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total
