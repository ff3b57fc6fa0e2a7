"""Deleting never waits for the operator: FineTuneJobs carry no finalizer, children go by ownership.

Each test prints the deletion times it measured (``-s`` shows them) for docs/benchmarks.md.
"""

from __future__ import annotations

import http.server
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from finetune_api.metrics import Metric, metric_name
from harness import GROUP, PLURAL, VERSION, Ftj, create_ftj
from helpers import wait_for

pytestmark = pytest.mark.e2e

LEGACY = ["finetuning.io/finalizer", "kopf.zalando.org/KopfFinalizerMarker"]


def _gone(fn: Any) -> bool:
    from kubernetes import client

    try:
        fn()
    except client.ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def _ftj_gone(ftj: Ftj) -> bool:
    return _gone(ftj.get)


def _namespace_gone(api: Any, ns: str) -> bool:
    from kubernetes import client

    return _gone(lambda: client.CoreV1Api(api).read_namespace(ns))


def _delete(ftj: Ftj) -> None:
    ftj.custom.delete_namespaced_custom_object(GROUP, VERSION, ftj.namespace, PLURAL, ftj.name)


def _timed_wait(pred: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    wait_for(pred, timeout, what)
    return round(time.monotonic() - started, 1)


def test_with_the_operator_stopped_a_running_ftj_and_its_namespace_delete_at_once(
    isolated_operator, kube_api
):
    from kubernetes import client

    ns = isolated_operator.namespace
    op = isolated_operator()
    one, two = create_ftj(kube_api, ns, "one"), create_ftj(kube_api, ns, "two")
    one.wait_phase("Running", timeout=90)
    two.wait_phase("Running", timeout=90)
    assert not one.get()["metadata"].get("finalizers"), "a Running FineTuneJob must carry no finalizer"
    [job] = one.jobs()
    assert one.pods(job["metadata"]["name"])
    op.kill(signal.SIGKILL)

    _delete(one)
    ftj_seconds = _timed_wait(lambda: _ftj_gone(one), 30, "the FineTuneJob deleted with the operator down")
    wait_for(lambda: not one.jobs(), 60, "its Job garbage-collected")
    wait_for(lambda: not one.pods(job["metadata"]["name"]), 60, "its pods garbage-collected")

    client.CoreV1Api(kube_api).delete_namespace(ns)
    ns_seconds = _timed_wait(
        lambda: _namespace_gone(kube_api, ns), 30, "the namespace deleted, operator down"
    )
    print(f"\nDELETE-TIMES operator=down ftj={ftj_seconds}s namespace_with_1_running={ns_seconds}s")


def test_deleting_the_watched_namespace_with_running_ftjs_finishes(isolated_operator, kube_api):
    from kubernetes import client

    ns = isolated_operator.namespace
    isolated_operator()  # namespaced mode: it watches only this namespace
    ftjs = [create_ftj(kube_api, ns, f"run-{i}") for i in range(5)]
    for ftj in ftjs:
        ftj.wait_phase("Running", timeout=120)
    client.CoreV1Api(kube_api).delete_namespace(ns)
    seconds = _timed_wait(lambda: _namespace_gone(kube_api, ns), 60, "the watched namespace deleted")
    print(f"\nDELETE-TIMES operator=up namespace_with_5_running={seconds}s")


def test_finalizers_of_older_versions_are_removed_on_start(isolated_operator, kube_api):
    ns = isolated_operator.namespace
    marked = create_ftj(kube_api, ns, "marked", metadata={"finalizers": LEGACY})
    deleting = create_ftj(kube_api, ns, "deleting", metadata={"finalizers": LEGACY})
    _delete(deleting)  # with no operator up it stays Terminating, as with an old operator uninstalled
    assert deleting.get()["metadata"].get("deletionTimestamp")
    isolated_operator()
    wait_for(lambda: not marked.get()["metadata"].get("finalizers"), 60, "the old finalizers removed")
    wait_for(lambda: _ftj_gone(deleting), 60, "the Terminating FineTuneJob released")
    marked.wait_phase("Running", timeout=90)
    assert not marked.get()["metadata"].get("finalizers")


class _Stuck(http.server.BaseHTTPRequestHandler):
    """A trainer whose last step finished an hour ago."""

    def do_GET(self) -> None:
        body = "".join(
            f"{metric_name(k)} {v}\n"
            for k, v in {
                Metric.STEP: 5,
                Metric.TOTAL_STEPS: 100,
                Metric.LAST_STEP_TIMESTAMP_SECONDS: time.time() - 3600,
            }.items()
        )
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stuck_trainer() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stuck)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()


def test_stalled_trips_from_the_progress_loop(make_finetunejob, kube_api, stuck_trainer):
    from kubernetes import client

    ftj = make_finetunejob(stallTimeoutSeconds=30)
    ftj.wait_phase("Running")
    [pod] = ftj.pods(f"{ftj.name}-r1")
    client.CoreV1Api(kube_api).patch_namespaced_pod(
        pod["metadata"]["name"],
        ftj.namespace,
        {"metadata": {"annotations": {"finetuning.io/metrics-endpoint": stuck_trainer}}},
    )
    st = wait_for(
        lambda: (
            (s := ftj.status())
            and any(c["type"] == "Stalled" and c["status"] == "True" for c in s.get("conditions") or [])
            and s
        ),
        30,
        "the Stalled condition",
    )
    stalled = next(c for c in st["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "NoProgress" and st["progress"]["summary"] == "5/100"
    assert st["phase"] == "Running"
