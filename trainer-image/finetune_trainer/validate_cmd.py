"""``ftj validate JOB.yaml``: check, clean and split a FineTuneJob's data on this machine, no training.

The same ``prepare_data`` runs in the pod, so a manifest that validates here fails there only for
reasons outside the data (model, storage, GPUs). Exit codes follow the trainer's contract.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from finetune_api.exitcodes import ExitCode, meaning_of
from finetune_api.sources import Source
from finetune_api.spec import FineTuneJobSpec, Paths
from finetune_api.validation import field_errors
from finetune_trainer.storage import StorageError, exit_code_of

API_VERSION = "finetuning.io/v1alpha1"
LOCAL_SOURCES = (
    "ftj reads file:// paths and s3://, gs://, az://, hf:// URIs (a PVC or ConfigMap is cluster-only)"
)
WRITE_SPLITS_HELP = (
    "write the cleaned train/validation/test records to DIR as JSONL, in the input's format and column "
    "names, exactly as the trainer will see them"
)
KIND = "FineTuneJob"


class ManifestError(Exception):
    """The manifest cannot be used: its lines are printed as they are."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_manifest(manifest_path: str | Path) -> tuple[str, FineTuneJobSpec]:
    """The job's name and its parsed spec; the first FineTuneJob document of the file is used."""
    path = Path(manifest_path)
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    except OSError as exc:
        raise ManifestError([f"{path}: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ManifestError([f"{path}: not valid YAML: {exc}"]) from exc
    jobs = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == KIND]
    if not jobs:
        raise ManifestError([f"{path}: no document with kind {KIND}"])
    job = jobs[0]
    if job.get("apiVersion") != API_VERSION:
        raise ManifestError([f"{path}: apiVersion must be {API_VERSION}, got {job.get('apiVersion')!r}"])
    name = str((job.get("metadata") or {}).get("name", path.stem))
    spec = job.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError([f"{path}: spec is missing or not an object"])
    try:
        return name, FineTuneJobSpec.model_validate(spec)
    except ValidationError as exc:
        raise ManifestError(
            [f"{path}: invalid spec", *(f"  {line}" for line in field_errors(exc, "spec"))]
        ) from exc


def local_file(source: Source | None, base_dir: Path, field: str) -> str | None:
    """A local path for a file:// source (relative ones from the manifest's directory); remote URIs
    (s3://, gs://, az://, hf://) as they are, for the storage layer to fetch."""
    from finetune_trainer.storage.locations import is_remote

    if source is None:
        return None
    if source.uri is not None and is_remote(source.uri):
        return source.uri
    if source.uri is None or not source.uri.startswith("file://"):
        raise ManifestError([f"{field}: {LOCAL_SOURCES}"])
    from finetune_trainer.data.loading import local_path

    return str(local_path(source.uri, base_dir))


def resolve_paths(spec: FineTuneJobSpec, manifest_path: str | Path, output: str) -> Paths:
    base = Path(manifest_path).resolve().parent
    splits = spec.dataset.splits
    dataset = local_file(spec.dataset.source, base, "spec.dataset.source")
    assert dataset is not None
    return Paths(
        model=spec.model.name,
        dataset=dataset,
        validation=local_file(splits.validation_source, base, "spec.dataset.splits.validationSource"),
        test=local_file(splits.test_source, base, "spec.dataset.splits.testSource"),
        review_prompts=local_file(
            spec.evaluation.review_prompts_source, base, "spec.evaluation.reviewPromptsSource"
        ),
        regression=local_file(
            spec.evaluation.regression_set.source if spec.evaluation.regression_set else None,
            base,
            "spec.evaluation.regressionSet.source",
        ),
        output=output,
    )


def write_splits(prepared: Any, spec: FineTuneJobSpec, directory: str | Path) -> list[Path]:
    """train/validation/test JSONL in ``directory``: the records exactly as the trainer will train and
    evaluate on them (validated, cleaned, split), in the input's format and under its column names."""
    from finetune_trainer.data.formats import denormalise

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    columns = spec.dataset.columns
    written = []
    for split in ("train", "validation", "test"):
        path = target / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for record in getattr(prepared, split):
                row = denormalise(record, prepared.format, columns)
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def validate_command(
    manifest_path: str,
    *,
    json_output: bool = False,
    out: TextIO | None = None,
    splits_dir: str | None = None,
) -> int:
    """Validate a manifest and its data; prints the data report; returns the trainer's exit code.

    With ``splits_dir`` the cleaned splits are written there too (see :func:`write_splits`).
    """
    from finetune_trainer.data.pipeline import DataError, prepare_data

    stream = out or sys.stdout
    try:
        name, spec = load_manifest(manifest_path)
        paths = resolve_paths(spec, manifest_path, tempfile.gettempdir())  # nothing is written
    except ManifestError as exc:
        _emit(
            stream, json_output, {"valid": False, "reason": "InvalidConfig", "errors": exc.lines}, exc.lines
        )
        return int(ExitCode.INVALID_CONFIG)
    try:
        from finetune_trainer.storage.inputs import stage_data

        paths = stage_data(paths)
    except StorageError as exc:
        code = exit_code_of(exc)
        _emit(
            stream,
            json_output,
            {"valid": False, "reason": meaning_of(code).reason, "errors": [str(exc)]},
            [f"{name}: {exc}"],
        )
        return int(code)
    try:
        prepared = prepare_data(spec.training(), paths)
    except DataError as exc:
        lines = [f"{name}: the data is not valid: {exc.summary}", *[f"  {e}" for e in exc.errors]]
        if exc.total > len(exc.errors):
            lines.append(f"  ... and {exc.total - len(exc.errors)} more")
        invalid = {
            "valid": False,
            "reason": "InvalidData",
            "summary": exc.summary,
            "errors": exc.errors,
            "total": exc.total,
            "report": exc.report,
        }
        _emit(stream, json_output, invalid, lines)
        return int(ExitCode.INVALID_DATA)
    payload: dict[str, Any] = {"valid": True, "report": prepared.report}
    lines = [f"{name}: the data is valid", *summarise(prepared.report)]
    if splits_dir:
        try:
            written = write_splits(prepared, spec, splits_dir)
        except OSError as exc:
            problem = f"cannot write the splits: {exc}"
            _emit(stream, json_output, {"valid": True, "error": problem}, [problem])
            return int(ExitCode.INVALID_CONFIG)
        payload["splits"] = {path.stem: str(path) for path in written}
        lines += [f"  wrote {path} ({len(getattr(prepared, path.stem))} records)" for path in written]
    _emit(stream, json_output, payload, lines)
    return int(ExitCode.SUCCEEDED)


def _emit(stream: TextIO, json_output: bool, payload: dict[str, Any], lines: list[str]) -> None:
    if json_output:
        stream.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    else:
        stream.write("\n".join(lines) + "\n")


def summarise(report: dict[str, Any]) -> list[str]:
    """The data report in a few lines for a terminal."""
    counts = report.get("counts", {})
    cleaning = report.get("cleaning", {})
    dups = cleaning.get("duplicates_removed", {})
    redactions = {kind: n for kind, n in cleaning.get("redactions", {}).items() if n}
    lines = [
        f"  format: {report.get('format')}{' (detected)' if report.get('format_detected') else ''}",
        f"  records: {counts.get('read', 0)} read, {counts.get('valid', 0)} valid, "
        f"{counts.get('invalid', 0)} invalid (dropped)",
        f"  duplicates removed: {dups.get('exact', 0)} exact, {dups.get('near', 0)} near",
        "  redactions: "
        + (", ".join(f"{kind} {n}" for kind, n in redactions.items()) if redactions else "none")
        + f" ({cleaning.get('records_redacted', 0)} records)",
        f"  markup stripped: {cleaning.get('markup_stripped', 0)} records; "
        f"too short: {cleaning.get('too_short_removed', 0)}",
        f"  splits ({report.get('splits', {}).get('method', '?')}): train {counts.get('train', 0)}, "
        f"validation {counts.get('validation', 0)}, test {counts.get('test', 0)}",
    ]
    labels = report.get("labels")
    if labels:
        for split, distribution in labels.get("distribution", {}).items():
            shown = ", ".join(f"{label} {n}" for label, n in distribution.items())
            lines.append(f"  labels {split}: {shown}")
    leakage = report.get("leakage", {})
    if leakage.get("checked"):
        lines.append(
            f"  leakage ({leakage.get('policy')}): "
            f"{leakage.get('exact', 0)} exact, {leakage.get('near', 0)} near"
        )
    else:
        lines.append("  leakage: not checked (policy off)")
    tokens = report.get("tokens")
    if tokens:
        lines.append(
            f"  tokens: min {tokens['min']}, mean {tokens['mean']}, p95 {tokens['p95']}, "
            f"max {tokens['max']}, truncated {tokens.get('truncated', 0)}"
        )
    for warning in report.get("warnings", []):
        lines.append(f"  warning: {warning}")
    for entry in report.get("files", []):
        lines.append(f"  {entry['role']}: {entry['path']} sha256 {entry['sha256'][:16]}...")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ftj validate", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("manifest", help="FineTuneJob YAML")
    parser.add_argument("--json", action="store_true", help="print the data report as JSON")
    parser.add_argument("--write-splits", metavar="DIR", help=WRITE_SPLITS_HELP)
    args = parser.parse_args(argv)
    return validate_command(args.manifest, json_output=args.json, splits_dir=args.write_splits)


if __name__ == "__main__":
    raise SystemExit(main())
