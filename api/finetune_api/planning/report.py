"""The plan the trainer reports in its exit summary, and how the operator mirrors it into status.

The trainer writes ``summary.plan`` (``PlanReport``, bytes) from the ``config.json`` it loaded and the
memory torch measured; the operator validates it like everything else from a pod, computes the error
(``measured.compare``) and keeps it in ``status.plan.measured`` next to the estimate it admitted the job
with, which came from the model's name alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from finetune_api.planning.gpus import GIB
from finetune_api.planning.measured import PEAK_KEY, compare
from finetune_api.planning.plan import FORMULAS, Plan
from finetune_api.status import PlanMeasured, PlanMemory, PlanStatus, PlanTermErrors

_Bytes = Field(ge=0, le=2**53)


class _Report(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class EstimatedBytes(_Report):
    weights: int = _Bytes
    gradients: int = _Bytes
    optimizer: int = _Bytes
    activations: int = _Bytes
    logits: int = _Bytes
    runtime: int = _Bytes


class MeasuredBytes(_Report):
    weights: int | None = Field(default=None, ge=0, le=2**53)
    gradients: int | None = Field(default=None, ge=0, le=2**53)
    optimizer: int | None = Field(default=None, ge=0, le=2**53)
    peak_allocated: int | None = Field(default=None, ge=0, le=2**53, alias=PEAK_KEY)


class PlanReport(_Report):
    """``summary.plan``: the trainer's estimate by term and what torch measured, in bytes."""

    shape_source: Literal["config.json", "model name"]
    parameters: int = _Bytes
    trainable_parameters: int = _Bytes
    device: str = Field(max_length=128)
    gpus: int = Field(default=1, ge=0, le=100_000)
    verdict: Literal["Fits", "Tight", "DoesNotFit"] | None = None
    gpu_memory_bytes: int | None = Field(default=None, ge=0, le=2**53)
    estimated_bytes: EstimatedBytes
    measured_bytes: MeasuredBytes | None = None


def report(plan: Plan, device: str, states: Mapping[str, int], peak_allocated: int | None) -> dict[str, Any]:
    """The summary's ``plan`` for ``plan`` made on ``device``, with what was measured (if anything)."""
    measured = {**states, **({PEAK_KEY: peak_allocated} if peak_allocated else {})}
    body = PlanReport(
        shape_source=plan.arch.source,
        parameters=plan.arch.parameters,
        trainable_parameters=plan.memory.trainable_parameters,
        device=device[:128],
        gpus=plan.gpus,
        verdict=None if plan.verdict == "Unknown" else plan.verdict,
        gpu_memory_bytes=plan.gpu_memory,
        estimated_bytes=EstimatedBytes.model_validate(plan.memory.terms()),
        measured_bytes=MeasuredBytes.model_validate(measured) if measured else None,
    )
    return body.model_dump(by_alias=True, exclude_none=True)


def _gib(n: int) -> float:
    return round(n / GIB, 2)


def measured_status(raw: Any) -> PlanMeasured | None:
    """``status.plan.measured`` from a summary's ``plan``; None when it is missing or malformed."""
    try:
        rep = PlanReport.model_validate(raw)
    except ValidationError:
        return None
    terms = rep.estimated_bytes.model_dump()
    measured = {} if rep.measured_bytes is None else rep.measured_bytes.model_dump(by_alias=True)
    found = compare(terms, {k: v for k, v in measured.items() if v is not None})
    return PlanMeasured(
        shape_source=rep.shape_source,
        parameters=rep.parameters,
        trainable_parameters=rep.trainable_parameters,
        device=rep.device,
        verdict=rep.verdict,
        per_gpu_memory_gib=_gib(sum(terms.values())),
        memory_gib=PlanMemory.model_validate({k: _gib(v) for k, v in terms.items()}),
        basis=found.basis if found else None,
        estimated_bytes=found.estimated if found else None,
        measured_bytes=found.measured if found else None,
        error_percent=found.error_percent if found else None,
        term_error_percent=PlanTermErrors.model_validate(found.term_errors) if found else None,
    )


def mirror(raw: Any, current: PlanStatus | None) -> PlanStatus | None:
    """``status.plan`` once the trainer reported: the admission estimate kept and ``measured`` added.

    Without an admission plan (a model the operator could not size by its name) the trainer's estimate
    becomes the plan. None when there is nothing usable to add.
    """
    measured = measured_status(raw)
    if measured is None:
        return None
    if current is not None:
        return current.model_copy(update={"measured": measured})
    memory = measured.memory_gib.model_dump()
    return PlanStatus(
        verdict=measured.verdict or "Unknown",
        parameters=measured.parameters,
        trainable_parameters=measured.trainable_parameters,
        shape_source=measured.shape_source,
        per_gpu_memory_gib=measured.per_gpu_memory_gib,
        memory_gib=measured.memory_gib,
        dominant_term=max(memory, key=lambda k: memory[k]),
        gpus=PlanReport.model_validate(raw).gpus,
        gpu_memory_source=f"the trainer's device ({measured.device})",
        formulas=FORMULAS,
        measured=measured,
    )
