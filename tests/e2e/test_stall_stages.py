"""Stalled only while training steps are expected: the trainer's ``stage`` metric, mirrored into status.

A trainer that finished its last step an hour ago and now evaluates, merges or uploads makes no step
progress by design; the operator must not call that a stall. A trainer stuck in a training step
still trips Stalled. The endpoint is the trainer's own exporter (``TrainerMetrics`` behind
``MetricsServer``), so the names and labels are the ones a real trainer serves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from finetune_api.metrics import Stage
from finetune_trainer.metrics_server import MetricsServer, TrainerMetrics
from harness import Ftj, free_port
from helpers import wait_for

pytestmark = pytest.mark.e2e

STALL_TIMEOUT = 30  # the smallest the CRD accepts


@pytest.fixture
def trainer() -> Iterator[tuple[TrainerMetrics, str]]:
    metrics = TrainerMetrics()
    port = free_port()
    server = MetricsServer(metrics, port, addr="127.0.0.1")
    try:
        yield metrics, f"http://127.0.0.1:{port}/metrics"
    finally:
        server.close()


def _point_at(ftj: Ftj, url: str) -> None:
    from kubernetes import client

    [pod] = ftj.pods(f"{ftj.name}-r1")
    client.CoreV1Api(ftj.api).patch_namespaced_pod(
        pod["metadata"]["name"],
        ftj.namespace,
        {"metadata": {"annotations": {"finetuning.io/metrics-endpoint": url}}},
    )


def _stalled(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Stalled"), None)


def test_a_long_upload_after_the_last_step_is_not_a_stall_but_a_stuck_step_is(make_finetunejob, trainer):
    metrics, url = trainer
    an_hour_ago = time.time() - 3600
    metrics.set_stage(Stage.TRAINING)
    metrics.on_step(100, 100, 3.0, when=an_hour_ago)  # the last step finished long past the deadline
    metrics.set_stage(Stage.UPLOADING)
    ftj = make_finetunejob(stallTimeoutSeconds=STALL_TIMEOUT)
    ftj.wait_phase("Running")
    _point_at(ftj, url)

    st = wait_for(
        lambda: (s := ftj.status()) and (s.get("progress") or {}).get("summary") == "100/100" and s,
        60,
        "the trainer's progress mirrored into status",
    )
    # The scrape that mirrored the progress judged the stall in the same write: an hour without a step.
    stalled = _stalled(st)
    assert stalled is None or stalled["status"] == "False", f"Stalled during the upload: {stalled}"
    assert st["progress"].get("stage") == Stage.UPLOADING

    # Back in a training step that never finishes: Stalled after the timeout, counted from when
    # training resumed (the hour-old heartbeat alone would trip it at once).
    metrics.set_stage(Stage.TRAINING)
    resumed = time.monotonic()
    st = wait_for(
        lambda: (s := ftj.status()) and (c := _stalled(s)) and c["status"] == "True" and s,
        STALL_TIMEOUT + 60,
        "Stalled for a training step that never finishes",
    )
    assert time.monotonic() - resumed >= STALL_TIMEOUT - 5, (
        "Stalled before the timeout after training resumed"
    )
    assert _stalled(st)["reason"] == "NoProgress" and st["progress"]["stage"] == Stage.TRAINING
    assert st["phase"] == "Running"
