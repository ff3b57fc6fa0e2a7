"""Storage failures sorted into the three kinds the exit-code contract tells apart.

- not found: the object, prefix, bucket, Hub repository or revision does not exist (permanent);
- access denied: missing or wrong credentials, or a policy that refuses (permanent);
- transient: network, throttling or a server error (retried here with backoff, then retriable).

Every error names the URI and the spec field it came from, because that is what the user edits.
Credentials never appear in messages: only URIs, field names and the store's error code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_FOUND = "not-found"
ACCESS_DENIED = "access-denied"
TRANSIENT = "transient"

# Error codes S3-compatible stores (and botocore) put in a ClientError.
_NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
    "401",
}
# Names of exception types that mean "try again later" whatever library raised them.
_TRANSIENT_TYPES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientOSError",
    "ClientPayloadError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "ServiceUnavailableError",
}


class StorageError(Exception):
    """A storage operation failed for good (after retries where retrying made sense)."""

    def __init__(self, kind: str, uri: str, field: str, detail: str) -> None:
        self.kind, self.uri, self.field, self.detail = kind, uri, field, detail
        what = {NOT_FOUND: "not found", ACCESS_DENIED: "access denied", TRANSIENT: "unreachable"}[kind]
        super().__init__(f"{field}: {uri}: {what} ({detail})")


class UploadFailed(Exception):
    """Results could not be uploaded and verified; the local copy and the last checkpoint are kept."""

    def __init__(self, uri: str, detail: str) -> None:
        self.uri, self.detail = uri, detail
        super().__init__(f"uploading the results to {uri} failed: {detail}")


def _code_of(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = error.get("Code") or (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return str(code) if code is not None else None
    status = getattr(getattr(exc, "response", None), "status_code", None)  # huggingface_hub / requests
    return str(status) if status is not None else None


def _server_trouble(link: BaseException) -> bool:
    """HTTP 429 or 5xx, or the connection itself failed: the hub's LocalEntryNotFoundError wraps
    these when the file is not cached, and they say nothing about whether the file exists."""
    if type(link).__name__ == "OfflineModeIsEnabled":  # a ConnectionError, but a deliberate one
        return False
    code = _code_of(link)
    if code is not None and code.isdigit() and (code == "429" or code.startswith("5")):
        return True
    return isinstance(link, (ConnectionError, TimeoutError)) or type(link).__name__ in {
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "RemoteProtocolError",
    }


def kind_of(exc: BaseException) -> str:
    """NOT_FOUND, ACCESS_DENIED or TRANSIENT for any exception a storage client raised."""
    if any(_server_trouble(link) for link in _chain(exc)):
        return TRANSIENT
    for link in _chain(exc):
        name = type(link).__name__
        code = _code_of(link)
        if code in _NOT_FOUND_CODES or name in {
            "RepositoryNotFoundError",
            "RevisionNotFoundError",
            "EntryNotFoundError",
            "RemoteEntryNotFoundError",
            "LocalEntryNotFoundError",
            "NoSuchBucket",
            "NoSuchKey",
        }:
            return NOT_FOUND
        if code in _DENIED_CODES or name in {
            "GatedRepoError",
            "NoCredentialsError",
            "PartialCredentialsError",
        }:
            return ACCESS_DENIED
        if name in _TRANSIENT_TYPES:
            return TRANSIENT
    for link in _chain(exc):
        if isinstance(link, FileNotFoundError):
            return NOT_FOUND
        if isinstance(link, PermissionError):
            return ACCESS_DENIED
    return TRANSIENT


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        out.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return out


# Environment variables whose values are secrets: scrubbed from every message this package writes.
SECRET_ENV = (
    "HF_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
)


def scrub(text: str) -> str:
    for name in SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def describe(exc: BaseException) -> str:
    """A short, credential-free description: the store's error code or the exception type and text."""
    code = _code_of(exc)
    text = scrub(str(exc).splitlines()[0]) if str(exc) else ""
    label = f"{type(exc).__name__}" + (f" {code}" if code and code not in text else "")
    return f"{label}: {text[:300]}" if text else label


def with_retries(
    action: Callable[[], T],
    uri: str,
    field: str,
    *,
    attempts: int | None = None,
    base_delay: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action``; retry transient failures with exponential backoff and jitter.

    Raises StorageError with the failure's kind once retrying is pointless (not found, access
    denied) or the attempts are spent (transient). ``FTJ_STORAGE_ATTEMPTS`` and
    ``FTJ_STORAGE_BACKOFF_SECONDS`` tune the budget (tests use a short one).
    """
    from finetune_trainer.storage.settings import retry_budget

    default_attempts, default_delay = retry_budget()
    attempts = attempts or default_attempts
    delay = default_delay if base_delay is None else base_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except StorageError:
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            kind = kind_of(exc)
            if kind != TRANSIENT or attempt == attempts:
                detail = describe(exc) + (f" after {attempt} attempts" if kind == TRANSIENT else "")
                raise StorageError(kind, uri, field, detail) from exc
            pause = min(delay * 2 ** (attempt - 1), 60.0) * (0.5 + random.random() / 2)
            log.warning("%s: %s; retry %d/%d in %.1fs", uri, describe(exc), attempt, attempts - 1, pause)
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover
