"""What a trainer pod needs for remote storage: credentials, a model cache, workload identity, disk.

Pure: returns pieces of the pod spec that ``builders.build_job`` adds. Credentials only ever travel
as references (``envFrom``/``secretKeyRef`` and a Secret volume); the operator never reads a value.

- ``spec.secrets.storage``: every key becomes an environment variable (AWS_*, AZURE_STORAGE_*), and
  the Secret is also mounted read-only as files, where the trainer finds a GCS key (``gcs-key.json``).
- ``spec.serviceAccountName``: the pods run as that ServiceAccount, and only then is its token
  mounted (workload identity webhooks and SDKs need it); otherwise no token is mounted at all.
- ``spec.model.cache``: a PVC that keeps downloads across runs and retries.
- ``resources.ephemeralStorage`` (or the operator's default when something is downloaded and no
  cache is given): the scheduler places the pod on a node with room for the downloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from finetune_api.sources import Source
from finetune_api.spec import FineTuneJobSpec
from finetune_operator import constants as c
from finetune_operator.settings import OperatorSettings

REMOTE_SCHEMES = ("s3://", "gs://", "az://", "hf://")


@dataclass
class StorageParts:
    env: list[dict[str, Any]] = field(default_factory=list)
    env_from: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    pod: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)


def _remote(source: Source | None) -> bool:
    return source is not None and source.uri is not None and source.uri.startswith(REMOTE_SCHEMES)


def downloads(spec: FineTuneJobSpec) -> bool:
    """Whether the pod fetches anything: a remote model (or a Hub id), data or a remote output."""
    splits = spec.dataset.splits
    return (
        spec.model.source is None
        or _remote(spec.model.source)
        or any(_remote(s) for s in (spec.dataset.source, splits.validation_source, splits.test_source))
        or _remote(spec.output.source)
    )


def storage_parts(spec: FineTuneJobSpec, settings: OperatorSettings) -> StorageParts:
    parts = StorageParts()
    if spec.secrets.storage:
        parts.env_from.append({"secretRef": {"name": spec.secrets.storage}})
        # optional: a missing Secret must surface as the envFrom's CreateContainerConfigError (which
        # the operator reads when it may not check Secrets itself), not as a pod stuck on a mount.
        parts.volumes.append(
            {
                "name": "storage-credentials",
                "secret": {"secretName": spec.secrets.storage, "defaultMode": 0o440, "optional": True},
            }
        )
        parts.mounts.append(
            {"name": "storage-credentials", "mountPath": c.STORAGE_CREDENTIALS_MOUNT, "readOnly": True}
        )
        parts.env.append({"name": "FTJ_STORAGE_CREDENTIALS_DIR", "value": c.STORAGE_CREDENTIALS_MOUNT})
    if spec.model.cache is not None:
        parts.volumes.append(
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": spec.model.cache.claim_name}}
        )
        parts.mounts.append({"name": "model-cache", "mountPath": c.MODEL_CACHE_MOUNT})
        parts.env.append({"name": "FTJ_STORAGE_CACHE", "value": c.MODEL_CACHE_MOUNT})
    if spec.service_account_name:
        parts.pod = {"serviceAccountName": spec.service_account_name, "automountServiceAccountToken": True}
    if spec.resources.ephemeral_storage:
        parts.requests["ephemeral-storage"] = parts.limits["ephemeral-storage"] = (
            spec.resources.ephemeral_storage
        )
    elif spec.model.cache is None and downloads(spec) and settings.download_ephemeral_storage:
        parts.requests["ephemeral-storage"] = settings.download_ephemeral_storage
    return parts
