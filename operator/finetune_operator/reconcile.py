"""Reconciliation: decide which run should exist, create it, and fold the Job's state into status.

Handlers call these functions; they hold no kopf decorators and no globals, so they are easy to
drive from tests and benchmarks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from finetune_operator import constants as c
from finetune_operator.admission import admit
from finetune_operator.builders import Owner, gpu_resource
from finetune_operator.children import ChildRejected, create_run, retire_other_jobs
from finetune_operator.constants import ConditionType, Phase, Reason
from finetune_operator.health import Heartbeats
from finetune_operator.kube import Kube
from finetune_operator.metrics import (
    JOB_CREATED_LATENCY,
    RUNS,
    STATUS_LATENCY,
    PhaseBook,
    record_estimated_cost,
)
from finetune_operator.models import FineTuneJobStatus, PlanStatus, Progress, RunStatus
from finetune_operator.naming import run_name, spec_hash
from finetune_operator.preflight_wait import WAITABLE, RecheckLater, next_wait, timeout_of, waited_seconds
from finetune_operator.run_identity import CurrentRun, new_run_reason, run_digest
from finetune_operator.settings import OperatorSettings
from finetune_operator.status import (
    JobView,
    apply_phase,
    apply_summary,
    final_job_from_events,
    gpu_seconds,
    missing_secret,
    now_iso,
    observe_job,
    outcome,
    parse_time,
    push_history,
    set_condition,
    summary_lost,
    termination_of,
)
from finetune_trainer.spec import FineTuneJobSpec

log = logging.getLogger("finetune_operator")

EventPoster = Callable[[dict[str, Any], str, str, str], None]


@dataclass
class Context:
    kube: Kube
    settings: OperatorSettings
    phases: PhaseBook
    post_event: EventPoster
    # Caches that only save API calls and CPU; losing them (a restart) costs one extra call each.
    seen_jobs: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    endpoints: dict[str, tuple[str, str]] = field(default_factory=dict)
    specs: dict[tuple[str, int], FineTuneJobSpec] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    heartbeats: Heartbeats = field(default_factory=Heartbeats)

    def parse_spec(self, body: dict[str, Any]) -> FineTuneJobSpec:
        """The typed spec, parsed (with its CEL rules) once per object generation."""
        meta = body["metadata"]
        key = (str(meta.get("uid", "")), int(meta.get("generation") or 0))
        with self.lock:
            spec = self.specs.get(key)
        if spec is None:
            spec = FineTuneJobSpec.model_validate(body.get("spec") or {})
            with self.lock:
                if len(self.specs) > 4096:
                    self.specs.clear()
                self.specs[key] = spec
        return spec


def _parse_status(obj: dict[str, Any]) -> FineTuneJobStatus:
    return FineTuneJobStatus.model_validate(obj.get("status") or {})


_attempt = threading.local()


def after_write(effect: Callable[[], None]) -> None:
    """From inside a ``mutate``: do ``effect`` (count a run, observe a latency) once the status write
    succeeded. A 409 re-runs ``mutate`` on a fresh read; what a discarded attempt asked for is dropped,
    so nothing is counted twice or counted for a write that never happened."""
    _attempt.effects.append(effect)


def _write(
    ctx: Context, obj: dict[str, Any], mutate: Callable[[dict[str, Any], FineTuneJobStatus], bool]
) -> None:
    """Apply ``mutate`` to the freshest status; then, once, its side effects and an Event when the
    phase changed."""
    meta = obj["metadata"]
    before: dict[str, str | None] = {}
    effects: list[Callable[[], None]] = []

    def wrapped(fresh: dict[str, Any]) -> dict[str, Any] | None:
        effects.clear()
        _attempt.effects = effects
        st = _parse_status(fresh)
        before["phase"] = st.phase
        before["old_reason"] = st.reason
        changed = mutate(fresh, st)
        if not (changed | _observe_generation(fresh, st)):
            return None
        before["new"] = st.phase
        before["reason"] = st.reason
        before["message"] = st.message
        return st.wire()

    try:
        result = ctx.kube.update_status(meta["namespace"], meta["name"], wrapped, initial=obj)
    finally:
        _attempt.effects = []
    new_phase = before.get("new")
    if result is not None and new_phase is not None:
        for effect in effects:
            effect()
        ctx.phases.set(f"{meta['namespace']}/{meta['name']}", new_phase)
        failed_anew = new_phase == Phase.FAILED and before.get("reason") != before.get("old_reason")
        if new_phase != before.get("phase") or failed_anew:
            kind = "Warning" if new_phase == Phase.FAILED else "Normal"
            ctx.post_event(result, kind, before.get("reason") or new_phase, before.get("message") or "")
            log.info(
                "phase change",
                extra={
                    "ftj": f"{meta['namespace']}/{meta['name']}",
                    "from": before.get("phase"),
                    "to": new_phase,
                },
            )


def reconcile(ctx: Context, body: dict[str, Any]) -> None:
    """Create/resume/update entry point: start the run the spec asks for, or sync the current one."""
    raw_spec = dict(body.get("spec") or {})
    status = _parse_status(body)
    ctx.phases.set(f"{body['metadata']['namespace']}/{body['metadata']['name']}", status.phase)
    try:
        spec = ctx.parse_spec(body)
    except ValidationError as exc:
        _fail_without_job(ctx, body, Reason.INVALID_SPEC, format_validation(exc), spec_hash(raw_spec))
        return
    token = _rerun_token(body)
    if new_run_reason_of(body, status, lambda: run_digest(spec)) is not None:
        start_run(ctx, body, spec, run_digest(spec), token)
    else:
        sync_run(ctx, body, spec, status)


def _rerun_token(obj: dict[str, Any]) -> str:
    return str(((obj["metadata"].get("annotations") or {}).get(c.ANNOTATION_RERUN)) or "")


def new_run_reason_of(
    obj: dict[str, Any], status: FineTuneJobStatus, digest: Callable[[], str]
) -> str | None:
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
        _rerun_token(obj),
        digest,
        lambda: spec_hash(dict(obj.get("spec") or {})),
    )


def format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = "spec." + ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def preflight(ctx: Context, namespace: str, spec: FineTuneJobSpec) -> tuple[str, str] | None:
    """Problems the schema cannot see, found before a GPU is requested."""
    refs = spec.secrets
    if ctx.settings.secret_check != "api":
        refs = refs.model_copy(update={"hub_token": None, "storage": None})  # read from the pods instead
    if refs.hub_token and not _secret_exists(ctx, namespace, refs.hub_token.name):
        return (
            Reason.SECRET_NOT_FOUND,
            f"Secret {refs.hub_token.name!r} (spec.secrets.hubToken) does not exist.",
        )
    if refs.storage and not _secret_exists(ctx, namespace, refs.storage):
        return Reason.SECRET_NOT_FOUND, f"Secret {refs.storage!r} (spec.secrets.storage) does not exist."
    sources = {
        "spec.model.source": spec.model.source,
        "spec.dataset.source": spec.dataset.source,
        "spec.dataset.splits.validationSource": spec.dataset.splits.validation_source,
        "spec.dataset.splits.testSource": spec.dataset.splits.test_source,
        "spec.output.source": spec.output.source,
        "spec.evaluation.reviewPromptsSource": spec.evaluation.review_prompts_source,
        "spec.evaluation.regressionSet.source": (
            spec.evaluation.regression_set.source if spec.evaluation.regression_set else None
        ),
    }
    for where, src in sources.items():
        if src is None:
            continue
        if src.pvc and not ctx.kube.pvc_exists(namespace, src.pvc.claim_name):
            return (
                Reason.PVC_NOT_FOUND,
                f"PersistentVolumeClaim {src.pvc.claim_name!r} ({where}.pvc) does not exist.",
            )
        if src.config_map and not ctx.kube.configmap_exists(namespace, src.config_map.name):
            return (
                Reason.CONFIGMAP_NOT_FOUND,
                f"ConfigMap {src.config_map.name!r} ({where}.configMap) does not exist.",
            )
    gpus = spec.distributed_or_default().gpus_per_node
    check = ctx.settings.gpu_resource_check
    if gpus > 0 and check != "off":
        resource = gpu_resource(spec, ctx.settings)
        try:
            known = ctx.kube.cluster_has_resource(resource)
        except ApiException as exc:
            if exc.status != 403:
                raise
            log.warning("cannot list nodes (403): GPU resource %r not checked", resource)
            known = True
        if not known:
            message = f"No node advertises the GPU resource {resource!r} (spec.resources.gpuResourceName)."
            if check == "fail":
                return Reason.UNKNOWN_GPU_RESOURCE, message
            log.warning(message)
    return None


def _secret_exists(ctx: Context, namespace: str, name: str) -> bool:
    """The early check; without `get secrets` (403) the pods' status tells instead, a little later."""
    try:
        return ctx.kube.secret_exists(namespace, name)
    except ApiException as exc:
        if exc.status != 403:
            raise
        log.warning("cannot get secrets (403): Secret %r is checked from the pods' status instead", name)
        return True


def _wait_for_preflight(
    ctx: Context, body: dict[str, Any], spec: FineTuneJobSpec, problem: tuple[str, str], token: str
) -> tuple[str, str]:
    """Keep the job Pending while a missing object may still appear; the problem once the wait is over."""
    timeout = timeout_of(spec)
    key = f"{body['metadata'].get('generation')}:{token}"
    waited: dict[str, float] = {}

    def mutate(fresh: dict[str, Any], st: FineTuneJobStatus) -> bool:
        now = datetime.now(UTC)
        wait = next_wait(st.preflight_wait, key, problem[0], now)
        waited["s"] = waited_seconds(wait, now)
        if waited["s"] >= timeout:
            return False
        message = f"{problem[1]} Waiting for it up to {timeout} s (spec.preflightTimeoutSeconds)."
        before = (st.phase, st.reason, st.message, st.preflight_wait)
        st.preflight_wait = wait
        apply_phase(st, Phase.PENDING, wait.reason, message, fresh["metadata"].get("generation"), now_iso())
        return (st.phase, st.reason, st.message, st.preflight_wait) != before

    if timeout > 0:
        _write(ctx, body, mutate)
        if waited.get("s", timeout) < timeout:
            raise RecheckLater(problem[1])
    return problem[0], f"{problem[1]} Waited {timeout} s (spec.preflightTimeoutSeconds)."


def _fail_without_job(
    ctx: Context,
    body: dict[str, Any],
    reason: str,
    message: str,
    digest: str,
    plan: PlanStatus | None = None,
) -> None:
    token = _rerun_token(body)
    generation = body["metadata"].get("generation")

    def mutate(fresh: dict[str, Any], st: FineTuneJobStatus) -> bool:
        if new_run_reason_of(fresh, st, lambda: digest) is None:
            return False
        still_running = None
        if st.run and st.phase not in Phase.TERMINAL:
            # Create before delete: the previous Job keeps running until a new Job replaces it.
            still_running = st.run.job_name
            push_history(st, "Superseded", Reason.SUPERSEDED, ctx.settings.history_limit)
        number = st.run.number + 1 if st.run else 1
        now = now_iso()
        text = message
        if still_running:
            text += f" The previous run's Job {still_running} keeps running until a new Job replaces it."
        st.run = RunStatus(
            number=number,
            job_name=run_name(fresh["metadata"]["name"], number),
            spec_hash=digest,
            rerun_token=token,
            generation=generation,
            start_time=now,
            completion_time=now,
        )
        st.progress = None
        st.plan = plan
        st.preflight_wait = None
        apply_phase(st, Phase.FAILED, reason, text, generation, now)
        st.conditions = set_condition(
            st.conditions, ConditionType.CREATED, False, reason, text, now, generation
        )
        push_history(st, Phase.FAILED, reason, ctx.settings.history_limit)
        after_write(RUNS.labels(result="failed").inc)
        return True

    _write(ctx, body, mutate)


def start_run(ctx: Context, body: dict[str, Any], spec: FineTuneJobSpec, digest: str, token: str) -> None:
    meta = body["metadata"]
    owner = Owner.from_body(body)
    status = _parse_status(body)
    admission = admit(spec, ctx.settings)
    problem = preflight(ctx, owner.namespace, spec)
    if problem is not None and problem[0] in WAITABLE:
        problem = _wait_for_preflight(ctx, body, spec, problem, token)
    problem = problem or admission.refusal
    if problem is not None:
        _fail_without_job(
            ctx,
            body,
            problem[0],
            problem[1] + " Fix it, then set the finetuning.io/rerun annotation.",
            digest,
            admission.plan,
        )
        return
    for warning in admission.warnings:
        ctx.post_event(body, "Warning", "AdmissionWarning", warning)
    number = status.run.number + 1 if status.run else 1
    try:
        started = create_run(ctx.kube, owner, spec, number, digest, ctx.settings)
    except ChildRejected as exc:
        log.warning("child rejected: %s", exc, extra={"ftj": f"{owner.namespace}/{owner.name}"})
        _fail_without_job(
            ctx,
            body,
            Reason.JOB_REJECTED,
            f"{exc} Fix it, then set the {c.ANNOTATION_RERUN} annotation.",
            digest,
            admission.plan,
        )
        return
    number, job_name = started.number, started.job["metadata"]["name"]
    retire_other_jobs(ctx.kube, owner, keep=job_name)
    if number == 1:
        created = parse_time(meta["creationTimestamp"])
        JOB_CREATED_LATENCY.observe(max((datetime.now(UTC) - created).total_seconds(), 0.0))
    generation = meta.get("generation")

    def mutate(fresh: dict[str, Any], st: FineTuneJobStatus) -> bool:
        if st.run and st.run.number >= number:
            return False
        if st.run and st.phase not in Phase.TERMINAL:
            push_history(st, "Superseded", Reason.SUPERSEDED, ctx.settings.history_limit)
        now = now_iso()
        st.run = RunStatus(
            number=number,
            job_name=job_name,
            spec_hash=digest,
            rerun_token=token,
            generation=generation,
            start_time=now,
        )
        st.progress = None
        st.plan = admission.plan
        st.preflight_wait = None
        st.attempts = None
        st.reason = None
        for key in ("evaluation", "output", "last_checkpoint", "dataset"):
            setattr(st, key, None)
        st.metrics = None
        st.conditions = set_condition(
            st.conditions,
            ConditionType.CREATED,
            True,
            Reason.JOB_CREATED,
            f"Job {job_name} created.",
            now,
            generation,
        )
        queued = bool(spec.scheduling.queue_name) and not spec.suspend
        if spec.suspend:
            apply_phase(
                st, Phase.SUSPENDED, Reason.SUSPENDED_BY_USER, "spec.suspend is true.", generation, now
            )
        elif queued:
            apply_phase(
                st,
                Phase.QUEUED,
                Reason.QUEUED_BY_KUEUE,
                "Waiting for Kueue to admit the Job.",
                generation,
                now,
            )
        else:
            apply_phase(st, Phase.PENDING, Reason.JOB_CREATED, f"Job {job_name} created.", generation, now)
        for ctype in (ConditionType.SUCCEEDED, ConditionType.FAILED):
            st.conditions = set_condition(
                st.conditions, ctype, False, Reason.JOB_CREATED, "", now, generation
            )
        after_write(RUNS.labels(result="started").inc)
        after_write(lambda: record_estimated_cost(owner.namespace, owner.name, admission.plan))
        return True

    _write(ctx, body, mutate)


def sync_run(ctx: Context, body: dict[str, Any], spec: FineTuneJobSpec, status: FineTuneJobStatus) -> None:
    """Same run as before: follow suspend/resume and refresh the phase from the Job."""
    assert status.run is not None
    if status.phase in Phase.TERMINAL:
        if status.observed_generation != body["metadata"].get("generation"):
            _write(ctx, body, lambda fresh, st: False)  # only what every write does (observedGeneration)
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
            _fail_without_job_deleted(ctx, body, status.run.job_name)
        else:
            observe(ctx, body, final, spec)  # finished, then removed by its TTL: record the verdict
        return
    if status.phase not in Phase.TERMINAL:
        suspended = bool((job.get("spec") or {}).get("suspend"))
        if spec.suspend and not suspended:
            ctx.kube.set_job_suspend(ns, status.run.job_name, True)
            job["spec"]["suspend"] = True
        elif not spec.suspend and suspended and not spec.scheduling.queue_name:
            ctx.kube.set_job_suspend(ns, status.run.job_name, False)
            job["spec"]["suspend"] = False
    observe(ctx, body, job, spec)


def _observe_generation(fresh: dict[str, Any], st: FineTuneJobStatus) -> bool:
    """A finished run still observes every generation that asks for no new run (a suspend toggle, a
    no-op edit): GitOps tools read ``observedGeneration < generation`` as "not yet processed" forever
    otherwise. Part of every status write, so the race between an edit and a run finishing cannot
    leave it behind."""
    current = fresh["metadata"].get("generation")
    if st.phase not in Phase.TERMINAL or current is None or st.observed_generation == current:
        return False
    if not _is_current(fresh, st):
        return False  # the edit asks for a new run: the run that starts observes it
    st.observed_generation = current
    return True


def _fail_without_job_deleted(ctx: Context, body: dict[str, Any], job_name: str) -> None:
    generation = body["metadata"].get("generation")

    def mutate(fresh: dict[str, Any], st: FineTuneJobStatus) -> bool:
        if st.run is None or st.run.job_name != job_name or st.phase in Phase.TERMINAL:
            return False
        if not _is_current(fresh, st):
            return False  # the spec moved on: the new run retires this Job on purpose
        now = now_iso()
        st.run.completion_time = now
        apply_phase(
            st, Phase.FAILED, Reason.JOB_DELETED, f"Job {job_name} was deleted while it ran.", generation, now
        )
        push_history(st, Phase.FAILED, Reason.JOB_DELETED, ctx.settings.history_limit)
        after_write(RUNS.labels(result="failed").inc)
        return True

    _write(ctx, body, mutate)


def _mark_waiting(ctx: Context, body: dict[str, Any], message: str) -> None:
    def mutate(fresh: dict[str, Any], st: FineTuneJobStatus) -> bool:
        if st.phase != Phase.PENDING or st.reason == Reason.WAITING_FOR_SECRET:
            return False
        apply_phase(
            st,
            Phase.PENDING,
            Reason.WAITING_FOR_SECRET,
            message,
            fresh["metadata"].get("generation"),
            now_iso(),
        )
        return True

    _write(ctx, body, mutate)


def _fail_running(ctx: Context, body: dict[str, Any], job_name: str, reason: str, message: str) -> None:
    """End a run whose pods can never start: Failed in status, then the Job deleted."""
    generation = body["metadata"].get("generation")

    def mutate(fresh: dict[str, Any], st: FineTuneJobStatus) -> bool:
        if st.run is None or st.run.job_name != job_name or st.phase in Phase.TERMINAL:
            return False
        now = now_iso()
        st.run.completion_time = now
        text = f"{message} Fix it, then set the {c.ANNOTATION_RERUN} annotation."
        apply_phase(st, Phase.FAILED, reason, text, generation, now)
        push_history(st, Phase.FAILED, reason, ctx.settings.history_limit)
        after_write(RUNS.labels(result="failed").inc)
        return True

    _write(ctx, body, mutate)
    ctx.kube.delete_job(body["metadata"]["namespace"], job_name)


def _is_current(obj: dict[str, Any], st: FineTuneJobStatus) -> bool:
    """Is the status' run the run the object's spec and rerun annotation ask for?"""
    spec = dict(obj.get("spec") or {})
    return new_run_reason_of(obj, st, lambda: run_digest(FineTuneJobSpec.model_validate(spec))) is None


def observe(
    ctx: Context, body: dict[str, Any], job: dict[str, Any], spec: FineTuneJobSpec | None = None
) -> None:
    """Fold a Job's state into its FineTuneJob's status (the Job event handler and sync call this)."""
    if spec is None:
        try:
            spec = ctx.parse_spec(body)
        except ValidationError:
            return
    view = JobView.from_job(job)
    observed = observe_job(view, spec.suspend, bool(spec.scheduling.queue_name))
    job_name = job["metadata"]["name"]
    result = None
    refs = spec.secrets
    if (refs.hub_token or refs.storage) and observed.phase == Phase.PENDING:
        secret = missing_secret(ctx.kube.job_pods(job["metadata"]["namespace"], job_name))
        if secret is not None:
            text = f"Secret {secret!r} named in spec.secrets does not exist; the pods cannot start."
            run = _parse_status(body).run
            timeout = timeout_of(spec)
            if run is not None and run.start_time and _age(run.start_time) < timeout:
                # The kubelet starts the pod as soon as the Secret appears (External Secrets, sync waves).
                _mark_waiting(
                    ctx, body, text + f" Waiting for it up to {timeout} s (spec.preflightTimeoutSeconds)."
                )
                return
            _fail_running(ctx, body, job_name, Reason.SECRET_NOT_FOUND, text)
            return
    if observed.phase in Phase.TERMINAL:
        pods = ctx.kube.job_pods(job["metadata"]["namespace"], job_name)
        exit_code, message = termination_of(pods)
        result = outcome(observed, exit_code, message)
        if exit_code is None and message is None:
            result = summary_lost(result)
    gpus = spec.distributed_or_default().gpus_per_node * spec.distributed_or_default().nodes
    generation = body["metadata"].get("generation")

    def mutate(fresh: dict[str, Any], st: FineTuneJobStatus) -> bool:
        if st.run is None or st.run.job_name != job_name:
            return False
        if st.phase in Phase.TERMINAL and st.run.completion_time:
            return False
        before = st.wire()
        now = now_iso()
        st.attempts = view.failed or None
        if (
            result is None
            and st.phase == Phase.RUNNING
            and observed.phase == Phase.PENDING
            and observed.reason == Reason.WAITING_FOR_PODS
        ):
            return False  # a pod just stopped being ready and the Job has not counted it yet
        if (
            result is None
            and st.phase == observed.phase == Phase.PENDING
            and st.reason == Reason.JOB_CREATED
            and observed.reason == Reason.WAITING_FOR_PODS
            and st.wire() == before
        ):
            return False  # the Job's first event says what start_run wrote: saves a write per run
        if result is None:
            apply_phase(
                st,
                observed.phase,
                observed.reason,
                observed.message,
                fresh["metadata"].get("generation"),
                now,
            )
            return st.wire() != before
        st.run.completion_time = view.completion_time or now
        if result.summary:
            apply_summary(st, result.summary)
        st.gpu_seconds = round(
            (st.gpu_seconds or 0.0) + gpu_seconds(view.start_time, st.run.completion_time, gpus), 1
        )
        if st.plan is not None and st.plan.price_per_gpu_hour is not None:
            st.plan.actual_cost = round(st.gpu_seconds / 3600 * st.plan.price_per_gpu_hour, 2)
        apply_phase(st, result.phase, result.reason, result.message, generation, now)
        final = (result.summary or {}).get("metrics") or {}
        if isinstance(final.get("step"), int) and final.get("total_steps"):
            step, total = int(final["step"]), int(final["total_steps"])
            st.progress = Progress(
                step=step,
                total_steps=total,
                percent=int(100 * step / total),
                summary=f"{step}/{total}",
                last_heartbeat=st.progress.last_heartbeat if st.progress else None,
            )
        push_history(st, result.phase, result.reason, ctx.settings.history_limit)
        after_write(RUNS.labels(result="succeeded" if result.phase == Phase.SUCCEEDED else "failed").inc)
        if view.completion_time or (observed.phase == Phase.FAILED and result):
            latency = _age(view.completion_time or _failed_time(view))
            after_write(lambda: STATUS_LATENCY.observe(latency))
        ns, name = fresh["metadata"]["namespace"], fresh["metadata"]["name"]
        after_write(lambda: record_estimated_cost(ns, name, None))
        return True

    _write(ctx, body, mutate)


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
) -> None:
    """A Job changed: fold it into its FineTuneJob, unless nothing status depends on changed.

    A deleted Job's final state counts too: finished, it is recorded (even when its pods went with
    it); unfinished, the run failed with JobDeleted.
    """
    meta = job.get("metadata") or {}
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("kind") == c.KIND), None)
    if owner is None:
        return
    key = (str(meta.get("namespace")), str(meta.get("name")))
    fingerprint = job_fingerprint(job)
    with ctx.lock:
        if deleted:
            ctx.seen_jobs.pop(key, None)
        elif ctx.seen_jobs.get(key) == fingerprint:
            return
    body = cached_owner
    if body is None or not _runs(body, owner, meta):
        body = ctx.kube.get_ftj(meta["namespace"], owner["name"])  # the cache may lag our own writes
    if body is None or not _runs(body, owner, meta):
        return
    if deleted:
        view = JobView.from_job(job)
        if view.complete or view.failed_condition is not None:
            observe(ctx, body, job)
        else:
            _fail_without_job_deleted(ctx, body, str(meta["name"]))
        return
    observe(ctx, body, job)
    with ctx.lock:
        if len(ctx.seen_jobs) > 8192:
            ctx.seen_jobs.clear()
        ctx.seen_jobs[key] = fingerprint
