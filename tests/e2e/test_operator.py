"""The operator against a real API server, Job controller, garbage collector and scheduler."""

from __future__ import annotations

import http.server
import signal
import threading
from typing import Any

import pytest

from finetune_api.metrics import Metric, metric_name
from helpers import wait_for
from summaries import trainer_summary

pytestmark = pytest.mark.e2e


def cond(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def test_job_shape_on_a_gpu_node(make_finetunejob):
    ftj = make_finetunejob(resources={"cpu": "2", "memory": "4Gi"})
    st = ftj.wait_phase("Running")
    assert st["run"]["number"] == 1 and st["run"]["jobName"] == f"{ftj.name}-r1"
    [job] = ftj.jobs()
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    [pod] = ftj.pods(job["metadata"]["name"])
    assert pod["spec"]["nodeName"].startswith("gpu-node-")
    assert cond(st, "Running")["status"] == "True"
    assert cond(st, "Created")["status"] == "True"
    assert st["observedGeneration"] == ftj.get()["metadata"]["generation"]


def _main_writes(meta: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Who wrote the object itself (not its status subresource), and when."""
    fields = meta.get("managedFields") or []
    return sorted(
        (f.get("manager"), f.get("operation"), f.get("time")) for f in fields if not f.get("subresource")
    )


def test_success_fills_status_from_the_termination_message(make_finetunejob, kubectl):
    ftj = make_finetunejob()
    created = _main_writes(ftj.get()["metadata"])
    ftj.wait_phase("Running")
    msg = trainer_summary(
        0,
        "done",
        metrics={"train_loss": 0.42, "eval_loss": 0.51, "best_step": 40},
        evaluation={"test": {"loss": 0.5}, "base": {"loss": 2.5}},
        output_uri="file:///output",
        checkpoint={"step": 40, "uri": "file:///output/checkpoints/checkpoint-40"},
    )
    ftj.finish_pods(f"{ftj.name}-r1", 0, msg)
    res = kubectl(
        "wait", f"finetunejob/{ftj.name}", "-n", ftj.namespace, "--for=condition=Succeeded", "--timeout=60s"
    )
    assert "condition met" in res.stdout
    st = ftj.status()
    assert st["phase"] == "Succeeded"
    assert st["metrics"]["evalLoss"] == 0.51 and st["metrics"]["bestStep"] == 40
    assert st["evaluation"] == {"test": {"loss": 0.5}, "base": {"loss": 2.5}}
    assert st["output"] == {"uri": "file:///output"}
    assert st["lastCheckpoint"]["step"] == 40
    assert st["run"]["completionTime"]
    assert st["history"][0]["phase"] == "Succeeded"
    assert st["gpuSeconds"] >= 0
    out = kubectl("get", "ftj", ftj.name, "-n", ftj.namespace).stdout
    assert "Succeeded" in out and "org/tiny-llama" in out and "0.51" in out
    events = wait_for(
        lambda: "Succeeded" in (e := ftj.event_reasons()) and e,
        30,
        "a Succeeded event on the FineTuneJob",
    )
    # Only what someone acts on is an Event (each is an API write): not the routine Pending and Running.
    assert "JobCreated" not in events and "PodsRunning" not in events, events
    # The operator writes status only: no bookkeeping annotation or other write on the object itself
    # (kopf's last-handled-configuration PATCH was the costliest request of a burst, issue 11).
    meta = ftj.get()["metadata"]
    assert not [k for k in meta.get("annotations") or {} if k.startswith("kopf.")], meta.get("annotations")
    assert _main_writes(meta) == created, "only status may be written after the user's create"


def test_non_retriable_exit_fails_with_the_trainers_reason_and_no_retry(make_finetunejob):
    ftj = make_finetunejob(backoffLimit=3)
    ftj.wait_phase("Running")
    ftj.finish_pods(
        f"{ftj.name}-r1",
        3,
        trainer_summary(3, 'line 7: field "completion" is empty'),
    )
    st = ftj.wait_phase("Failed")
    assert st["reason"] == "InvalidData" and "line 7" in st["message"]
    assert cond(st, "Failed")["status"] == "True"
    [job] = ftj.jobs()
    assert job["status"].get("failed") == 1
    assert len(ftj.pods(job["metadata"]["name"])) == 1


def test_retriable_exit_is_retried(make_finetunejob):
    ftj = make_finetunejob(backoffLimit=2)
    ftj.wait_phase("Running")
    job_name = f"{ftj.name}-r1"
    first = ftj.finish_pods(job_name, 75, trainer_summary(75, "s3 timeout"))
    wait_for(lambda: len(ftj.pods(job_name)) >= 2, 60, "a second pod after a retriable failure")
    st = wait_for(lambda: (s := ftj.status()).get("attempts") == 1 and s, 60, "attempts=1 in status")
    assert st["phase"] in ("Pending", "Running")
    second = [p for p in ftj.pods(job_name) if p["metadata"]["name"] not in first]
    assert second, "no replacement pod"
    ftj.wait_phase("Running")
    ftj.finish_pods(job_name, 0, trainer_summary(0))
    assert ftj.wait_phase("Succeeded")["attempts"] == 1


def test_spec_change_starts_exactly_one_new_run(make_finetunejob):
    ftj = make_finetunejob()
    ftj.wait_phase("Running")
    ftj.patch({"spec": {"hyperparameters": {"epochs": 2}}})
    st = wait_for(lambda: (s := ftj.status()).get("run", {}).get("number") == 2 and s, 60, "run 2")
    assert st["history"][0]["number"] == 1 and st["history"][0]["phase"] == "Superseded"
    wait_for(lambda: [j["metadata"]["name"] for j in ftj.jobs()] == [f"{ftj.name}-r2"], 60, "only r2 left")
    ftj.wait_phase("Running")
    assert [j["metadata"]["name"] for j in ftj.jobs()] == [f"{ftj.name}-r2"]


def test_rerun_annotation_starts_a_new_run_after_success(make_finetunejob):
    ftj = make_finetunejob()
    ftj.wait_phase("Running")
    ftj.finish_pods(f"{ftj.name}-r1", 0, trainer_summary(0))
    ftj.wait_phase("Succeeded")
    ftj.patch({"metadata": {"annotations": {"finetuning.io/rerun": "2026-11-28"}}})
    st = wait_for(lambda: (s := ftj.status()).get("run", {}).get("number") == 2 and s, 60, "run 2")
    assert st["run"]["rerunToken"] == "2026-11-28"
    assert sorted(j["metadata"]["name"] for j in ftj.jobs()) == [f"{ftj.name}-r1", f"{ftj.name}-r2"]


def test_suspend_and_resume(make_finetunejob):
    ftj = make_finetunejob()
    ftj.wait_phase("Running")
    ftj.patch({"spec": {"suspend": True}})
    st = ftj.wait_phase("Suspended")
    assert cond(st, "Suspended")["status"] == "True"
    [job] = ftj.jobs()
    assert job["spec"]["suspend"] is True
    wait_for(
        lambda: (
            not [p for p in ftj.pods(job["metadata"]["name"]) if not p["metadata"].get("deletionTimestamp")]
        ),
        60,
        "pods gone while suspended",
    )
    ftj.patch({"spec": {"suspend": False}})
    st = ftj.wait_phase("Running")
    assert st["run"]["number"] == 1, "resuming must not start a new run"
    assert cond(st, "Suspended")["status"] == "False"


def test_kueue_queue_name_shows_queued(make_finetunejob):
    ftj = make_finetunejob(scheduling={"queueName": "team-a"})
    st = ftj.wait_phase("Queued")
    assert st["reason"] == "QueuedByKueue"
    [job] = ftj.jobs()
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True


def test_delete_removes_children(make_finetunejob, kube_api):
    from kubernetes import client

    ftj = make_finetunejob(method="full", distributed={"nodes": 2, "gpusPerNode": 1})
    ftj.wait_phase("Running")
    core = client.CoreV1Api(kube_api)
    assert core.read_namespaced_service(f"{ftj.name}-r1", ftj.namespace)
    selector = f"finetuning.io/finetunejob={ftj.name}"
    assert not core.list_namespaced_config_map(ftj.namespace, label_selector=selector).items, (
        "the trainer's config rides in the pod's annotation: no ConfigMap per run"
    )
    ftj.custom.delete_namespaced_custom_object(
        "finetuning.io", "v1alpha1", ftj.namespace, "finetunejobs", ftj.name
    )
    wait_for(lambda: not ftj.jobs(), 60, "the Job garbage-collected")
    wait_for(
        lambda: not core.list_namespaced_service(ftj.namespace, label_selector=selector).items,
        60,
        "the headless Service garbage-collected",
    )


def test_missing_secret_is_waited_for_then_fails_without_a_job(make_finetunejob):
    ftj = make_finetunejob(
        secrets={"hubToken": {"name": "no-such-secret", "key": "token"}}, preflightTimeoutSeconds=8
    )
    waiting = ftj.wait_phase("Pending")
    assert waiting["reason"] == "WaitingForSecret" and "no-such-secret" in waiting["message"]
    st = ftj.wait_phase("Failed", timeout=90)
    assert st["reason"] == "SecretNotFound" and "no-such-secret" in st["message"]
    assert "Waited 8 s" in st["message"] and "preflightWait" not in st
    assert ftj.jobs() == []


def test_a_secret_that_appears_later_needs_no_rerun(make_finetunejob, kube_api):
    from kubernetes import client

    ftj = make_finetunejob(secrets={"hubToken": {"name": "late-token", "key": "token"}})
    assert ftj.wait_phase("Pending")["reason"] == "WaitingForSecret"
    assert ftj.jobs() == []
    client.CoreV1Api(kube_api).create_namespaced_secret(
        ftj.namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="late-token"), string_data={"token": "x"}),
    )
    st = ftj.wait_phase("Running", timeout=120)
    assert st["run"]["number"] == 1 and "preflightWait" not in st
    assert len(ftj.jobs()) == 1


def test_missing_pvc_fails_without_a_job(make_finetunejob):
    a = make_finetunejob(output={"source": {"pvc": {"claimName": "results"}}}, preflightTimeoutSeconds=0)
    assert a.wait_phase("Failed")["reason"] == "PersistentVolumeClaimNotFound"
    assert a.jobs() == []


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args: Any) -> None:
        pass


def test_progress_is_mirrored_from_the_trainer_endpoint(make_finetunejob, kube_api):
    from kubernetes import client

    lines = {
        Metric.STEP: 30,
        Metric.TOTAL_STEPS: 120,
        Metric.EPOCH: 0.25,
        Metric.TRAIN_LOSS: 1.5,
        Metric.EVAL_LOSS: 1.7,
        Metric.TOKENS_PER_SECOND: 900.0,
        Metric.ETA_SECONDS: 300,
    }
    handler = type(
        "H",
        (_MetricsHandler,),
        {"body": "".join(f"{metric_name(k)} {v}\n" for k, v in lines.items()).encode()},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ftj = make_finetunejob()
        ftj.wait_phase("Running")
        [pod] = ftj.pods(f"{ftj.name}-r1")
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        client.CoreV1Api(kube_api).patch_namespaced_pod(
            pod["metadata"]["name"],
            ftj.namespace,
            {"metadata": {"annotations": {"finetuning.io/metrics-endpoint": url}}},
        )
        st = wait_for(
            lambda: (s := ftj.status()).get("progress", {}).get("step") == 30 and s, 30, "progress mirrored"
        )
        assert st["progress"]["summary"] == "30/120" and st["progress"]["percent"] == 25
        assert st["metrics"]["trainLoss"] == 1.5 and st["metrics"]["evalLoss"] == 1.7
        assert st["progress"]["etaSeconds"] == 300
    finally:
        server.shutdown()


def test_operator_kill_and_restart_never_duplicates_or_loses_a_transition(isolated_operator, kube_api):
    from kubernetes import client

    from harness import Ftj

    ns = isolated_operator.namespace
    op = isolated_operator()
    custom = client.CustomObjectsApi(kube_api)
    body = {
        "apiVersion": "finetuning.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "crashy"},
        "spec": {"model": {"name": "m"}, "dataset": {"source": {"uri": "s3://b/d.jsonl"}}},
    }
    custom.create_namespaced_custom_object("finetuning.io", "v1alpha1", ns, "finetunejobs", body)
    ftj = Ftj(kube_api, ns, "crashy")
    ftj.wait_phase("Running")
    op.kill(signal.SIGKILL)
    # While the operator is down the run finishes: the transition must not be lost.
    ftj.finish_pods("crashy-r1", 0, trainer_summary(0, metrics={"eval_loss": 0.3}))
    wait_for(
        lambda: any(p["status"].get("phase") == "Succeeded" for p in ftj.pods("crashy-r1")), 60, "pod done"
    )
    assert ftj.status()["phase"] == "Running"
    op2 = isolated_operator()
    st = ftj.wait_phase("Succeeded")
    assert st["metrics"]["evalLoss"] == 0.3
    assert [j["metadata"]["name"] for j in ftj.jobs()] == ["crashy-r1"]
    op2.kill(signal.SIGKILL)
    op3 = isolated_operator()
    wait_for(
        lambda: 'finetune_operator_jobs{phase="Succeeded"} 1.0' in op3.metrics(),
        30,
        "the restarted operator to have resumed the finished FineTuneJob",
    )
    assert [j["metadata"]["name"] for j in ftj.jobs()] == ["crashy-r1"]
    assert ftj.status()["run"]["number"] == 1


def test_operator_metrics(operator, make_finetunejob):
    ftj = make_finetunejob()
    ftj.wait_phase("Running")
    started = 'finetune_operator_runs_total{result="started"}'
    text = wait_for(lambda: (t := operator.metrics()) and started in t and t, 30, "runs_total in /metrics")
    for name in (
        "finetune_operator_jobs",
        "finetune_operator_handler_duration_seconds",
        "finetune_operator_job_created_latency_seconds",
    ):
        assert name in text
    assert 'finetune_operator_jobs{phase="Running"}' in text
