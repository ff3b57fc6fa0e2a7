"""What every recipe shares: its inputs (``RecipeContext``), its protocol, and the training arguments.

The arguments are one function so that checkpointing, evaluation cadence, early stopping, logging
and precision behave the same for SFT, DPO and classification; a recipe only adds what its trainer
class needs on top.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from finetune_api.training import TrainingSpec
from finetune_trainer import speed
from finetune_trainer.callbacks import LogBeforeSave, SaveEvery
from finetune_trainer.data.pipeline import PreparedData
from finetune_trainer.modeling import LoadedModel, half_dtype

log = logging.getLogger(__name__)


@dataclass
class RecipeContext:
    """What a recipe works from. ``loaded`` is filled in after ``Recipe.arguments``: see there."""

    spec: TrainingSpec
    data: PreparedData
    checkpoint_dir: str
    loaded: LoadedModel | None = None
    callbacks: list[Any] = field(default_factory=list)
    world_size: int = 1
    extra_arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> LoadedModel:
        if self.loaded is None:
            raise RuntimeError("the model is loaded after the training arguments and before build()")
        return self.loaded


class Recipe(Protocol):
    """How one objective trains: its arguments, its records as a dataset, and a configured trainer."""

    name: str

    def arguments(self, ctx: RecipeContext) -> Any:
        """The trainer's ``TrainingArguments`` (or TRL config), created *before* the model is loaded.

        Under DeepSpeed ZeRO-3 their creation registers the DeepSpeed config with transformers, which
        makes ``from_pretrained`` build the model inside ``deepspeed.zero.Init``: each rank then loads
        only its shard instead of the whole model in float32.
        """
        ...

    def dataset(self, ctx: RecipeContext, records: list[dict[str, Any]]) -> Any:
        """The records of one split in the shape this recipe's trainer consumes."""
        ...

    def build(self, ctx: RecipeContext, args: Any) -> Any:
        """A ready ``transformers.Trainer`` (or TRL subclass) for train and validation splits."""
        ...


def steps_per_epoch(ctx: RecipeContext, sequences: int | None = None) -> int:
    """Optimizer steps in one epoch of ``sequences`` training sequences (default: one per record;
    with packing, pass the number of packed sequences: see :func:`follow_packed_length`)."""
    hp = ctx.spec.hyperparameters
    count = len(ctx.data.train) if sequences is None else sequences
    batches = math.ceil(count / (hp.batch_size * ctx.world_size))
    return max(1, math.ceil(batches / hp.gradient_accumulation_steps))


def follow_packed_length(ctx: RecipeContext, trainer: Any) -> None:
    """With packing, an epoch is the packed sequences, far fewer than the records: validate (and save,
    with early stopping) once per epoch of those, when no evalSteps is given. Runs after the trainer
    packed its dataset and before ``train()``, which reads the intervals from the arguments."""
    if ctx.spec.evaluation.eval_steps or not validation_enabled(ctx):
        return
    epoch = steps_per_epoch(ctx, len(trainer.train_dataset))
    args = trainer.args
    if epoch == args.eval_steps:
        return
    if args.save_steps == args.eval_steps:  # early stopping: a checkpoint at every validation
        args.save_steps = epoch
    args.eval_steps = epoch


def validation_enabled(ctx: RecipeContext) -> bool:
    return bool(ctx.data.validation)


def early_stopping_enabled(ctx: RecipeContext) -> bool:
    return ctx.spec.early_stopping.enabled and validation_enabled(ctx)


def training_arguments(ctx: RecipeContext) -> dict[str, Any]:
    """Keyword arguments for ``TrainingArguments`` (and TRL's configs, which extend it).

    Validation runs every ``evaluation.evalSteps`` (default: once per epoch, counted in steps).
    Keeping the best checkpoint needs a checkpoint at every validation, so with early stopping the
    trainer's save interval is the validation interval (validating more often than asked would
    make patience run out within a fraction of an epoch), and ``callbacks.SaveEvery`` adds the
    checkpoints every ``checkpointing.everySteps`` on top, so a preempted run loses no more than asked.
    """
    spec = ctx.spec
    hp = spec.hyperparameters
    save_steps = spec.checkpointing.every_steps
    eval_steps = spec.evaluation.eval_steps or steps_per_epoch(ctx)
    early = early_stopping_enabled(ctx)
    if early:
        save_steps = eval_steps
    use_cuda = torch.cuda.is_available()
    fast = speed.for_spec(spec)
    log.info("speed settings: %s", json.dumps(fast.summary()))
    args: dict[str, Any] = {
        "output_dir": ctx.checkpoint_dir,
        "seed": hp.seed,
        "data_seed": hp.seed,
        "learning_rate": spec.learning_rate(),
        "num_train_epochs": hp.epochs,
        "max_steps": hp.max_steps or -1,
        "per_device_train_batch_size": hp.batch_size,
        "per_device_eval_batch_size": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        # A float below 1 is a ratio of the total steps in transformers 5.
        "warmup_steps": float(hp.warmup_ratio),
        "lr_scheduler_type": hp.scheduler,
        "weight_decay": hp.weight_decay,
        "max_grad_norm": hp.max_grad_norm,
        # transformers 5 renamed gradient_checkpointing; the old name still works but warns.
        "activation_checkpointing": fast.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False} if fast.gradient_checkpointing else None,
        # Each log reads the loss from the device (a sync); NaN steps still show in the logged mean,
        # and LogBeforeSave logs every save step (see callbacks.FiniteLossGuard).
        "logging_steps": fast.logging_steps,
        "logging_nan_inf_filter": False,
        "optim": fast.optimizer,
        "use_liger_kernel": fast.liger,
        # Batches of similar length (less padding); TRL's DPO data has no input_ids to measure.
        "train_sampling_strategy": "group_by_length"
        if fast.group_by_length and spec.objective != "dpo"
        else "random",
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": spec.checkpointing.keep,
        "eval_strategy": "steps" if validation_enabled(ctx) else "no",
        "eval_steps": eval_steps,
        "load_best_model_at_end": early,
        "metric_for_best_model": "eval_loss" if validation_enabled(ctx) else None,
        "greater_is_better": False if validation_enabled(ctx) else None,
        # Early-stopping patience survives a restart with the checkpoint it was counted against.
        "restore_callback_states_from_checkpoint": True,
        "report_to": ["tensorboard"],
        "include_num_input_tokens_seen": "non_padding",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": not use_cuda,
    }
    if use_cuda:
        if spec.method == "qlora":
            compute = spec.quantization_or_default().compute_dtype
            args["bf16"] = compute == "bfloat16"
            args["fp16"] = compute == "float16"
        else:
            args["bf16"] = half_dtype() == torch.bfloat16
            args["fp16"] = not args["bf16"]
    else:
        # TRL's configs default to bf16; autocast on a CPU is slower and uses more memory.
        args["bf16"] = args["fp16"] = False
    ds = spec.distributed_or_default().deepspeed
    if spec.method == "full" and ds is not None:
        from finetune_trainer.deepspeed_config import cpu_adam_problem, deepspeed_config

        problem = cpu_adam_problem() if ds.offload_optimizer else None
        if problem:
            raise ValueError(problem)  # stage setup: InvalidConfig, before any GPU time is spent
        args["deepspeed"] = deepspeed_config(spec)
    args.update(ctx.extra_arguments)
    if early and not any(isinstance(c, SaveEvery) for c in ctx.callbacks):
        ctx.callbacks.append(SaveEvery(spec.checkpointing.every_steps))
    if not any(isinstance(c, LogBeforeSave) for c in ctx.callbacks):
        ctx.callbacks.append(LogBeforeSave())  # after every callback that sets should_save
    return args
