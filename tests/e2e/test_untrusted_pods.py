"""Pods are untrusted input: hostile metrics endpoints and termination messages change nothing they
should not. The session operator runs in dev mode (loopback annotations honoured), the most
permissive setting, so this is the worst case."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from finetune_api.metrics import Metric, metric_name
from helpers import wait_for

pytestmark = pytest.mark.e2e

MARKER = "SECRETMARKER"


class _Hostile(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        kind = self.path.strip("/")
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/secret")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        try:
            if kind == "secret":
                self.wfile.write(f"{metric_name(Metric.STEP)} 666\n# {MARKER}\n".encode())
            elif kind == "huge":
                line = f"{metric_name(Metric.STEP)} 1 # {MARKER}\n".encode()
                block = line * (65536 // len(line))
                for _ in range(50 * 1024 * 1024 // len(block)):  # about 50 MiB
                    self.wfile.write(block)
            elif kind == "trickle":
                for ch in f"{metric_name(Metric.STEP)} 667\n":
                    self.wfile.write(ch.encode())
                    self.wfile.flush()
                    time.sleep(0.5)
            elif kind == "good":
                self.wfile.write(
                    f"{metric_name(Metric.STEP)} 12\n{metric_name(Metric.TOTAL_STEPS)} 48\n".encode()
                )
        except OSError:
            pass  # the operator hung up on us, as it should

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _annotate(kube_api: Any, ftj: Any, url: str) -> None:
    from kubernetes import client

    [pod] = ftj.pods(f"{ftj.name}-r1")
    client.CoreV1Api(kube_api).patch_namespaced_pod(
        pod["metadata"]["name"],
        ftj.namespace,
        {"metadata": {"annotations": {"finetuning.io/metrics-endpoint": url}}},
    )


def test_hostile_endpoints_leak_nothing_and_starve_nothing(
    operator, make_finetunejob, kube_api, kubectl, hostile
):
    endpoints = {
        "file": "file:///etc/passwd",
        "redirect": f"{hostile}/redirect",
        "huge": f"{hostile}/huge",
        "trickle": f"{hostile}/trickle",
    }
    bad = {kind: make_finetunejob(name=f"bad-{kind}") for kind in endpoints}
    good = make_finetunejob(name="good")
    for ftj in [*bad.values(), good]:
        ftj.wait_phase("Running", timeout=90)
    proc = psutil.Process(operator.proc.pid)
    rss_before = proc.memory_info().rss
    for kind, url in endpoints.items():
        _annotate(kube_api, bad[kind], url)
    _annotate(kube_api, good, f"{hostile}/good")

    # The good trainer is mirrored while the hostile ones are scraped every second.
    wait_for(lambda: ftj_step(good) == 12, 30, "the good trainer's progress")
    later = make_finetunejob(name="later")
    later.wait_phase("Running", timeout=60)  # reconciles still run
    peak = rss_before
    deadline = time.monotonic() + 10  # about ten sweeps over the hostile endpoints
    while time.monotonic() < deadline:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.2)
    grown_mib = (peak - rss_before) / 2**20
    assert grown_mib < 30, f"operator RSS grew by {grown_mib:.0f} MiB while scraping hostile endpoints"

    for ftj in bad.values():
        assert ftj_step(ftj) is None, f"{ftj.name}: {ftj.status().get('progress')}"
    events = kubectl("get", "events", "-n", good.namespace, "-o", "json").stdout
    log = operator.log_path.read_text(errors="replace")
    for text, where in ((events, "Events"), (log, "the operator log")):
        assert MARKER not in text and "root:x:0:0" not in text, f"pod-supplied content reached {where}"


def ftj_step(ftj: Any) -> int | None:
    return (ftj.status().get("progress") or {}).get("step")


def test_nan_in_a_termination_summary_is_dropped_and_status_written(make_finetunejob):
    ftj = make_finetunejob()
    ftj.wait_phase("Running")
    message = '{"version": 1, "phase": "Succeeded", "reason": "Succeeded",'
    message += ' "metrics": {"trainLoss": NaN, "evalLoss": 0.25, "tokensPerSecond": Infinity}}'
    ftj.finish_pods(f"{ftj.name}-r1", 0, message)
    st = ftj.wait_phase("Succeeded")
    assert st["metrics"]["evalLoss"] == 0.25
    assert "trainLoss" not in st["metrics"] and "tokensPerSecond" not in st["metrics"]


def test_an_unknown_failure_reason_from_the_trainer_is_not_copied(make_finetunejob):
    ftj = make_finetunejob(backoffLimit=0)
    ftj.wait_phase("Running")
    message = '{"version": 1, "phase": "Failed", "reason": "AllGood\\u001b[32m", "message": "x\\u0000y"}'
    ftj.finish_pods(f"{ftj.name}-r1", 3, message)
    st = ftj.wait_phase("Failed")
    assert st["reason"] == "InvalidData" and st["message"] == "xy"
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidData"
