"""The base model and the training data: where they are, their format, cleaning and splits."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import ConfigDict, Field

from finetune_api.sources import ModelCacheSpec, Source
from finetune_api.specbase import Model, cel

DataFormat = Literal["auto", "prompt-completion", "messages", "preference", "text-label", "text"]
FileFormat = Literal["auto", "jsonl", "json", "csv", "parquet"]
PiiKind = Literal["email", "phone", "credit-card", "ip-address", "iban", "api-key", "ssn"]
LeakagePolicy = Literal["fail", "warn", "off"]


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
        default_factory=lambda: list(get_args(PiiKind)),
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
