"""The exit summary the trainer writes to its termination log and the operator reads back.

The trainer builds a :class:`Summary` and writes it with :func:`encode_summary`: at most 4 KiB (the
kubelet keeps no more), keys in snake_case as every trainer version wrote them; both spellings are read.
The operator reads it with :func:`parse_summary` and :meth:`Summary.from_wire`: the message comes from a
pod, so it is size-capped, and what does not fit the models is dropped field by field rather than
refusing the whole summary.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, ValidationError

from finetune_api.lenient import validate_dropping
from finetune_api.planning.report import PlanReport
from finetune_api.results import (
    CheckpointRef,
    DatasetReport,
    Evaluation,
    OutputRef,
    Reported,
    TrainingMetrics,
)

SUMMARY_VERSION = 1
SUMMARY_MAX_BYTES = 4096


class SummaryError(ValueError):
    """The termination message is not a summary this version understands."""


class Summary(Reported):
    """What the trainer reports when it exits, success or not."""

    version: Literal[1] = 1
    phase: Literal["Succeeded", "Failed"] | None = Field(default=None, description="How the run ended.")
    reason: str | None = Field(default=None, max_length=64, description="The exit code's reason.")
    message: str = Field(default="", description="What happened, for people.")
    metrics: TrainingMetrics | None = Field(default=None, description="Final training figures.")
    evaluation: Evaluation | None = Field(default=None, description="Test-set evaluation.")
    dataset: DatasetReport | None = Field(default=None, description="The data report in brief.")
    output: OutputRef | None = Field(default=None, description="Where the results are.")
    checkpoint: CheckpointRef | None = Field(default=None, description="The latest checkpoint.")
    plan: PlanReport | None = Field(
        default=None,
        description="The trainer's memory plan from the loaded config.json, and what it measured.",
    )

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Summary:
        """A summary from a decoded message; fields that do not fit are dropped (a pod wrote them). The
        plan is kept whole or not at all: its error is computed from all of its terms together."""
        rest = {k: v for k, v in data.items() if k != "plan"}
        summary = validate_dropping(cls, rest)[0]
        try:
            plan = PlanReport.model_validate(data["plan"]) if data.get("plan") is not None else None
        except ValidationError:
            plan = None
        return summary.model_copy(update={"plan": plan}) if plan is not None else summary


# Dropped in this order while the summary is over the limit (after shortening the message).
_DETAILS = ("plan", "evaluation", "dataset", "metrics", "checkpoint", "output", "message")


def encode_summary(summary: Summary, limit: int = SUMMARY_MAX_BYTES) -> str:
    """Serialise an exit summary within ``limit`` bytes: shorten the message first, then drop details."""
    data = summary.model_dump(exclude_none=True, mode="json")  # snake_case keys, as trainers always wrote
    if summary.plan is not None:  # camelCase, as the plan report always was
        data["plan"] = summary.plan.model_dump(by_alias=True, exclude_none=True, mode="json")
    text = _dump(data)
    if len(text.encode()) <= limit:
        return text
    message = str(data.get("message", ""))
    overflow = len(text.encode()) - limit
    if message:
        keep = max(0, len(message.encode()) - overflow - 3)
        data["message"] = message.encode()[:keep].decode(errors="ignore") + "..."
        text = _dump(data)
    for key in _DETAILS:
        if len(text.encode()) <= limit:
            break
        data.pop(key, None)
        text = _dump(data)
    return text


def parse_summary(text: str | None) -> dict[str, Any]:
    """A termination message as a JSON object; raises SummaryError with why it cannot be used."""
    if not text or not text.strip():
        raise SummaryError("empty termination message")
    if len(text.encode()) > SUMMARY_MAX_BYTES:
        raise SummaryError(f"termination message is {len(text.encode())} bytes, over {SUMMARY_MAX_BYTES}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SummaryError(f"termination message is not JSON: {exc.msg} at char {exc.pos}") from exc
    if not isinstance(data, dict):
        raise SummaryError("termination message is not a JSON object")
    if data.get("version") != SUMMARY_VERSION:
        raise SummaryError(f"unsupported summary version {data.get('version')!r}")
    for key in ("metrics", "evaluation", "dataset", "output", "checkpoint", "plan"):
        if key in data and not isinstance(data[key], dict):
            raise SummaryError(f"summary field {key!r} is not an object")
    return data


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False)
