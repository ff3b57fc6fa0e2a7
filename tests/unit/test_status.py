from __future__ import annotations

import pytest

from finetune_api.conditions import ConditionType, Phase, Reason, reason_names
from finetune_api.exitcodes import meaning_of
from finetune_api.status import FineTuneJobStatus, RunStatus
from finetune_operator.status import (
    JobView,
    apply_phase,
    apply_summary,
    condition,
    observe_job,
    outcome,
    push_history,
    read_summary,
    set_condition,
    termination_of,
)
from summaries import trainer_summary


def job(spec=None, status=None):
    return JobView.from_job({"spec": spec or {}, "status": status or {}})


def test_transition_time_changes_only_when_status_flips():
    conds = set_condition([], "Running", True, "PodsRunning", now="t1")
    conds = set_condition(conds, "Running", True, "PodsRunning", "still", now="t2")
    assert conds[0].last_transition_time == "t1" and conds[0].message == "still"
    conds = set_condition(conds, "Running", False, "NowSucceeded", now="t3")
    assert conds[0].last_transition_time == "t3" and conds[0].status == "False"


def test_suspended_job_is_queued_under_kueue_and_suspended_for_user():
    view = job({"suspend": True})
    assert observe_job(view, user_suspended=False, queued_by_kueue=True).phase == Phase.QUEUED
    assert observe_job(view, user_suspended=True, queued_by_kueue=True).phase == Phase.SUSPENDED


def test_running_needs_a_ready_pod():
    assert observe_job(job(status={"active": 1}), False, False).phase == Phase.PENDING
    assert observe_job(job(status={"active": 1, "ready": 1}), False, False).phase == Phase.RUNNING
    retry = observe_job(job(status={"active": 1, "failed": 1}), False, False)
    assert (retry.phase, retry.reason) == (Phase.PENDING, Reason.RETRYING)


def test_job_conditions_decide_terminal_phase():
    done = job(status={"conditions": [{"type": "Complete", "status": "True"}]})
    assert observe_job(done, False, False).phase == Phase.SUCCEEDED
    failed = job(
        status={"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    )
    observed = observe_job(failed, False, False)
    assert (observed.phase, observed.reason) == (Phase.FAILED, "BackoffLimitExceeded")


def pod(exit_code, message, index="0", finished="2026-01-01T00:00:00Z"):
    return {
        "metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": index}},
        "status": {
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": exit_code, "message": message, "finishedAt": finished}}}
            ]
        },
    }


def test_termination_prefers_rank0_then_newest():
    pods = [
        pod(1, "old", finished="2026-01-01T00:00:00Z"),
        pod(3, "new", finished="2026-01-01T00:05:00Z"),
        pod(75, "rank1", index="1", finished="2026-01-01T00:09:00Z"),
    ]
    assert termination_of(pods) == (3, "new")
    assert termination_of([]) == (None, None)


def test_failure_reason_comes_from_the_trainer_summary():
    failed = observe_job(
        job(status={"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}),
        False,
        False,
    )
    msg = trainer_summary(3, 'line 3: field "text" is empty')
    out = outcome(failed, 3, msg)
    assert (out.phase, out.reason) == (Phase.FAILED, "InvalidData")
    assert "line 3" in out.message


def test_output_upload_failure_names_no_output_and_keeps_the_reason():
    """Retries spent on a failed upload: the reason is the trainer's, and no remote output is claimed."""
    failed = observe_job(
        job(status={"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
        False,
        False,
    )
    msg = trainer_summary(
        76,
        "uploading the results to s3://models/run failed: ...",
        checkpoint={"step": 40, "uri": "file:///output/checkpoints/run-1-abc/checkpoint-40"},
    )
    out = outcome(failed, 76, msg)
    assert (out.phase, out.reason) == (Phase.FAILED, "OutputUploadFailed")
    assert "s3://models/run" in out.message
    assert out.summary is not None and meaning_of(76).retriable
    st = FineTuneJobStatus()
    apply_summary(st, out.summary)
    assert st.output is None


def test_malformed_or_oversized_summary_falls_back_to_exit_code():
    failed = observe_job(
        job(status={"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}),
        False,
        False,
    )
    out = outcome(failed, 5, "Traceback (most recent call last): boom")
    assert out.reason == "LossNotFinite" and "exit code 5" in out.message and "boom" in out.message
    out = outcome(failed, 4, "{" + "x" * 5000)
    assert out.reason == "QualityGateFailed"
    out = outcome(failed, None, None)
    assert out.reason == Reason.JOB_FAILED and "(Job reason: PodFailurePolicy)" in out.message


@pytest.mark.parametrize(
    "job_reason, reason",
    [
        ("BackoffLimitExceeded", Reason.BACKOFF_LIMIT_EXCEEDED),
        ("DeadlineExceeded", Reason.DEADLINE_EXCEEDED),
        ("MaxFailedIndexesExceeded", Reason.JOB_FAILED),
        ("\x1b[31mMadeUp", Reason.JOB_FAILED),
        (None, Reason.JOB_FAILED),
    ],
)
def test_a_failed_jobs_reason_is_one_of_ours(job_reason, reason):
    """status.reason is always a documented constant; the Job controller's own word goes in the message."""
    failed = observe_job(
        job(status={"conditions": [{"type": "Failed", "status": "True", "reason": job_reason}]}), False, False
    )
    assert failed.reason == reason and failed.reason in reason_names()
    assert "\x1b" not in failed.message


def test_a_phase_condition_that_no_longer_holds_gets_a_constant_reason():
    st = FineTuneJobStatus()
    apply_phase(st, Phase.RUNNING, Reason.PODS_RUNNING, "running", 1, "t1")
    apply_phase(st, Phase.SUCCEEDED, Reason.SUCCEEDED, "done", 1, "t2")
    running = next(c for c in st.conditions if c.type == ConditionType.RUNNING)
    assert (running.status, running.reason) == ("False", Reason.NOW_SUCCEEDED)
    assert {c.reason for c in st.conditions} <= reason_names()


def test_summary_fills_status_on_success():
    st = FineTuneJobStatus()
    text = trainer_summary(
        0,
        "done",
        metrics={"train_loss": 0.5, "eval_loss": 0.7, "best_step": 30},
        evaluation={"test": {"accuracy": 0.9}, "base": {"accuracy": 0.2}},
        output_uri="file:///out",
        checkpoint={"step": 30, "uri": "file:///out/checkpoints/checkpoint-30"},
    )
    apply_summary(st, read_summary(text))
    assert st.metrics is not None and st.metrics.eval_loss == 0.7 and st.metrics.best_step == 30
    assert st.wire()["evaluation"] == {"test": {"accuracy": 0.9}, "base": {"accuracy": 0.2}}
    assert st.wire()["lastCheckpoint"] == {"step": 30, "uri": "file:///out/checkpoints/checkpoint-30"}
    assert st.wire()["output"] == {"uri": "file:///out"}
    wire = st.wire()
    assert wire["metrics"]["evalLoss"] == 0.7 and wire["lastCheckpoint"]["step"] == 30


def test_apply_phase_keeps_conditions_consistent():
    st = FineTuneJobStatus()
    apply_phase(st, Phase.RUNNING, Reason.PODS_RUNNING, "running", 3, "t1")
    assert condition(st, ConditionType.RUNNING).status == "True"
    assert condition(st, ConditionType.SUCCEEDED).status == "False"
    apply_phase(st, Phase.SUCCEEDED, Reason.SUCCEEDED, "done", 3, "t2")
    assert condition(st, ConditionType.RUNNING).status == "False"
    assert condition(st, ConditionType.SUCCEEDED).status == "True"
    assert condition(st, ConditionType.SUCCEEDED).last_transition_time == "t2"
    assert st.observed_generation == 3


def test_history_is_bounded_and_newest_first():
    st = FineTuneJobStatus()
    for n in range(1, 9):
        st.run = RunStatus(number=n, job_name=f"j-r{n}", spec_hash="h")
        push_history(st, Phase.SUCCEEDED, None, limit=5)
    assert [h.number for h in st.history] == [8, 7, 6, 5, 4]


def _waiting(reason, message):
    return {"status": {"containerStatuses": [{"state": {"waiting": {"reason": reason, "message": message}}}]}}


def test_missing_secret_is_read_from_the_kubelets_waiting_reason():
    from finetune_operator.status import missing_secret

    assert (
        missing_secret([_waiting("CreateContainerConfigError", 'secret "hub-token" not found')])
        == "hub-token"
    )
    assert missing_secret([_waiting("ContainerCreating", 'secret "hub-token" not found')]) is None
    assert (
        missing_secret([_waiting("CreateContainerConfigError", "couldn't find key token in Secret x")])
        is None
    )
    # Whatever else the message holds never comes back: only a valid Secret name does.
    hostile = 'secret "\x1b[31mBAD/../x" not found'
    assert missing_secret([_waiting("CreateContainerConfigError", hostile)]) is None


def test_a_run_whose_pods_are_gone_says_its_summary_was_lost():
    from finetune_api.conditions import Phase, Reason
    from finetune_operator.status import Observed, outcome, summary_lost

    ok = summary_lost(outcome(Observed(Phase.SUCCEEDED, Reason.SUCCEEDED, "done"), None, None))
    assert ok.phase == Phase.SUCCEEDED and ok.reason == Reason.SUMMARY_LOST and "lost" in ok.message
    failed = summary_lost(outcome(Observed(Phase.FAILED, "BackoffLimitExceeded", "too many"), None, None))
    assert failed.reason == "BackoffLimitExceeded" and "lost" in failed.message


def test_gpu_seconds_reads_both_forms_of_an_rfc3339_time():
    """Jobs read through the client serialise times as +00:00, watch events as Z: a resume after a
    run finished during operator downtime crashed on the former (60 s of kopf backoff per object)."""
    from finetune_operator.status import gpu_seconds

    assert gpu_seconds("2026-11-29T08:00:00Z", "2026-11-29T08:01:00Z", 2) == 120.0
    assert gpu_seconds("2026-11-29T08:00:00+00:00", "2026-11-29T08:01:00+00:00", 2) == 120.0
    assert gpu_seconds("2026-11-29T08:00:00Z", "2026-11-29T08:00:30+00:00", 1) == 30.0


def _event(reason, stamp, name="x-r1", message=""):
    return {
        "involvedObject": {"kind": "Job", "name": name},
        "reason": reason,
        "message": message,
        "lastTimestamp": stamp,
    }


def test_the_job_controllers_last_verdict_stands_in_for_a_vanished_job():
    from finetune_operator.status import JobView, final_job_from_events

    start = "2026-11-29T10:00:00Z"
    done = final_job_from_events([_event("Completed", "2026-11-29T10:05:00Z")], "x-r1", "ns", start)
    assert done is not None and JobView.from_job(done).complete
    failed = final_job_from_events(
        [
            _event(
                "BackoffLimitExceeded",
                "2026-11-29T10:05:00Z",
                message="Job has reached the specified backoff limit",
            )
        ],
        "x-r1",
        "ns",
        start,
    )
    assert (
        failed is not None and JobView.from_job(failed).failed_condition["reason"] == "BackoffLimitExceeded"
    )
    # An Event from before this run (an earlier object of the same name), or about another Job, is no verdict.
    assert final_job_from_events([_event("Completed", "2026-11-29T09:00:00Z")], "x-r1", "ns", start) is None
    assert (
        final_job_from_events([_event("Completed", "2026-11-29T10:05:00Z", name="y-r1")], "x-r1", "ns", start)
        is None
    )
    assert (
        final_job_from_events([_event("SuccessfulCreate", "2026-11-29T10:01:00Z")], "x-r1", "ns", start)
        is None
    )


def test_status_stored_by_an_older_operator_keeps_what_fits():
    stored = {
        "phase": "Running",
        "legacyField": {"a": 1},
        "run": {"number": 2, "jobName": "j-r2", "specHash": "abc", "oldRunKey": True},
        "metrics": {"evalLoss": 0.9, "customMetric": 3},
        "evaluation": {"tuned": {"loss": 0.5}, "test": {"loss": "low"}},
        "dataset": {"read": "ten", "train": 8},
        "history": [{"number": 1, "jobName": "j-r1", "phase": "Succeeded"}, {"jobName": "no number"}],
    }
    st = FineTuneJobStatus.from_stored(stored)
    assert st.phase == "Running" and st.run is not None and st.run.number == 2
    assert st.metrics is not None and st.metrics.eval_loss == 0.9
    assert st.wire()["evaluation"] == {"test": {}}
    assert st.wire()["dataset"] == {"train": 8}
    assert [h.number for h in st.history] == [1]
    assert "legacyField" not in st.wire()
