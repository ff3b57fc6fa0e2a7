"""Every phase x every event through the pure transitions: the table of where a FineTuneJob goes.

Rows are the status a write attempt reads (no run yet, or run 1 in each phase); columns are the
events the reconcile shell folds in. A cell is ``-`` (nothing changes, so nothing is written) or
``Phase/Reason`` with ``+result`` when the write counts a run in finetune_operator_runs_total.
"""

from __future__ import annotations

import dataclasses
from typing import Any, get_args

import pytest

from finetune_api.conditions import ConditionType, Phase, Reason
from finetune_api.status import FineTuneJobStatus, HistoryEntry, RunStatus
from finetune_operator.status import JobView, Observed, apply_phase, condition, observe_job, outcome
from finetune_operator.transitions import (
    UNCHANGED,
    Event,
    Facts,
    JobGone,
    JobSeen,
    PodsCannotStart,
    RunRefused,
    RunStarted,
    SecretAwaited,
    decide_run,
    next_phase,
    observe_generation,
)

T0 = "2026-01-01T00:00:00Z"
NOW = "2026-01-01T01:00:00Z"
JOB = "demo-r1"
SPEC = {"model": {"name": "org/base"}, "dataset": {"source": {"uri": "file:///data/train.jsonl"}}}


def obj(generation: int = 1, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "demo", "namespace": "ml", "generation": generation}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": SPEC}


def facts(generation: int = 1, **kw: Any) -> Facts:
    return Facts(obj(generation, **kw), generation, NOW, 5)


def state(phase: str | None, reason: str = "", message: str = "") -> FineTuneJobStatus:
    if phase is None:
        return FineTuneJobStatus()
    done = phase in Phase.TERMINAL
    run = RunStatus(
        number=1,
        job_name=JOB,
        spec_hash="h1",
        generation=1,
        start_time=T0,
        completion_time=T0 if done else None,
    )
    st = FineTuneJobStatus(run=run)
    apply_phase(st, phase, reason, message, 1, T0)
    return st


def seen(
    job_status: dict[str, Any], suspend: bool = False, *, user: bool = False, queue: bool = False
) -> JobSeen:
    view = JobView.from_job({"spec": {"suspend": suspend}, "status": job_status})
    observed = observe_job(view, user, queue)
    result = outcome(observed, None, None) if observed.phase in Phase.TERMINAL else None
    return JobSeen(JOB, view, observed, result, gpus=1)


FAILED_JOB = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
STATES: dict[str, FineTuneJobStatus] = {
    "no run": state(None),
    "Pending": state(Phase.PENDING, Reason.JOB_CREATED, f"Job {JOB} created."),
    "Pending, secret": state(Phase.PENDING, Reason.WAITING_FOR_SECRET, "Secret 'hub' ..."),
    "Queued": state(Phase.QUEUED, Reason.QUEUED_BY_KUEUE, "Waiting for Kueue to admit the Job."),
    "Running": state(Phase.RUNNING, Reason.PODS_RUNNING, "Trainer pods are running."),
    "Suspended": state(Phase.SUSPENDED, Reason.SUSPENDED_BY_USER, "spec.suspend is true."),
    "Succeeded": state(Phase.SUCCEEDED, Reason.SUCCEEDED, "The trainer finished."),
    "Failed": state(Phase.FAILED, "InvalidData", "line 3: no completion"),
}
EVENTS: dict[str, tuple[Event, Facts]] = {
    "start": (RunStarted(2, "demo-r2", "h2", "", None, suspend=False, queue=False), facts(2)),
    "start suspended": (RunStarted(2, "demo-r2", "h2", "", None, suspend=True, queue=False), facts(2)),
    "start queued": (RunStarted(2, "demo-r2", "h2", "", None, suspend=False, queue=True), facts(2)),
    "refused": (RunRefused(Reason.JOB_REJECTED, "quota", "h2", ""), facts(2)),
    "job waiting": (seen({"active": 1}), facts()),
    "job running": (seen({"active": 1, "ready": 1}), facts()),
    "job retrying": (seen({"active": 1, "failed": 1}), facts()),
    "job suspended": (seen({}, True, user=True), facts()),
    "job queued": (seen({}, True, queue=True), facts()),
    "job complete": (seen({"conditions": [{"type": "Complete", "status": "True"}]}), facts()),
    "job failed": (seen(FAILED_JOB), facts()),
    "old job": (
        JobSeen("demo-r0", seen({}).view, Observed(Phase.RUNNING, "PodsRunning", "x"), None, 1),
        facts(),
    ),
    "job gone": (JobGone(JOB), facts()),
    "secret awaited": (SecretAwaited("Secret 'hub' named in spec.secrets does not exist ..."), facts()),
    "pods cannot start": (PodsCannotStart(JOB, Reason.SECRET_NOT_FOUND, "Secret 'hub' ..."), facts()),
}

START = ["Pending/JobCreated +started", "Suspended/SuspendedByUser +started", "Queued/QueuedByKueue +started"]
REF = "Failed/JobRejected +failed"
WAIT = "Pending/WaitingForPods"
RUN = "Running/PodsRunning"
RETRY = "Pending/Retrying"
SUSP = "Suspended/SuspendedByUser"
QUEUE = "Queued/QueuedByKueue"
DONE = "Succeeded/Succeeded +succeeded"
FAIL = "Failed/BackoffLimitExceeded +failed"
GONE = "Failed/JobDeleted +failed"
AWAIT = "Pending/WaitingForSecret"
NOSEC = "Failed/SecretNotFound +failed"
_ = "-"

# columns: the 3 starts, refused | job: waiting running retrying suspended queued complete failed old |
# job gone | secret awaited | pods cannot start
TABLE: dict[str, list[str]] = {
    "no run":          [*START, REF, _,    _,   _,     _,    _,     _,    _,    _, _,    _,     _],
    "Pending":         [*START, REF, _,    RUN, RETRY, SUSP, QUEUE, DONE, FAIL, _, GONE, AWAIT, NOSEC],
    "Pending, secret": [*START, REF, WAIT, RUN, RETRY, SUSP, QUEUE, DONE, FAIL, _, GONE, _,     NOSEC],
    "Queued":          [*START, REF, WAIT, RUN, RETRY, SUSP, _,     DONE, FAIL, _, GONE, _,     NOSEC],
    "Running":         [*START, REF, _,    _,   RETRY, SUSP, QUEUE, DONE, FAIL, _, GONE, _,     NOSEC],
    "Suspended":       [*START, REF, WAIT, RUN, RETRY, _,    QUEUE, DONE, FAIL, _, GONE, _,     NOSEC],
    "Succeeded":       [*START, REF, _,    _,   _,     _,    _,     _,    _,    _, _,    _,     _],
    "Failed":          [*START, REF, _,    _,   _,     _,    _,     _,    _,    _, _,    _,     _],
}  # fmt: skip


def outcome_of(st: FineTuneJobStatus, event: Event, f: Facts) -> str:
    before = st.wire()
    change = next_phase(st, event, f)
    if change == UNCHANGED:
        assert st.wire() == before, "an unchanged transition must leave the status as it was"
        return "-"
    assert change.changed and st.wire() != before
    cell = f"{st.phase}/{st.reason}"
    return f"{cell} +{change.counted}" if change.counted else cell


CELLS = [(row, col) for row in TABLE for col in EVENTS]


def test_the_table_covers_every_phase_and_every_event():
    phases = {s.phase for s in STATES.values()}
    assert phases == {None, *Phase.ALL}
    assert {type(e) for e, _ in EVENTS.values()} == set(get_args(Event))
    assert all(len(cells) == len(EVENTS) for cells in TABLE.values()) and TABLE.keys() == STATES.keys()


@pytest.mark.parametrize(("row", "col"), CELLS, ids=[f"{r} x {c}" for r, c in CELLS])
def test_transition(row: str, col: str):
    st = STATES[row].model_copy(deep=True)
    event, f = EVENTS[col]
    assert outcome_of(st, event, f) == TABLE[row][list(EVENTS).index(col)]


def test_a_new_run_supersedes_a_live_one_and_resets_what_the_old_run_reported():
    st = STATES["Running"].model_copy(deep=True)
    st.metrics = st.metrics or None
    st.output = {"uri": "s3://b/old"}
    next_phase(st, RunStarted(2, "demo-r2", "h2", "tok", None, suspend=False, queue=False), facts(2))
    assert st.run is not None and (st.run.number, st.run.job_name, st.run.generation) == (2, "demo-r2", 2)
    assert st.run.rerun_token == "tok" and st.output is None and st.observed_generation == 2
    assert [(h.number, h.phase) for h in st.history] == [(1, "Superseded")]
    assert condition(st, ConditionType.CREATED).status == "True"
    assert condition(st, ConditionType.RUNNING).status == "False"


HELD_STARTS = {
    "running": ({}, {"active": 1}),
    "suspended": ({"suspend": True}, {}),
    "queued": ({"queue": True}, {}),
}


@pytest.mark.parametrize("before", ["no run", "Running", "Suspended", "Succeeded", "Failed"])
@pytest.mark.parametrize("start", list(HELD_STARTS))
def test_the_first_event_of_the_job_a_start_created_writes_nothing(start: str, before: str):
    """The start knows how it created the Job (suspended for spec.suspend or a Kueue queue), so its
    write already records the phase and conditions that Job's first event implies: that event costs
    no second status write (issue 11: a suspended burst wrote status twice per object)."""
    held, job_status = HELD_STARTS[start]
    st = STATES[before].model_copy(deep=True)
    number = 2 if st.run else 1
    job_name = f"demo-r{number}"
    event = RunStarted(number, job_name, "h2", "", None, held.get("suspend", False), held.get("queue", False))
    assert next_phase(st, event, facts(2)).counted == "started"
    suspended = bool(held)
    first = seen(job_status, suspended, user=held.get("suspend", False), queue=held.get("queue", False))
    assert outcome_of(st, dataclasses.replace(first, job_name=job_name), facts(2)) == "-"


def test_a_suspended_start_resumes_and_a_queued_start_is_admitted():
    for held, phase in (({"suspend": True}, Phase.SUSPENDED), ({"queue": True}, Phase.QUEUED)):
        st = state(None)
        event = RunStarted(1, JOB, "h1", "", None, held.get("suspend", False), held.get("queue", False))
        next_phase(st, event, facts())
        assert condition(st, phase).status == "True"
        assert outcome_of(st, seen({"active": 1}), facts()) == WAIT
        assert outcome_of(st, seen({"active": 1, "ready": 1}), facts()) == RUN
        assert (
            condition(st, phase).status == "False" and condition(st, ConditionType.RUNNING).status == "True"
        )


def test_a_retried_start_is_recorded_once():
    st = state(None)
    event = RunStarted(1, JOB, "h1", "", None, suspend=False, queue=False)
    assert next_phase(st, event, facts()).counted == "started"
    assert next_phase(st, event, facts()) == UNCHANGED


def test_a_refusal_names_the_live_job_it_keeps():
    st = STATES["Running"].model_copy(deep=True)
    next_phase(st, RunRefused(Reason.JOB_REJECTED, "quota exceeded.", "h2", ""), facts(2))
    assert st.run is not None and st.run.number == 2 and st.run.completion_time == NOW
    assert (
        st.message
        == f"quota exceeded. The previous run's Job {JOB} keeps running until a new Job replaces it."
    )
    assert condition(st, ConditionType.CREATED).status == "False"


def test_a_refusal_the_spec_no_longer_asks_for_is_not_recorded():
    st = STATES["Running"].model_copy(deep=True)  # run 1 started at generation 1 from hash h1
    assert next_phase(st, RunRefused(Reason.INVALID_SPEC, "bad", "h1", ""), facts(2)) == UNCHANGED


def test_a_finished_run_records_gpu_seconds_cost_and_final_progress():
    st = STATES["Running"].model_copy(deep=True)
    view = JobView.from_job(
        {"status": {"startTime": T0, "completionTime": "2026-01-01T00:10:00Z",
                    "conditions": [{"type": "Complete", "status": "True"}]}}
    )  # fmt: skip
    observed = observe_job(view, False, False)
    summary = '{"version":1,"phase":"Succeeded","metrics":{"step":40,"total_steps":40}}'
    event = JobSeen(JOB, view, observed, outcome(observed, 0, summary), gpus=2)
    change = next_phase(st, event, facts())
    assert change.finished and change.counted == "succeeded"
    assert (
        st.gpu_seconds == 1200.0 and st.run is not None and st.run.completion_time == "2026-01-01T00:10:00Z"
    )
    assert st.progress is not None and st.progress.summary == "40/40"
    assert st.history[0].phase == Phase.SUCCEEDED


def test_a_deleted_job_of_a_superseded_run_is_not_a_failure():
    """The spec moved on (generation 2 asks for another run): the new run retires this Job on purpose."""
    st = STATES["Running"].model_copy(deep=True)
    moved = Facts(obj(2, annotations={"finetuning.io/rerun": "again"}), 2, NOW, 5)
    assert next_phase(st, JobGone(JOB), moved) == UNCHANGED


RUN_CASES = [
    # (name, status, object generation, rerun annotation, digest of the spec, expected)
    ("no run", state(None), 1, "", "h1", "first run"),
    ("same generation", STATES["Running"], 1, "", "h2", None),
    ("edited", STATES["Succeeded"], 2, "", "h2", "spec changed"),
    ("edited back to the same spec", STATES["Succeeded"], 2, "", "h1", None),
    ("new rerun token", STATES["Failed"], 1, "t1", "h1", "rerun requested"),
]


@pytest.mark.parametrize(("name", "st", "generation", "token", "digest", "expected"), RUN_CASES)
def test_decide_run(
    name: str, st: FineTuneJobStatus, generation: int, token: str, digest: str, expected: Any
):
    annotations = {"finetuning.io/rerun": token} if token else None
    assert decide_run(obj(generation, annotations), st, lambda: digest) == expected


def test_a_used_rerun_token_starts_nothing():
    st = STATES["Succeeded"].model_copy(deep=True)
    st.history = [HistoryEntry(number=0, job_name="demo-r0", phase=Phase.SUCCEEDED, rerun_token="t0")]
    assert decide_run(obj(1, {"finetuning.io/rerun": "t0"}), st, lambda: "h1") is None


@pytest.mark.parametrize(
    ("phase", "generation", "expected"),
    [(Phase.SUCCEEDED, 2, True), (Phase.SUCCEEDED, 1, False), (Phase.RUNNING, 2, False)],
)
def test_observe_generation_follows_edits_that_ask_for_no_run(phase: str, generation: int, expected: bool):
    """A finished run observes a suspend toggle (same run digest); a live run's writes set it anyway."""
    st = state(phase, "r", "m")
    st.run = st.run.model_copy(update={"spec_hash": _digest_of_base()}) if st.run else None
    assert observe_generation(obj(generation), st) is expected
    assert st.observed_generation == (generation if expected else 1)


def _digest_of_base() -> str:
    from finetune_api.spec import FineTuneJobSpec
    from finetune_operator.run_identity import run_digest

    return run_digest(FineTuneJobSpec.model_validate(obj()["spec"]))
