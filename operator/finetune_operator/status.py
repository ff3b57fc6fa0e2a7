"""Pure status logic: conditions, the phase a Job implies, and what a trainer summary adds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from finetune_api.conditions import ConditionType, Phase, Reason
from finetune_api.exitcodes import meaning_of
from finetune_api.planning.report import mirror as mirror_plan
from finetune_api.results import TrainingMetrics
from finetune_api.status import Condition, FineTuneJobStatus, HistoryEntry, Progress
from finetune_api.summary import Summary, SummaryError, parse_summary
from finetune_api.wellknown import timestamp
from finetune_operator.sanitize import clean_summary, clean_text, trainer_reason

MESSAGE_LIMIT = 1024


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str = "",
    now: str | None = None,
    generation: int | None = None,
) -> list[Condition]:
    """Upsert a condition; its transition time changes only when its status flips."""
    value = "True" if status else "False"
    current = next((c for c in conditions if c.type == type_), None)
    unchanged = current is not None and current.status == value
    new = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message[:MESSAGE_LIMIT],
        last_transition_time=current.last_transition_time if current and unchanged else (now or timestamp()),
        observed_generation=generation,
    )
    if current is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]


def condition(status: FineTuneJobStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


@dataclass(frozen=True)
class JobView:
    """What the status needs from a batch/v1 Job."""

    suspended: bool
    active: int
    ready: int
    failed: int
    succeeded: int
    complete: bool
    failed_condition: dict[str, Any] | None
    start_time: str | None
    completion_time: str | None

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> JobView:
        spec = job.get("spec") or {}
        st = job.get("status") or {}
        conds = {c.get("type"): c for c in st.get("conditions") or [] if c.get("status") == "True"}
        return cls(
            suspended=bool(spec.get("suspend")),
            active=int(st.get("active") or 0),
            ready=int(st.get("ready") or 0),
            failed=int(st.get("failed") or 0),
            succeeded=int(st.get("succeeded") or 0),
            complete="Complete" in conds,
            failed_condition=conds.get("Failed"),
            start_time=st.get("startTime"),
            completion_time=st.get("completionTime"),
        )

    @classmethod
    def created_suspended(cls) -> JobView:
        """A Job as the operator creates it for ``spec.suspend`` or a Kueue queue: suspended, no pods."""
        return cls.from_job({"spec": {"suspend": True}})


@dataclass(frozen=True)
class Observed:
    phase: str
    reason: str
    message: str


def observe_job(job: JobView, user_suspended: bool, queued_by_kueue: bool) -> Observed:
    """The phase a live Job implies (terminal outcomes are refined by the trainer summary)."""
    if job.complete:
        return Observed(Phase.SUCCEEDED, Reason.SUCCEEDED, "The trainer finished.")
    if job.failed_condition is not None:
        job_reason = clean_text(job.failed_condition.get("reason") or "", 64)
        message = clean_text(job.failed_condition.get("message") or "The Job failed.")
        reason = Reason.OF_JOB.get(job_reason, Reason.JOB_FAILED)
        if reason == Reason.JOB_FAILED and job_reason:
            message = f"{message} (Job reason: {job_reason})"
        return Observed(Phase.FAILED, reason, message)
    if job.suspended:
        if user_suspended:
            return Observed(Phase.SUSPENDED, Reason.SUSPENDED_BY_USER, "spec.suspend is true.")
        if queued_by_kueue:
            return Observed(Phase.QUEUED, Reason.QUEUED_BY_KUEUE, "Waiting for Kueue to admit the Job.")
        return Observed(Phase.SUSPENDED, Reason.SUSPENDED_BY_USER, "The Job is suspended.")
    if job.ready > 0 or job.succeeded > 0:
        message = "Trainer pods are running." if job.ready else "The trainer finished; the Job is completing."
        if job.failed:
            message = f"Trainer pods are running (attempt {job.failed + 1})."
        return Observed(Phase.RUNNING, Reason.PODS_RUNNING, message)
    if job.failed:
        return Observed(Phase.PENDING, Reason.RETRYING, f"{job.failed} attempt(s) failed; retrying.")
    return Observed(Phase.PENDING, Reason.WAITING_FOR_PODS, "Waiting for trainer pods to start.")


def termination_of(pods: list[dict[str, Any]]) -> tuple[int | None, str | None]:
    """Exit code and message of the trainer container that speaks for the run.

    Rank 0 (completion index 0, or the only pod) is preferred, then the newest attempt.
    """
    found: list[tuple[bool, str, int, str | None]] = []
    for pod in pods:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        is_rank0 = str(annotations.get("batch.kubernetes.io/job-completion-index", "0")) == "0"
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term:
                found.append(
                    (
                        is_rank0,
                        str(term.get("finishedAt") or ""),
                        int(term.get("exitCode", 0)),
                        term.get("message"),
                    )
                )
    if not found:
        return None, None
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return found[0][2], found[0][3]


@dataclass(frozen=True)
class Outcome:
    phase: str
    reason: str
    message: str
    summary: Summary | None


def read_summary(message: str) -> Summary:
    """The operator's decoder: a pod's termination message as a Summary, size-capped, every string
    stripped of control characters and capped, numbers finite, what does not fit dropped."""
    return Summary.from_wire(clean_summary(parse_summary(message)))


def outcome(observed: Observed, exit_code: int | None, message: str | None) -> Outcome:
    """Combine the Job's verdict with the trainer's exit code and summary."""
    summary: Summary | None = None
    problem = ""
    if message:
        try:
            summary = read_summary(message)
        except SummaryError as exc:
            problem = str(exc)
    if observed.phase == Phase.SUCCEEDED:
        return Outcome(
            Phase.SUCCEEDED,
            Reason.SUCCEEDED,
            (summary.message if summary else "") or observed.message,
            summary,
        )
    reason = observed.reason
    text = observed.message
    if summary and summary.reason:
        reason = trainer_reason(summary.reason, exit_code)
        text = summary.message or meaning_of(exit_code or 1).description
    elif exit_code is not None and exit_code != 0:
        meaning = meaning_of(exit_code)
        reason = meaning.reason
        text = f"{meaning.description} (exit code {exit_code})"
        if message and problem:
            text += f"; last output: {clean_text(message[-300:], 300)}"
    return Outcome(Phase.FAILED, reason, text[:MESSAGE_LIMIT], summary)


def apply_summary(status: FineTuneJobStatus, summary: Summary) -> None:
    """Copy the trainer's final metrics, evaluation, data report, output and checkpoint into status, and
    its memory plan from the model's config.json with what torch measured (``status.plan.measured``)."""
    if summary.metrics is not None:
        final = {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in summary.metrics.model_dump(exclude_none=True).items()
        }
        merged = {**(status.metrics.model_dump(exclude_none=True) if status.metrics else {}), **final}
        status.metrics = TrainingMetrics.model_validate(merged)
    if summary.evaluation is not None:
        status.evaluation = summary.evaluation
    if summary.dataset is not None:
        status.dataset = summary.dataset
    if summary.output is not None:
        status.output = summary.output
    if summary.checkpoint is not None:
        status.last_checkpoint = summary.checkpoint
    plan = mirror_plan(summary.plan, status.plan)
    if plan is not None:
        status.plan = plan


@dataclass(frozen=True)
class ScrapedProgress:
    """The newest progress and metrics folded from a run's scrapes, written to status or not yet."""

    progress: Progress | None
    metrics: TrainingMetrics | None


def newest(stored: FineTuneJobStatus, scraped: ScrapedProgress | None) -> None:
    """Fold progress scraped after the last progress write into ``stored`` (a run's final write: the
    step it reached must not be lost). Only a Running run's, and never one behind what is stored."""
    if scraped is None or scraped.progress is None or stored.phase != Phase.RUNNING:
        return
    known = stored.progress.step if stored.progress else None
    if scraped.progress.step is None or (known is not None and scraped.progress.step < known):
        return
    stored.progress = scraped.progress
    stored.metrics = scraped.metrics or stored.metrics


def push_history(status: FineTuneJobStatus, phase: str, reason: str | None, limit: int) -> None:
    """Record the current run (finished or superseded) at the head of the history."""
    run = status.run
    if run is None:
        return
    entry = HistoryEntry(
        number=run.number,
        job_name=run.job_name,
        phase=phase,
        reason=reason,
        rerun_token=run.rerun_token or None,
        start_time=run.start_time,
        completion_time=run.completion_time,
        eval_loss=status.metrics.eval_loss if status.metrics else None,
    )
    rest = [h for h in status.history if h.number != run.number]
    status.history = [entry, *rest][:limit]


PHASE_CONDITIONS = {
    Phase.QUEUED: ConditionType.QUEUED,
    Phase.RUNNING: ConditionType.RUNNING,
    Phase.SUSPENDED: ConditionType.SUSPENDED,
    Phase.SUCCEEDED: ConditionType.SUCCEEDED,
    Phase.FAILED: ConditionType.FAILED,
}


def apply_phase(
    status: FineTuneJobStatus, phase: str, reason: str, message: str, generation: int | None, now: str
) -> None:
    """Set phase, reason and message, and keep the phase conditions consistent with them."""
    status.phase, status.reason, status.message = phase, reason, message[:MESSAGE_LIMIT]
    status.observed_generation = generation
    conds = status.conditions
    for ph, ctype in PHASE_CONDITIONS.items():
        active = ph == phase
        if (
            not active
            and condition(status, ctype) is None
            and ctype
            not in (
                ConditionType.SUCCEEDED,
                ConditionType.FAILED,
            )
        ):
            continue
        conds = set_condition(
            conds,
            ctype,
            active,
            reason if active else Reason.NOW[phase],
            message if active else "",
            now,
            generation,
        )
        status.conditions = conds
    if phase in Phase.TERMINAL:
        conds = (
            set_condition(conds, ConditionType.STALLED, False, reason, "", now, generation)
            if condition(status, ConditionType.STALLED)
            else conds
        )
    status.conditions = conds


def parse_time(stamp: str) -> datetime:
    """An API timestamp (``...Z`` on the wire, ``...+00:00`` from the client's models) as aware UTC."""
    parsed = datetime.fromisoformat(stamp)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def gpu_seconds(start: str | None, end: str | None, gpus: int) -> float:
    if not start or not end or gpus <= 0:
        return 0.0
    delta = parse_time(end) - parse_time(start)
    return max(delta.total_seconds(), 0.0) * gpus


__all__ = [
    "ConditionType",
    "JobView",
    "Observed",
    "Outcome",
    "apply_summary",
    "condition",
    "gpu_seconds",
    "observe_job",
    "outcome",
    "push_history",
    "set_condition",
    "termination_of",
]


def summary_lost(result: Outcome) -> Outcome:
    """The Job finished but no trainer pod was left to read: say so instead of guessing."""
    note = "The trainer's summary was lost: its pods were gone before the operator read them."
    if result.phase == Phase.SUCCEEDED:
        return Outcome(Phase.SUCCEEDED, Reason.SUMMARY_LOST, note, None)
    return Outcome(result.phase, result.reason, f"{result.message} {note}"[:MESSAGE_LIMIT], result.summary)


_MISSING_SECRET = re.compile(r'secret "([a-z0-9][-a-z0-9.]{0,252})" not found')


def missing_secret(pods: list[dict[str, Any]]) -> str | None:
    """The Secret a trainer container waits for in ``CreateContainerConfigError``, if any.

    Only a name that matches the kubelet's message and is a valid Secret name comes back; nothing
    else from the pod is passed on.
    """
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") != "CreateContainerConfigError":
                continue
            found = _MISSING_SECRET.search(str(waiting.get("message") or "")[:1024])
            if found:
                return found.group(1)
    return None


# The Job controller's Event reasons for a finished Job (k8s.io/kubernetes/pkg/controller/job).
_JOB_FAILED_EVENTS = (
    "BackoffLimitExceeded",
    "DeadlineExceeded",
    "PodFailurePolicy",
    "MaxFailedIndexesExceeded",
)
_CLOCK_SLACK = timedelta(seconds=60)


def final_job_from_events(
    events: list[dict[str, Any]], name: str, namespace: str, since: str | None
) -> dict[str, Any] | None:
    """A minimal Job carrying the verdict the Job controller announced, when the Job itself is gone.

    A Job removed by ``ttlSecondsAfterFinished`` while the operator was down leaves only its Events
    (kept about an hour): ``Completed``, or a failure reason. Events older than the run are ignored.
    """
    start = parse_time(since) - _CLOCK_SLACK if since else None
    found: list[tuple[datetime, str, str]] = []
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "Job" or involved.get("name") != name:
            continue
        stamp = (
            event.get("lastTimestamp")
            or event.get("eventTime")
            or (event.get("metadata") or {}).get("creationTimestamp")
        )
        if not stamp:
            continue
        when = parse_time(str(stamp))
        if start is not None and when < start:
            continue
        reason = str(event.get("reason") or "")
        if reason == "Completed" or reason in _JOB_FAILED_EVENTS:
            found.append((when, reason, str(event.get("message") or "")[:MESSAGE_LIMIT]))
    if not found:
        return None
    when, reason, message = max(found)
    at = timestamp(when)
    if reason == "Completed":
        condition = {"type": "Complete", "status": "True", "lastTransitionTime": at}
        status: dict[str, Any] = {"conditions": [condition], "completionTime": at}
    else:
        condition = {
            "type": "Failed",
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": at,
        }
        status = {"conditions": [condition]}
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {}, "status": status}
