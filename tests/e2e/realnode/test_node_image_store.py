"""The real node's image store (hack/realnode.py, hack/nodeimages.py) on the containerd the node runs,
with its configuration, in a store of its own: an import of a rebuilt image removes the build it
replaces, content and snapshots included, so the store holds one build per repository and does not grow
from rebuild to rebuild (it grew to 29 GB and filled the disk)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import ociarchive
from helpers import load_hack, wait_for

pytestmark = pytest.mark.e2e
TRAINER = "localhost/finetune-trainer"
TRAINER_1, TRAINER_2 = f"{TRAINER}:cpu-1111", f"{TRAINER}:cpu-2222"
OPERATOR = "localhost/finetune-operator:1a2b"
MIB = 1 << 20


def counts(usage: Any) -> tuple[int, int, int]:
    """Image records (names and IDs), content blobs, snapshots."""
    return usage.images, usage.blobs, usage.snapshots


@dataclass(frozen=True)
class Node:
    paths: Any  # realnode.Paths
    store: Any  # nodeimages.ImageStore
    work: Path

    def build(self, ref: str, seed: str, size: int = 4 * MIB) -> str:
        """An archive of ``ref``: a base layer every build shares and a layer of its own (``seed``), as a
        rebuild of the trainer image has."""
        base = ociarchive.layer({"base": b"b" * MIB})
        own = ociarchive.layer({"app": seed.encode() + os.urandom(size)})
        path = self.work / f"{ref.replace('/', '_').replace(':', '_')}-{seed}.tar"
        ociarchive.write(path, ref, [base, own])
        return str(path)

    def usage(self) -> Any:
        return self.store.usage(self.paths.containerd_root)

    def repository(self, repo: str) -> dict[str, str]:
        same = load_hack("nodeimages").repository
        return {n: d for n, d in self.store.images().items() if same(n) == repo}


@pytest.fixture
def node() -> Iterator[Node]:
    """The node's containerd (realnode.start_containerd: its configuration, the overlayfs snapshotter),
    with its store in a directory of its own, so the cache's store and a running node are untouched."""
    missing = [t for t in ("containerd", "ctr", "runc") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        pytest.fail(f"needs root and containerd, ctr, runc (missing: {missing}); `make system-packages`")
    rn = load_hack("realnode")
    work = Path(tempfile.mkdtemp(prefix="ftj-store-"))  # short: the socket path must fit 108 bytes
    paths = rn.Paths(work / "c", work / "cache")
    try:
        rn.start_containerd(paths, "localhost/pause:3.10")
        yield Node(paths, rn.image_store(paths), work)
    finally:
        rn.stop_containerd(paths)
        shutil.rmtree(work, ignore_errors=True)


def test_a_rebuilt_image_replaces_its_previous_build(node: Node) -> None:
    """What a node start does after a trainer rebuild: the same two images asked for, one of them new."""
    rn = load_hack("realnode")
    operator = node.build(OPERATOR, "op")
    first = {TRAINER_1: node.build(TRAINER_1, "one"), OPERATOR: operator}
    assert set(rn.import_images(node.paths, first)) == set(first)
    one_build = node.usage()

    rebuilt = {TRAINER_2: node.build(TRAINER_2, "two"), OPERATOR: operator}
    assert set(rn.import_images(node.paths, rebuilt)) == {TRAINER_2}

    assert set(node.repository(TRAINER)) == {TRAINER_2}
    after = node.usage()
    assert counts(after) == counts(one_build), (one_build, after)
    # The old build's own layer (4 MiB, in content and unpacked) is gone; the shared base stays.
    assert after.content_bytes < one_build.content_bytes + MIB, (one_build, after)
    assert after.snapshot_bytes < one_build.snapshot_bytes + MIB, (one_build, after)


def test_images_of_other_repositories_stay(node: Node) -> None:
    rn = load_hack("realnode")
    rn.import_images(node.paths, {OPERATOR: node.build(OPERATOR, "op")})

    rn.import_images(node.paths, {TRAINER_1: node.build(TRAINER_1, "one")})

    assert {OPERATOR, TRAINER_1} <= set(node.store.images())


def test_the_same_tag_rebuilt_is_imported_again_and_the_old_build_dropped(node: Node) -> None:
    rn = load_hack("realnode")
    ref = f"{TRAINER}:dev"
    rn.import_images(node.paths, {ref: node.build(ref, "one")})
    one_build = node.usage()
    second = node.build(ref, "two")

    assert set(rn.import_images(node.paths, {ref: second})) == {ref}

    assert node.store.images()[ref] == load_hack("nodeimages").archive_build(second, ref).manifest
    after = node.usage()
    assert counts(after) == counts(one_build), (one_build, after)
    assert after.snapshot_bytes < one_build.snapshot_bytes + MIB, (one_build, after)


def test_a_warm_start_imports_nothing_and_keeps_the_images(node: Node) -> None:
    rn = load_hack("realnode")
    archives = {TRAINER_1: node.build(TRAINER_1, "one"), OPERATOR: node.build(OPERATOR, "op")}
    rn.import_images(node.paths, archives)
    before = (node.store.images(), node.usage())

    assert rn.import_images(node.paths, archives) == {}

    assert (node.store.images(), node.usage()) == before


def test_an_image_a_container_uses_is_kept_until_the_container_is_gone(node: Node) -> None:
    old, new = TRAINER_1, TRAINER_2
    old_archive = node.build(old, "one")
    node.store.import_archives({old: old_archive})
    rn = load_hack("realnode")
    rn._ctr(node.paths, "containers", "create", old, "uses-old")
    one_build = node.usage()

    node.store.import_archives({new: node.build(new, "two")})
    assert set(node.repository(TRAINER)) == {old, new}, "an image in use was removed"

    rn._ctr(node.paths, "containers", "rm", "uses-old")
    old_id = load_hack("nodeimages").archive_build(old_archive, old).config
    assert set(node.store.prune([new])) == {old, old_id}
    assert set(node.repository(TRAINER)) == {new}
    after = node.usage()
    # The container's own writable snapshot went with it.
    assert counts(after) == (one_build.images, one_build.blobs, one_build.snapshots - 1)


def test_an_interrupted_import_leaves_nothing_after_the_next_start(node: Node) -> None:
    """ctr holds what an import writes with a lease that expires after 24 h: killed mid-import, it left
    that lease and the blobs it held. The next start removes the lease and the blobs with it."""
    rn = load_hack("realnode")
    archive = node.build(TRAINER_1, "one")
    with tarfile.open(archive) as tar:
        blobs_end = tar.getmember("index.json").offset  # the blobs come first, the index last
    ctr = ["ctr", "--address", str(node.paths.socket), "-n", "k8s.io", "images", "import", "-"]
    proc = subprocess.Popen(ctr, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None
        proc.stdin.write(Path(archive).read_bytes()[:blobs_end])
        proc.stdin.flush()
        wait_for(lambda: node.usage().blobs == 4, 30, "the interrupted import's 4 blobs in the store")
    finally:
        proc.kill()
        proc.wait()
    assert rn._ctr(node.paths, "leases", "ls", "-q").stdout.split(), "no lease held the import"

    rn.import_images(node.paths, {OPERATOR: node.build(OPERATOR, "op")})

    assert rn._ctr(node.paths, "leases", "ls", "-q").stdout.split() == []
    # The operator's image alone: the base layer (the trainer's too), its own layer, config, manifest.
    assert node.usage().blobs == 4
