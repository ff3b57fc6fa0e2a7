"""The FineTuneJob spec as typed models: the one definition the CRD schema is generated from.

The operator validates a spec with these models and renders them into the trainer's config; the
trainer reads the same models back. ``finetune_operator.crdgen`` turns them into the CRD's OpenAPI
schema (descriptions, defaults, enums, ranges, CEL rules), so the API, the operator and the trainer
cannot drift apart. Import-light on purpose: pydantic only, never torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from finetune_trainer.affinity import Affinity
from finetune_trainer.specbase import (
    CONFIG_KEY,
    CONFIG_KEY_RULE,
    DNS_SUBDOMAIN,
    EXTENDED_RESOURCE,
    LABEL_VALUE,
    QUALIFIED_NAME,
    Model,
    cel,
)

Task = Literal["causal-lm", "classification"]
Method = Literal["full", "lora", "qlora"]
Objective = Literal["sft", "dpo"]
DataFormat = Literal["auto", "prompt-completion", "messages", "preference", "text-label", "text"]
FileFormat = Literal["auto", "jsonl", "json", "csv", "parquet"]
PiiKind = Literal["email", "phone", "credit-card", "ip-address", "iban", "api-key", "ssn"]
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]
LeakagePolicy = Literal["fail", "warn", "off"]
DType = Literal["bfloat16", "float16", "float32"]

DEFAULT_LEARNING_RATE: dict[str, float] = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}


class SecretKeyRef(Model):
    """A key in a Secret in the job's namespace; the value never appears in spec or status."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(CONFIG_KEY_RULE, "a Secret key must not be '.' or start with '..'", ".key")
            ]
        }
    )

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the Secret (a DNS subdomain).",
    )
    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY, description="Key inside the Secret.")


class PvcSource(Model):
    claim_name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="PersistentVolumeClaim name."
    )
    path: str = Field(default="", max_length=1024, description="Path inside the volume (file or directory).")
    read_only: bool = Field(default=True, description="Mount the claim read-only.")


class ConfigMapSource(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(CONFIG_KEY_RULE, "a ConfigMap key must not be '.' or start with '..'", ".key")
            ]
        }
    )

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="ConfigMap name.")
    key: str = Field(
        min_length=1, max_length=253, pattern=CONFIG_KEY, description="Key of the ConfigMap holding the file."
    )


class Source(Model):
    """Where files come from or go to. Exactly one of uri, pvc or configMap."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.uri), has(self.pvc), has(self.configMap)].filter(x, x).size() == 1",
                    "exactly one of uri, pvc or configMap must be set",
                )
            ]
        }
    )

    uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^(file|s3|gs|az|hf)://.+",
        description=(
            "A URI: file:// (a path inside the pod or, for `ftj run`, on this machine), s3://bucket/key, "
            "gs://bucket/key, az://container/blob (fetched and uploaded by the trainer, verified) or "
            "hf://org/name[@revision][/path] (a Hub repository; hf://datasets/org/name/file for data)."
        ),
    )
    pvc: PvcSource | None = Field(default=None, description="A path on a PersistentVolumeClaim.")
    config_map: ConfigMapSource | None = Field(
        default=None, description="A small file held in a ConfigMap (datasets up to about 1 MiB)."
    )


class ModelCacheSpec(Model):
    claim_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="PersistentVolumeClaim (ReadWriteMany to share across nodes).",
    )


class ModelSpec(Model):
    name: str = Field(
        min_length=1,
        max_length=512,
        description="Base model: a hub id (org/name) or, with source set, a label for the model files.",
    )
    source: Source | None = Field(
        default=None, description="Where the model files are; unset means download `name` from the hub."
    )
    revision: str | None = Field(
        default=None, max_length=128, description="Hub revision (tag, branch or commit)."
    )
    trust_remote_code: bool = Field(default=False, description="Allow model code from the repository to run.")
    cache: ModelCacheSpec | None = Field(
        default=None,
        description=(
            "A PersistentVolumeClaim that keeps downloaded base weights (and Hub snapshots) across runs "
            "and retries; unset means each pod downloads into its own disk."
        ),
    )
    licence: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$",
        description=(
            "The base model's licence (a Hub licence id such as apache-2.0 or llama3.1); unset means "
            "the one the model card states. Checked against the operator's allowed licences and written "
            "into the output model card."
        ),
    )


class Splits(Model):
    """Validation and test fractions taken from the dataset, or explicit files for them."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.validation + self.test < 1.0",
                    "splits.validation + splits.test must be below 1 so that training data remains",
                )
            ]
        }
    )

    validation: float = Field(default=0.1, ge=0.0, lt=1.0, description="Fraction held out for validation.")
    test: float = Field(default=0.1, ge=0.0, lt=1.0, description="Fraction held out as the final test set.")
    seed: int = Field(default=42, ge=0, description="Seed of the shuffle that makes the split reproducible.")
    validation_source: Source | None = Field(
        default=None, description="An explicit validation file; replaces the validation fraction."
    )
    test_source: Source | None = Field(
        default=None, description="An explicit test file; replaces the test fraction."
    )


class Dedup(Model):
    exact: bool = Field(default=True, description="Drop records whose normalised text repeats.")
    near: bool = Field(default=True, description="Drop near-duplicates found by MinHash.")
    near_threshold: float = Field(
        default=0.85,
        gt=0.0,
        le=1.0,
        description="Estimated Jaccard similarity at which two records are near-duplicates.",
    )


class Pii(Model):
    enabled: bool = Field(default=True, description="Redact personal data before training.")
    kinds: list[PiiKind] = Field(
        default_factory=lambda: ["email", "phone", "credit-card", "ip-address", "iban", "api-key", "ssn"],
        max_length=7,
        description="Kinds of personal data to redact.",
    )


class Cleaning(Model):
    dedup: Dedup = Field(default_factory=Dedup, description="Duplicate removal.")
    strip_markup: bool = Field(
        default=True, description="Strip HTML tags and entities and collapse whitespace."
    )
    pii: Pii = Field(default_factory=Pii, description="Personal-data redaction.")
    min_characters: int = Field(default=1, ge=0, description="Drop records whose text is shorter than this.")


class Columns(Model):
    """Column names when the file's differ from the format's usual ones."""

    prompt: str = Field(default="prompt", description="Prompt column (prompt-completion, preference).")
    completion: str = Field(default="completion", description="Completion column (prompt-completion).")
    messages: str = Field(default="messages", description="Chat messages column (messages).")
    chosen: str = Field(default="chosen", description="Preferred answer column (preference).")
    rejected: str = Field(default="rejected", description="Rejected answer column (preference).")
    text: str = Field(default="text", description="Text column (text-label, text).")
    label: str = Field(default="label", description="Label column (text-label).")


class DatasetSpec(Model):
    source: Source = Field(description="The training data file (JSONL, JSON, CSV or Parquet).")
    format: DataFormat = Field(default="auto", description="Record format; auto detects it from the columns.")
    file_format: FileFormat = Field(default="auto", description="File format; auto uses the file extension.")
    columns: Columns = Field(default_factory=Columns, description="Column names, when they differ.")
    labels: list[str] | None = Field(
        default=None,
        max_length=1000,
        description="Class names for classification, in order; unset: the sorted labels in the data.",
    )
    splits: Splits = Field(default_factory=Splits, description="How validation and test sets are made.")
    cleaning: Cleaning = Field(default_factory=Cleaning, description="Cleaning applied before the split.")
    leakage: LeakagePolicy = Field(
        default="fail",
        description="What to do when test or validation records (near-)duplicate training ones.",
    )
    max_errors_listed: int = Field(
        default=20, ge=1, le=1000, description="How many invalid records are listed by line; all are counted."
    )
    max_invalid_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Fraction of invalid records tolerated (dropped); above it the run fails: InvalidData.",
    )


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
    gradient_checkpointing: bool = Field(default=False, description="Trade compute for memory.")
    seed: int = Field(default=42, ge=0, description="Seed for weights of new layers, dropout and data order.")
    dpo_beta: float = Field(default=0.1, gt=0.0, description="DPO temperature (objective dpo).")


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

    def lora_or_default(self) -> LoraSpec:
        return self.lora or LoraSpec()

    def quantization_or_default(self) -> QuantizationSpec:
        return self.quantization or QuantizationSpec()

    def distributed_or_default(self) -> DistributedSpec:
        return self.distributed or DistributedSpec()


class Toleration(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.operator) || self.operator != 'Exists'"
                    " || !has(self.value) || self.value == ''",
                    "a toleration with operator Exists must not set a value",
                    ".value",
                ),
                cel(
                    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                    "tolerationSeconds needs effect NoExecute",
                    ".tolerationSeconds",
                ),
                cel(
                    "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                    "a toleration without a key needs operator Exists",
                    ".operator",
                ),
            ]
        }
    )

    key: str | None = Field(
        default=None,
        max_length=317,
        pattern=QUALIFIED_NAME,
        description="Taint key the toleration applies to (a label key); unset needs operator Exists.",
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (unset means Equal)."
    )
    value: str | None = Field(
        default=None, max_length=63, pattern=LABEL_VALUE, description="Taint value for operator Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; unset matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated (effect NoExecute only)."
    )


class SchedulingSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.nodeSelector) || self.nodeSelector.all(k, size(k) <= 317"
                    f" && k.matches('{QUALIFIED_NAME}'))",
                    "nodeSelector keys must be label keys: an optional DNS prefix and '/', then a name"
                    " of up to 63 alphanumerics, '-', '_' or '.'",
                    ".nodeSelector",
                ),
            ]
        }
    )

    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_SUBDOMAIN,
        description="Kueue LocalQueue; the Job is created suspended and Kueue admits it.",
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, description="PriorityClass of the pods."
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] | None = Field(
        default=None, max_length=64, description="Node labels the pods require."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=64, description="Tolerations added to the GPU taint toleration."
    )
    affinity: Affinity | None = Field(
        default=None, description="A core/v1 Affinity (node affinity, pod affinity, pod anti-affinity)."
    )


class ResourcesSpec(Model):
    cpu: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?m?$",
        description="CPU request and limit per pod, e.g. 8 or 500m.",
    )
    memory: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description="Memory request and limit per pod, e.g. 64Gi.",
    )
    shared_memory: str = Field(
        default="8Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description="Size of /dev/shm (data-loader workers and NCCL need more than the runtime's 64 MiB).",
    )
    gpu_resource_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=EXTENDED_RESOURCE,
        description="Extended resource name of the GPU; unset means the operator's default (nvidia.com/gpu).",
    )
    ephemeral_storage: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description=(
            "Local disk per pod for downloads, results and checkpoints (request and limit). Unset: when the "
            "model or data is remote and no model cache is set, the operator requests its default."
        ),
    )
    gpu_memory: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMK]i?)?$",
        description=(
            "Memory of one GPU, e.g. 80Gi, for the memory plan; unset means the table entry for the "
            "nvidia.com/gpu.product node selector, or the operator's default GPU product."
        ),
    )


class SecretsSpec(Model):
    hub_token: SecretKeyRef | None = Field(default=None, description="Model hub token, exposed as HF_TOKEN.")
    storage: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description=(
            "Secret for s3://, gs:// and az:// URIs: its keys become environment variables "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, "
            "AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, ...) and files (a key gcs-key.json is "
            "a GCS service-account key)."
        ),
    )


class AdmissionSpec(Model):
    memory_check: Literal["fail", "warn", "off"] = Field(
        default="warn",
        description=(
            "What a DoesNotFit memory plan does before any Job is created: fail the FineTuneJob "
            "(reason DoesNotFit), warn with an Event, or nothing."
        ),
    )


class FineTuneJobSpec(TrainingSpec):
    """The whole spec of a FineTuneJob: training plus how and where its pods run."""

    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="CPU, memory and GPU per pod."
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="Where and when the pods run."
    )
    image: str | None = Field(
        default=None, max_length=512, description="Trainer image; unset means the operator's default."
    )
    secrets: SecretsSpec = Field(
        default_factory=SecretsSpec, description="References to Secrets (never values)."
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description=(
            "ServiceAccount of the trainer pods, for workload identity (IRSA, GKE or Azure Workload "
            "Identity); its token is mounted only when this is set. Grant it no Kubernetes RBAC."
        ),
    )
    # Optional with no default object, so that adding it changes no stored object's defaulted spec.
    admission: AdmissionSpec | None = Field(
        default=None, description="Checks made before a GPU is spent (the memory plan); unset: warn."
    )
    suspend: bool = Field(default=False, description="Suspend the run; setting it back to false resumes it.")
    backoff_limit: int = Field(default=3, ge=0, le=100, description="Retries after retriable failures.")
    active_deadline_seconds: int | None = Field(default=None, ge=1, description="Wall-clock limit of a run.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the finished Job (not the FineTuneJob) after this long."
    )
    stall_timeout_seconds: int = Field(
        default=900, ge=30, description="Mark the run Stalled when the step has not advanced for this long."
    )
    preflight_timeout_seconds: int | None = Field(
        default=None,
        ge=0,
        le=86400,
        description=(
            "How long a missing Secret, PersistentVolumeClaim or ConfigMap is waited for (phase Pending, "
            "reason WaitingFor...) before the run fails; unset means 600, 0 fails at once."
        ),
    )

    def training(self) -> TrainingSpec:
        return TrainingSpec.model_validate(self.model_dump(include=set(TrainingSpec.model_fields)))


class JobRef(Model):
    name: str = Field(description="FineTuneJob name.")
    namespace: str = Field(description="Namespace.")
    uid: str = Field(default="", description="FineTuneJob uid.")
    run: int = Field(default=1, ge=1, description="Run number.")


class Paths(Model):
    """Resolved local paths inside the pod (or on this machine for `ftj run`)."""

    model: str = Field(description="Base model directory or hub id.")
    dataset: str = Field(description="Training data file.")
    validation: str | None = Field(default=None, description="Explicit validation file.")
    test: str | None = Field(default=None, description="Explicit test file.")
    review_prompts: str | None = Field(default=None, description="Review prompts file.")
    regression: str | None = Field(default=None, description="Regression (forgetting check) file.")
    output: str = Field(description="Output directory.")


class TrainerConfig(Model):
    """The JSON the operator renders into the run's ConfigMap and the trainer reads."""

    version: Literal[1] = 1
    job: JobRef
    spec: TrainingSpec
    paths: Paths
    metrics_port: int = Field(default=9400, ge=0, le=65535, description="Prometheus port; 0 disables it.")
    termination_log: str = Field(default="/dev/termination-log", description="Where the exit summary goes.")
    allowed_licences: list[str] = Field(
        default_factory=list,
        description="Licences the base model may have (the operator's setting); empty allows any.",
    )
