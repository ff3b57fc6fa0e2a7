"""The FineTuneJob spec as typed models: the one definition the CRD schema is generated from.

The operator validates a spec with these models and renders them into the trainer's config; the
trainer reads the same models back. ``finetune_operator.crdgen`` turns them into the CRD's OpenAPI
schema (descriptions, defaults, enums, ranges, CEL rules), so the API, the operator and the trainer
cannot drift apart. Import-light on purpose: pydantic only, never torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from finetune_api import wellknown
from finetune_api.scheduling import AdmissionSpec, ResourcesSpec, SchedulingSpec, SecretsSpec
from finetune_api.specbase import DNS_SUBDOMAIN, Model
from finetune_api.training import TrainingSpec


class FineTuneJobSpec(TrainingSpec):
    """The whole spec of a FineTuneJob: training plus how and where its pods run."""

    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="CPU, memory and GPU per pod."
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="Where and when the pods run."
    )
    image: str | None = Field(
        default=None, max_length=512, description="Trainer image; unset means the operator's default."
    )
    secrets: SecretsSpec = Field(
        default_factory=SecretsSpec, description="References to Secrets (never values)."
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description=(
            "ServiceAccount of the trainer pods, for workload identity (IRSA, GKE or Azure Workload "
            "Identity); its token is mounted only when this is set. Grant it no Kubernetes RBAC."
        ),
    )
    # Optional with no default object, so that adding it changes no stored object's defaulted spec.
    admission: AdmissionSpec | None = Field(
        default=None, description="Checks made before a GPU is spent (the memory plan); unset: warn."
    )
    suspend: bool = Field(default=False, description="Suspend the run; setting it back to false resumes it.")
    backoff_limit: int = Field(default=3, ge=0, le=100, description="Retries after retriable failures.")
    active_deadline_seconds: int | None = Field(default=None, ge=1, description="Wall-clock limit of a run.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the finished Job (not the FineTuneJob) after this long."
    )
    stall_timeout_seconds: int = Field(
        default=900, ge=30, description="Mark the run Stalled when the step has not advanced for this long."
    )
    preflight_timeout_seconds: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description=(
            "How long a missing Secret, PersistentVolumeClaim or ConfigMap is waited for (phase Pending, "
            "reason WaitingFor...) before the run fails; unset means 600, 0 fails at once."
        ),
    )

    def training(self) -> TrainingSpec:
        return TrainingSpec.model_validate(self.model_dump(include=set(TrainingSpec.model_fields)))


class JobRef(Model):
    name: str = Field(description="FineTuneJob name.")
    namespace: str = Field(description="Namespace.")
    uid: str = Field(default="", description="FineTuneJob uid.")
    run: int = Field(default=1, ge=1, description="Run number.")


class Paths(Model):
    """Resolved local paths inside the pod (or on this machine for `ftj run`)."""

    model: str = Field(description="Base model directory or hub id.")
    dataset: str = Field(description="Training data file.")
    validation: str | None = Field(default=None, description="Explicit validation file.")
    test: str | None = Field(default=None, description="Explicit test file.")
    review_prompts: str | None = Field(default=None, description="Review prompts file.")
    regression: str | None = Field(default=None, description="Regression (forgetting check) file.")
    output: str = Field(description="Output directory.")


class TrainerConfig(Model):
    """The JSON the operator renders into the run's pod annotation and the trainer reads."""

    version: Literal[1] = 1
    job: JobRef
    spec: TrainingSpec
    paths: Paths
    metrics_port: int = Field(
        default=wellknown.METRICS_PORT, ge=0, le=65535, description="Prometheus port; 0 disables it."
    )
    termination_log: str = Field(
        default=wellknown.TERMINATION_LOG, description="Where the exit summary goes."
    )
    allowed_licences: list[str] = Field(
        default_factory=list,
        description="Licences the base model may have (the operator's setting); empty allows any.",
    )
