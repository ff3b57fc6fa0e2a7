"""Level-triggered safety net: lost events, deleted Jobs and API server restarts never leave a run
stuck in a phase that is no longer true."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from harness import GROUP, PLURAL, VERSION, Ftj, create_ftj, handler_runs, requests_sent
from helpers import load_hack, wait_for
from summaries import trainer_summary

pytestmark = pytest.mark.e2e


def _create(kube_api: Any, namespace: str, name: str, **spec: Any) -> Ftj:
    return create_ftj(kube_api, namespace, name, spec)


def _complete(job: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Complete" and c["status"] == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def test_api_server_restart_while_a_job_completes_still_reaches_succeeded(
    isolated_operator, kube_api, cluster
):
    isolated_operator(FTJ_RESYNC_INTERVAL="3")
    ftj = _create(kube_api, isolated_operator.namespace, "restarted")
    ftj.wait_phase("Running")
    summary = trainer_summary(0, metrics={"eval_loss": 0.25})
    ftj.finish_pods("restarted-r1", 0, summary)
    # The moment the Job completes the API server goes away, while the operator handles that event.
    wait_for(lambda: any(_complete(j) for j in ftj.jobs()), 60, "the Job to complete", interval=0.01)
    load_hack("localcluster").restart_component(cluster.name, "kube-apiserver")
    st = ftj.wait_phase("Succeeded", timeout=90)
    assert st["metrics"]["evalLoss"] == 0.25
    assert st["run"]["completionTime"]


def test_a_job_deleted_while_it_runs_fails_the_run_from_the_deleted_event(isolated_operator, kube_api):
    """The DELETED event alone tells the operator (the resync interval is far away)."""
    from kubernetes import client

    isolated_operator(FTJ_RESYNC_INTERVAL="3600")
    ftj = _create(kube_api, isolated_operator.namespace, "deleted")
    ftj.wait_phase("Running")
    client.BatchV1Api(kube_api).delete_namespaced_job(
        "deleted-r1", ftj.namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )
    st = ftj.wait_phase("Failed", timeout=30)
    assert st["reason"] == "JobDeleted"


@pytest.mark.parametrize("others", [0, 5], ids=["alone", "among five others: the resync lists Jobs"])
def test_a_lost_job_event_is_recovered_by_the_resync(isolated_operator, kube_api, others):
    """The operator's status write for the Job's completion is refused once (an admission policy
    stands in for any transient failure); kopf never retries that event and nothing about the
    FineTuneJob changes afterwards, so only the periodic resync can bring it to Succeeded. Among
    other Running FineTuneJobs the resync reads the namespace's Jobs with a LIST instead of a GET
    each (job_relist.py): the completed Job it shows must still be folded in."""
    from kubernetes import client

    ns = isolated_operator.namespace
    op = isolated_operator(FTJ_RESYNC_INTERVAL="2")
    ftj = _create(kube_api, ns, "lost")
    for other in [_create(kube_api, ns, f"other-{i}") for i in range(others)]:
        other.wait_phase("Running")
    ftj.wait_phase("Running")

    admission = client.AdmissionregistrationV1Api(kube_api)
    label = "finetuning.io/test-deny-status"
    policy = {
        "metadata": {"name": f"deny-status-{ns}"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "operations": ["UPDATE"],
                        "resources": [f"{PLURAL}/status"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"!('{label}' in namespaceObject.metadata.labels)",
                    "message": "status writes are refused for this test",
                }
            ],
        },
    }
    binding = {
        "metadata": {"name": f"deny-status-{ns}"},
        "spec": {
            "policyName": f"deny-status-{ns}",
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        },
    }
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)
    core = client.CoreV1Api(kube_api)
    try:
        core.patch_namespace(ns, {"metadata": {"labels": {label: "true"}}})

        def refused() -> bool:
            try:
                ftj.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, ns, PLURAL, "lost", {"status": {"phase": "Running"}}, dry_run="All"
                )
            except client.exceptions.ApiException as exc:
                return "refused for this test" in str(exc.body)
            return False

        wait_for(refused, 30, "the admission policy to refuse status writes")
        ftj.finish_pods("lost-r1", 0, trainer_summary(0))
        wait_for(lambda: any(_complete(j) for j in ftj.jobs()), 60, "the Job to complete")
        wait_for(
            lambda: "refused for this test" in op.log_tail(400), 30, "the operator's write to be refused"
        )
        assert ftj.status()["phase"] == "Running"
        core.patch_namespace(ns, {"metadata": {"labels": {label: None}}})
        st = ftj.wait_phase("Succeeded", timeout=30)
        assert st["run"]["completionTime"]
        # The resync's reconcile posts the Event (from its own thread pool it once raised LookupError, lost).
        wait_for(lambda: "Succeeded" in ftj.event_reasons(), 30, "the Succeeded Event from the resync")
        assert "LookupError" not in op.log_tail(400)
    finally:
        admission.delete_validating_admission_policy_binding(f"deny-status-{ns}")
        admission.delete_validating_admission_policy(f"deny-status-{ns}")


def test_a_job_removed_by_its_ttl_while_the_operator_was_down_is_still_a_success(isolated_operator, kube_api):
    """ttlSecondsAfterFinished: 0 and an operator restart: the Job and its pods are gone when the
    operator looks; the Job controller's Event still says Completed, so the run is Succeeded (with
    SummaryLost), not Failed/JobDeleted."""
    import signal

    op = isolated_operator()
    ftj = _create(kube_api, isolated_operator.namespace, "ttl", ttlSecondsAfterFinished=0)
    ftj.wait_phase("Running")
    op.kill(signal.SIGKILL)
    ftj.finish_pods("ttl-r1", 0, trainer_summary(0))
    wait_for(lambda: not ftj.jobs(), 60, "the TTL controller to remove the finished Job")
    assert ftj.status()["phase"] == "Running"
    isolated_operator()
    st = ftj.wait_phase("Succeeded", timeout=60)
    assert st["reason"] == "SummaryLost" and st["run"]["completionTime"]


def test_without_secret_permission_a_missing_secret_is_read_from_the_pod(isolated_operator, kube_api):
    """FTJ_SECRET_CHECK=pod (the chart's default: no RBAC on Secrets): the Job is created, and the
    kubelet's CreateContainerConfigError (written here the way a kubelet writes it, on a kwok node)
    fails the run as SecretNotFound and removes the Job that could never start."""
    from kubernetes import client

    isolated_operator(FTJ_SECRET_CHECK="pod")
    ftj = _create(
        kube_api,
        isolated_operator.namespace,
        "nosecret",
        secrets={"hubToken": {"name": "absent", "key": "t"}},
        preflightTimeoutSeconds=0,  # no wait for a Secret that may still appear (test_upgrades covers it)
    )
    ftj.wait_phase("Running")
    [pod] = ftj.pods("nosecret-r1")
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "absent" not found'}
    status = {
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
        ],
        "containerStatuses": [
            {
                "name": "trainer",
                "image": pod["spec"]["containers"][0]["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": waiting},
            }
        ],
    }
    client.CoreV1Api(kube_api).patch_namespaced_pod_status(
        pod["metadata"]["name"], ftj.namespace, {"status": status}
    )
    st = ftj.wait_phase("Failed", timeout=60)
    assert st["reason"] == "SecretNotFound" and "'absent'" in st["message"], st
    wait_for(lambda: not ftj.jobs(), 60, "the Job that could never start to be deleted")


def _across_sweeps(op: Any, count: int) -> tuple[str, str, int]:
    """The operator's metrics before and after at least ``count`` resync sweeps, and how many ran."""
    before = op.metrics()
    sweeps = handler_runs(before, "resync_sweep")
    wait_for(
        lambda: handler_runs(op.metrics(), "resync_sweep") >= sweeps + count,
        60,
        f"{count} resync sweeps",
        interval=0.5,
    )
    after = op.metrics()
    return before, after, handler_runs(after, "resync_sweep") - sweeps


def test_the_resync_reads_no_job_the_job_watch_keeps_showing(isolated_operator, kube_api):
    """Four Running FineTuneJobs whose Jobs the Job watch shows several times per resync interval and
    one whose Job stays quiet: the resync reads only the quiet one's Job (it read all five every
    sweep: 17,117 Job GETs for 2,000 objects in a 6-minute scale run). The quiet one is still read
    each sweep: the watch has shown nothing of it for longer than an interval."""
    from kubernetes import client

    ns = isolated_operator.namespace
    op = isolated_operator(FTJ_RESYNC_INTERVAL="3")
    busy = [_create(kube_api, ns, f"busy-{i}") for i in range(4)]
    quiet = _create(kube_api, ns, "quiet")
    for ftj in [*busy, quiet]:
        ftj.wait_phase("Running")
    batch = client.BatchV1Api(kube_api)
    stop = threading.Event()

    def touch() -> None:  # a MODIFIED event per busy Job about every 0.4 s (ten per interval)
        tick = 0
        while not stop.is_set():
            for ftj in busy:
                note = {"metadata": {"annotations": {"test.finetuning.io/tick": str(tick)}}}
                batch.patch_namespaced_job(f"{ftj.name}-r1", ns, note)
            tick += 1
            stop.wait(0.4)

    toucher = threading.Thread(target=touch, daemon=True)
    events = handler_runs(op.metrics(), "job_event")
    toucher.start()
    try:
        wait_for(
            lambda: handler_runs(op.metrics(), "job_event") >= events + 2 * len(busy),
            30,
            "the busy Jobs' events handled",
        )
        before, after, swept = _across_sweeps(op, 5)
    finally:
        stop.set()
        toucher.join(10)
    reads = requests_sent(after, "GET", "jobs") - requests_sent(before, "GET", "jobs")
    # The quiet one's Job once per sweep; slack for a busy one whose events lagged on a loaded machine
    # (reading all five, as before, is 5 per sweep).
    assert reads <= 2 * swept, f"{reads} Job GETs in {swept} sweeps: the resync read the busy Jobs too"
    assert reads >= swept - 1, f"{reads} Job GETs in {swept} sweeps: the quiet Job was not read each sweep"
    assert all(ftj.status()["phase"] == "Running" for ftj in [*busy, quiet])


def test_the_resync_lists_the_jobs_of_a_namespace_full_of_quiet_runs(isolated_operator, kube_api):
    """Eight Running FineTuneJobs whose Jobs stay quiet: each sweep reads their Jobs with one paged
    LIST (pages of 4 here: two requests) instead of eight GETs, and reconciles none of them, since
    every listed Job shows what status already holds."""
    ns = isolated_operator.namespace
    op = isolated_operator(FTJ_RESYNC_INTERVAL="3", FTJ_LIST_CHUNK_SIZE="4")
    quiet = [_create(kube_api, ns, f"quiet-{i}") for i in range(8)]
    for ftj in quiet:
        ftj.wait_phase("Running")
    before, after, swept = _across_sweeps(op, 4)
    reads = sum(
        requests_sent(after, verb, "jobs") - requests_sent(before, verb, "jobs") for verb in ("GET", "LIST")
    )
    reconciled = handler_runs(after, "reconcile") - handler_runs(before, "reconcile")
    # Two pages per sweep (one more sweep's worth for the one running when counting began).
    assert reads <= 2 * (swept + 1), (
        f"{reads} Job reads in {swept} sweeps: a GET per FineTuneJob is 8 a sweep"
    )
    assert reconciled <= len(quiet), f"{reconciled} reconciles in {swept} sweeps of quiet, listed runs"
    assert all(ftj.status()["phase"] == "Running" for ftj in quiet)
