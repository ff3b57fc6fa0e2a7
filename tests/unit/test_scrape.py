"""The trainer scraper treats pods as untrusted: what URL it builds, what it reads, what it keeps."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from finetune_api.metrics import Metric, metric_name
from finetune_operator.scrape import BODY_LIMIT, Endpoint, ScrapeError, endpoint_of, fetch, parse_metrics

ANNOTATION = "finetuning.io/metrics-endpoint"


def pod(ip: str = "10.0.0.7", annotation: str | None = None, port: int | None = 9400) -> dict[str, Any]:
    ports = [{"name": "metrics", "containerPort": port}] if port else []
    return {
        "metadata": {"annotations": {ANNOTATION: annotation} if annotation else {}},
        "spec": {"containers": [{"name": "trainer", "ports": ports}]},
        "status": {"podIP": ip, "phase": "Running"},
    }


def test_url_is_built_from_the_pod_ip_and_declared_port():
    assert endpoint_of(pod(port=9500)).url == "http://10.0.0.7:9500/metrics"
    assert endpoint_of(pod(ip="fd00::7")).url == "http://[fd00::7]:9400/metrics"
    assert endpoint_of(pod(port=None)).url == "http://10.0.0.7:9400/metrics"


@pytest.mark.parametrize("ip", ["", "localhost", "10.0.0.7/metrics?x", "0.0.0.0", "evil.example.com"])
def test_a_pod_ip_that_is_not_an_address_is_not_scraped(ip):
    assert endpoint_of(pod(ip=ip)) is None


def test_the_annotation_is_ignored_outside_dev_mode():
    p = pod(annotation="http://127.0.0.1:1234/metrics")
    assert endpoint_of(p).url == "http://10.0.0.7:9400/metrics"
    assert endpoint_of(p, use_pod_ip=False) is None


@pytest.mark.parametrize(
    "annotation",
    [
        "file:///etc/passwd",
        "https://127.0.0.1:1234/metrics",
        "http://169.254.169.254/latest/meta-data",
        "http://kubernetes.default.svc:443/api",
        "http://127.0.0.1/metrics",
        "http://127.0.0.1:1234/metrics?redirect=x",
        "http://127.0.0.1:99999/metrics",
        "http://user:pw@10.0.0.1:1234/",
    ],
)
def test_dev_mode_honours_only_loopback_http(annotation):
    assert endpoint_of(pod(annotation=annotation), use_pod_ip=False, dev=True) is None


def test_dev_mode_uses_a_loopback_annotation():
    ep = endpoint_of(pod(annotation="http://127.0.0.1:1234/metrics"), use_pod_ip=False, dev=True)
    assert ep == Endpoint("127.0.0.1", 1234, "/metrics")


def test_parser_drops_non_finite_negative_and_absurd_values():
    text = "\n".join(
        [
            f"{metric_name(Metric.STEP)} 1e300",
            f"{metric_name(Metric.TOTAL_STEPS)} 100",
            f"{metric_name(Metric.TRAIN_LOSS)} NaN",
            f"{metric_name(Metric.EVAL_LOSS)} +Inf",
            f"{metric_name(Metric.BEST_EVAL_LOSS)} -Inf",
            f"{metric_name(Metric.TOKENS_PER_SECOND)} -5",
            f"{metric_name(Metric.EPOCH)} 0.5",
            "",
        ]
    )
    assert parse_metrics(text) == {Metric.TOTAL_STEPS: 100.0, Metric.EPOCH: 0.5}


def test_garbage_is_a_scrape_error_not_a_crash():
    with pytest.raises(ScrapeError):
        parse_metrics('finetune_trainer_step{a="\n')


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        kind = self.path.strip("/")
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/secret")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        if kind == "ok":
            self.wfile.write(f"{metric_name(Metric.STEP)} 7\n".encode())
        elif kind == "huge":
            block = b"#" * 65535 + b"\n"
            for _ in range(50 * 16):  # 50 MiB
                self.wfile.write(block)
        elif kind == "trickle":
            for _ in range(100):
                self.wfile.write(b"#")
                self.wfile.flush()
                time.sleep(0.1)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def test_fetch_reads_a_metrics_page(server):
    text = asyncio.run(fetch(Endpoint("127.0.0.1", server, "/ok"), 5))
    assert parse_metrics(text) == {Metric.STEP: 7.0}


def test_redirects_are_not_followed(server):
    with pytest.raises(ScrapeError, match="302"):
        asyncio.run(fetch(Endpoint("127.0.0.1", server, "/redirect"), 5))


def test_a_huge_body_is_cut_off_at_the_cap(server):
    started = time.monotonic()
    with pytest.raises(ScrapeError, match=f"over {BODY_LIMIT}"):
        asyncio.run(fetch(Endpoint("127.0.0.1", server, "/huge"), 10))
    assert time.monotonic() - started < 5


def test_a_trickle_is_cut_off_at_the_deadline(server):
    started = time.monotonic()
    with pytest.raises(ScrapeError, match="within 1s"):
        asyncio.run(fetch(Endpoint("127.0.0.1", server, "/trickle"), 1))
    assert time.monotonic() - started < 2


def test_scrape_errors_carry_no_control_characters():
    exc = ScrapeError("http://x/\x1b[31mred\x00 and\r\nfake log line")
    assert "\x1b" not in str(exc) and "\x00" not in str(exc) and "\r" not in str(exc)
