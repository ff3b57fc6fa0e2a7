"""Pure transitions of a FineTuneJob's status: which run should exist, and where each event leads.

Each transition takes the status as read fresh for one write attempt, changes it in place and returns
a ``Change``: whether anything changed (so the caller writes) and which run result the write stands
for. No API calls, no metrics, no clock (``Facts.now`` comes in): the caller writes, then counts the
run, posts the Event and deletes what must go, once, after the write succeeded. A 409 re-runs the
transition on a fresher read, so a discarded attempt has no effect at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetune_api.conditions import ConditionType, Phase, Reason
from finetune_api.spec import FineTuneJobSpec
from finetune_api.status import FineTuneJobStatus, PlanStatus, Progress, RunStatus
from finetune_operator.constants import ANNOTATION_RERUN
from finetune_operator.naming import run_name, spec_hash
from finetune_operator.run_identity import CurrentRun, new_run_reason, run_digest
from finetune_operator.status import (
    JobView,
    Observed,
    Outcome,
    ScrapedProgress,
    apply_phase,
    apply_summary,
    gpu_seconds,
    newest,
    observe_job,
    push_history,
    set_condition,
)

STARTED = "started"
SUCCEEDED = "succeeded"
FAILED = "failed"


@dataclass(frozen=True)
class Change:
    """What one transition did to the status it was given."""

    changed: bool
    counted: str | None = None  # finetune_operator_runs_total{result}: STARTED, SUCCEEDED or FAILED
    finished: bool = False  # the Job's verdict was recorded (the caller observes the status latency)


UNCHANGED = Change(False)


@dataclass(frozen=True)
class Facts:
    """What a transition needs besides the event."""

    obj: dict[str, Any]  # the FineTuneJob as read for this write attempt
    generation: int | None  # the generation the handler acted on
    now: str
    history_limit: int

    @property
    def fresh_generation(self) -> int | None:
        generation = self.obj["metadata"].get("generation")
        return int(generation) if generation is not None else None


@dataclass(frozen=True)
class RunStarted:
    """The run's Job was created: record it as the current run."""

    number: int
    job_name: str
    digest: str
    token: str
    plan: PlanStatus | None
    suspend: bool
    queue: bool  # spec.scheduling.queueName is set: Kueue admits the Job


@dataclass(frozen=True)
class RunRefused:
    """No Job is made for what the spec asks: an invalid spec, a failed pre-flight or a rejected child."""

    reason: str
    message: str
    digest: str
    token: str
    plan: PlanStatus | None = None


@dataclass(frozen=True)
class JobSeen:
    """The run's Job as it is now; ``result`` (with the trainer's summary) once it finished, and
    ``latest``, the progress scraped since the last progress write, folded in under the summary."""

    job_name: str
    view: JobView
    observed: Observed
    result: Outcome | None
    gpus: int
    latest: ScrapedProgress | None = None


@dataclass(frozen=True)
class JobGone:
    """The run's Job was deleted before it finished, and no verdict of it is known; ``latest`` as in
    ``JobSeen``."""

    job_name: str
    latest: ScrapedProgress | None = None


@dataclass(frozen=True)
class SecretAwaited:
    """The pods wait for a Secret that does not exist yet (within the pre-flight timeout)."""

    message: str


@dataclass(frozen=True)
class PodsCannotStart:
    """The pods can never start (a Secret still missing after the timeout): the run fails."""

    job_name: str
    reason: str
    message: str


Event = RunStarted | RunRefused | JobSeen | JobGone | SecretAwaited | PodsCannotStart


def rerun_token(obj: dict[str, Any]) -> str:
    return str(((obj["metadata"].get("annotations") or {}).get(ANNOTATION_RERUN)) or "")


def decide_run(obj: dict[str, Any], status: FineTuneJobStatus, digest: Callable[[], str]) -> str | None:
    """Why ``obj`` needs a new run (see run_identity), or None when its current run is the one asked for."""
    run = status.run
    current = (
        CurrentRun(spec_hash=run.spec_hash, rerun_token=run.rerun_token, generation=run.generation)
        if run
        else None
    )
    return new_run_reason(
        current,
        [h.rerun_token for h in status.history if h.rerun_token],
        obj["metadata"].get("generation"),
        status.observed_generation,
        rerun_token(obj),
        digest,
        lambda: spec_hash(dict(obj.get("spec") or {})),
    )


def is_current(obj: dict[str, Any], st: FineTuneJobStatus) -> bool:
    """Is the status' run the run the object's spec and rerun annotation ask for?"""
    spec = dict(obj.get("spec") or {})
    return decide_run(obj, st, lambda: run_digest(FineTuneJobSpec.model_validate(spec))) is None


def observe_generation(obj: dict[str, Any], st: FineTuneJobStatus) -> bool:
    """A finished run still observes every generation that asks for no new run (a suspend toggle, a
    no-op edit): GitOps tools read ``observedGeneration < generation`` as "not yet processed" forever
    otherwise. Part of every status write, so the race between an edit and a run finishing cannot
    leave it behind."""
    current = obj["metadata"].get("generation")
    if st.phase not in Phase.TERMINAL or current is None or st.observed_generation == current:
        return False
    if not is_current(obj, st):
        return False  # the edit asks for a new run: the run that starts observes it
    st.observed_generation = current
    return True


def next_phase(st: FineTuneJobStatus, event: Event, facts: Facts) -> Change:
    """Fold one event into ``st``."""
    match event:
        case RunStarted():
            return _started(st, event, facts)
        case RunRefused():
            return _refused(st, event, facts)
        case JobSeen():
            return _job_seen(st, event, facts)
        case JobGone():
            return _job_gone(st, event, facts)
        case SecretAwaited():
            return _secret_awaited(st, event, facts)
        case PodsCannotStart():
            return _cannot_start(st, event, facts)


def _reset_run(st: FineTuneJobStatus, run: RunStatus, plan: PlanStatus | None) -> None:
    st.run = run
    st.progress = None
    st.plan = plan
    st.preflight_wait = None


def _started(st: FineTuneJobStatus, e: RunStarted, facts: Facts) -> Change:
    if st.run and st.run.number >= e.number:
        return UNCHANGED  # recorded already (a retried handler, or a newer run won)
    if st.run and st.phase not in Phase.TERMINAL:
        push_history(st, "Superseded", Reason.SUPERSEDED, facts.history_limit)
    now, generation = facts.now, facts.generation
    run = RunStatus(
        number=e.number,
        job_name=e.job_name,
        spec_hash=e.digest,
        rerun_token=e.token,
        generation=generation,
        start_time=now,
    )
    _reset_run(st, run, e.plan)
    st.attempts = None
    st.reason = None
    st.evaluation = st.output = st.last_checkpoint = st.dataset = None
    st.metrics = None
    created = f"Job {e.job_name} created."
    st.conditions = set_condition(
        st.conditions, ConditionType.CREATED, True, Reason.JOB_CREATED, created, now, generation
    )
    if e.suspend or e.queue:
        # The Job was created suspended: record exactly what its first event will show, so that
        # event writes nothing (one status write per held start instead of two).
        held = observe_job(JobView.created_suspended(), e.suspend, e.queue)
        apply_phase(st, held.phase, held.reason, held.message, generation, now)
    else:
        # Pending until the pods run; the Job's first event (waiting for pods) keeps this (_job_seen).
        apply_phase(st, Phase.PENDING, Reason.JOB_CREATED, created, generation, now)
        for ctype in (ConditionType.SUCCEEDED, ConditionType.FAILED):
            st.conditions = set_condition(
                st.conditions, ctype, False, Reason.JOB_CREATED, "", now, generation
            )
    return Change(True, counted=STARTED)


def _refused(st: FineTuneJobStatus, e: RunRefused, facts: Facts) -> Change:
    if decide_run(facts.obj, st, lambda: e.digest) is None:
        return UNCHANGED  # recorded already, or the spec moved on to something else
    text = e.message
    if st.run and st.phase not in Phase.TERMINAL:
        # Create before delete: the previous Job keeps running until a new Job replaces it.
        text += f" The previous run's Job {st.run.job_name} keeps running until a new Job replaces it."
        push_history(st, "Superseded", Reason.SUPERSEDED, facts.history_limit)
    number = st.run.number + 1 if st.run else 1
    now, generation = facts.now, facts.generation
    run = RunStatus(
        number=number,
        job_name=run_name(facts.obj["metadata"]["name"], number),
        spec_hash=e.digest,
        rerun_token=e.token,
        generation=generation,
        start_time=now,
        completion_time=now,
    )
    _reset_run(st, run, e.plan)
    apply_phase(st, Phase.FAILED, e.reason, text, generation, now)
    st.conditions = set_condition(
        st.conditions, ConditionType.CREATED, False, e.reason, text, now, generation
    )
    push_history(st, Phase.FAILED, e.reason, facts.history_limit)
    return Change(True, counted=FAILED)


def _job_seen(st: FineTuneJobStatus, e: JobSeen, facts: Facts) -> Change:
    if st.run is None or st.run.job_name != e.job_name:
        return UNCHANGED  # not the current run's Job
    if st.phase in Phase.TERMINAL and st.run.completion_time:
        return UNCHANGED  # the verdict is recorded; a late event changes nothing
    before = st.wire()
    st.attempts = e.view.failed or None
    observed, result = e.observed, e.result
    if result is not None:
        return _finished(st, e, result, facts)
    waiting = observed.phase == Phase.PENDING and observed.reason == Reason.WAITING_FOR_PODS
    if waiting and st.phase == Phase.RUNNING:
        return UNCHANGED  # a pod just stopped being ready and the Job has not counted it yet
    if waiting and st.phase == Phase.PENDING and st.reason == Reason.JOB_CREATED and st.wire() == before:
        return UNCHANGED  # the Job's first event says what the start wrote: saves a write per run
    apply_phase(st, observed.phase, observed.reason, observed.message, facts.fresh_generation, facts.now)
    return Change(st.wire() != before)


def _finished(st: FineTuneJobStatus, e: JobSeen, result: Outcome, facts: Facts) -> Change:
    assert st.run is not None
    now = facts.now
    st.run.completion_time = e.view.completion_time or now
    newest(st, e.latest)
    if result.summary:
        apply_summary(st, result.summary)
    used = gpu_seconds(e.view.start_time, st.run.completion_time, e.gpus)
    st.gpu_seconds = round((st.gpu_seconds or 0.0) + used, 1)
    if st.plan is not None and st.plan.price_per_gpu_hour is not None:
        st.plan.actual_cost = round(st.gpu_seconds / 3600 * st.plan.price_per_gpu_hour, 2)
    apply_phase(st, result.phase, result.reason, result.message, facts.generation, now)
    final = result.summary.metrics if result.summary else None
    if final is not None and final.step is not None and final.total_steps:
        step, total = final.step, final.total_steps
        st.progress = Progress(
            step=step,
            total_steps=total,
            percent=int(100 * step / total),
            summary=f"{step}/{total}",
            last_heartbeat=st.progress.last_heartbeat if st.progress else None,
        )
    push_history(st, result.phase, result.reason, facts.history_limit)
    counted = SUCCEEDED if result.phase == Phase.SUCCEEDED else FAILED
    return Change(True, counted=counted, finished=True)


def _job_gone(st: FineTuneJobStatus, e: JobGone, facts: Facts) -> Change:
    if st.run is None or st.run.job_name != e.job_name or st.phase in Phase.TERMINAL:
        return UNCHANGED
    if not is_current(facts.obj, st):
        return UNCHANGED  # the spec moved on: the new run retires this Job on purpose
    message = f"Job {e.job_name} was deleted while it ran."
    newest(st, e.latest)
    return _fail(st, Reason.JOB_DELETED, message, facts)


def _secret_awaited(st: FineTuneJobStatus, e: SecretAwaited, facts: Facts) -> Change:
    if st.phase != Phase.PENDING or st.reason == Reason.WAITING_FOR_SECRET:
        return UNCHANGED
    apply_phase(st, Phase.PENDING, Reason.WAITING_FOR_SECRET, e.message, facts.fresh_generation, facts.now)
    return Change(True)


def _cannot_start(st: FineTuneJobStatus, e: PodsCannotStart, facts: Facts) -> Change:
    if st.run is None or st.run.job_name != e.job_name or st.phase in Phase.TERMINAL:
        return UNCHANGED
    return _fail(st, e.reason, f"{e.message} Fix it, then set the {ANNOTATION_RERUN} annotation.", facts)


def _fail(st: FineTuneJobStatus, reason: str, message: str, facts: Facts) -> Change:
    assert st.run is not None
    st.run.completion_time = facts.now
    apply_phase(st, Phase.FAILED, reason, message, facts.generation, facts.now)
    push_history(st, Phase.FAILED, reason, facts.history_limit)
    return Change(True, counted=FAILED)
