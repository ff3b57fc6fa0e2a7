"""Where and how the pods run: scheduling, resources, Secrets and admission checks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from finetune_api.affinity import Affinity
from finetune_api.sources import SecretKeyRef
from finetune_api.specbase import (
    DNS_SUBDOMAIN,
    EXTENDED_RESOURCE,
    LABEL_VALUE,
    QUALIFIED_NAME,
    Model,
    cel,
)


class Toleration(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.operator) || self.operator != 'Exists'"
                    " || !has(self.value) || self.value == ''",
                    "a toleration with operator Exists must not set a value",
                    ".value",
                ),
                cel(
                    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                    "tolerationSeconds needs effect NoExecute",
                    ".tolerationSeconds",
                ),
                cel(
                    "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                    "a toleration without a key needs operator Exists",
                    ".operator",
                ),
            ]
        }
    )

    key: str | None = Field(
        default=None,
        max_length=317,
        pattern=QUALIFIED_NAME,
        description="Taint key the toleration applies to (a label key); unset needs operator Exists.",
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (unset means Equal)."
    )
    value: str | None = Field(
        default=None, max_length=63, pattern=LABEL_VALUE, description="Taint value for operator Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; unset matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated (effect NoExecute only)."
    )


class SchedulingSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.nodeSelector) || self.nodeSelector.all(k, size(k) <= 317"
                    f" && k.matches('{QUALIFIED_NAME}'))",
                    "nodeSelector keys must be label keys: an optional DNS prefix and '/', then a name"
                    " of up to 63 alphanumerics, '-', '_' or '.'",
                    ".nodeSelector",
                ),
            ]
        }
    )

    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_SUBDOMAIN,
        description="Kueue LocalQueue; the Job is created suspended and Kueue admits it.",
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, description="PriorityClass of the pods."
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] | None = Field(
        default=None, max_length=64, description="Node labels the pods require."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=64, description="Tolerations added to the GPU taint toleration."
    )
    affinity: Affinity | None = Field(
        default=None, description="A core/v1 Affinity (node affinity, pod affinity, pod anti-affinity)."
    )


class ResourcesSpec(Model):
    cpu: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?m?$",
        description="CPU request and limit per pod, e.g. 8 or 500m.",
    )
    memory: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description="Memory request and limit per pod, e.g. 64Gi.",
    )
    shared_memory: str = Field(
        default="8Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description="Size of /dev/shm (data-loader workers and NCCL need more than the runtime's 64 MiB).",
    )
    gpu_resource_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=EXTENDED_RESOURCE,
        description="Extended resource name of the GPU; unset means the operator's default (nvidia.com/gpu).",
    )
    ephemeral_storage: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description=(
            "Local disk per pod for downloads, results and checkpoints (request and limit). Unset: when the "
            "model or data is remote and no model cache is set, the operator requests its default."
        ),
    )
    gpu_memory: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description=(
            "Memory of one GPU, e.g. 80Gi, for the memory plan; unset means the table entry for the "
            "nvidia.com/gpu.product node selector, or the operator's default GPU product."
        ),
    )


class SecretsSpec(Model):
    hub_token: SecretKeyRef | None = Field(default=None, description="Model hub token, exposed as HF_TOKEN.")
    storage: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description=(
            "Secret for s3://, gs:// and az:// URIs: its keys become environment variables "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, "
            "AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, ...) and files (a key gcs-key.json is "
            "a GCS service-account key)."
        ),
    )


class AdmissionSpec(Model):
    memory_check: Literal["fail", "warn", "off"] = Field(
        default="warn",
        description=(
            "What a DoesNotFit memory plan does before any Job is created: fail the FineTuneJob "
            "(reason DoesNotFit), warn with an Event, or nothing."
        ),
    )
