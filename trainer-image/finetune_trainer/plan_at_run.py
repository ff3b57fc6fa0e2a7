"""The memory plan from the ``config.json`` the trainer really loads, and what torch measured.

The operator knows a model only by its name when it admits a job (it cannot read a PVC, a bucket or
the Hub). The trainer has the model's files, so at the model stage it reads their ``config.json``
(``AutoConfig``: the config alone, never the weights), estimates the memory for the device it runs
on, and at the first optimizer step counts the bytes torch holds for the parameters, their gradients
and the optimizer states. The exit summary carries the estimate and the measurements (with the GPU's
peak from ``torch.cuda.max_memory_allocated`` when there is one); the operator mirrors them into
``status.plan.measured`` with the error.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import TrainerCallback

from finetune_api.planning import Plan, architecture, make_plan
from finetune_api.planning.measured import compare
from finetune_api.planning.report import report
from finetune_api.training import TrainingSpec

log = logging.getLogger(__name__)


def plan_from_config(spec: TrainingSpec, model_path: str) -> Plan | None:
    """The plan for this run's device from the model's ``config.json``; None (logged) if unreadable.

    A plan is information: a config this estimator does not understand never fails the run.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            model_path, revision=spec.model.revision, trust_remote_code=spec.model.trust_remote_code
        )
        arch = architecture.from_config(config.to_dict())
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for a bad config
        log.warning("no memory plan: the model's config.json could not be read: %s", exc)
        return None
    cuda = torch.cuda.is_available()
    gpu_memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory if cuda else None
    plan = make_plan(spec, arch, gpu_memory=gpu_memory, device="gpu" if cuda else "cpu")
    log.info(
        "memory plan from config.json: %d parameters, %.2f GiB per %s (%s), dominant %s",
        arch.parameters,
        plan.memory.total / 2**30,
        "GPU" if cuda else "process",
        plan.verdict,
        plan.memory.dominant(),
    )
    return plan


def state_bytes(model: Any, optimizer: Any) -> dict[str, int]:
    """Bytes of every parameter, every ``.grad`` and every optimizer state tensor (not ``step``).

    Empty under DeepSpeed, which keeps gradients and optimizer states in its own flat buffers.
    """
    weights = gradients = 0
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if hasattr(p, "ds_id"):
            return {}
        weights += p.numel() * p.element_size()
        if p.grad is not None:
            gradients += p.grad.numel() * p.grad.element_size()
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    states = getattr(inner, "state", None)
    if not isinstance(states, dict):
        return {}
    optimizer_bytes = sum(
        t.numel() * t.element_size()
        for state in states.values()
        for key, t in state.items()
        if key != "step" and isinstance(t, torch.Tensor)
    )
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer_bytes}


class StateBytes(TrainerCallback):
    """Counts the model states once, after the first optimizer step (gradients not yet zeroed)."""

    def __init__(self) -> None:
        self.measured: dict[str, int] = {}

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.measured or kwargs.get("model") is None or kwargs.get("optimizer") is None:
            return
        self.measured = state_bytes(kwargs["model"], kwargs["optimizer"])


def plan_summary(plan: Plan, states: dict[str, int], peak_gpu_bytes: int | None) -> dict[str, Any]:
    """The summary's ``plan`` (``finetune_api.planning.report``): the estimate and what was measured."""
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(torch.cuda.current_device()) if cuda else "cpu"
    out = report(plan, device, states, peak_gpu_bytes)
    found = compare(plan.memory.terms(), out.get("measuredBytes", {}))
    if found is not None:
        log.info(
            "memory plan vs measured (%s): estimated %d, measured %d bytes, error %+.1f%%",
            found.basis,
            found.estimated,
            found.measured,
            found.error_percent,
        )
    return out
