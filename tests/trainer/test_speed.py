"""The speed options: typed spec fields with errors naming the field, resolved against the machine
(pure: the machine is an ``Available``), and wired into the trainer's arguments and model load."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from finetune_api.training import TrainingSpec
from finetune_trainer.speed import Available, resolve

GPU = Available(cuda=True, flash_attention_2=True, flash_attention_3=False, liger=True, bitsandbytes=True)
BARE_GPU = Available(cuda=True)
CPU = Available()


def spec(method: str = "lora", objective: str = "sft", **hp: Any) -> TrainingSpec:
    return TrainingSpec.model_validate(
        {
            "method": method,
            "objective": objective,
            "model": {"name": "m"},
            "dataset": {"source": {"uri": "file:///d.jsonl"}},
            "hyperparameters": hp,
        }
    )


def test_defaults_on_a_cpu() -> None:
    r = resolve(spec(), CPU)
    assert r.attention is None  # the model's default: SDPA where the architecture has it
    assert (r.padding_free, r.group_by_length, r.liger, r.logging_steps) == (False, True, False, 10)
    assert r.optimizer == "adamw_torch_fused" and r.fallbacks == ()


def test_defaults_on_a_gpu_with_the_kernels_installed() -> None:
    r = resolve(spec(), GPU)
    assert r.attention == "flash_attention_2"
    assert r.padding_free is True  # FlashAttention's variable-length kernel: padding-free costs nothing
    assert r.liger is False  # an option, off unless asked for
    assert r.fallbacks == ()


@pytest.mark.parametrize(
    ("method", "on_gpu", "on_cpu"),
    [("full", True, False), ("qlora", True, False), ("lora", False, False)],
    ids=["full", "qlora", "lora"],
)
def test_gradient_checkpointing_default_is_on_only_where_accelerator_memory_is_the_limit(
    method: str, on_gpu: bool, on_cpu: bool
) -> None:
    """Unset: on for full and qlora on a CUDA device; off on a CPU, where it only costs compute
    (bench/trainer_throughput.py measured it); an explicit value wins everywhere."""
    assert resolve(spec(method), GPU).gradient_checkpointing is on_gpu
    assert resolve(spec(method), BARE_GPU).gradient_checkpointing is on_gpu
    assert resolve(spec(method), CPU).gradient_checkpointing is on_cpu
    for machine in (GPU, CPU):
        for explicit in (True, False):
            asked = spec(method, gradientCheckpointing=explicit)
            assert resolve(asked, machine).gradient_checkpointing is explicit


def test_the_cpu_memory_plan_assumes_what_the_trainer_does_on_a_cpu() -> None:
    """The plan made at run time on a CPU (device "cpu") counts activations without checkpointing,
    as the trainer runs them there; on a GPU it counts them with checkpointing."""
    from finetune_api.planning.architecture import from_config
    from finetune_api.planning.memory import estimate

    arch = from_config(
        {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
         "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32000}
    )  # fmt: skip
    full = spec("full", maxSequenceLength=1024)
    assert estimate(full, arch, "cpu").activations > 2 * estimate(full, arch, "gpu").activations
    on = spec("full", maxSequenceLength=1024, gradientCheckpointing=True)
    assert estimate(on, arch, "cpu").activations == estimate(on, arch, "gpu").activations


def test_unavailable_kernels_fall_back_with_a_line_naming_the_field() -> None:
    asked = spec(attentionImplementation="flash_attention_2", ligerKernels=True, optimizer="paged_adamw_8bit")
    r = resolve(asked, CPU)
    assert (r.attention, r.liger, r.optimizer) == (None, False, "adamw_torch_fused")
    assert r.fallbacks == (
        "hyperparameters.attentionImplementation flash_attention_2: no GPU; using sdpa",
        "hyperparameters.optimizer paged_adamw_8bit: no GPU; using adamw_torch_fused",
        "hyperparameters.ligerKernels: no GPU; using the model's own layers",
    )
    on_bare_gpu = resolve(asked, BARE_GPU).fallbacks
    assert (
        "flash-attn is not installed" in on_bare_gpu[0] and "liger-kernel is not installed" in on_bare_gpu[2]
    )
    r = resolve(asked, GPU)
    assert (r.attention, r.liger, r.optimizer, r.fallbacks) == (
        "flash_attention_2",
        True,
        "paged_adamw_8bit",
        (),
    )


def test_packing_is_always_padding_free_and_grouping_is_for_unpacked_batches() -> None:
    r = resolve(spec(packing=True), CPU)
    assert r.padding_free is True and r.group_by_length is False
    r = resolve(spec(packing=True, paddingFree=False), CPU)
    assert r.padding_free is True and "packed batches are always padding-free" in r.fallbacks[0]
    assert resolve(spec(paddingFree=True), CPU).padding_free is True  # SDPA: a block-diagonal mask
    dpo = resolve(spec(objective="dpo", paddingFree=True), GPU)
    assert dpo.padding_free is False and "only causal-lm SFT" in dpo.fallbacks[0]


@pytest.mark.parametrize(
    ("hp", "field"),
    [
        ({"attentionImplementation": "flash"}, "hyperparameters.attentionImplementation"),
        ({"optimizer": "adam"}, "hyperparameters.optimizer"),
        ({"loggingSteps": 0}, "hyperparameters.loggingSteps"),
        ({"paddingFree": "yes please"}, "hyperparameters.paddingFree"),
        ({"ligerKernels": "sometimes"}, "hyperparameters.ligerKernels"),
        ({"groupByLength": 3}, "hyperparameters.groupByLength"),
    ],
)
def test_bad_values_are_refused_naming_the_field(hp: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**hp)
    located = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert field in located, located


def test_training_arguments_carry_the_resolved_options(tmp_path: Any) -> None:
    from types import SimpleNamespace

    from finetune_trainer.callbacks import LogBeforeSave
    from finetune_trainer.recipes.base import RecipeContext, training_arguments

    data = SimpleNamespace(train=[{}] * 16, validation=[], test=[], format="prompt-completion")
    asked = spec("full", loggingSteps=5, gradientCheckpointing=True)
    ctx = RecipeContext(spec=asked, data=data, checkpoint_dir=str(tmp_path))  # type: ignore[arg-type]
    args = training_arguments(ctx)
    assert args["logging_steps"] == 5 and args["optim"] == "adamw_torch_fused"
    assert args["activation_checkpointing"] is True and args["use_liger_kernel"] is False
    assert args["activation_checkpointing_kwargs"] == {"use_reentrant": False}
    assert args["train_sampling_strategy"] == "group_by_length"
    assert isinstance(ctx.callbacks[-1], LogBeforeSave)
    dpo = RecipeContext(spec=spec(objective="dpo"), data=data, checkpoint_dir=str(tmp_path))  # type: ignore[arg-type]
    assert training_arguments(dpo)["train_sampling_strategy"] == "random"  # DPO rows have no input_ids


def test_unpacked_padding_free_batches_give_the_padded_loss(make_config: Any, tmp_path: Any) -> None:
    """paddingFree without packing (SDPA here): the batch is one row of sequences laid end to end, no
    attention mask, and the loss on the same records is the padded batch's loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune_trainer.data.pipeline import prepare_data
    from finetune_trainer.modeling import LoadedModel
    from finetune_trainer.recipes import RecipeContext
    from finetune_trainer.recipes.sft import SftRecipe
    from finetune_trainer.runner import load_config

    losses, shapes = {}, {}
    for padding_free in (False, True):
        config = load_config(
            make_config(
                name=f"pf-{padding_free}", method="full", hyperparameters={"paddingFree": padding_free}
            )
        )
        data = prepare_data(config.spec, config.paths)
        ctx = RecipeContext(spec=config.spec, data=data, checkpoint_dir=str(tmp_path / str(padding_free)))
        recipe = SftRecipe()
        args = recipe.arguments(ctx)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(config.paths.model)
        tokenizer = AutoTokenizer.from_pretrained(config.paths.model)
        ctx.loaded = LoadedModel(model=model, tokenizer=tokenizer, quantized=False, dtype=torch.float32)
        trainer = recipe.build(ctx, args)
        rows = [trainer.train_dataset[i] for i in range(8)]
        batch = trainer.data_collator(rows)
        shapes[padding_free] = (tuple(batch["input_ids"].shape), "attention_mask" in batch)
        model.eval()
        with torch.no_grad():
            losses[padding_free] = float(
                model(
                    **{
                        k: v
                        for k, v in batch.items()
                        if k in ("input_ids", "attention_mask", "position_ids", "labels")
                    }
                ).loss
            )
    assert shapes[True][0][0] == 1 and shapes[True][1] is False, shapes  # one row, no mask
    assert shapes[False][0][0] == 8 and shapes[False][1] is True, shapes
    assert losses[True] == pytest.approx(losses[False], rel=1e-4), losses


def test_default_logging_interval_logs_every_save_step(make_config: Any) -> None:
    """loggingSteps 10 (the default): the loss is read every 10 steps, and at every checkpoint step too
    (LogBeforeSave), so the NaN guard has seen a step's loss before its checkpoint is written."""
    import json

    from runs import output_of, read_summary

    from finetune_trainer.runner import run_config_file

    path = make_config(name="logging", hyperparameters={"loggingSteps": None, "maxSteps": 12})
    assert run_config_file(path) == 0, read_summary(path)
    history = json.loads((output_of(path) / "training_log.json").read_text())
    assert [e["step"] for e in history if "loss" in e] == [4, 8, 10, 12]  # everySteps 4, loggingSteps 10
