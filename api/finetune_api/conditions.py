"""Phases, condition types and reasons of a FineTuneJob's status, each documented (the API reference
and ``kubectl explain`` show these lines). The trainer's failure reasons are in ``exitcodes``."""

from __future__ import annotations

from typing import Final


class Phase:
    PENDING: Final = "Pending"
    QUEUED: Final = "Queued"
    RUNNING: Final = "Running"
    SUCCEEDED: Final = "Succeeded"
    FAILED: Final = "Failed"
    SUSPENDED: Final = "Suspended"
    ALL: Final = (PENDING, QUEUED, RUNNING, SUCCEEDED, FAILED, SUSPENDED)
    TERMINAL: Final = (SUCCEEDED, FAILED)


class ConditionType:
    """Condition types; each is documented in docs/ and in the CRD's status description."""

    CREATED: Final = "Created"  # the run's Job exists
    QUEUED: Final = "Queued"  # Kueue holds the Job suspended
    RUNNING: Final = "Running"  # at least one trainer pod is ready
    SUSPENDED: Final = "Suspended"  # spec.suspend holds the Job
    STALLED: Final = "Stalled"  # the step has not advanced for stallTimeoutSeconds
    SUCCEEDED: Final = "Succeeded"
    FAILED: Final = "Failed"


class Reason:
    """Reasons for conditions and for status.reason."""

    JOB_CREATED: Final = "JobCreated"
    WAITING_FOR_PODS: Final = "WaitingForPods"
    QUEUED_BY_KUEUE: Final = "QueuedByKueue"
    PODS_RUNNING: Final = "PodsRunning"
    SUSPENDED_BY_USER: Final = "SuspendedByUser"
    PROGRESSING: Final = "Progressing"
    NO_PROGRESS: Final = "NoProgress"
    NOT_TRAINING: Final = "NotTraining"  # Stalled=False: evaluating, merging, uploading … expect no steps
    SUCCEEDED: Final = "Succeeded"
    RETRYING: Final = "Retrying"
    BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
    JOB_FAILED: Final = "JobFailed"
    INVALID_SPEC: Final = "InvalidSpec"
    SECRET_NOT_FOUND: Final = "SecretNotFound"
    PVC_NOT_FOUND: Final = "PersistentVolumeClaimNotFound"
    CONFIGMAP_NOT_FOUND: Final = "ConfigMapNotFound"
    UNKNOWN_GPU_RESOURCE: Final = "UnknownGPUResource"
    WAITING_FOR_SECRET: Final = "WaitingForSecret"
    WAITING_FOR_PVC: Final = "WaitingForPersistentVolumeClaim"
    WAITING_FOR_CONFIGMAP: Final = "WaitingForConfigMap"
    JOB_REJECTED: Final = "JobRejected"
    JOB_DELETED: Final = "JobDeleted"
    SUPERSEDED: Final = "Superseded"
    SUMMARY_LOST: Final = "SummaryLost"  # finished, but no pod was left to read the summary from
    PLAN_DOES_NOT_FIT: Final = (
        "PlanDoesNotFit"  # spec.admission.memoryCheck fail and the plan says DoesNotFit
    )
    LICENCE_NOT_ALLOWED: Final = "LicenceNotAllowed"  # the model's licence is not in the allowed list
    CONFIG_TOO_LARGE: Final = "ConfigTooLarge"  # the trainer's config does not fit in a pod annotation
    # The reason of a phase condition set False because the phase moved on.
    NOW_PENDING: Final = "NowPending"
    NOW_QUEUED: Final = "NowQueued"
    NOW_RUNNING: Final = "NowRunning"
    NOW_SUCCEEDED: Final = "NowSucceeded"
    NOW_FAILED: Final = "NowFailed"
    NOW_SUSPENDED: Final = "NowSuspended"
    NOW: Final = {
        Phase.PENDING: NOW_PENDING,
        Phase.QUEUED: NOW_QUEUED,
        Phase.RUNNING: NOW_RUNNING,
        Phase.SUCCEEDED: NOW_SUCCEEDED,
        Phase.FAILED: NOW_FAILED,
        Phase.SUSPENDED: NOW_SUSPENDED,
    }
    # The Job controller's failure reasons that keep their name; any other is JOB_FAILED.
    OF_JOB: Final = {"BackoffLimitExceeded": BACKOFF_LIMIT_EXCEEDED, "DeadlineExceeded": DEADLINE_EXCEEDED}


def reason_names() -> set[str]:
    """Every reason constant's value."""
    return {v for k, v in vars(Reason).items() if k.isupper() and isinstance(v, str)}


CONDITION_DOCS: dict[str, str] = {
    ConditionType.CREATED: (
        "The run's Job (and a multi-node run's headless Service) exist (False, with the pre-flight "
        "reason, when none was made)."
    ),
    ConditionType.QUEUED: "Kueue holds the run's Job suspended until it admits it.",
    ConditionType.RUNNING: "At least one trainer pod is ready.",
    ConditionType.SUSPENDED: "`spec.suspend` holds the Job; no pods run.",
    ConditionType.STALLED: (
        "The training step has not advanced for `spec.stallTimeoutSeconds` (the phase stays Running)."
    ),
    ConditionType.SUCCEEDED: "The run finished: trained, evaluated, saved, quality gate met.",
    ConditionType.FAILED: "The run failed; `status.reason` and `status.message` say why.",
}

REASON_DOCS: dict[str, str] = {
    Reason.JOB_CREATED: "The run's Job was created; pods are not running yet.",
    Reason.WAITING_FOR_PODS: "The Job exists and its pods are being scheduled or pulled.",
    Reason.QUEUED_BY_KUEUE: "`spec.scheduling.queueName` is set and Kueue has not admitted the Job yet.",
    Reason.PODS_RUNNING: "Trainer pods are running.",
    Reason.SUSPENDED_BY_USER: "`spec.suspend` is true.",
    Reason.PROGRESSING: "Stalled=False: the step advances again.",
    Reason.NO_PROGRESS: "Stalled=True: no step finished within `spec.stallTimeoutSeconds` of training.",
    Reason.NOT_TRAINING: (
        "Stalled=False: the trainer is evaluating, saving, merging or uploading (`status.progress.stage`), "
        "where no training step is expected."
    ),
    Reason.SUCCEEDED: "The trainer exited 0.",
    Reason.RETRYING: "A pod failed with a retriable error; the Job starts another, which resumes.",
    Reason.BACKOFF_LIMIT_EXCEEDED: "The Job failed: more retriable failures than `spec.backoffLimit`.",
    Reason.DEADLINE_EXCEEDED: "The Job failed: the run took longer than `spec.activeDeadlineSeconds`.",
    Reason.JOB_FAILED: (
        "The Job failed for a reason of the Job controller's other than the two above (its reason and "
        "message are in status.message), without a trainer summary or exit code that says more."
    ),
    Reason.INVALID_SPEC: "The spec does not parse (an object written before a schema change); no Job.",
    Reason.SECRET_NOT_FOUND: "A Secret named in `spec.secrets` does not exist; no Job.",
    Reason.PVC_NOT_FOUND: "A PersistentVolumeClaim named in a `source.pvc` does not exist; no Job.",
    Reason.CONFIGMAP_NOT_FOUND: "A ConfigMap named in a `source.configMap` does not exist; no Job.",
    Reason.UNKNOWN_GPU_RESOURCE: "No node advertises the GPU resource the pods would request; no Job.",
    Reason.WAITING_FOR_SECRET: (
        "A Secret the run needs does not exist yet; the job stays Pending and is re-checked with backoff "
        "until `spec.preflightTimeoutSeconds` (default 600), then fails with SecretNotFound."
    ),
    Reason.WAITING_FOR_PVC: (
        "Like WaitingForSecret, for a PersistentVolumeClaim (then PersistentVolumeClaimNotFound)."
    ),
    Reason.WAITING_FOR_CONFIGMAP: "Like WaitingForSecret, for a ConfigMap (then ConfigMapNotFound).",
    Reason.JOB_REJECTED: (
        "The API server refused the run's Job or Service (invalid, forbidden, over quota); its"
        " message is in status.message and an Event. A previous run's Job keeps running until a new Job"
        " exists. Fix the cause, then set the finetuning.io/rerun annotation."
    ),
    Reason.JOB_DELETED: "The run's Job was deleted while it ran.",
    Reason.SUMMARY_LOST: (
        "Succeeded, but the trainer's summary was lost: the Job's pods were gone (deleted, or the Job"
        " removed by its TTL) before the operator read their termination message."
    ),
    Reason.SUPERSEDED: "History only: the run was replaced by a newer one (spec change or re-run).",
    Reason.PLAN_DOES_NOT_FIT: (
        "`spec.admission.memoryCheck` is fail and the memory plan says DoesNotFit; `status.plan` has the "
        "estimate and a suggestion; no Job."
    ),
    Reason.LICENCE_NOT_ALLOWED: (
        "The model's licence (`spec.model.licence`, or the model card's) is not in the operator's allowed "
        "licences, or is unknown where unknown licences are refused; no Job."
    ),
    Reason.CONFIG_TOO_LARGE: (
        "The trainer's config (the spec, resolved) is over 200 KiB as JSON, more than the pod annotation "
        "that carries it may hold (Kubernetes allows 256 KiB); status.message names the largest field; "
        "no Job."
    ),
    **{
        reason: f"A phase condition that no longer holds: the FineTuneJob is now {phase}."
        for phase, reason in Reason.NOW.items()
    },
}
