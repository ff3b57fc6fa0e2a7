"""Typed status of a FineTuneJob; the spec models live in ``finetune_api.spec``.

Closed: every field is declared, so the CRD documents all of it (``kubectl explain ftj.status``) and the
API server prunes anything else. A status stored by an older operator is read with
:meth:`FineTuneJobStatus.from_stored`, which drops what no longer fits instead of failing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from finetune_api.lenient import validate_dropping
from finetune_api.results import (
    CheckpointRef,
    DatasetReport,
    Evaluation,
    OutputRef,
    Reported,
    TrainingMetrics,
)


class Condition(Reported):
    """A metav1.Condition."""

    type: str = Field(
        description="Condition type: Created, Queued, Running, Suspended, Stalled, Succeeded, Failed."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="Generation the condition was set for.")


class RunStatus(Reported):
    number: int = Field(
        ge=1, description="Run number; a new run starts on a spec change or a re-run annotation."
    )
    job_name: str = Field(description="The batch/v1 Job of this run.")
    spec_hash: str = Field(description="Hash of the spec the run was started from.")
    rerun_token: str = Field(
        default="", description="Value of the finetuning.io/rerun annotation at the start."
    )
    generation: int | None = Field(
        default=None,
        description=(
            "metadata.generation the run was started from: a new run needs the user to have changed the "
            "spec since (a CRD upgrade or new defaults never start one)."
        ),
    )
    start_time: str | None = Field(default=None, description="When the run's Job was created.")
    completion_time: str | None = Field(default=None, description="When the run finished.")


class HistoryEntry(Reported):
    number: int = Field(description="Run number.")
    job_name: str = Field(description="Job name.")
    phase: str = Field(description="Final phase (or Superseded when replaced while running).")
    reason: str | None = Field(default=None, description="Reason of the final phase.")
    rerun_token: str | None = Field(
        default=None, description="The rerun annotation the run was started for (never started again)."
    )
    start_time: str | None = Field(default=None, description="Start.")
    completion_time: str | None = Field(default=None, description="End.")
    eval_loss: float | None = Field(default=None, description="Final evaluation loss.")


class Progress(Reported):
    step: int | None = Field(default=None, description="Optimizer step.")
    total_steps: int | None = Field(default=None, description="Planned optimizer steps.")
    percent: int | None = Field(default=None, description="step / totalSteps in percent.")
    summary: str | None = Field(default=None, description="step/totalSteps, shown in the Progress column.")
    epoch: float | None = Field(default=None, description="Fractional epoch.")
    eta_seconds: float | None = Field(default=None, description="Estimated seconds left.")
    last_heartbeat: str | None = Field(default=None, description="When the trainer last completed a step.")
    stage: str | None = Field(
        default=None,
        description=(
            "What the trainer is doing: loading, data, training, evaluating, saving, merging or uploading "
            "(Stalled is judged only in training)."
        ),
    )
    stage_since: str | None = Field(
        default=None, description="When the operator first saw the current stage."
    )


class PlanMemory(Reported):
    weights: float = Field(description="Model weights held on one GPU (GiB).")
    gradients: float = Field(description="Gradients held on one GPU (GiB).")
    optimizer: float = Field(description="Optimizer states held on one GPU (GiB).")
    activations: float = Field(description="Activations kept for the backward pass (GiB).")
    logits: float = Field(description="fp32 logits and their gradient (GiB).")
    runtime: float = Field(description="CUDA context, workspaces and allocator slack (GiB).")


class PlanTermErrors(Reported):
    weights: float | None = Field(default=None, description="Error of the weights term (percent).")
    gradients: float | None = Field(default=None, description="Error of the gradients term (percent).")
    optimizer: float | None = Field(default=None, description="Error of the optimizer term (percent).")


class PlanMeasured(Reported):
    """The trainer's plan from the model's own config.json, and the memory torch measured in the run."""

    shape_source: str = Field(description="Where the trainer read the shape: config.json.")
    parameters: int = Field(description="Parameters of the base model, from its config.json.")
    trainable_parameters: int = Field(description="Parameters the run trains.")
    device: str = Field(description="The device the rank-0 trainer ran on (a GPU's name, or cpu).")
    verdict: Literal["Fits", "Tight", "DoesNotFit"] | None = Field(
        default=None, description="The estimate against the device's own memory (GPU only)."
    )
    per_gpu_memory_gib: float = Field(
        alias="perGpuMemoryGiB", description="The trainer's estimated peak per GPU (or process) (GiB)."
    )
    memory_gib: PlanMemory = Field(alias="memoryGiB", description="The trainer's estimate by term (GiB).")
    basis: str | None = Field(
        default=None,
        description=(
            "What was compared: on a GPU the peak allocated (torch.cuda.max_memory_allocated) against every "
            "term but runtime; on a CPU the weights, gradients and optimizer states torch held."
        ),
    )
    estimated_bytes: int | None = Field(default=None, description="The estimate of what was measured.")
    measured_bytes: int | None = Field(default=None, description="What torch measured (bytes).")
    error_percent: float | None = Field(
        default=None, description="(estimated - measured) / measured in percent; positive overestimates."
    )
    term_error_percent: PlanTermErrors | None = Field(
        default=None, description="Error of each model-state term torch held (not under DeepSpeed)."
    )


class PlanStatus(Reported):
    """The estimate made before the run's Job was created (``ftj plan`` prints the same)."""

    verdict: Literal["Fits", "Tight", "DoesNotFit", "Unknown"] = Field(
        description="Fits (under 85% of GPU memory), Tight, DoesNotFit, or Unknown (GPU memory unknown)."
    )
    parameters: int = Field(description="Parameters of the base model.")
    trainable_parameters: int = Field(description="Parameters the run trains.")
    shape_source: str = Field(description="Where the model's shape came from: config.json or model name.")
    per_gpu_memory_gib: float = Field(alias="perGpuMemoryGiB", description="Estimated peak per GPU (GiB).")
    memory_gib: PlanMemory = Field(alias="memoryGiB", description="The estimate by term (GiB).")
    dominant_term: str = Field(description="The largest term.")
    gpus: int = Field(description="GPUs in the run.")
    gpu_memory_source: str = Field(description="Where the GPU memory came from.")
    formulas: str = Field(description="The published formulas the estimate follows.")
    gpu_product: str | None = Field(default=None, description="GPU product (nvidia.com/gpu.product).")
    gpu_memory_gib: float | None = Field(default=None, alias="gpuMemoryGiB", description="GPU memory (GiB).")
    suggestion: str | None = Field(
        default=None, description="A change that makes a Tight/DoesNotFit job fit."
    )
    steps: int | None = Field(default=None, description="Estimated optimizer steps (when known).")
    tokens: int | None = Field(default=None, description="Estimated training tokens (when known).")
    gpu_hours: float | None = Field(default=None, description="Estimated GPU-hours (when tokens are known).")
    price_per_gpu_hour: float | None = Field(default=None, description="Configured price of one GPU-hour.")
    estimated_cost: float | None = Field(default=None, description="gpuHours x pricePerGpuHour.")
    actual_cost: float | None = Field(
        default=None, description="status.gpuSeconds x price, once the run ended."
    )
    measured: PlanMeasured | None = Field(
        default=None,
        description=(
            "Reported by the trainer at the end: its estimate from the config.json it loaded (the operator "
            "knows only the model's name) and the memory torch measured, with the error."
        ),
    )


class PreflightWait(Reported):
    """A missing Secret, PVC or ConfigMap the run is waiting for (External Secrets, sync waves)."""

    key: str = Field(description="The generation and rerun token the wait is for.")
    since: str = Field(description="When the wait began (RFC 3339).")
    reason: str = Field(
        description="WaitingForSecret, WaitingForPersistentVolumeClaim or WaitingForConfigMap."
    )


class FineTuneJobStatus(Reported):
    phase: str | None = Field(
        default=None, description="Pending, Queued, Running, Succeeded, Failed or Suspended."
    )
    reason: str | None = Field(
        default=None, description="CamelCase reason of the current phase (failures name their cause)."
    )
    message: str | None = Field(default=None, description="Human-readable detail of the reason.")
    observed_generation: int | None = Field(
        default=None, description="The spec generation this status is for."
    )
    conditions: list[Condition] = Field(default_factory=list, description="metav1.Condition list.")
    run: RunStatus | None = Field(default=None, description="The current run.")
    attempts: int | None = Field(default=None, description="Failed pods of the current run (retries so far).")
    progress: Progress | None = Field(default=None, description="Progress mirrored from the rank-0 trainer.")
    metrics: TrainingMetrics | None = Field(
        default=None, description="Training metrics: the latest while running, the final ones once it ended."
    )
    dataset: DatasetReport | None = Field(
        default=None,
        description="Data report: counts per split, duplicates removed, redactions, token statistics.",
    )
    evaluation: Evaluation | None = Field(
        default=None, description="Test-set evaluation of the tuned model and of the base model."
    )
    output: OutputRef | None = Field(default=None, description="Where the results are.")
    last_checkpoint: CheckpointRef | None = Field(default=None, description="Latest checkpoint (step, uri).")
    gpu_seconds: float | None = Field(
        default=None, description="GPU-seconds used by finished runs and the current one."
    )
    history: list[HistoryEntry] = Field(default_factory=list, description="The last runs, newest first.")
    preflight_wait: PreflightWait | None = Field(
        default=None, description="Set while the run waits for a Secret, PVC or ConfigMap to appear."
    )
    plan: PlanStatus | None = Field(
        default=None, description="Memory, time and cost plan of the current run."
    )

    @classmethod
    def from_stored(cls, raw: dict[str, Any] | None) -> FineTuneJobStatus:
        """The status as stored, keeping what fits this version's model (an older operator may have
        written fields or shapes it no longer has)."""
        return validate_dropping(cls, dict(raw or {}))[0]
