"""hack/nodeimages.py's pure parts: which repository an image name belongs to, and which build an OCI
archive names (the node's store compares it with what containerd holds)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ociarchive
from helpers import load_hack


@pytest.mark.parametrize(
    ("ref", "repo"),
    [
        ("localhost/finetune-trainer:cpu-ab12", "localhost/finetune-trainer"),
        ("localhost/finetune-trainer", "localhost/finetune-trainer"),
        ("registry.local:5000/team/trainer:v1", "registry.local:5000/team/trainer"),
        ("registry.local:5000/team/trainer", "registry.local:5000/team/trainer"),
        ("localhost/finetune-trainer@sha256:" + "a" * 64, "localhost/finetune-trainer"),
        ("localhost/finetune-trainer:v1@sha256:" + "a" * 64, "localhost/finetune-trainer"),
    ],
)
def test_repository_of_an_image_name(ref: str, repo: str) -> None:
    assert load_hack("nodeimages").repository(ref) == repo


def test_archive_build_is_the_manifest_and_config_the_index_names(tmp_path: Path) -> None:
    ni = load_hack("nodeimages")
    archive = tmp_path / "a.tar"
    manifest = ociarchive.write(archive, "localhost/x:1", [ociarchive.layer({"f": b"1"})])

    build = ni.archive_build(archive, "localhost/x:1")

    assert build.manifest == manifest
    assert build.config.startswith("sha256:") and build.config != manifest
    with pytest.raises(ValueError, match="names no image 'localhost/x:2'"):
        ni.archive_build(archive, "localhost/x:2")


def test_image_and_container_listings_are_read_by_column() -> None:
    out = {
        ("images", "ls"): "REF TYPE DIGEST SIZE PLATFORMS LABELS\n"
        "localhost/x:1 application/vnd.oci.image.manifest.v1+json sha256:aa 20.8 KiB linux/amd64 -\n"
        "sha256:cc application/vnd.oci.image.manifest.v1+json sha256:aa 20.8 KiB linux/amd64 -\n",
        ("containers", "ls"): "CONTAINER IMAGE RUNTIME\nc1 localhost/x:1 io.containerd.runc.v2\n",
    }

    class Done:
        def __init__(self, stdout: str) -> None:
            self.stdout = stdout

    store = load_hack("nodeimages").ImageStore(lambda *args, **_: Done(out[args]))

    assert store.images() == {"localhost/x:1": "sha256:aa", "sha256:cc": "sha256:aa"}
    assert store.in_use() == {"localhost/x:1"}
