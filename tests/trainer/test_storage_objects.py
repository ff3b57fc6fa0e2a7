"""Object storage against a real S3-compatible server (versitygw): verified, resumable transfers and
errors sorted into not found / access denied / transient, each naming the URI and the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from finetune_trainer.storage import objects
from finetune_trainer.storage.errors import ACCESS_DENIED, NOT_FOUND, TRANSIENT, StorageError

REPO = Path(__file__).resolve().parents[2]


def _fs() -> Any:
    fs, _ = objects.filesystem("s3://any")
    return fs


def test_objectstore_script_prints_exports_and_serves_s3(tmp_path: Path) -> None:
    import s3fs

    script = [sys.executable, str(REPO / "hack" / "objectstore.py")]
    name = f"script-{os.getpid()}"
    up = subprocess.run([*script, "up", "--name", name], capture_output=True, text=True, timeout=60)
    try:
        assert up.returncode == 0, up.stderr
        env = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        fs = s3fs.S3FileSystem(
            endpoint_url=env["AWS_ENDPOINT_URL"],
            key=env["AWS_ACCESS_KEY_ID"],
            secret=env["AWS_SECRET_ACCESS_KEY"],
            skip_instance_cache=True,
        )
        fs.mkdir("smoke")
        fs.pipe("smoke/hello.txt", b"hello")
        assert fs.cat("smoke/hello.txt") == b"hello"
    finally:
        down = subprocess.run([*script, "down", "--name", name], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    status = subprocess.run([*script, "status", "--name", name], capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "not running" in status.stderr


def test_download_is_cached_verified_and_resumed(s3_bucket: str, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    uri = f"s3://{s3_bucket}/data/train.jsonl"
    _fs().pipe(f"{s3_bucket}/data/train.jsonl", payload)

    local = objects.download(uri, tmp_path / "cache", "spec.dataset.source.uri")
    assert local.name == "train.jsonl" and local.read_bytes() == payload

    # The same object again: nothing is fetched.
    fs, path = objects.filesystem(uri)
    [obj] = objects.list_objects(fs, path, uri, "f")
    assert objects.download_object(fs, obj, local, uri, "f") is False

    # A pod killed half-way left a .part of the same object: the download continues from it.
    local.unlink()
    part = local.with_name(local.name + ".part")
    part.write_bytes(payload[: len(payload) // 2])
    local.with_name(local.name + ".part.json").write_text(json.dumps(objects._identity(obj)))
    assert objects.download_object(fs, obj, local, uri, "f") is True
    assert local.read_bytes() == payload and not part.exists()

    # A .part whose bytes differ from the object fails the hash check and is thrown away.
    local.unlink()
    objects._note_path(local).unlink()
    part.write_bytes(b"x" * (len(payload) // 2))
    local.with_name(local.name + ".part.json").write_text(json.dumps(objects._identity(obj)))
    with pytest.raises(StorageError, match="do not match"):
        objects.download_object(fs, obj, local, uri, "f")
    assert not part.exists() and not local.exists()


def test_prefix_download_keeps_the_tree(s3_bucket: str, tmp_path: Path) -> None:
    fs = _fs()
    fs.pipe({f"{s3_bucket}/model/config.json": b"{}", f"{s3_bucket}/model/sub/w.bin": b"w" * 100})
    target = objects.download(f"s3://{s3_bucket}/model", tmp_path / "m", "spec.model.source.uri")
    assert (target / "config.json").read_bytes() == b"{}"
    assert (target / "sub" / "w.bin").stat().st_size == 100


def test_upload_is_multipart_when_large_and_verified(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objects, "MULTIPART_CHUNK", 5 << 20)  # S3's smallest part
    tree = tmp_path / "out"
    (tree / "adapter").mkdir(parents=True)
    big = tree / "adapter" / "weights.bin"
    big.write_bytes(os.urandom(11 << 20))
    (tree / "README.md").write_text("card")
    uploaded = objects.upload_tree(tree, f"s3://{s3_bucket}/runs/a", "spec.output.source.uri")
    assert sorted((u.uri, u.size) for u in uploaded) == [
        (f"s3://{s3_bucket}/runs/a/README.md", 4),
        (f"s3://{s3_bucket}/runs/a/adapter/weights.bin", 11 << 20),
    ]
    fs = _fs()
    info = fs.info(f"{s3_bucket}/runs/a/adapter/weights.bin")
    assert info["ETag"].strip('"').endswith("-3"), info  # three parts
    obj = objects._remote("", info["name"], info)
    assert objects.content_matches(big, obj) is True
    assert fs.cat(f"{s3_bucket}/runs/a/adapter/weights.bin") == big.read_bytes()


def test_missing_bucket_and_key_are_not_found_naming_the_field(s3_bucket: str, tmp_path: Path) -> None:
    field = "spec.dataset.source.uri"
    for uri in (f"s3://{s3_bucket}/nothing.jsonl", f"s3://no-such-bucket-{os.getpid()}/train.jsonl"):
        with pytest.raises(StorageError) as caught:
            objects.download(uri, tmp_path, field)
        assert caught.value.kind == NOT_FOUND
        assert field in str(caught.value) and uri in str(caught.value)


def test_bad_credentials_are_access_denied(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fs().pipe(f"{s3_bucket}/train.jsonl", b"{}\n")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(StorageError) as caught:
        objects.download(f"s3://{s3_bucket}/train.jsonl", tmp_path, "spec.dataset.source.uri")
    assert caught.value.kind == ACCESS_DENIED
    assert "wrong-secret" not in str(caught.value)


def test_unreachable_store_is_transient_after_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setenv("FTJ_STORAGE_ATTEMPTS", "2")
    monkeypatch.setenv("FTJ_STORAGE_BACKOFF_SECONDS", "0")
    with pytest.raises(StorageError) as caught:
        objects.download("s3://bucket/train.jsonl", tmp_path, "spec.dataset.source.uri")
    assert caught.value.kind == TRANSIENT
    assert "after 2 attempts" in str(caught.value)
