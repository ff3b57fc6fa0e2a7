"""Names shared across the operator: API coordinates, labels, annotations, phases, conditions."""

from __future__ import annotations

from typing import Final

GROUP: Final = "finetuning.io"
VERSION: Final = "v1alpha1"
KIND: Final = "FineTuneJob"
PLURAL: Final = "finetunejobs"
SINGULAR: Final = "finetunejob"
SHORT_NAMES: Final = ["ftj"]
API_VERSION: Final = f"{GROUP}/{VERSION}"

OPERATOR_NAME: Final = "finetune-operator"
CONTAINER_NAME: Final = "trainer"
CONFIG_KEY: Final = "config.json"
CONFIG_MOUNT: Final = "/etc/finetune"
OUTPUT_MOUNT: Final = "/output"
MODEL_MOUNT: Final = "/model"
DATASET_MOUNT: Final = "/data"
STORAGE_CREDENTIALS_MOUNT: Final = "/var/run/secrets/finetuning.io/storage"
MODEL_CACHE_MOUNT: Final = "/var/cache/finetune"
METRICS_PORT: Final = 9400
RENDEZVOUS_PORT: Final = 29500
MAX_NAME: Final = 63
# The trainer image's user (trainer-image/Dockerfile USER) and its Hugging Face cache on the /tmp emptyDir.
TRAINER_UID: Final = 65532
TRAINER_HF_HOME: Final = "/tmp/huggingface"

# Labels
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_JOB: Final = f"{GROUP}/finetunejob"
LABEL_RUN: Final = f"{GROUP}/run"
LABEL_KUEUE_QUEUE: Final = "kueue.x-k8s.io/queue-name"
LABEL_JOB_NAME: Final = "batch.kubernetes.io/job-name"
LABEL_COMPLETION_INDEX: Final = "batch.kubernetes.io/job-completion-index"

# Annotations
ANNOTATION_RERUN: Final = f"{GROUP}/rerun"
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"
ANNOTATION_METRICS_ENDPOINT: Final = f"{GROUP}/metrics-endpoint"


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
