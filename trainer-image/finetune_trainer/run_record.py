"""What one run reports: the record the stages fill in, and the termination summary made from it.

The summary is the only thing the operator reads after the pod is gone, so it is written on every
path out, success or not, and a failure to write it is logged, never raised.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_api.exitcodes import ExitCode, meaning_of
from finetune_api.lenient import unknown_fields, validate_dropping
from finetune_api.spec import TrainerConfig
from finetune_api.summary import Summary, encode_summary

if TYPE_CHECKING:
    from finetune_trainer.storage.run import RunStorage

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """What the summary reports; filled in as the stages progress."""

    stage: str = "config"
    metrics: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    output_uri: str | None = None
    checkpoint: dict[str, Any] | None = None
    storage: RunStorage | None = None  # once the stages built it (knows the synced checkpoints)
    licence: str | None = None
    plan: dict[str, Any] | None = None  # the estimate from the loaded config.json, then what was measured
    on_stage: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        """A new ``stage`` also reaches ``on_stage`` (the trainer's stage metric), wherever it is set."""
        super().__setattr__(name, value)
        hook = getattr(self, "on_stage", None)
        if name == "stage" and hook is not None:
            hook(value)


def run_metrics(trainer: Any, result: Any, excluded_seconds: float = 0.0) -> dict[str, Any]:
    """Final training figures for the summary, from the trainer state and its log history
    (``excluded_seconds``: time inside ``train()`` that was not training, e.g. the base measurement)."""
    state = trainer.state
    out: dict[str, Any] = {
        "step": state.global_step,
        "total_steps": state.max_steps,
        "epoch": round(state.epoch or 0.0, 4),
        "tokens_total": state.num_input_tokens_seen,
    }
    train_losses = [e["loss"] for e in state.log_history if "loss" in e]
    eval_losses = [e["eval_loss"] for e in state.log_history if "eval_loss" in e]
    if train_losses:
        out["first_train_loss"] = train_losses[0]
        out["train_loss"] = train_losses[-1]
    if eval_losses:
        out["eval_loss"] = eval_losses[-1]
    if state.best_metric is not None:
        out["best_eval_loss"] = state.best_metric
        out["best_step"] = state.best_global_step
    rates = [e["learning_rate"] for e in state.log_history if "learning_rate" in e]
    if rates:
        out["learning_rate"] = rates[-1]
    runtime = (result.metrics or {}).get("train_runtime") if result is not None else None
    if runtime:
        runtime = max(runtime - excluded_seconds, 1e-9)
        out["train_runtime_seconds"] = round(runtime, 3)
        out["tokens_per_second"] = round(state.num_input_tokens_seen / runtime, 2)
    peak = _peak_gpu_memory()
    if peak:
        out["gpu_memory_bytes"] = peak
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def dataset_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The data report in a few hundred bytes for status.dataset; the full report is in the output."""
    counts = report.get("counts", {})
    cleaning = report.get("cleaning", {})
    out: dict[str, Any] = {
        k: counts[k] for k in ("read", "invalid", "train", "validation", "test") if k in counts
    }
    duplicates = cleaning.get("duplicates_removed")
    if isinstance(duplicates, dict):
        out["duplicates_removed"] = {k: v for k, v in duplicates.items() if isinstance(v, int)}
    redactions = cleaning.get("redactions")
    if isinstance(redactions, dict):
        out["redactions"] = sum(v for v in redactions.values() if isinstance(v, int))
    leakage = report.get("leakage")
    if isinstance(leakage, dict) and leakage.get("checked"):
        out["leakage"] = {k: leakage[k] for k in ("exact", "near") if isinstance(leakage.get(k), int)}
    tokens = report.get("tokens")
    if isinstance(tokens, dict):
        out["tokens"] = {k: tokens[k] for k in ("mean", "p95", "max", "truncated") if k in tokens}
    return out


def _peak_gpu_memory() -> int | None:
    """The highest peak of any rank's GPU (each allocator knows only its own process; a collective)."""
    from finetune_trainer.distributed import gather_from_all
    from finetune_trainer.metrics_server import memory_in_use

    peaks = [
        used for own in gather_from_all(memory_in_use(peak=True)) for d, used in own.items() if d != "cpu"
    ]
    return max(peaks) if peaks else None


def output_uri(config: TrainerConfig) -> str:
    """Where the results are, as the user named it (pvc://claim/path, s3://..., or a local path)."""
    source = config.spec.output.source
    if source is not None and source.uri:
        return source.uri
    if source is not None and source.pvc is not None:
        return f"pvc://{source.pvc.claim_name}/{source.pvc.path.strip('/')}".rstrip("/")
    return Path(config.paths.output).resolve().as_uri()


def note_checkpoint(config: TrainerConfig, record: RunRecord) -> None:
    """The last checkpoint on disk, for the summary: where the next attempt resumes."""
    from finetune_trainer.outputs import checkpoint_step, latest_checkpoint
    from finetune_trainer.storage.run import RunStorage

    storage = record.storage or RunStorage(config)
    try:
        latest = latest_checkpoint(config.paths.output, storage.key)
    except OSError:
        return
    if latest is not None:
        base = output_uri(config)
        record.checkpoint = {"step": checkpoint_step(latest), "uri": storage.checkpoint_uri(latest, base)}


def write_summary(path: str, code: ExitCode, message: str, record: RunRecord) -> None:
    """The exit summary (at most 4 KiB) for the operator; a write failure is logged, never raised."""
    text = encode_summary(summary_of(code, message, record))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        log.error("cannot write the termination summary to %s: %s", path, exc)
    log.info("summary: %s", text)


def summary_of(code: ExitCode, message: str, record: RunRecord) -> Summary:
    """The typed exit summary of a run (finetune_api.summary). A figure that does not fit the contract's
    models is left out and named in the log, never a reason to lose the summary."""
    data = _finite_only(
        {
            "phase": "Succeeded" if code == ExitCode.SUCCEEDED else "Failed",
            "reason": meaning_of(code).reason,
            "message": message,
            "metrics": record.metrics or None,
            "evaluation": record.evaluation or None,
            "dataset": record.dataset or None,
            "output": {"uri": record.output_uri} if record.output_uri else None,
            "checkpoint": record.checkpoint,
            "plan": record.plan,
        }
    )
    summary, dropped = validate_dropping(Summary, data)
    dropped += unknown_fields(Summary, {k: v for k, v in data.items() if k != "plan"})
    if dropped:
        log.warning("left out of the summary (not in the contract's models): %s", ", ".join(dropped))
    return summary


def _finite_only(value: Any) -> Any:
    """JSON has no NaN: a non-finite number becomes null (the message says what happened)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_only(v) for v in value]
    return value
