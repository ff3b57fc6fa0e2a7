"""Phases, condition types and reasons of a FineTuneJob's status."""

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

    CREATED: Final = "Created"  # the run's ConfigMap and Job exist
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
    RESUMED: Final = "Resumed"
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
