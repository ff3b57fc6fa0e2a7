"""Checks made before a GPU is spent: the memory/cost plan and the model's licence. Pure.

The operator cannot read model files, so the model's shape comes from the size in its name
(``…-70B``); ``ftj plan`` reads ``config.json`` where it can, and so does the trainer, whose plan and
measurements arrive in ``status.plan.measured`` when the run ends. An unknown shape makes no plan here
and refuses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from finetune_api.conditions import Reason
from finetune_api.planning import architecture, gpus, make_plan
from finetune_api.spec import FineTuneJobSpec
from finetune_api.status import PlanStatus
from finetune_operator.settings import OperatorSettings

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class Admission:
    plan: PlanStatus | None
    refusal: tuple[str, str] | None = None
    warnings: list[str] = field(default_factory=list)


def gpu_product(spec: FineTuneJobSpec, settings: OperatorSettings) -> str | None:
    """The product the pods will land on: the job's node selector, else the operator's default."""
    return (spec.scheduling.node_selector or {}).get(GPU_PRODUCT_LABEL) or settings.default_gpu_product


def plan_status(spec: FineTuneJobSpec, settings: OperatorSettings) -> PlanStatus | None:
    arch = architecture.from_name(spec.model.name)
    if arch is None:
        return None
    product_name = gpu_product(spec, settings)
    product = gpus.lookup(product_name, {**gpus.PRODUCTS, **settings.gpu_products})
    price = settings.gpu_prices.get(product_name or "")
    if price is None and product is not None:
        price = settings.gpu_prices.get(product.name)
    memory = gpus.parse_quantity(spec.resources.gpu_memory) if spec.resources.gpu_memory else None
    plan = make_plan(spec.training(), arch, gpu=product, gpu_memory=memory, price_per_gpu_hour=price)
    return PlanStatus.model_validate(plan.to_status())


def admit(spec: FineTuneJobSpec, settings: OperatorSettings) -> Admission:
    """The plan, and the first reason to refuse the job (or warnings to post)."""
    plan = plan_status(spec, settings)
    warnings: list[str] = []
    check = spec.admission.memory_check if spec.admission else "warn"
    if plan is not None and plan.verdict == "DoesNotFit" and check != "off":
        capacity = f"{plan.gpu_memory_gib} GiB" if plan.gpu_memory_gib is not None else "the GPU"
        message = (
            f"Estimated {plan.per_gpu_memory_gib} GiB per GPU does not fit {capacity} "
            f"(dominant: {plan.dominant_term}). Suggestion: {plan.suggestion or 'none'}."
        )
        if check == "fail":
            return Admission(
                plan, (Reason.PLAN_DOES_NOT_FIT, message + " (spec.admission.memoryCheck: fail)")
            )
        warnings.append(message)
    if settings.allowed_licences:
        licence = (spec.model.licence or "").lower()
        allowed = ", ".join(settings.allowed_licences)
        if licence and licence not in settings.allowed_licences:
            return Admission(
                plan,
                (
                    Reason.LICENCE_NOT_ALLOWED,
                    f"Licence {licence!r} (spec.model.licence) is not one the operator allows ({allowed}).",
                ),
                warnings,
            )
        if not licence:
            message = f"The model's licence is unknown: set spec.model.licence (allowed: {allowed})."
            if settings.unknown_licence == "fail":
                return Admission(plan, (Reason.LICENCE_NOT_ALLOWED, message), warnings)
            warnings.append(message)
    return Admission(plan, None, warnings)
