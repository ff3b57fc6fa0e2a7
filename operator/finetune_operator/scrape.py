"""Reading a trainer's /metrics: pods are untrusted input.

Anyone who can run a job image or annotate a pod controls what this module receives, so the URL is
built by the operator from the pod's own IP and declared port (never taken from the pod), nothing
is followed (no redirects, only ``http``), the body is capped, the whole exchange has one deadline,
and every value is checked to be a finite number in range before it can reach status.
The ``finetuning.io/metrics-endpoint`` annotation is honoured only in dev mode
(``FTJ_DEV_METRICS_ENDPOINTS=true``), where trainer "pods" are local processes (hack/devruntime.py),
and then only for ``http://`` on a loopback address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import urllib.parse
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from finetune_api import wellknown
from finetune_api.metrics import METRICS_PREFIX, Metric, Stage
from finetune_operator import constants as c
from finetune_operator.sanitize import clean_text

BODY_LIMIT = 1024 * 1024
HEAD_LIMIT = 16 * 1024
# Integers that status stores (steps) must fit a JSON number every client reads exactly.
MAX_INT = 2**53


class ScrapeError(RuntimeError):
    """The endpoint could not be read; the message is already cleaned for logs."""

    def __init__(self, message: str) -> None:
        super().__init__(clean_text(message, 300))


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str = "/metrics"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


def rank0_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The running pod with completion index 0 (or the only running pod)."""
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    for pod in running:
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        if str(ann.get(c.LABEL_COMPLETION_INDEX, "0")) == "0":
            return pod
    return None


def endpoint_of(pod: dict[str, Any], use_pod_ip: bool = True, dev: bool = False) -> Endpoint | None:
    """Where the trainer serves /metrics, built from the pod's IP and its declared ``metrics`` port.

    Pod IPs are only reachable from inside the cluster, so an operator running elsewhere (a laptop,
    the test suite) sends no traffic to pod addresses unless told to.
    """
    if dev:
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        dev_endpoint = _loopback_endpoint(ann.get(c.ANNOTATION_METRICS_ENDPOINT))
        if dev_endpoint is not None:
            return dev_endpoint
    if not use_pod_ip:
        return None
    try:
        ip = ipaddress.ip_address(str((pod.get("status") or {}).get("podIP") or ""))
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_multicast:
        return None
    return Endpoint(str(ip), _declared_port(pod))


def _declared_port(pod: dict[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") != c.CONTAINER_NAME:
            continue
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            if port.get("name") == "metrics" and isinstance(number, int) and 0 < number < 65536:
                return number
    return wellknown.METRICS_PORT


def _loopback_endpoint(value: Any) -> Endpoint | None:
    if not isinstance(value, str) or len(value) > 200:
        return None
    try:
        url = urllib.parse.urlsplit(value)
        port = url.port
        ip = ipaddress.ip_address(url.hostname or "")
    except ValueError:
        return None
    if url.scheme != "http" or not ip.is_loopback or port is None or url.query or url.fragment:
        return None
    return Endpoint(str(ip), port, url.path or "/metrics")


async def fetch(endpoint: Endpoint, timeout: float, limit: int = BODY_LIMIT) -> str:
    """GET the endpoint, all of it within ``timeout`` seconds, at most ``limit`` bytes, no redirects.

    A plain HTTP/1.0 exchange on asyncio streams: one deadline covers connect, headers and body,
    so neither a trickle nor a huge body can hold the operator.
    """
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    request = (
        f"GET {endpoint.path} HTTP/1.0\r\nHost: {host}:{endpoint.port}\r\n"
        "Accept: text/plain\r\nConnection: close\r\n\r\n"
    )
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port, limit=HEAD_LIMIT)
            try:
                writer.write(request.encode("ascii"))
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                _check_head(endpoint, head, limit)
                body = bytearray()
                while chunk := await reader.read(65536):
                    body += chunk
                    if len(body) > limit:
                        raise ScrapeError(f"{endpoint.url}: body over {limit} bytes")
            finally:
                writer.close()
    except TimeoutError as exc:
        raise ScrapeError(f"{endpoint.url}: no complete answer within {timeout:g}s") from exc
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, UnicodeError) as exc:
        raise ScrapeError(f"{endpoint.url}: {type(exc).__name__}: {exc}") from exc
    return body.decode("utf-8", errors="replace")


def _check_head(endpoint: Endpoint, head: bytes, limit: int) -> None:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "200":
        raise ScrapeError(f"{endpoint.url}: answered {lines[0][:80]!r}, not 200")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if headers.get("transfer-encoding", "identity").lower() != "identity":
        raise ScrapeError(f"{endpoint.url}: transfer-encoding {headers['transfer-encoding'][:40]!r}")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ScrapeError(f"{endpoint.url}: body of {declared} bytes is over {limit}")


def parse_metrics(text: str) -> dict[str, float]:
    """Contract metrics by short name, finite and in range only; memory_bytes is the largest device;
    ``stage`` is the current stage's position in ``Stage.ALL`` (``progress.stage_name`` turns it back)."""
    values: dict[str, float] = {}
    wanted = set(Metric.ALL)
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser raises ValueError, IndexError, ... on garbage
        raise ScrapeError(f"unparseable metrics: {type(exc).__name__}") from exc
    for family in families:
        for sample in family.samples:
            name = sample.name
            if not name.startswith(METRICS_PREFIX):
                continue
            short = name[len(METRICS_PREFIX) :]
            if short == Metric.STAGE:
                if sample.value == 1 and sample.labels.get("stage") in Stage.ALL:
                    values[short] = float(Stage.ALL.index(sample.labels["stage"]))
                continue
            if short.endswith("_total") and short not in wanted:
                short = short.removesuffix("_total")
            value = _usable(short, sample.value) if short in wanted else None
            if value is None:
                continue
            if short == Metric.MEMORY_BYTES:
                values[short] = max(values.get(short, 0.0), value)
            else:
                values[short] = value
    return values


_NON_NEGATIVE = frozenset(Metric.ALL) - {Metric.LEARNING_RATE}
_INTEGRAL = frozenset({Metric.STEP, Metric.TOTAL_STEPS})


def _usable(short: str, raw: Any) -> float | None:
    """A sample value that may reach status, or None: NaN/Inf, negatives and absurd sizes are dropped."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or abs(value) > 1e18:
        return None
    if short in _NON_NEGATIVE and value < 0:
        return None
    if short in _INTEGRAL and value > MAX_INT:
        return None
    return value
