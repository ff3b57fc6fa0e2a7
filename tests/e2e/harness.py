"""Handles for e2e tests: the operator as a subprocess, and a FineTuneJob in the cluster."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_operator.naming import label_value
from helpers import wait_for

GROUP, VERSION, PLURAL = "finetuning.io", "v1alpha1", "finetunejobs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OperatorProcess:
    """A running ``python -m finetune_operator`` with its ports and log file."""

    kubeconfig: Path
    namespaces: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0

    def start(self) -> OperatorProcess:
        self.metrics_port, self.health_port = free_port(), free_port()
        args = [sys.executable, "-m", "finetune_operator", "--kubeconfig", str(self.kubeconfig)]
        args += [f"--namespace={n}" for n in self.namespaces]
        args += [f"--metrics-port={self.metrics_port}", f"--health-port={self.health_port}"]
        env = {
            **os.environ,
            "FTJ_PROGRESS_INTERVAL": "1",
            # The operator runs outside the cluster: trainer endpoints are test servers on loopback.
            "FTJ_DEV_METRICS_ENDPOINTS": "true",
            "FTJ_TRAINER_IMAGE": "registry.local/finetune-trainer:test",
            **self.env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for(self._healthy, timeout=60, what=f"the operator's health endpoint (log: {self.log_path})")
        except BaseException:  # never healthy, or a signal unwinding the caller: the caller has no handle
            self.kill()
            raise
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def kill(self, sig: int = signal.SIGKILL, grace: float = 30.0) -> None:
        """Send ``sig`` to the operator's process group and wait for it. One still running after
        ``grace`` seconds is killed (never left behind), and the caller is told it did not stop."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
                stopped = f"the operator did not exit within {grace:g} s of signal {sig}; killed it"
                raise AssertionError(f"{stopped}:\n{self.log_tail()}") from None

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "\n".join(lines[-n:])


def requests_sent(metrics: str, verb: str, resource: str) -> int:
    """The operator's own count of its API requests (``finetune_operator_api_requests_total``)."""
    pattern = (
        rf'^finetune_operator_api_requests_total\{{resource="{re.escape(resource)}",verb="{verb}"\}} (\S+)$'
    )
    m = re.search(pattern, metrics, re.M)
    return int(float(m.group(1))) if m else 0


def handler_runs(metrics: str, handler: str) -> int:
    """How often the operator timed ``handler`` (``finetune_operator_handler_duration_seconds``)."""
    pattern = rf'^finetune_operator_handler_duration_seconds_count\{{handler="{re.escape(handler)}"\}} (\S+)$'
    m = re.search(pattern, metrics, re.M)
    return int(float(m.group(1))) if m else 0


BASE_SPEC: dict[str, Any] = {
    "model": {"name": "org/tiny-llama"},
    "method": "lora",
    "dataset": {"source": {"uri": "s3://bucket/train.jsonl"}},
    "hyperparameters": {"epochs": 1},
}


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class Ftj:
    """Handle on one FineTuneJob in the cluster."""

    api: Any
    namespace: str
    name: str

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def get(self) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        )

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    def patch(self, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name, body)

    def event_reasons(self) -> list[str]:
        """Reasons of the Events about this FineTuneJob, oldest first."""
        from kubernetes import client

        found = client.CoreV1Api(self.api).list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={self.name}"
        )
        return [e.reason for e in found.items if e.reason]

    def wait_phase(self, phase: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.status()).get("phase") == phase and s,
            timeout,
            f"{self.name} to reach {phase}",
        )

    def jobs(self) -> list[dict[str, Any]]:
        from kubernetes import client

        res = client.BatchV1Api(self.api).list_namespaced_job(
            self.namespace, label_selector=f"finetuning.io/finetunejob={label_value(self.name)}"
        )
        return [self.api.sanitize_for_serialization(j) for j in res.items]

    def pods(self, job_name: str | None = None) -> list[dict[str, Any]]:
        from kubernetes import client

        selector = (
            f"batch.kubernetes.io/job-name={job_name}"
            if job_name
            else f"finetuning.io/finetunejob={label_value(self.name)}"
        )
        res = client.CoreV1Api(self.api).list_namespaced_pod(self.namespace, label_selector=selector)
        return [self.api.sanitize_for_serialization(p) for p in res.items]

    def finish_pods(self, job_name: str, exit_code: int, message: str = "", count: int = 1) -> list[str]:
        """Make the kwok stages end the run's pods with ``exit_code`` and a termination message."""
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        pods = wait_for(
            lambda: (
                [p for p in self.pods(job_name) if p["status"].get("phase") in ("Pending", "Running")][:count]
                if len(self.pods(job_name)) >= count
                else None
            ),
            60,
            f"{count} pod(s) of {job_name}",
        )
        names = []
        for pod in pods:
            ann = {"finetuning.io/test-exit-code": str(exit_code)}
            if message:
                ann["finetuning.io/test-termination-message"] = message
            core.patch_namespaced_pod(
                pod["metadata"]["name"], self.namespace, {"metadata": {"annotations": ann}}
            )
            names.append(pod["metadata"]["name"])
        return names


def create_ftj(
    api: Any,
    namespace: str,
    name: str,
    spec: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Ftj:
    """Create a FineTuneJob from BASE_SPEC merged with ``spec`` (no operator needed)."""
    from kubernetes import client

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {**(metadata or {}), "name": name},
        "spec": deep_merge(BASE_SPEC, spec or {}),
    }
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return Ftj(api, namespace, name)
