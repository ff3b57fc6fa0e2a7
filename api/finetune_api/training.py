"""How the model is trained and evaluated: the part of the spec copied into the trainer's config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from finetune_api.inputs import DatasetSpec, ModelSpec
from finetune_api.sources import Source
from finetune_api.specbase import Model, cel

Task = Literal["causal-lm", "classification"]
Method = Literal["full", "lora", "qlora"]
Objective = Literal["sft", "dpo"]
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]
AttentionImplementation = Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"]
Optimizer = Literal[
    "auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"
]
DType = Literal["bfloat16", "float16", "float32"]

DEFAULT_LEARNING_RATE: dict[str, float] = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}


class Hyperparameters(Model):
    learning_rate: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Peak learning rate; unset means 2e-4 for lora/qlora and 2e-5 for full.",
    )
    epochs: float = Field(default=3.0, gt=0.0, le=1000.0, description="Passes over the training set.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(default=8, ge=1, le=4096, description="Per-device micro-batch size.")
    gradient_accumulation_steps: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Micro-batches per optimizer step (effective batch = batch x this x GPUs).",
    )
    max_sequence_length: int = Field(
        default=512, ge=8, le=131072, description="Tokens per example; longer ones are truncated."
    )
    warmup_ratio: float = Field(
        default=0.03, ge=0.0, lt=1.0, description="Fraction of steps spent warming up."
    )
    scheduler: Scheduler = Field(default="cosine", description="Learning-rate schedule after warm-up.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0.0, description="Gradient clipping norm.")
    packing: bool = Field(
        default=False, description="Pack several short examples into one sequence (causal-lm SFT)."
    )
    gradient_checkpointing: bool | None = Field(
        default=None,
        description="Recompute activations in the backward pass (less memory, about 20-30% more compute); "
        "unset means on for full and qlora on a GPU, off for lora and off on a CPU (where memory is not "
        "the limit).",
    )
    seed: int = Field(default=42, ge=0, description="Seed for weights of new layers, dropout and data order.")
    dpo_beta: float = Field(default=0.1, gt=0.0, description="DPO temperature (objective dpo).")
    attention_implementation: AttentionImplementation = Field(
        default="auto",
        description="Attention kernel; auto means FlashAttention 2 on a GPU where flash-attn is installed, "
        "else PyTorch SDPA. An unavailable kernel falls back to SDPA with a log line.",
    )
    padding_free: bool | None = Field(
        default=None,
        description="Lay a batch's sequences end to end (position ids, no padding; causal-lm SFT); unset "
        "means on with packing or FlashAttention.",
    )
    group_by_length: bool = Field(
        default=True, description="Batch unpacked examples of similar length together (less padding)."
    )
    optimizer: Optimizer = Field(
        default="auto",
        description="auto means fused AdamW; the 8-bit and paged AdamW variants need a GPU (bitsandbytes).",
    )
    liger_kernels: bool = Field(
        default=False,
        description="Liger's fused kernels (RMSNorm, RoPE, SwiGLU, linear + cross-entropy) on a GPU; "
        "without a GPU or liger-kernel the model's own layers run, with a log line.",
    )
    logging_steps: int = Field(
        default=10,
        ge=1,
        le=100000,
        description="Read and log the loss every N optimizer steps (each read is a device sync); every "
        "checkpoint step is logged too.",
    )


class LoraSpec(Model):
    r: int = Field(default=16, ge=1, le=1024, description="Rank of the adapter matrices.")
    alpha: int = Field(default=32, ge=1, le=4096, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] | None = Field(
        default=None, max_length=64, description="Module names to adapt; unset means all linear layers."
    )


class QuantizationSpec(Model):
    bits: Literal[4] = Field(default=4, description="Weight bits of the frozen base model (bitsandbytes).")
    quant_type: Literal["nf4", "fp4"] = Field(default="nf4", description="4-bit data type.")
    double_quant: bool = Field(default=True, description="Quantize the quantization constants too.")
    compute_dtype: DType = Field(default="bfloat16", description="Dtype of the matmuls.")


class DeepSpeedSpec(Model):
    zero_stage: Literal[0, 1, 2, 3] = Field(default=2, description="ZeRO stage.")
    offload_optimizer: bool = Field(default=False, description="Keep optimizer state in CPU memory.")
    offload_parameters: bool = Field(
        default=False, description="Keep parameters in CPU memory (ZeRO-3 only)."
    )


class DistributedSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.deepspeed) || !self.deepspeed.offloadParameters"
                    " || self.deepspeed.zeroStage == 3",
                    "deepspeed.offloadParameters needs zeroStage 3",
                ),
                cel(
                    "!has(self.deepspeed) || !self.deepspeed.offloadOptimizer"
                    " || self.deepspeed.zeroStage >= 1",
                    "deepspeed.offloadOptimizer needs zeroStage 1 or higher",
                ),
            ]
        }
    )

    nodes: int = Field(
        default=1, ge=1, le=256, description="Pods (nodes) in the run; above 1 needs method full."
    )
    gpus_per_node: int = Field(default=1, ge=0, le=16, description="GPUs per pod; 0 runs on CPU.")
    deepspeed: DeepSpeedSpec | None = Field(
        default=None, description="DeepSpeed ZeRO settings (method full only); unset means plain DDP."
    )


class EarlyStoppingSpec(Model):
    enabled: bool = Field(default=True, description="Stop when validation loss stops improving.")
    patience: int = Field(
        default=3, ge=1, le=1000, description="Evaluations without improvement before stopping."
    )
    min_delta: float = Field(default=0.0, ge=0.0, description="Smallest decrease that counts as improvement.")


class QualityGate(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.min) || has(self.max)", "a quality gate needs min or max")
            ]
        }
    )

    metric: str = Field(
        min_length=1,
        max_length=64,
        description="A test metric name, e.g. accuracy, macro_f1, loss, perplexity, rougeL, bleu.",
    )
    min: float | None = Field(default=None, description="The run fails with QualityGateFailed below this.")
    max: float | None = Field(default=None, description="The run fails with QualityGateFailed above this.")


class RegressionSet(Model):
    """A general-ability set measured on the base and the tuned model: the forgetting check."""

    source: Source = Field(description="The file (same record format as the training data).")
    max_regression: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "Fail the run (QualityGateFailed, exit 4) when the tuned model's loss on this set is more than "
            "this fraction above the base model's (0.1 = 10%); unset only reports it."
        ),
    )
    max_samples: int = Field(default=200, ge=1, le=100000, description="Records of the set evaluated.")


class EvaluationSpec(Model):
    eval_steps: int | None = Field(
        default=None, ge=1, description="Validate every N steps; unset means once per epoch."
    )
    compare_base: bool = Field(
        default=True, description="Also evaluate the untuned base model on the test set."
    )
    generation_metrics: bool = Field(
        default=True, description="ROUGE and BLEU on generated completions (causal-lm, prompt-completion)."
    )
    max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Generation length for ROUGE/BLEU.")
    max_test_samples: int | None = Field(default=None, ge=1, description="Cap on test records evaluated.")
    quality_gate: QualityGate | None = Field(
        default=None, description="Fail the run when a test metric misses."
    )
    review_prompts: list[Annotated[str, Field(min_length=1, max_length=4000)]] | None = Field(
        default=None,
        max_length=200,
        description=(
            "Prompts whose base and tuned generations are saved to review_samples.jsonl for a person to read "
            "before deployment (causal-lm). Unset: a small built-in set of prompts a model should refuse; "
            "an empty list: none."
        ),
    )
    review_prompts_source: Source | None = Field(
        default=None,
        description='A JSONL file of review prompts ({"prompt": ...} per line), added to reviewPrompts.',
    )
    regression_set: RegressionSet | None = Field(
        default=None, description="Forgetting check: base vs tuned loss on a general-ability set."
    )


class CheckpointingSpec(Model):
    every_steps: int = Field(default=100, ge=1, description="Save a checkpoint every N optimizer steps.")
    keep: int = Field(default=2, ge=1, le=100, description="Checkpoints kept (the best one is always kept).")


class OutputSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.source) || !has(self.source.configMap)",
                    "output.source must be a pvc or a uri (a ConfigMap cannot hold results)",
                )
            ]
        }
    )

    source: Source | None = Field(
        default=None,
        description="Where results go (pvc or uri); unset means an emptyDir (lost with the pod).",
    )
    merge_adapter: bool = Field(
        default=False, description="Also save the adapter merged into a 16-bit copy of the base model."
    )


class TrainingSpec(Model):
    """What the trainer needs to know: the part of the spec copied into its config."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.quantization) || self.method == 'qlora'",
                    "quantization is only valid with method qlora",
                    ".quantization",
                ),
                cel(
                    "!has(self.distributed) || !has(self.distributed.deepspeed) || self.method == 'full'",
                    "distributed.deepspeed is only valid with method full",
                    ".distributed",
                ),
                cel(
                    "!has(self.distributed) || self.distributed.nodes == 1 || self.method == 'full'",
                    "distributed.nodes > 1 needs method full (lora and qlora run on one node)",
                    ".distributed",
                ),
                cel(
                    "self.method != 'qlora' || !has(self.distributed) || self.distributed.gpusPerNode <= 1",
                    "qlora runs on a single GPU: distributed.gpusPerNode must be 0 or 1",
                    ".distributed",
                ),
                cel(
                    "self.objective != 'dpo' || self.task == 'causal-lm'",
                    "objective dpo needs task causal-lm",
                    ".objective",
                ),
                cel(
                    "!has(self.lora) || self.method != 'full'",
                    "lora settings are not used with method full",
                    ".lora",
                ),
            ]
        }
    )

    task: Task = Field(default="causal-lm", description="causal-lm (generation) or classification.")
    method: Method = Field(default="lora", description="full, lora or qlora (4-bit base + LoRA).")
    objective: Objective = Field(default="sft", description="sft (supervised) or dpo (preference pairs).")
    model: ModelSpec = Field(description="The base model.")
    dataset: DatasetSpec = Field(description="Training data, its format, cleaning and splits.")
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Optimisation settings."
    )
    lora: LoraSpec | None = Field(
        default=None, description="Adapter settings (lora, qlora); defaults apply when unset."
    )
    quantization: QuantizationSpec | None = Field(
        default=None, description="4-bit settings (qlora only); defaults apply when unset."
    )
    distributed: DistributedSpec | None = Field(default=None, description="Nodes, GPUs and DeepSpeed.")
    early_stopping: EarlyStoppingSpec = Field(
        default_factory=EarlyStoppingSpec, description="Early stopping."
    )
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Test-set evaluation.")
    checkpointing: CheckpointingSpec = Field(default_factory=CheckpointingSpec, description="Checkpoints.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Where the results go.")

    def learning_rate(self) -> float:
        return self.hyperparameters.learning_rate or DEFAULT_LEARNING_RATE[self.method]

    def gradient_checkpointing(self, device: Literal["gpu", "cpu"] = "gpu") -> bool:
        """hyperparameters.gradientCheckpointing, or its default: on where accelerator memory is the
        limit (full and qlora on a GPU); off on a CPU, where it only costs compute (measured in
        bench/trainer_throughput.py, docs/benchmarks.md)."""
        explicit = self.hyperparameters.gradient_checkpointing
        if explicit is not None:
            return explicit
        return device == "gpu" and self.method in ("full", "qlora")

    def lora_or_default(self) -> LoraSpec:
        return self.lora or LoraSpec()

    def quantization_or_default(self) -> QuantizationSpec:
        return self.quantization or QuantizationSpec()

    def distributed_or_default(self) -> DistributedSpec:
        return self.distributed or DistributedSpec()
