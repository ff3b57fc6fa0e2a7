"""Reconciliation, the effectful shell around ``transitions``: read what the decisions need (the Job,
its pods, Events), create and delete children, and write status through ``context.write``.

Handlers call these functions; they hold no kopf decorators and no globals, so they are easy to
drive from tests and benchmarks.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from finetune_api.conditions import Phase, Reason
from finetune_api.spec import FineTuneJobSpec
from finetune_api.status import FineTuneJobStatus, PlanStatus
from finetune_api.validation import format_errors
from finetune_api.wellknown import timestamp
from finetune_operator import constants as c
from finetune_operator.admission import admit
from finetune_operator.builders import Owner
from finetune_operator.children import ChildRejected, create_run, retire_other_jobs
from finetune_operator.context import Context, parse_status, write
from finetune_operator.metrics import JOB_CREATED_LATENCY, STATUS_LATENCY, record_estimated_cost
from finetune_operator.naming import spec_hash
from finetune_operator.pod_config import ConfigTooLarge
from finetune_operator.preflight import preflight, wait_for_preflight
from finetune_operator.preflight_wait import WAITABLE
from finetune_operator.progress_book import run_key
from finetune_operator.run_facts import RunFacts
from finetune_operator.run_identity import run_digest
from finetune_operator.status import (
    JobView,
    final_job_from_events,
    missing_secret,
    observe_job,
    outcome,
    parse_time,
    summary_lost,
    termination_of,
)
from finetune_operator.transitions import (
    Change,
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
    rerun_token,
)

log = logging.getLogger("finetune_operator")

__all__ = ["Context", "observe", "on_job_event", "reconcile"]


def apply(ctx: Context, body: dict[str, Any], event: Event) -> Change | None:
    """Write what ``event`` changes in the status of ``body``; the change written, or None."""
    generation = body["metadata"].get("generation")

    def transition(fresh: dict[str, Any], st: FineTuneJobStatus) -> Change:
        facts = Facts(fresh, generation, timestamp(), ctx.settings.history_limit)
        return next_phase(st, event, facts)

    return write(ctx, body, transition)


def reconcile(ctx: Context, body: dict[str, Any]) -> None:
    """Create/resume/update entry point: start the run the spec asks for, or sync the current one."""
    raw_spec = dict(body.get("spec") or {})
    status = parse_status(body)
    ctx.phases.set(f"{body['metadata']['namespace']}/{body['metadata']['name']}", status.phase)
    try:
        spec = ctx.parse_spec(body)
    except ValidationError as exc:
        errors = format_errors(exc, "spec", limit=5)
        refused = RunRefused(Reason.INVALID_SPEC, errors, spec_hash(raw_spec), rerun_token(body))
        change = apply(ctx, body, refused)
        if (change is None or not change.changed) and status.run is not None:
            # Not a new request: the spec of a run an earlier version started, refused by this one's
            # rules. That run goes on and is followed to its verdict.
            log.warning(
                "the stored spec does not validate under this version; its current run is still followed",
                extra={
                    "ftj": f"{body['metadata']['namespace']}/{body['metadata']['name']}",
                    "errors": errors,
                },
            )
            sync_run(ctx, body, RunFacts.lenient(raw_spec), status)
        return
    if decide_run(body, status, lambda: run_digest(spec)) is not None:
        start_run(ctx, body, spec, run_digest(spec), rerun_token(body))
    else:
        sync_run(ctx, body, RunFacts.of(spec), status)


def _refuse(
    ctx: Context,
    body: dict[str, Any],
    problem: tuple[str, str],
    digest: str,
    token: str,
    plan: PlanStatus | None,
) -> None:
    message = f"{problem[1]} Fix it, then set the {c.ANNOTATION_RERUN} annotation."
    apply(ctx, body, RunRefused(problem[0], message, digest, token, plan))


def start_run(ctx: Context, body: dict[str, Any], spec: FineTuneJobSpec, digest: str, token: str) -> None:
    meta = body["metadata"]
    owner = Owner.from_body(body)
    status = parse_status(body)
    admission = admit(spec, ctx.settings)
    problem = preflight(ctx, owner.namespace, spec)
    if problem is not None and problem[0] in WAITABLE:
        problem = wait_for_preflight(ctx, body, spec, problem, token)
    problem = problem or admission.refusal
    if problem is not None:
        _refuse(ctx, body, problem, digest, token, admission.plan)
        return
    number = status.run.number + 1 if status.run else 1
    try:
        started = create_run(ctx.kube, owner, spec, number, digest, ctx.settings)
    except ChildRejected as exc:
        log.warning("child rejected: %s", exc, extra={"ftj": f"{owner.namespace}/{owner.name}"})
        _refuse(ctx, body, (Reason.JOB_REJECTED, str(exc)), digest, token, admission.plan)
        return
    except ConfigTooLarge as exc:
        _refuse(ctx, body, (Reason.CONFIG_TOO_LARGE, str(exc)), digest, token, admission.plan)
        return
    number, job_name = started.number, started.job["metadata"]["name"]
    if number > 1:  # run 1 has no earlier run to retire: no LIST of Jobs per new FineTuneJob
        retire_other_jobs(ctx.kube, owner, keep=job_name)
    queue = bool(spec.scheduling.queue_name)
    event = RunStarted(number, job_name, digest, token, admission.plan, spec.suspend, queue)
    change = apply(ctx, body, event)
    if change is None or not change.changed:
        return  # recorded already (a retried handler): counted and announced then
    record_estimated_cost(owner.namespace, owner.name, admission.plan)
    if number == 1:
        created = parse_time(meta["creationTimestamp"])
        JOB_CREATED_LATENCY.observe(max((datetime.now(UTC) - created).total_seconds(), 0.0))
    for warning in admission.warnings:
        ctx.post_event(body, "Warning", "AdmissionWarning", warning)


def sync_run(ctx: Context, body: dict[str, Any], facts: RunFacts, status: FineTuneJobStatus) -> None:
    """Same run as before: follow suspend/resume and refresh the phase from the Job."""
    assert status.run is not None
    if status.phase in Phase.TERMINAL:
        if status.observed_generation != body["metadata"].get("generation"):
            write(ctx, body, lambda fresh, st: Change(False))  # only what every write does
        if status.run.completion_time:
            return  # finished and recorded: a restart over thousands of these costs no API call
    ns = body["metadata"]["namespace"]
    job = ctx.kube.get_job(ns, status.run.job_name)
    if job is None:
        if status.phase in Phase.TERMINAL:
            return
        final = final_job_from_events(
            ctx.kube.job_events(ns, status.run.job_name), status.run.job_name, ns, status.run.start_time
        )
        if final is None:
            _job_gone(ctx, body, status.run.job_name)
        else:
            observe(ctx, body, final, facts)  # finished, then removed by its TTL: record the verdict
        return
    if status.phase not in Phase.TERMINAL:
        suspended = bool((job.get("spec") or {}).get("suspend"))
        if facts.suspend and not suspended:
            ctx.kube.set_job_suspend(ns, status.run.job_name, True)
            job["spec"]["suspend"] = True
        elif not facts.suspend and suspended and not facts.queued:
            ctx.kube.set_job_suspend(ns, status.run.job_name, False)
            job["spec"]["suspend"] = False
    with ctx.lock:  # this fold may differ from the one an event of this Job recorded: the next is folded
        ctx.seen_jobs.pop((ns, status.run.job_name), None)
    observe(ctx, body, job, facts)


def run_facts(ctx: Context, body: dict[str, Any]) -> RunFacts:
    """What following ``body``'s run needs from its spec, also when this version refuses that spec."""
    try:
        return RunFacts.of(ctx.parse_spec(body))
    except ValidationError:
        return RunFacts.lenient(body.get("spec"))


def observe(ctx: Context, body: dict[str, Any], job: dict[str, Any], facts: RunFacts | None = None) -> None:
    """Fold a Job's state into its FineTuneJob's status (the Job event handler and sync call this)."""
    if facts is None:
        facts = run_facts(ctx, body)
    view = JobView.from_job(job)
    observed = observe_job(view, facts.suspend, facts.queued)
    ns, job_name = job["metadata"]["namespace"], job["metadata"]["name"]
    if facts.names_secrets and observed.phase == Phase.PENDING:
        secret = missing_secret(ctx.kube.job_pods(ns, job_name))
        if secret is not None:
            _secret_missing(ctx, body, facts, job_name, secret)
            return
    result = latest = None
    if observed.phase in Phase.TERMINAL:
        exit_code, message = termination_of(ctx.kube.job_pods(ns, job_name))
        result = outcome(observed, exit_code, message)
        if exit_code is None and message is None:
            result = summary_lost(result)
        latest = ctx.progress_book.latest(run_key(body, job_name))  # scraped since the last write
    change = apply(ctx, body, JobSeen(job_name, view, observed, result, facts.gpus, latest))
    if change is not None and change.finished:
        if view.completion_time or observed.phase == Phase.FAILED:
            STATUS_LATENCY.observe(_age(view.completion_time or _failed_time(view)))
        meta = body["metadata"]
        record_estimated_cost(meta["namespace"], meta["name"], None)


def _job_gone(ctx: Context, body: dict[str, Any], job_name: str) -> None:
    apply(ctx, body, JobGone(job_name, ctx.progress_book.latest(run_key(body, job_name))))


def _secret_missing(ctx: Context, body: dict[str, Any], facts: RunFacts, job_name: str, secret: str) -> None:
    text = f"Secret {secret!r} named in spec.secrets does not exist; the pods cannot start."
    run = parse_status(body).run
    timeout = facts.preflight_timeout
    if run is not None and run.start_time and _age(run.start_time) < timeout:
        # The kubelet starts the pod as soon as the Secret appears (External Secrets, sync waves).
        message = f"{text} Waiting for it up to {timeout} s (spec.preflightTimeoutSeconds)."
        apply(ctx, body, SecretAwaited(message))
        return
    apply(ctx, body, PodsCannotStart(job_name, Reason.SECRET_NOT_FOUND, text))
    ctx.kube.delete_job(body["metadata"]["namespace"], job_name)  # after the write; again on a retry


def _failed_time(view: JobView) -> str | None:
    return (view.failed_condition or {}).get("lastTransitionTime")


def _age(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    then = parse_time(stamp)
    return max((datetime.now(UTC) - then).total_seconds(), 0.0)


def job_fingerprint(job: dict[str, Any]) -> tuple[Any, ...]:
    view = JobView.from_job(job)
    return (
        view.suspended,
        view.ready,
        view.failed,
        view.succeeded,
        view.complete,
        view.failed_condition is None,
    )


def _runs(body: dict[str, Any], owner: dict[str, Any], job_meta: dict[str, Any]) -> bool:
    """Is this Job the current run of this FineTuneJob?"""
    if body["metadata"].get("uid") != owner.get("uid"):
        return False
    run = (body.get("status") or {}).get("run") or {}
    return bool(run.get("jobName") == job_meta.get("name"))


def on_job_event(
    ctx: Context, job: dict[str, Any], cached_owner: dict[str, Any] | None = None, deleted: bool = False
) -> bool:
    """A Job changed: fold it into its FineTuneJob, unless nothing status depends on changed. Whether
    the Job is its FineTuneJob's current run and its status now holds what the Job shows (the
    periodic resync leaves such a FineTuneJob out for a while: job_sightings.py).

    A deleted Job's final state counts too: finished, it is recorded (even when its pods went with
    it); unfinished, the run failed with JobDeleted.
    """
    meta = job.get("metadata") or {}
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("kind") == c.KIND), None)
    if owner is None:
        return False
    key = (str(meta.get("namespace")), str(meta.get("name")))
    fingerprint = job_fingerprint(job)
    with ctx.lock:
        if deleted:
            ctx.seen_jobs.pop(key, None)
        elif ctx.seen_jobs.get(key) == fingerprint:
            return True  # folded already, by an earlier event of this Job
    body = cached_owner
    if body is None or not _runs(body, owner, meta):
        body = ctx.kube.get_ftj(meta["namespace"], owner["name"])  # the cache may lag our own writes
        if body is not None:
            ctx.remember(body)
    if body is None or not _runs(body, owner, meta):
        return False
    status = body.get("status") or {}
    if status.get("phase") in Phase.TERMINAL and (status.get("run") or {}).get("completionTime"):
        return True  # this run finished and is recorded: a restart over thousands of them reads no pods
    if deleted:
        view = JobView.from_job(job)
        if view.complete or view.failed_condition is not None:
            observe(ctx, body, job)
        else:
            _job_gone(ctx, body, str(meta["name"]))
        return False
    observe(ctx, body, job)
    with ctx.lock:
        if len(ctx.seen_jobs) > 8192:
            ctx.seen_jobs.clear()
        ctx.seen_jobs[key] = fingerprint
    return True
