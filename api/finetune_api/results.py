"""What a finished run reports: its final metrics, the test evaluation, the data report, where its results
and its last checkpoint are. The trainer's exit summary carries them and the operator copies them into
the FineTuneJob's status, so one set of models describes both (and ``kubectl explain`` documents them).

Closed models: unknown fields are dropped, never stored. Either spelling of a field is read (the trainer
wrote ``best_step`` before this version; the wire spelling is ``bestStep``), so an operator reads the
summary of an older trainer image and an older operator copies a newer one.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from finetune_api.specbase import Model


class Reported(Model):
    """Base of the reported objects: camelCase on the wire, unknown fields dropped, finite numbers."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TrainingMetrics(Reported):
    """Training figures: the latest ones while the run trains, the final ones once it ended."""

    train_loss: float | None = Field(default=None, description="Latest training loss.")
    eval_loss: float | None = Field(default=None, description="Latest validation loss.")
    best_eval_loss: float | None = Field(default=None, description="Best validation loss so far.")
    best_step: int | None = Field(default=None, description="Step of the best validation loss.")
    first_train_loss: float | None = Field(
        default=None, description="Training loss of the first logged step."
    )
    learning_rate: float | None = Field(default=None, description="Current (last) learning rate.")
    tokens_per_second: float | None = Field(default=None, description="Training throughput.")
    tokens_total: int | None = Field(default=None, description="Input tokens seen in training.")
    gpu_memory_bytes: float | None = Field(default=None, description="Peak accelerator memory of any rank.")
    train_runtime_seconds: float | None = Field(default=None, description="Wall-clock time of training.")
    step: int | None = Field(default=None, description="Optimizer steps done when training ended.")
    total_steps: int | None = Field(default=None, description="Optimizer steps planned.")
    epoch: float | None = Field(default=None, description="Fractional epoch when training ended.")


class ReviewReport(Reported):
    samples: int = Field(description="Review prompts answered by the tuned model.")
    file: str = Field(max_length=256, description="The file (in the output) holding the answers.")
    with_base: bool = Field(default=False, description="The base model's answers are there too.")


class RegressionReport(Reported):
    """The forgetting check: loss on a general-ability set, base vs tuned."""

    records: int = Field(description="Records of the regression set evaluated.")
    tuned_loss: float | None = Field(default=None, description="The tuned model's loss on the set.")
    base_loss: float | None = Field(default=None, description="The base model's loss on the set.")
    relative_change: float | None = Field(
        default=None, description="(tuned - base) / base: positive means the tuned model got worse."
    )
    tuned_accuracy: float | None = Field(
        default=None, description="The tuned model's accuracy on the set (classification)."
    )
    base_accuracy: float | None = Field(
        default=None, description="The base model's accuracy on the set (classification)."
    )


class Evaluation(Reported):
    """The held-out test set, measured on the tuned model (and on the base model to compare)."""

    test: dict[str, float] = Field(
        default_factory=dict,
        max_length=64,
        description="Test metrics of the tuned model: loss, perplexity, accuracy, macro_f1, rougeL, bleu.",
    )
    base: dict[str, float] | None = Field(
        default=None, max_length=64, description="The same metrics of the untuned base model (compareBase)."
    )
    delta: dict[str, float] | None = Field(
        default=None, max_length=64, description="tuned - base, per metric measured on both."
    )
    review: ReviewReport | None = Field(
        default=None, description="Review prompts answered for a person to read."
    )
    regression: RegressionReport | None = Field(default=None, description="The forgetting check.")


class LeakageReport(Reported):
    exact: int = Field(default=0, description="Test or validation records that repeat a training record.")
    near: int = Field(default=0, description="Test or validation records near-duplicating a training record.")


class TokenReport(Reported):
    mean: float | None = Field(default=None, description="Mean tokens per training record.")
    p95: float | None = Field(default=None, description="95th percentile of tokens per training record.")
    max: int | None = Field(default=None, description="Most tokens in one training record.")
    truncated: int | None = Field(default=None, description="Records longer than maxSequenceLength.")


class DatasetReport(Reported):
    """The data report in brief; the full one (``data_report.json``) is in the output."""

    read: int | None = Field(default=None, description="Records read.")
    invalid: int | None = Field(default=None, description="Records refused by validation.")
    train: int | None = Field(default=None, description="Records in the training split.")
    validation: int | None = Field(default=None, description="Records in the validation split.")
    test: int | None = Field(default=None, description="Records in the test split.")
    duplicates_removed: dict[str, int] | None = Field(
        default=None, max_length=16, description="Records dropped as duplicates, by kind (exact, near)."
    )
    redactions: int | None = Field(default=None, description="Personal-data spans redacted.")
    leakage: LeakageReport | None = Field(default=None, description="Overlap of held-out and training data.")
    tokens: TokenReport | None = Field(default=None, description="Token statistics of the training split.")


class OutputRef(Reported):
    uri: str = Field(
        max_length=2048, description="Where the results are (pvc://, s3://, gs://, az://, file://)."
    )


class CheckpointRef(Reported):
    step: int = Field(description="Optimizer step of the checkpoint.")
    uri: str = Field(max_length=2048, description="Where the checkpoint is.")
