"""The operator's own Prometheus metrics (prefix finetune_operator_)."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from finetune_api.conditions import Phase

if TYPE_CHECKING:
    from finetune_api.status import PlanStatus

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Gauge("finetune_operator_jobs", "FineTuneJobs by phase.", ["phase"], registry=REGISTRY)
RUNS = Counter(
    "finetune_operator_runs_total",
    "Runs by result (started, succeeded, failed).",
    ["result"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "finetune_operator_leader",
    "1 on the replica that holds the leader Lease and acts, 0 on a standby.",
    registry=REGISTRY,
)
HANDLER_DURATION = Histogram(
    "finetune_operator_handler_duration_seconds", "Handler wall time.", ["handler"], registry=REGISTRY
)
API_ERRORS = Counter(
    "finetune_operator_api_errors_total",
    "Kubernetes API errors by operation.",
    ["operation"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "finetune_operator_api_requests_total",
    "Kubernetes API requests the operator's handlers and loops sent (not kopf's watches), by verb (GET of"
    " one object, LIST of a collection, POST, PUT, PATCH, DELETE) and resource (subresource after a slash).",
    ["verb", "resource"],
    registry=REGISTRY,
)
RESYNC_QUEUED = Counter(
    "finetune_operator_resync_queued_total",
    "FineTuneJobs the periodic resync handed to the reconcile queue (its background lane).",
    registry=REGISTRY,
)
RESYNC_SKIPPED = Counter(
    "finetune_operator_resync_skipped_total",
    "Unfinished FineTuneJobs a resync sweep left out: the Job watch showed their Job within the interval, "
    "or the sweep's LIST of their namespace's Jobs showed what status already holds.",
    registry=REGISTRY,
)
JOB_CREATED_LATENCY = Histogram(
    "finetune_operator_job_created_latency_seconds",
    "From a FineTuneJob's creation (or its new generation) to its run's Job being created.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)
STATUS_LATENCY = Histogram(
    "finetune_operator_status_latency_seconds",
    "From a Job finishing to the FineTuneJob's status saying so.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)

ESTIMATED_COST = Gauge(
    "finetune_operator_estimated_cost",
    "Estimated cost of each running FineTuneJob's run (status.plan.estimatedCost, price table currency).",
    ["namespace", "name"],
    registry=REGISTRY,
)


def record_estimated_cost(namespace: str, name: str, plan: PlanStatus | None) -> None:
    """Export a run's estimated cost while it runs; ``None`` removes the series when it ends."""
    if plan is not None and plan.estimated_cost is not None:
        ESTIMATED_COST.labels(namespace=namespace, name=name).set(plan.estimated_cost)
        return
    with contextlib.suppress(KeyError):
        ESTIMATED_COST.remove(namespace, name)


class PhaseBook:
    """The phase of every FineTuneJob this operator has seen, exported as finetune_operator_jobs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[str, str] = {}
        for phase in Phase.ALL:
            JOBS.labels(phase=phase).set(0)
        for result in ("started", "succeeded", "failed"):
            RUNS.labels(result=result)

    def set(self, key: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts = dict.fromkeys(Phase.ALL, 0)
            for value in self._phases.values():
                counts[value] = counts.get(value, 0) + 1
            for phase_name, n in counts.items():
                JOBS.labels(phase=phase_name).set(n)


def serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)
