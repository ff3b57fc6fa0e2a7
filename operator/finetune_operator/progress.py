"""Mirror the rank-0 trainer's Prometheus metrics into status while a run is Running."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from finetune_operator import constants as c
from finetune_operator.constants import ConditionType, Reason
from finetune_operator.models import FineTuneJobStatus, Metrics, Progress
from finetune_operator.status import condition, parse_time, set_condition
from finetune_trainer.contract import METRICS_PREFIX, Metric


class ScrapeError(RuntimeError):
    pass


def rank0_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The running pod with completion index 0 (or the only running pod)."""
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    for pod in running:
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        if str(ann.get(c.LABEL_COMPLETION_INDEX, "0")) == "0":
            return pod
    return None


def endpoint_of(pod: dict[str, Any], use_pod_ip: bool = True) -> str | None:
    """Where the trainer serves /metrics: an explicit annotation (dev runtime) or podIP:9400.

    Pod IPs are only reachable from inside the cluster, so an operator running elsewhere (a laptop,
    the test suite) scrapes annotated endpoints only and never sends traffic to pod addresses.
    """
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    if ann.get(c.ANNOTATION_METRICS_ENDPOINT):
        return str(ann[c.ANNOTATION_METRICS_ENDPOINT])
    ip = (pod.get("status") or {}).get("podIP")
    return f"http://{ip}:{c.METRICS_PORT}/metrics" if ip and use_pod_ip else None


def parse_metrics(text: str) -> dict[str, float]:
    """Contract metrics by short name; memory_bytes is the largest over devices."""
    values: dict[str, float] = {}
    wanted = set(Metric.ALL)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if not name.startswith(METRICS_PREFIX):
                continue
            short = name[len(METRICS_PREFIX) :]
            if short.endswith("_total") and short not in wanted:
                short = short.removesuffix("_total")
            if short not in wanted:
                continue
            if short == Metric.MEMORY_BYTES:
                values[short] = max(values.get(short, 0.0), float(sample.value))
            else:
                values[short] = float(sample.value)
    return values


def scrape(url: str, timeout: float) -> dict[str, float]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode()
    except OSError as exc:
        raise ScrapeError(f"{url}: {exc}") from exc
    return parse_metrics(text)


def _finite(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def apply_progress(
    status: FineTuneJobStatus,
    values: dict[str, float],
    now: datetime,
    stall_timeout_seconds: int,
    generation: int | None,
) -> None:
    """Fold one scrape into status; the Stalled condition flips when the step stops advancing."""
    step = int(values[Metric.STEP]) if Metric.STEP in values else None
    total = int(values[Metric.TOTAL_STEPS]) if values.get(Metric.TOTAL_STEPS) else None
    prev = status.progress or Progress()
    heartbeat = prev.last_heartbeat
    stamp = values.get(Metric.LAST_STEP_TIMESTAMP_SECONDS)
    if stamp:
        heartbeat = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif step is not None and step != prev.step:
        heartbeat = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    percent = int(100 * step / total) if step is not None and total else None
    status.progress = Progress(
        step=step,
        total_steps=total,
        percent=percent,
        summary=f"{step}/{total}" if step is not None and total else None,
        epoch=_round(values.get(Metric.EPOCH)),
        eta_seconds=_round(values.get(Metric.ETA_SECONDS), 0),
        last_heartbeat=heartbeat,
    )
    old = status.metrics or Metrics()
    status.metrics = Metrics.model_validate(
        {
            **old.model_dump(exclude_none=True),
            **{
                k: v
                for k, v in {
                    "train_loss": _round(_finite(values.get(Metric.TRAIN_LOSS)), 4),
                    "eval_loss": _round(_finite(values.get(Metric.EVAL_LOSS)), 4),
                    "best_eval_loss": _round(_finite(values.get(Metric.BEST_EVAL_LOSS)), 4),
                    "learning_rate": _finite(values.get(Metric.LEARNING_RATE)),
                    "tokens_per_second": _round(values.get(Metric.TOKENS_PER_SECOND), 1),
                    "gpu_memory_bytes": values.get(Metric.MEMORY_BYTES),
                }.items()
                if v is not None
            },
        }
    )
    stalled = False
    if heartbeat:
        last = parse_time(heartbeat)
        stalled = (now - last).total_seconds() > stall_timeout_seconds
    now_s = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    current = condition(status, ConditionType.STALLED)
    if stalled or current is not None:
        status.conditions = set_condition(
            status.conditions,
            ConditionType.STALLED,
            stalled,
            Reason.NO_PROGRESS if stalled else Reason.PROGRESSING,
            f"No step completed since {heartbeat}." if stalled else "",
            now_s,
            generation,
        )


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
