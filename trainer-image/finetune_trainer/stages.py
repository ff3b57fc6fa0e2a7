"""The stages of one run after its config: launch → fetch → data → model → setup → (evaluate-base) →
train → evaluate → save (merge, upload).

Each stage names itself in ``RunRecord.stage`` before it starts, so a failure is reported with the
stage it happened in; the runner maps it to an exit code (``failures.classify``).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from finetune_api.exitcodes import ExitCode
from finetune_api.spec import Paths, TrainerConfig
from finetune_api.training import TrainingSpec
from finetune_trainer import base_model, evaluation, licence, modeling, outputs, plan_at_run, review
from finetune_trainer.callbacks import (
    FiniteLossGuard,
    GracefulStop,
    LossNotFinite,
    MetricsCallback,
    ProgressLog,
    Terminated,
)
from finetune_trainer.data.pipeline import PreparedData, prepare_data
from finetune_trainer.data.report import record_token_stats
from finetune_trainer.distributed import (
    WorldInfo,
    broadcast_from_rank0,
    init_distributed,
    training_arguments_overrides,
)
from finetune_trainer.failures import Failure, classify
from finetune_trainer.metrics_server import TrainerMetrics
from finetune_trainer.recipes import RecipeContext, recipe_for
from finetune_trainer.run_record import RunRecord, dataset_summary, output_uri, run_metrics
from finetune_trainer.storage.run import RunStorage

log = logging.getLogger(__name__)


def train_and_evaluate(
    config: TrainerConfig, record: RunRecord, metrics: TrainerMetrics, stop: GracefulStop
) -> str | None:
    """Every stage after the config, in order; ``record.stage`` names the one running (for the exit
    code of a failure). Returns a note for the summary's message, or None."""
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
    main = world.is_main

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
    tokenizer = modeling.load_tokenizer(spec, paths.model)
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
    # Through the module: tests and bench/minilm_classification.py wrap modeling.load_model.
    ctx.loaded = modeling.load_model(spec, paths.model, tokenizer, data.labels)
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


def _prepare_data_once(spec: TrainingSpec, paths: Paths, world: WorldInfo) -> PreparedData:
    """The data stage on rank 0 only (MinHash over a large dataset is minutes of CPU), handed to the
    other ranks; a failure there fails every rank the same way, so they all exit with its code."""

    def failure_of(exc: BaseException) -> Failure:
        code, message = classify(exc, "data")
        return Failure(code, message)

    def prepare() -> PreparedData:
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


def _add_token_stats(data: PreparedData, tokenizer: Any, max_len: int) -> None:
    try:
        records = data.train + data.validation + data.test
        data.report["tokens"] = record_token_stats(records, data.format, tokenizer, max_len)
    except Exception as exc:  # statistics must never fail a run
        log.warning("token statistics skipped: %s", exc)


def _quiet_printer(trainer: Any) -> None:
    """ProgressLog writes one readable line per step; HF's PrinterCallback would add a raw dict."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _cuda() -> bool:
    return bool(torch.cuda.is_available())


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}
