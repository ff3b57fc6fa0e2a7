"""Values the operator and the trainer must agree on: ports, paths inside the pod, the time format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

METRICS_PORT: Final = 9400
"""The trainer's Prometheus exporter (rank 0); the operator scrapes it for progress."""
RENDEZVOUS_PORT: Final = 29500
"""torchrun's static rendezvous on the index-0 pod of a multi-node run."""
TERMINATION_LOG: Final = "/dev/termination-log"
"""Where the trainer writes its exit summary; the kubelet hands it to the operator."""
CONFIG_DIR: Final = "/etc/finetune"
CONFIG_FILE: Final = "config.json"
CONFIG_PATH: Final = f"{CONFIG_DIR}/{CONFIG_FILE}"
"""The trainer's config: the pod's ``finetuning.io/config`` annotation, projected read-only by the
downward API."""

TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
"""RFC 3339 in UTC with whole seconds, as Kubernetes writes metav1.Time."""


def timestamp(when: datetime | None = None) -> str:
    """``when`` (default: now) as Kubernetes writes a metav1.Time."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime(TIME_FORMAT)
