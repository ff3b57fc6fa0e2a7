"""The DeepSpeed config for a full fine-tuning run, generated from the FineTuneJob spec.

The dict goes to ``transformers.TrainingArguments(deepspeed=...)``. Values that only exist at run time
(the global batch, which depends on the world size; bucket sizes, which depend on the model's hidden
size; the precision, which depends on the device) are left as ``"auto"`` so that the HF integration
fills them in from the same ``TrainingArguments`` the trainer uses. Values the spec does decide
(micro-batch, accumulation, clipping) are written out: HF then checks them against its arguments and
refuses a mismatch, so the two can never silently disagree.

No optimizer or scheduler section unless optimizer offload needs one: the HF Trainer then builds its own
AdamW and the spec's schedule (cosine, linear, ...), the same as for LoRA runs. Pure: no torch import.
"""

from __future__ import annotations

from typing import Any, Literal

from finetune_api.training import DeepSpeedSpec, TrainingSpec

Precision = Literal["auto", "bf16", "fp16", "fp32"]

# Large enough that DeepSpeed's own per-step log lines never appear; the trainer logs progress itself.
_STEPS_PER_PRINT = 1_000_000_000


def _precision_sections(precision: Precision) -> dict[str, Any]:
    """bf16/fp16 sections: "auto" lets HF copy ``TrainingArguments.bf16/fp16``; otherwise forced.

    The caller knows the device (bf16 needs Ampere or newer; CPU runs stay fp32) and either passes the
    matching flags to ``TrainingArguments`` (keep "auto") or names the precision here.
    """
    if precision == "auto":
        return {"bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}
    fp16: dict[str, Any] = {"enabled": precision == "fp16"}
    if precision == "fp16":
        # Dynamic loss scaling; fp16 without it underflows small gradients.
        fp16.update({"loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2})
    return {"bf16": {"enabled": precision == "bf16"}, "fp16": fp16}


def _zero_section(ds: DeepSpeedSpec) -> dict[str, Any]:
    """The ``zero_optimization`` block for the requested stage and offload."""
    if ds.offload_optimizer and ds.zero_stage == 0:
        raise ValueError("deepspeed.offloadOptimizer needs zeroStage 1, 2 or 3")
    if ds.offload_parameters and ds.zero_stage != 3:
        raise ValueError("deepspeed.offloadParameters needs zeroStage 3")
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage == 0:
        return zero
    zero.update(
        {
            # Gradients reduced into one flat buffer: less fragmentation, and what every guide uses.
            "contiguous_gradients": True,
            # Overlapping the reduction with the backward pass needs a second stream: a gain on GPUs,
            # harmless on the CPU accelerator (its streams are no-ops).
            "overlap_comm": True,
            "reduce_bucket_size": "auto",
        }
    )
    if ds.zero_stage >= 2:
        zero["allgather_partitions"] = True
        zero["reduce_scatter"] = True
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.zero_stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                # Without this, save_model() under ZeRO-3 writes each rank's empty shards; with it rank 0
                # gathers the full weights, so the output is a normal checkpoint `from_pretrained` loads.
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
        if ds.offload_parameters:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return zero


def deepspeed_config(spec: TrainingSpec, precision: Precision = "auto") -> dict[str, Any]:
    """The DeepSpeed config dict for ``TrainingArguments(deepspeed=...)``.

    Raises ValueError when the spec asks for no DeepSpeed or for an offload its stage cannot do (the CRD's
    CEL rules refuse those at the API server; this keeps a hand-written config from getting further).
    """
    ds = spec.distributed_or_default().deepspeed
    if ds is None:
        raise ValueError("spec.distributed.deepspeed is not set: this run does not use DeepSpeed")
    hp = spec.hyperparameters
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        # micro x accumulation x world size: the world size is only known inside the launched processes.
        "train_batch_size": "auto",
        "gradient_clipping": hp.max_grad_norm,
        "zero_optimization": _zero_section(ds),
        # HF's AdamW is a ZeRO-tested optimizer already; this keeps a different HF `optim` choice
        # (e.g. adamw_torch_fused, adafactor) from being refused by DeepSpeed.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": _STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
        **_precision_sections(precision),
    }
    if ds.offload_optimizer:
        # With the optimizer state on the CPU, DeepSpeed refuses a plain torch optimizer (too slow) unless
        # told otherwise; its own AdamW becomes the vectorised DeepSpeedCPUAdam. HF fills the "auto"
        # values from TrainingArguments and still supplies the spec's scheduler.
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
        }
    return config


def cpu_adam_problem(path: str | None = None) -> str | None:
    """Why DeepSpeed's CPU Adam (offloadOptimizer) cannot run in this image, or None when it can.

    The trainer image prebuilds the op (``DS_BUILD_CPU_ADAM=1`` in its build stage). Without it,
    DeepSpeed compiles the op at the first optimizer step, which needs a C++ compiler and ninja; an
    image without them would fail there, minutes into the run, with a compiler error. ``path`` is the
    search path for those tools (default: $PATH).
    """
    import shutil

    from deepspeed.git_version_info import installed_ops

    if installed_ops.get("cpu_adam"):
        return None
    missing = [tool for tool in ("c++", "ninja") if shutil.which(tool, path=path) is None]
    if not missing:
        return None  # compiled at first use (a minute or two, once per pod)
    return (
        "distributed.deepspeed.offloadOptimizer needs DeepSpeed's CPU Adam, which this trainer image has "
        f"not prebuilt and cannot compile (no {' or '.join(missing)}); use the trainer image built with "
        "DS_BUILD_CPU_ADAM=1 (the default), or set offloadOptimizer: false"
    )
