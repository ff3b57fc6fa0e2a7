"""A real Prometheus (Debian package `prometheus`) scrapes the operator and a trainer endpoint, evaluates
the chart's PrometheusRule and answers the Grafana dashboard's queries.

The scrape targets carry the labels the chart's ServiceMonitor/PodMonitor give them (`job` = the metrics
Service, `namespace`, `finetunejob`), so the rule and dashboard expressions run unchanged.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import CHART, Helm, find

from finetune_api.metrics import Metric, Stage
from finetune_trainer.metrics_server import MetricsServer, TrainerMetrics
from harness import BASE_SPEC, GROUP, PLURAL, VERSION, Ftj, OperatorProcess, free_port
from helpers import wait_for
from summaries import trainer_summary

pytestmark = pytest.mark.e2e

INSTALL = "apt-get install -y prometheus"
RELEASE, RELEASE_NS = "ftj", "ftj-system"
OPERATOR_JOB = f"{RELEASE}-finetune-operator-metrics"


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if not path:
        pytest.fail(f"{name} is missing; install the Debian package: {INSTALL}", pytrace=False)
    return path


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False


def start_prometheus(prometheus_bin: str, config: dict[str, Any], tmp_path: Path) -> Prometheus:
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Prometheus(proc, port, log)


def rendered_monitoring(helm: Helm, operator_down_for: str = "1m") -> tuple[dict[str, Any], dict[str, Any]]:
    docs = helm.template(
        "-f",
        str(CHART / "ci" / "monitoring-values.yaml"),
        "--set",
        f"prometheusRule.operatorDownFor={operator_down_for}",
        release=RELEASE,
        namespace=RELEASE_NS,
    )
    [rule] = find(docs, "PrometheusRule")
    [dash] = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    return rule["spec"], json.loads(dash["data"]["finetune-operator.json"])


@pytest.fixture
def trainer_endpoint() -> Iterator[tuple[TrainerMetrics, int]]:
    metrics = TrainerMetrics()
    server = MetricsServer(metrics, free_port(), addr="127.0.0.1")
    try:
        yield metrics, server.port
    finally:
        server.close()


def test_prometheus_scrapes_operator_and_trainer_and_runs_the_charts_rules(
    cluster: Any,
    helm: Helm,
    kube_api: Any,
    crds_for_chart: None,
    iso_namespaces: Any,
    trainer_endpoint: tuple[TrainerMetrics, int],
    tmp_path: Path,
):
    prometheus_bin, promtool = binary("prometheus"), binary("promtool")
    rules, dashboard = rendered_monitoring(helm)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    ns = iso_namespaces("prom")
    op = OperatorProcess(Path(cluster.kubeconfig), [ns], tmp_path / "operator.log").start()
    trainer, trainer_port = trainer_endpoint
    # Stopped early at step 12 of 40 an hour ago, now uploading: no step is expected, no stall.
    trainer.set_stage(Stage.TRAINING)
    trainer.on_step(12, 40, 0.3, when=time.time() - 3600)
    trainer.set_stage(Stage.UPLOADING)
    trainer.set(Metric.TRAIN_LOSS, 1.25)
    trainer.on_eval_loss(1.5)
    trainer.set(Metric.TOKENS_PER_SECOND, 2048)
    trainer.on_tokens(4096)

    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            {
                "job_name": OPERATOR_JOB,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{op.metrics_port}"], "labels": {"namespace": RELEASE_NS}}
                ],
            },
            {
                "job_name": "finetune-trainers",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{trainer_port}"],
                        "labels": {"namespace": ns, "finetunejob": "support-bot", "run": "1"},
                    }
                ],
            },
        ],
    }
    prom = start_prometheus(prometheus_bin, config, tmp_path)
    proc = prom.proc
    try:
        wait_for(prom.ready, 60, f"prometheus to be ready (log: {prom.log})")
        wait_for(
            lambda: (
                {t["labels"]["job"]: t["health"] for t in prom.api("targets")["activeTargets"]}
                == {OPERATOR_JOB: "up", "finetune-trainers": "up"}
            ),
            30,
            "both targets up",
        )

        # The operator's series, after one run succeeded and one failed.
        custom_api = Ftj(kube_api, ns, "x").custom
        names = []
        for code in (0, 2):
            name = f"ftj-{uuid.uuid4().hex[:6]}"
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": name}}
            custom_api.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, {**body, "spec": BASE_SPEC}
            )
            ftj = Ftj(kube_api, ns, name)
            job = ftj.wait_phase("Running", 60)["run"]["jobName"]
            phase = "Succeeded" if code == 0 else "Failed"
            ftj.finish_pods(job, code, trainer_summary(code, "test"))
            ftj.wait_phase(phase, 60)
            names.append(name)

        def value(expr: str) -> float | None:
            res = prom.query(expr)
            return float(res[0]["value"][1]) if res else None

        wait_for(
            lambda: (
                value(f'finetune_operator_jobs{{job="{OPERATOR_JOB}", phase="Succeeded"}}') == 1
                and value('finetune_operator_jobs{phase="Failed"}') == 1
            ),
            30,
            "finetune_operator_jobs: one Succeeded and one Failed, in Prometheus",
        )
        assert value('finetune_operator_runs_total{result="succeeded"}') == 1
        assert value("sum(finetune_operator_handler_duration_seconds_count)") > 0
        assert value("finetune_operator_job_created_latency_seconds_count") == 2

        # The trainer's series, with the labels the PodMonitor's relabelings add.
        loss = prom.query(f'finetune_trainer_train_loss{{namespace="{ns}"}}')
        assert [(r["metric"]["finetunejob"], float(r["value"][1])) for r in loss] == [("support-bot", 1.25)]
        assert value('finetune_trainer_step{finetunejob="support-bot"}') == 12
        assert value("finetune_trainer_tokens_total") == 4096
        assert value('finetune_trainer_memory_bytes{device="cpu"}') > 0

        # Every alert rule evaluates cleanly; a failed run fires FineTuneJobFailed.
        def rules_state() -> dict[str, tuple[str, str]]:
            groups = prom.api("rules")["groups"]
            return {r["name"]: (r["health"], r["state"]) for g in groups for r in g["rules"]}

        wait_for(
            lambda: (s := rules_state()) and all(h == "ok" for h, _ in s.values()) and s,
            30,
            "every rule evaluated with health ok",
        )
        wait_for(lambda: rules_state()["FineTuneJobFailed"][1] == "firing", 30, "FineTuneJobFailed to fire")
        assert rules_state()["FineTuneOperatorDown"][1] == "inactive"
        assert rules_state()["FineTuneJobStalled"][1] == "inactive", "FineTuneJobStalled during an upload"
        trainer.set_stage(Stage.TRAINING)  # the same hour without a step, in training: a stall
        wait_for(lambda: rules_state()["FineTuneJobStalled"][1] == "firing", 30, "FineTuneJobStalled to fire")

        # The dashboard's queries are valid PromQL and the core panels have data.
        variables = {"$__rate_interval": "1m", "$__range": "5m", "$namespace": ".*"}
        empty = []
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for var, sub in variables.items():
                    expr = expr.replace(var, sub)
                if not prom.query(expr) and panel["title"] not in ("GPU-seconds (dashboard range)",):
                    empty.append(panel["title"])
        # No GPU here (memory is reported for "cpu"), and a single sample has no rate yet.
        assert set(empty) <= {"Runs finished (per hour)", "Operator API errors", "Reconcile latency (p95)"}

        # The operator goes away: FineTuneOperatorDown goes pending (then firing after `for`).
        op.kill(signal.SIGTERM)
        wait_for(
            lambda: rules_state()["FineTuneOperatorDown"][1] in ("pending", "firing"),
            30,
            "FineTuneOperatorDown after the operator stopped",
        )
    finally:
        op.kill(signal.SIGTERM)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def test_an_operator_restart_fires_no_alert(
    cluster: Any, helm: Helm, crds_for_chart: None, iso_namespaces: Any, tmp_path: Path
):
    """A restarted operator pod is a new series (new `instance`/`pod`), with runs_total pre-set to 0
    and no sample 10 minutes ago; none of the chart's alerts may fire for that, nor for the gap."""
    prometheus_bin = binary("prometheus")
    rules, _ = rendered_monitoring(helm, operator_down_for="5m")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules))
    ns = iso_namespaces("restart")
    targets = tmp_path / "operator-targets.json"

    def point_at(op: OperatorProcess, pod: str) -> None:
        staged = targets.with_suffix(".tmp")
        staged.write_text(
            json.dumps(
                [
                    {
                        "targets": [f"127.0.0.1:{op.metrics_port}"],
                        "labels": {"namespace": RELEASE_NS, "pod": pod},
                    }
                ]
            )
        )
        staged.replace(targets)

    first = OperatorProcess(Path(cluster.kubeconfig), [ns], tmp_path / "operator-a.log").start()
    point_at(first, "operator-a")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            {
                "job_name": OPERATOR_JOB,
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
            }
        ],
    }
    prom = start_prometheus(prometheus_bin, config, tmp_path)
    second: OperatorProcess | None = None
    try:
        wait_for(prom.ready, 60, f"prometheus to be ready (log: {prom.log})")

        def evaluated_after(pod: str) -> bool:
            """Five scrapes of this pod's runs_total, so the rules (every 1 s) ran over it."""
            expr = f'count_over_time(finetune_operator_runs_total{{pod="{pod}", result="failed"}}[1m])'
            res = prom.query(expr)
            return bool(res) and float(res[0]["value"][1]) >= 5

        wait_for(lambda: evaluated_after("operator-a"), 60, "rules evaluated over operator-a's series")
        first.kill(signal.SIGKILL)
        second = OperatorProcess(Path(cluster.kubeconfig), [ns], tmp_path / "operator-b.log").start()
        point_at(second, "operator-b")
        wait_for(lambda: evaluated_after("operator-b"), 60, "rules evaluated over operator-b's series")

        states = {r["name"]: r["state"] for g in prom.api("rules")["groups"] for r in g["rules"]}
        assert all(r["health"] == "ok" for g in prom.api("rules")["groups"] for r in g["rules"])
        fired = prom.query('max_over_time(ALERTS{alertstate="firing"}[10m])')
        assert fired == [], [r["metric"] for r in fired]
        ever_failed = prom.query('max_over_time(ALERTS{alertname="FineTuneJobFailed"}[10m])')
        assert ever_failed == [], "FineTuneJobFailed went pending or firing on a restart without failures"
        assert states["FineTuneJobFailed"] == "inactive"
    finally:
        first.kill(signal.SIGTERM)
        if second is not None:
            second.kill(signal.SIGTERM)
        if prom.proc.poll() is None:
            prom.proc.terminate()
            prom.proc.wait(timeout=30)
