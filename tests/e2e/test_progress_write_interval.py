"""Progress is scraped every interval but written at most every write interval, except what someone acts on.

At fleet size the progress loop's status writes were the operator's largest steady write load: one
PUT per training job per sweep. Here the operator scrapes every second and writes progress at most
every 60 s: the first progress and a stall are written at once, a run that ends keeps the newest
step scraped (not the one last written), and in between the trainer is scraped many times for no
write. Status writes are counted from a watch on each object (every write is a new resourceVersion).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from finetune_api.metrics import Metric, metric_name
from harness import GROUP, PLURAL, VERSION, Ftj, create_ftj
from helpers import wait_for

pytestmark = pytest.mark.e2e

STALL_TIMEOUT = 30  # the smallest the CRD accepts
WRITE_INTERVAL = 60  # longer than the stall timeout: a stall that waited for it would show


@dataclass
class Trainer:
    """A trainer's /metrics whose step advances on every scrape until ``freeze``."""

    step: int = 0
    scrapes: int = 0
    last_step_at: float = 0.0
    frozen: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def scrape(self) -> bytes:
        with self.lock:
            self.scrapes += 1
            if not self.frozen:
                self.step += 1
                self.last_step_at = time.time()
            lines = {
                Metric.STEP: self.step,
                Metric.TOTAL_STEPS: 100000,
                Metric.TRAIN_LOSS: 1.0,
                Metric.LAST_STEP_TIMESTAMP_SECONDS: self.last_step_at,
            }
        return "".join(f"{metric_name(k)} {v}\n" for k, v in lines.items()).encode()

    def freeze(self) -> tuple[int, float]:
        with self.lock:
            self.frozen = True
            return self.step, self.last_step_at

    def scraped(self) -> int:
        with self.lock:
            return self.scrapes


@pytest.fixture
def trainers() -> Iterator[tuple[dict[str, Trainer], str]]:
    found: dict[str, Trainer] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = found[self.path.rsplit("/", 1)[-1]].scrape()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield found, f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


class StatusWrites:
    """Every status a watch delivers for one FineTuneJob, with when it arrived."""

    def __init__(self, api: Any, ns: str, name: str) -> None:
        from kubernetes import client, watch

        self.seen: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.stopped = False
        self.watch = watch.Watch()
        custom = client.CustomObjectsApi(api)
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

        def run() -> None:
            try:
                watch_events()
            except Exception:  # the stream ends when stop() closes it; a real loss shows as a count
                if not self.stopped:
                    raise

        def watch_events() -> None:
            for event in self.watch.stream(
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=obj["metadata"]["resourceVersion"],
                timeout_seconds=600,
            ):
                o = event["object"]
                version = o["metadata"]["resourceVersion"]
                with self.lock:
                    self.seen.append((time.monotonic(), version, o.get("status") or {}))

        threading.Thread(target=run, daemon=True).start()

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        with self.lock:
            return [st for t, _, st in self.seen if start <= t <= end]

    def stop(self) -> None:
        self.stopped = True
        self.watch.stop()


def _point_at(api: Any, ftj: Ftj, url: str) -> None:
    from kubernetes import client

    [pod] = ftj.pods(f"{ftj.name}-r1")
    client.CoreV1Api(api).patch_namespaced_pod(
        pod["metadata"]["name"],
        ftj.namespace,
        {"metadata": {"annotations": {"finetuning.io/metrics-endpoint": url}}},
    )


def _step(st: dict[str, Any]) -> int | None:
    return (st.get("progress") or {}).get("step")


def _stalled(st: dict[str, Any]) -> bool:
    return any(c["type"] == "Stalled" and c["status"] == "True" for c in st.get("conditions") or [])


def test_progress_is_written_less_often_than_scraped_but_a_stall_and_the_end_at_once(
    isolated_operator, kube_api, trainers
):
    found, url = trainers
    isolated_operator(FTJ_PROGRESS_INTERVAL="1", FTJ_PROGRESS_WRITE_INTERVAL=str(WRITE_INTERVAL))
    ns = isolated_operator.namespace
    steady = create_ftj(kube_api, ns, "steady", {"stallTimeoutSeconds": STALL_TIMEOUT})
    killed = create_ftj(kube_api, ns, "killed")
    for ftj in (steady, killed):
        ftj.wait_phase("Running", timeout=90)
    writes = {ftj.name: StatusWrites(kube_api, ns, ftj.name) for ftj in (steady, killed)}
    try:
        pointed = time.monotonic()
        for ftj in (steady, killed):
            found[ftj.name] = Trainer()
            _point_at(kube_api, ftj, f"{url}/{ftj.name}")

        # The first progress of a run is written at once.
        wait_for(lambda: _step(steady.status()), 20, "the first progress of the steady run")
        wait_for(lambda: _step(killed.status()), 20, "the first progress of the killed run")
        first_at = time.monotonic()
        assert first_at - pointed < 20

        # Ten scrapes later: the trainer moved on, status did not (nothing anyone acts on changed).
        scrapes_at_first = found["steady"].scraped()
        wait_for(lambda: found["steady"].scraped() >= scrapes_at_first + 10, 30, "ten more scrapes")
        wait_for(lambda: found["killed"].scraped() >= 10, 30, "ten scrapes of the killed run's trainer")
        # The killed run: its trainer stops, the loop scrapes the final step twice, then the pod is
        # OOM-killed (no summary): the verdict must carry the step scraped, not the one last written.
        killed_step, _ = found["killed"].freeze()
        frozen_scrapes = found["killed"].scraped()
        wait_for(lambda: found["killed"].scraped() >= frozen_scrapes + 2, 30, "two scrapes of the final step")
        assert _step(killed.status()) < killed_step, "the killed run's progress was written every scrape"
        killed.finish_pods("killed-r1", 137)

        # The steady run stops stepping: Stalled once STALL_TIMEOUT passed since its last step, at
        # once (well before WRITE_INTERVAL after the first write), with the newest step.
        stopped_step, last_step_at = found["steady"].freeze()
        stopped_scrapes = found["steady"].scraped()
        st = wait_for(
            lambda: (s := steady.status()) and _stalled(s) and s, STALL_TIMEOUT + 30, "the Stalled condition"
        )
        stalled_after = time.time() - last_step_at
        stalled_at = time.monotonic()
        assert stalled_after < STALL_TIMEOUT + 10, f"Stalled {stalled_after:.0f} s after the last step"
        assert stalled_at - first_at < WRITE_INTERVAL, "the stall waited for the write interval"
        assert _step(st) == stopped_step, f"the stall's write carries step {_step(st)}, not {stopped_step}"

        scrapes = found["steady"].scraped()
        status_writes = writes["steady"].between(pointed, stalled_at)
        assert scrapes >= stopped_scrapes + STALL_TIMEOUT // 2, f"only {scrapes} scrapes"
        # The first progress and the stall; before the write interval, one write per scrape.
        assert len(status_writes) <= 3, (
            f"{len(status_writes)} status writes for {scrapes} scrapes: {[_step(s) for s in status_writes]}"
        )

        end = killed.wait_phase("Failed", timeout=60)
        assert _step(end) == killed_step, f"the final status shows step {_step(end)}, scraped {killed_step}"
        assert end["progress"]["summary"] == f"{killed_step}/100000"
    finally:
        for w in writes.values():
            w.stop()
