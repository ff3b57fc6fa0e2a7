"""One training run, stage by stage, ending in an exit code and a termination summary.

Stages: config → data → model → setup → train → evaluate → save. Whatever goes wrong is mapped to
an ``ExitCode`` of the contract, so the operator can tell a bad spec (fail the Job at once) from a
broken node (retry and resume). The summary is written to ``config.termination_log`` on every path
out, success or not, because it is the only thing the operator reads after the pod is gone.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from finetune_api import wellknown
from finetune_api.exitcodes import ExitCode, meaning_of
from finetune_api.spec import TrainerConfig
from finetune_api.summary import encode_summary
from finetune_api.validation import format_errors

log = logging.getLogger(__name__)


class Failure(Exception):
    """A failure whose exit code is already decided."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[Failure], tuple[ExitCode, str]]:
        return Failure, (self.code, self.message)  # travels between ranks (broadcast_from_rank0)


@dataclass
class RunRecord:
    """What the summary reports; filled in as the stages progress."""

    stage: str = "config"
    metrics: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    output_uri: str | None = None
    checkpoint: dict[str, Any] | None = None
    storage: Any = None  # the run's RunStorage once the stages built it (knows the synced checkpoints)
    licence: str | None = None
    plan: dict[str, Any] | None = None  # the estimate from the loaded config.json, then what was measured


def load_config(path: str | Path) -> TrainerConfig:
    """Parse the trainer config; raises Failure(INVALID_CONFIG) naming the bad fields."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise Failure(ExitCode.INVALID_CONFIG, f"cannot read the trainer config {path}: {exc}") from exc
    try:
        return TrainerConfig.model_validate_json(text)
    except ValidationError as exc:
        problems = format_errors(exc, limit=10)
        raise Failure(ExitCode.INVALID_CONFIG, f"invalid trainer config {path}: {problems}") from exc


def termination_log_of(path: str | Path) -> str:
    """The termination-log path named in a config that may not parse; the default otherwise."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        value = raw.get("terminationLog") or raw.get("termination_log")
        return str(value) if value else wellknown.TERMINATION_LOG
    except (OSError, ValueError, AttributeError):
        return wellknown.TERMINATION_LOG


def run_config_file(path: str | Path) -> int:
    try:
        config = load_config(path)
    except Failure as failure:
        record = RunRecord()
        write_summary(termination_log_of(path), failure.code, failure.message, record)
        log.error("%s", failure.message)
        return int(failure.code)
    return run(config)


def run(config: TrainerConfig) -> int:
    """Train, evaluate and save as the config says; returns the exit code (the summary is written)."""
    from finetune_trainer.callbacks import GracefulStop
    from finetune_trainer.distributed import world_info
    from finetune_trainer.metrics_server import MetricsServer, TrainerMetrics

    world = world_info()
    record = RunRecord()
    metrics = TrainerMetrics()
    server = None
    if world.local_rank == 0 and config.metrics_port:
        try:
            server = MetricsServer(metrics, config.metrics_port)
        except OSError as exc:
            log.warning("metrics endpoint on port %d not started: %s", config.metrics_port, exc)
    stop = GracefulStop()
    stop.install()
    code, message = ExitCode.SUCCEEDED, "training and evaluation finished"
    try:
        message = _stages(config, record, metrics, stop) or message
    except BaseException as exc:  # every way out gets an exit code and a summary
        code, message = classify(exc, record.stage)
    finally:
        stop.uninstall()
        _note_checkpoint(config, record)
    if world.local_rank == 0:
        write_summary(config.termination_log, code, message, record)
    if server is not None:
        server.close()
    log.info("exit %d (%s): %s", int(code), meaning_of(code).reason, message)
    return int(code)


def classify(exc: BaseException, stage: str) -> tuple[ExitCode, str]:
    """The contract's exit code and a message for an exception raised in ``stage``."""
    from finetune_trainer.callbacks import LossNotFinite, Terminated
    from finetune_trainer.data.pipeline import DataError
    from finetune_trainer.evaluation import QualityGateFailed
    from finetune_trainer.modeling import ModelLoadFailed, ModelSourceUnavailable
    from finetune_trainer.storage import StorageError, UploadFailed, exit_code_of

    known: list[tuple[type[BaseException], ExitCode]] = [
        (DataError, ExitCode.INVALID_DATA),
        (ModelLoadFailed, ExitCode.MODEL_LOAD_FAILED),
        (ModelSourceUnavailable, ExitCode.RETRIABLE),
        (LossNotFinite, ExitCode.LOSS_NOT_FINITE),
        (QualityGateFailed, ExitCode.QUALITY_GATE_FAILED),
        (Terminated, ExitCode.RETRIABLE),
        (ValidationError, ExitCode.INVALID_CONFIG),
        (MemoryError, ExitCode.OOM_KILLED),
        (KeyboardInterrupt, ExitCode.RETRIABLE),
    ]
    if isinstance(exc, Failure):
        return exc.code, exc.message
    if isinstance(exc, StorageError):
        return exit_code_of(exc), str(exc)
    if isinstance(exc, UploadFailed):
        return ExitCode.OUTPUT_UPLOAD_FAILED, (
            f"{exc}; the local results and the last checkpoint are kept and the next attempt retries"
        )
    for kind, code in known:
        if isinstance(exc, kind):
            return code, str(exc) or kind.__name__
    if _is_out_of_memory(exc):
        return (
            ExitCode.OOM_KILLED,
            f"out of memory in stage {stage}: {exc}; lower batchSize or maxSequenceLength",
        )
    if stage == "setup" and isinstance(exc, (ValueError, TypeError)):
        # Trainer and TRL configs refuse argument combinations the CRD cannot express as rules.
        return ExitCode.INVALID_CONFIG, f"the trainer refused the configuration: {exc}"
    log.error("unexpected error in stage %s:\n%s", stage, "".join(traceback.format_exception(exc)))
    # Storage, network and collective failures, and anything unforeseen: retried a bounded number of
    # times (backoffLimit), each retry resuming from the last checkpoint.
    return ExitCode.RETRIABLE, f"stage {stage} failed: {type(exc).__name__}: {exc}"


def _is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, torch.OutOfMemoryError)


def _stages(config: TrainerConfig, record: RunRecord, metrics: Any, stop: Any) -> str | None:
    from transformers import EarlyStoppingCallback, set_seed

    from finetune_trainer import base_model, evaluation, licence, outputs, plan_at_run, review
    from finetune_trainer.callbacks import (
        FiniteLossGuard,
        LossNotFinite,
        MetricsCallback,
        ProgressLog,
        Terminated,
    )
    from finetune_trainer.distributed import init_distributed, training_arguments_overrides
    from finetune_trainer.modeling import load_model, load_tokenizer
    from finetune_trainer.recipes import RecipeContext, recipe_for
    from finetune_trainer.storage.run import RunStorage

    spec = config.spec
    output = Path(config.paths.output)
    storage = record.storage = RunStorage(config)
    # A remote output is reported only once every result is uploaded and verified.
    record.output_uri = None if storage.remote else output_uri(config)
    problem = evaluation.check_gate_metric(spec)
    if problem:
        raise Failure(ExitCode.INVALID_CONFIG, problem)

    record.stage = "launch"
    use_deepspeed = spec.method == "full" and spec.distributed_or_default().deepspeed is not None
    world = init_distributed(use_deepspeed=use_deepspeed)
    main = world.rank == 0

    record.stage = "fetch"
    paths = storage.prepare()

    record.stage = "data"
    try:
        data = _prepare_data_once(spec, paths, world)
    except Exception as exc:
        record.dataset = dataset_summary(getattr(exc, "report", None) or {})
        raise
    record.dataset = dataset_summary(data.report)
    log.info("data: %s", {k: v for k, v in data.report.get("counts", {}).items()})

    record.stage = "model"
    tokenizer = load_tokenizer(spec, paths.model)
    record.licence = licence.model_licence(spec.model.licence, paths.model)
    refused = licence.not_allowed(record.licence, config.allowed_licences)
    if refused:
        raise Failure(ExitCode.INVALID_CONFIG, refused)
    if main:
        _add_token_stats(data, tokenizer, spec.hyperparameters.max_sequence_length)
        record.dataset = dataset_summary(data.report)
        outputs.write_json(output / "data_report.json", data.report)

    plan = plan_at_run.plan_from_config(spec, paths.model) if main else None
    states = plan_at_run.StateBytes()
    if plan is not None:
        record.plan = plan_at_run.plan_summary(plan, {}, None)

    record.stage = "setup"
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(output / outputs.TENSORBOARD)
    guard = FiniteLossGuard()
    hp = spec.hyperparameters
    callbacks: list[Any] = [
        guard,
        stop,
        MetricsCallback(metrics, hp.batch_size * hp.gradient_accumulation_steps * world.world_size),
        ProgressLog(metrics),
        *storage.callbacks(),
        *([states] if plan is not None and not use_deepspeed else []),
    ]
    ctx = RecipeContext(
        spec=spec,
        data=data,
        checkpoint_dir=str(storage.checkpoint_root),
        callbacks=callbacks,
        world_size=world.world_size,
        extra_arguments=training_arguments_overrides(_cuda()) if world.is_distributed else {},
    )
    recipe = recipe_for(spec)
    # The arguments exist before the model: under ZeRO-3 they make from_pretrained build the model
    # inside zero.Init, so each rank only ever holds its shard of the weights.
    arguments = recipe.arguments(ctx)

    record.stage = "model"
    # New weights (LoRA matrices, a classification head) come from the seed, so reruns agree.
    set_seed(spec.hyperparameters.seed)
    ctx.loaded = load_model(spec, paths.model, tokenizer, data.labels)
    _log_parameters_held(ctx.loaded.model, world.rank)

    record.stage = "setup"
    trainer = recipe.build(ctx, arguments)
    _quiet_printer(trainer)
    tests = evaluation.test_records(spec, data.test)
    checks = review.AfterTrainingChecks.prepare(spec, paths, data, tokenizer)
    base: dict[str, float] = {}
    measure_base = functools.partial(base_model.measure, trainer, recipe, ctx, tests, checks)
    at_train_begin = None
    if use_deepspeed:  # measured once the engine exists: see base_model
        at_train_begin = base_model.MeasureBaseAtTrainBegin(measure_base)
        trainer.callback_handler.callbacks.insert(0, at_train_begin)  # before MetricsCallback's clock
    else:
        record.stage = "evaluate-base"
        base = base_model.apply(measure_base(), checks)

    if spec.early_stopping.enabled and data.validation:
        # Added after the base evaluation, which reports no eval_loss for it to judge.
        trainer.add_callback(
            EarlyStoppingCallback(spec.early_stopping.patience, spec.early_stopping.min_delta)
        )

    record.stage = "train"
    resume = storage.resume_point(world)
    if resume is not None:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if at_train_begin is not None:
        base = base_model.apply(at_train_begin.result, checks)
    excluded = at_train_begin.seconds if at_train_begin else 0.0
    record.metrics = run_metrics(trainer, result, excluded_seconds=excluded)
    if plan is not None:
        record.plan = plan_at_run.plan_summary(plan, states.measured, record.metrics.get("gpu_memory_bytes"))
    if guard.failure:
        raise LossNotFinite(guard.failure)
    if stop.agreed:
        raise Terminated(f"SIGTERM at step {stop.stopped_at}; checkpoint saved, the next run resumes")

    record.stage = "evaluate"
    trainer.remove_callback(EarlyStoppingCallback)
    tuned = evaluation.evaluate(trainer, recipe, ctx, tests, "test")
    record.evaluation = {"test": tuned}
    if base:
        record.evaluation.update({"base": base, "delta": evaluation.delta(tuned, base)})
    log.info("tuned model on the test split: %s", _rounded(tuned))
    checks.measure(trainer, recipe, ctx, "tuned")
    record.evaluation.update(checks.summary())

    record.stage = "save"
    saved = outputs.save_model(trainer, tokenizer, output, spec)
    merge_problem = None
    if main:
        # The results first: the merge loads the whole base again and is where memory runs out.
        checks.write(output)
        outputs.write_json(output / "evaluation.json", record.evaluation)
        outputs.write_json(output / "training_log.json", trainer.state.log_history)
        card = outputs.model_card(config, data.report, record.evaluation, record.metrics, record.licence)
        (output / "README.md").write_text(card, encoding="utf-8")
        if spec.output.merge_adapter and spec.method != "full":
            record.stage = "merge"
            merge_problem = outputs.merge_safely(spec, paths.model, saved, output, data.labels)
            if merge_problem:
                log.warning("%s", merge_problem)
        record.stage = "upload"
        record.output_uri = storage.publish() or record.output_uri

    gate = evaluation.apply_gate(spec.evaluation.quality_gate, tuned) or review.regression_gate(
        spec.evaluation.regression_set, record.evaluation.get("regression", {})
    )
    if gate:
        raise Failure(ExitCode.QUALITY_GATE_FAILED, gate)
    return f"training and evaluation finished; {merge_problem}" if merge_problem else None


def _prepare_data_once(spec: Any, paths: Any, world: Any) -> Any:
    """The data stage on rank 0 only (MinHash over a large dataset is minutes of CPU), handed to the
    other ranks; a failure there fails every rank the same way, so they all exit with its code."""
    from finetune_trainer.data.pipeline import prepare_data
    from finetune_trainer.distributed import broadcast_from_rank0

    def failure_of(exc: BaseException) -> Failure:
        code, message = classify(exc, "data")
        return Failure(code, message)

    def prepare() -> Any:
        log.info("preparing the data on this rank for all %d", world.world_size)
        return prepare_data(spec, paths)

    return broadcast_from_rank0(prepare, failure_of, world)


def _log_parameters_held(model: Any, rank: int) -> None:
    """How much of the model this rank holds after loading (ZeRO-3: about 1/world of it)."""
    held = total = 0
    for p in model.parameters():
        total += int(getattr(p, "ds_numel", p.numel()))
        shard = getattr(p, "ds_tensor", None)
        held += int(shard.numel()) if shard is not None else int(p.numel())
    log.info("rank %d holds %d of the model's %d parameters after loading", rank, held, total)


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
        out["duplicatesRemoved"] = {k: v for k, v in duplicates.items() if isinstance(v, int)}
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


def _note_checkpoint(config: TrainerConfig, record: RunRecord) -> None:
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
    summary: dict[str, Any] = {
        "phase": "Succeeded" if code == ExitCode.SUCCEEDED else "Failed",
        "reason": meaning_of(code).reason,
        "message": message,
        "metrics": record.metrics,
        "evaluation": record.evaluation,
    }
    if record.dataset:
        summary["dataset"] = record.dataset
    if record.output_uri:
        summary["output"] = {"uri": record.output_uri}
    if record.checkpoint:
        summary["checkpoint"] = record.checkpoint
    if record.plan:
        summary["plan"] = record.plan
    text = encode_summary(_finite_only(summary))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        log.error("cannot write the termination summary to %s: %s", path, exc)
    log.info("summary: %s", text)


def _finite_only(value: Any) -> Any:
    """JSON has no NaN: a non-finite number becomes null (the message says what happened)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_only(v) for v in value]
    return value


def _add_token_stats(data: Any, tokenizer: Any, max_len: int) -> None:
    try:
        from finetune_trainer.data.report import record_token_stats

        records = data.train + data.validation + data.test
        data.report["tokens"] = record_token_stats(records, data.format, tokenizer, max_len)
    except Exception as exc:  # statistics must never fail a run
        log.warning("token statistics skipped: %s", exc)


def _quiet_printer(trainer: Any) -> None:
    """ProgressLog writes one readable line per step; HF's PrinterCallback would add a raw dict."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}
