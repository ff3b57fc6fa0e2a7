"""Names used across the operator: API coordinates, mounts, labels, annotations.

Phases, condition types and reasons, ports and paths the trainer shares live in ``finetune_api``.
"""

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
OUTPUT_MOUNT: Final = "/output"
MODEL_MOUNT: Final = "/model"
DATASET_MOUNT: Final = "/data"
STORAGE_CREDENTIALS_MOUNT: Final = "/var/run/secrets/finetuning.io/storage"
MODEL_CACHE_MOUNT: Final = "/var/cache/finetune"
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
ANNOTATION_CONFIG: Final = f"{GROUP}/config"
"""On a run's pod template: the trainer's config (compact JSON), which the downward API projects."""
CONFIG_ANNOTATION_MAX_BYTES: Final = 200 * 1024
"""Kubernetes allows 256 KiB of annotations per object; the rest is headroom for other controllers."""
