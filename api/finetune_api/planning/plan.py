"""The plan of a FineTuneJob: does it fit the GPUs it asked for, how long, and what it will cost.

Pure: the caller supplies the model's shape, the GPU it will run on and, when known, the dataset's
size; every number here is an estimate and says so (``status.plan``, ``ftj plan``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from finetune_api.planning.architecture import Architecture
from finetune_api.planning.gpus import GIB, GpuProduct
from finetune_api.planning.memory import Device, MemoryEstimate, estimate
from finetune_api.training import TrainingSpec

Verdict = Literal["Fits", "Tight", "DoesNotFit", "Unknown"]
TIGHT_FRACTION = 0.85  # above this share of GPU memory, fragmentation and spikes can still OOM
FORMULAS = (
    "model states: ZeRO (Rajbhandari et al. 2020) and QLoRA NF4 (Dettmers et al. 2023); "
    "activations: Korthikanti et al. 2022 without stored attention scores (SDPA)"
)
# Model FLOPs per parameter per token (forward 2, backward 4, or 2 when weights are frozen) and the
# utilisation a well-tuned run reaches, by method.
_FLOPS_PER_PARAM = {"full": 6, "lora": 4, "qlora": 4}
_ASSUMED_MFU = {"full": 0.35, "lora": 0.30, "qlora": 0.20}


@dataclass(frozen=True)
class DataSize:
    """How much the dataset holds, when it is known (``ftj plan`` on a local file, or a data report)."""

    records: int
    mean_tokens: float


@dataclass(frozen=True)
class Plan:
    arch: Architecture
    memory: MemoryEstimate
    gpu_memory: int | None
    gpu_product: str | None
    gpu_memory_source: str
    verdict: Verdict
    suggestion: str
    gpus: int
    steps: int | None
    tokens: int | None
    gpu_hours: float | None
    price_per_gpu_hour: float | None

    @property
    def estimated_cost(self) -> float | None:
        if self.gpu_hours is None or self.price_per_gpu_hour is None:
            return None
        return round(self.gpu_hours * self.price_per_gpu_hour, 2)

    def to_status(self) -> dict[str, Any]:
        """camelCase, JSON-safe, GiB rounded: what ``status.plan`` and ``ftj plan --json`` show."""
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "parameters": self.arch.parameters,
            "trainableParameters": self.memory.trainable_parameters,
            "shapeSource": self.arch.source,
            "perGpuMemoryGiB": _gib(self.memory.total),
            "memoryGiB": {k: _gib(v) for k, v in self.memory.terms().items()},
            "dominantTerm": self.memory.dominant(),
            "gpus": self.gpus,
            "gpuMemorySource": self.gpu_memory_source,
            "formulas": FORMULAS,
        }
        optional = {
            "gpuProduct": self.gpu_product,
            "gpuMemoryGiB": None if self.gpu_memory is None else _gib(self.gpu_memory),
            "suggestion": self.suggestion or None,
            "steps": self.steps,
            "tokens": self.tokens,
            "gpuHours": None if self.gpu_hours is None else round(self.gpu_hours, 3),
            "pricePerGpuHour": self.price_per_gpu_hour,
            "estimatedCost": self.estimated_cost,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


def _gib(n: int) -> float:
    return round(n / GIB, 2)


def verdict_for(total: int, gpu_memory: int | None) -> Verdict:
    if gpu_memory is None:
        return "Unknown"
    if total > gpu_memory:
        return "DoesNotFit"
    return "Tight" if total > TIGHT_FRACTION * gpu_memory else "Fits"


def make_plan(
    spec: TrainingSpec,
    arch: Architecture,
    gpu: GpuProduct | None = None,
    gpu_memory: int | None = None,
    data: DataSize | None = None,
    price_per_gpu_hour: float | None = None,
    device: Device = "gpu",
) -> Plan:
    """The plan for ``spec``; ``gpu_memory`` (from ``spec.resources.gpuMemory``) wins over the product's."""
    dist = spec.distributed_or_default()
    gpus = dist.nodes * dist.gpus_per_node
    memory = estimate(spec, arch, device)
    source = "spec.resources.gpuMemory" if gpu_memory is not None else "unknown"
    if gpu_memory is None and gpu is not None:
        gpu_memory, source = gpu.memory_bytes, "nvidia.com/gpu.product table"
    if gpus == 0:
        gpu_memory, source = None, "no GPU requested (runs on CPU)"
    verdict = verdict_for(memory.total, gpu_memory)
    suggestion = _suggest(spec, arch, gpu_memory) if verdict in ("Tight", "DoesNotFit") else ""
    steps, tokens = _steps_and_tokens(spec, data, max(gpus, 1))
    gpu_hours = None
    if tokens is not None and gpu is not None and gpus:
        flops_per_token = _FLOPS_PER_PARAM[spec.method] * arch.parameters
        if spec.gradient_checkpointing():
            flops_per_token += 2 * arch.parameters  # the recomputed forward
        seconds = tokens * flops_per_token / (gpu.bf16_tflops * 1e12 * _ASSUMED_MFU[spec.method])
        gpu_hours = seconds / 3600
    return Plan(
        arch=arch,
        memory=memory,
        gpu_memory=gpu_memory,
        gpu_product=gpu.name if gpu else None,
        gpu_memory_source=source,
        verdict=verdict,
        suggestion=suggestion,
        gpus=gpus,
        steps=steps,
        tokens=tokens,
        gpu_hours=gpu_hours,
        price_per_gpu_hour=price_per_gpu_hour,
    )


def _steps_and_tokens(spec: TrainingSpec, data: DataSize | None, gpus: int) -> tuple[int | None, int | None]:
    hp = spec.hyperparameters
    per_step = hp.batch_size * hp.gradient_accumulation_steps * gpus
    if hp.max_steps is not None:
        mean = min(data.mean_tokens, hp.max_sequence_length) if data else hp.max_sequence_length
        return hp.max_steps, int(hp.max_steps * per_step * mean)
    if data is None:
        return None, None
    splits = spec.dataset.splits
    held_out = (0.0 if splits.validation_source else splits.validation) + (
        0.0 if splits.test_source else splits.test
    )
    train = max(int(data.records * (1.0 - held_out)), 1)
    steps = math.ceil(math.ceil(train / per_step) * hp.epochs)
    tokens = int(train * min(data.mean_tokens, hp.max_sequence_length) * hp.epochs)
    return steps, tokens


def _suggest(spec: TrainingSpec, arch: Architecture, gpu_memory: int | None) -> str:
    """The first change, in the order a practitioner would try them, that makes the job fit."""
    if gpu_memory is None:
        return ""
    first_activation = estimate(spec, arch).dominant() in ("activations", "logits")
    changes = _activation_changes(spec) + _state_changes(spec)
    if not first_activation:
        changes = _state_changes(spec) + _activation_changes(spec)
    for text, change in changes:
        candidate = change(spec)
        total = estimate(candidate, arch).total
        if verdict_for(total, gpu_memory) == "Fits":
            return f"{text}: about {_gib(total)} GiB per GPU"
    return "no single change fits: use more GPUs with ZeRO-3, or a smaller model"


Change = tuple[str, Callable[[TrainingSpec], TrainingSpec]]


def _update(spec: TrainingSpec, path: str, value: Any) -> TrainingSpec:
    data = spec.model_dump()
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
    node[leaf] = value
    return TrainingSpec.model_validate(data)


def _activation_changes(spec: TrainingSpec) -> list[Change]:
    hp = spec.hyperparameters
    out: list[Change] = []
    if not spec.gradient_checkpointing():
        out.append(
            ("set hyperparameters.gradientCheckpointing: true",
             lambda s: _update(s, "hyperparameters.gradient_checkpointing", True))
        )  # fmt: skip
    batch, accum = hp.batch_size, hp.gradient_accumulation_steps
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        text = f"batchSize {batch} with gradientAccumulationSteps {accum} (same effective batch)"
        out.append((text, _batch_change(batch, accum)))
    return out


def _batch_change(batch: int, accum: int) -> Callable[[TrainingSpec], TrainingSpec]:
    def change(spec: TrainingSpec) -> TrainingSpec:
        spec = _update(spec, "hyperparameters.batch_size", batch)
        return _update(spec, "hyperparameters.gradient_accumulation_steps", accum)

    return change


def _state_changes(spec: TrainingSpec) -> list[Change]:
    out: list[Change] = []
    if spec.method == "full":
        dist = spec.distributed_or_default()
        ds = dist.deepspeed
        many = dist.nodes * dist.gpus_per_node > 1
        if many and (ds is None or ds.zero_stage < 3):
            out.append(("DeepSpeed zeroStage 3 across the GPUs", lambda s: _with_zero(s, 3, False, False)))
        out.append(("zeroStage 3 with offloadOptimizer", lambda s: _with_zero(s, 3, True, False)))
        out.append(
            (
                "zeroStage 3 with offloadOptimizer and offloadParameters",
                lambda s: _with_zero(s, 3, True, True),
            )
        )
        out.append(("method lora", lambda s: _update(_without_deepspeed(s), "method", "lora")))
    if spec.method != "qlora":
        out.append(("method qlora (4-bit base)", lambda s: _to_qlora(s)))
    return out


def _with_zero(spec: TrainingSpec, stage: int, offload_opt: bool, offload_params: bool) -> TrainingSpec:
    ds = {"zero_stage": stage, "offload_optimizer": offload_opt, "offload_parameters": offload_params}
    return _update(spec, "distributed.deepspeed", ds)


def _without_deepspeed(spec: TrainingSpec) -> TrainingSpec:
    return _update(spec, "distributed.deepspeed", None) if spec.distributed else spec


def _to_qlora(spec: TrainingSpec) -> TrainingSpec:
    spec = _without_deepspeed(spec)
    if spec.distributed is not None:
        spec = _update(_update(spec, "distributed.nodes", 1), "distributed.gpus_per_node", 1)
    return _update(spec, "method", "qlora")
