"""Pure storage logic: which schemes are served, Hub ids and revisions, tokens, error kinds."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from finetune_api.exitcodes import ExitCode
from finetune_api.sources import Source
from finetune_trainer.storage import exit_code_of, hub
from finetune_trainer.storage.errors import (
    ACCESS_DENIED,
    NOT_FOUND,
    TRANSIENT,
    StorageError,
    describe,
    kind_of,
    with_retries,
)
from finetune_trainer.storage.locations import HubRef, LocationError, looks_like_hub_id, parse_hub, scheme_of


@pytest.mark.parametrize("uri", ["s3://b/k", "gs://b/k", "az://c/b", "hf://org/name", "file:///data/x.jsonl"])
def test_served_schemes_are_accepted(uri: str) -> None:
    assert Source(uri=uri).uri == uri


@pytest.mark.parametrize("uri", ["https://example.com/x.jsonl", "ftp://host/x", "oci://reg/x", "S3:/b"])
def test_unserved_schemes_are_refused(uri: str) -> None:
    with pytest.raises(ValidationError, match="pattern"):
        Source(uri=uri)


@pytest.mark.parametrize(
    ("location", "revision", "expected"),
    [
        ("hf://org/name", None, HubRef("org/name")),
        ("hf://org/name@v1.0", None, HubRef("org/name", "v1.0")),
        ("hf://org/name@abc123/sub/file.json", None, HubRef("org/name", "abc123", "sub/file.json")),
        ("org/name", "main", HubRef("org/name", "main")),
        ("hf://org/name@v2", "v2", HubRef("org/name", "v2")),
        ("hf://datasets/org/data/train.jsonl", None, HubRef("org/data", None, "train.jsonl", "dataset")),
        ("gpt2", None, HubRef("gpt2")),
    ],
)
def test_hub_references_and_revisions(location: str, revision: str | None, expected: HubRef) -> None:
    assert parse_hub(location, revision) == expected


@pytest.mark.parametrize(
    ("location", "revision", "message"),
    [
        ("hf://org/name@v1", "v2", "differs from model.revision"),
        ("hf://org/name@", None, "empty revision"),
        ("hf://org/na me", None, "not a Hub repository id"),
        ("hf://org--x/name", None, "not a Hub repository id"),
        ("hf://org/name/sub@v1/x", None, "right after the repository name"),
    ],
)
def test_bad_hub_references_say_why(location: str, revision: str | None, message: str) -> None:
    with pytest.raises(LocationError, match=message):
        parse_hub(location, revision)


def test_bare_hub_ids_versus_local_paths(tmp_path: Path) -> None:
    assert looks_like_hub_id("meta-llama/Llama-3.2-1B")
    assert not looks_like_hub_id(str(tmp_path))
    assert not looks_like_hub_id("/models/llama")
    assert not looks_like_hub_id("s3://b/k")
    assert scheme_of("/models/llama") == "file" and scheme_of("S3://b") == "s3"


def test_the_token_comes_from_the_environment_or_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    ref = HubRef("org/name", "v1", "model.safetensors")
    assert hub.download_kwargs(ref, None) == {
        "repo_id": "org/name",
        "repo_type": "model",
        "revision": "v1",
        "token": None,
        "allow_patterns": ["model.safetensors", "model.safetensors/*"],
    }
    token_file = tmp_path / "token"
    token_file.write_text("hf_fromfile\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    assert hub.download_kwargs(HubRef("org/name"), tmp_path)["token"] == "hf_fromfile"
    monkeypatch.setenv("HF_TOKEN", "hf_fromenv")
    kwargs = hub.download_kwargs(HubRef("org/name"), tmp_path)
    assert kwargs["token"] == "hf_fromenv" and kwargs["cache_dir"] == str(tmp_path)


def test_tokens_never_reach_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    assert "hf_secretvalue123" not in describe(RuntimeError("401 for token hf_secretvalue123"))


class _ClientError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (FileNotFoundError("x"), NOT_FOUND),
        (_ClientError("NoSuchBucket"), NOT_FOUND),
        (PermissionError("x"), ACCESS_DENIED),
        (_ClientError("InvalidAccessKeyId"), ACCESS_DENIED),
        (_ClientError("SlowDown"), TRANSIENT),
        (ConnectionResetError("x"), TRANSIENT),
        (TimeoutError("x"), TRANSIENT),
    ],
)
def test_error_kinds(exc: BaseException, kind: str) -> None:
    assert kind_of(exc) == kind


def test_transient_errors_are_retried_with_growing_backoff() -> None:
    pauses: list[float] = []
    calls = iter([ConnectionResetError("reset"), _ClientError("SlowDown"), "done"])

    def action() -> str:
        value = next(calls)
        if isinstance(value, BaseException):
            raise value
        return value

    assert with_retries(action, "s3://b/k", "f", attempts=3, base_delay=1.0, sleep=pauses.append) == "done"
    assert len(pauses) == 2 and 0.5 <= pauses[0] <= 1.0 and 1.0 <= pauses[1] <= 2.0


def test_permanent_errors_are_not_retried() -> None:
    pauses: list[float] = []

    def action() -> None:
        raise _ClientError("AccessDenied")

    with pytest.raises(StorageError) as caught:
        with_retries(action, "s3://b/k", "spec.dataset.source.uri", attempts=5, sleep=pauses.append)
    assert pauses == [] and caught.value.kind == ACCESS_DENIED
    assert str(caught.value).startswith("spec.dataset.source.uri: s3://b/k: access denied")


@pytest.mark.parametrize(
    ("kind", "field", "code"),
    [
        (NOT_FOUND, "spec.model.name", ExitCode.MODEL_NOT_FOUND),
        (NOT_FOUND, "spec.model.source.uri", ExitCode.MODEL_NOT_FOUND),
        (NOT_FOUND, "spec.dataset.splits.testSource.uri", ExitCode.DATASET_NOT_FOUND),
        (NOT_FOUND, "spec.output.source.uri", ExitCode.OUTPUT_LOCATION_NOT_FOUND),
        (ACCESS_DENIED, "spec.model.name", ExitCode.STORAGE_ACCESS_DENIED),
        (TRANSIENT, "spec.dataset.source.uri", ExitCode.RETRIABLE),
    ],
)
def test_exit_codes_of_storage_errors(kind: str, field: str, code: ExitCode) -> None:
    assert exit_code_of(StorageError(kind, "s3://b/k", field, "x")) == code
