"""What a run leaves in its output location, and where each thing goes.

```
<output>/
  adapter/ or model/     the trained adapter (lora, qlora) or full weights, with the tokenizer
  merged/                optional: the adapter merged into a 16-bit reload of the base
  checkpoints/<run>/     checkpoint-N/ every checkpointing.everySteps; the latest resumes a restart of the
                         same run (<run> = run-<number>-<spec hash>, so a new run never resumes it)
  tensorboard/           TensorBoard event files
  data_report.json       counts, cleaning, splits, leakage, token statistics
  evaluation.json        test metrics of the tuned and the base model, and the delta
  training_log.json      every logged step and evaluation
  README.md              model card with provenance: config, dataset hashes, library versions, seed
```

The merge never goes into the 4-bit base QLoRA trained on: rounding the merged weights back to
4 bits would throw away most of what the adapter learned.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from finetune_api.spec import TrainerConfig
from finetune_api.training import TrainingSpec

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "deepspeed")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(output: str | Path) -> Path:
    return Path(output) / CHECKPOINTS


def _checkpoints_in(root: Path) -> list[tuple[int, Path]]:
    found: list[tuple[int, Path]] = []
    if root.is_dir():
        for entry in root.iterdir():
            match = _CHECKPOINT.match(entry.name)
            if match and entry.is_dir():
                found.append((int(match.group(1)), entry))
    return found


def model_dir(output: str | Path, spec: TrainingSpec) -> Path:
    return Path(output) / ("model" if spec.method == "full" else "adapter")


def latest_checkpoint(output: str | Path, run_key: str | None = None) -> Path | None:
    """The newest checkpoint that was written completely (its trainer_state.json, written last, parses).

    A pod killed in the middle of a save leaves a partial directory; resuming from it would fail, so
    it is skipped in favour of the one before. With ``run_key`` only that run's checkpoints count;
    without it, any run's (and the flat layout of older versions).
    """
    root = checkpoint_dir(output)
    if run_key is not None:
        found = _checkpoints_in(root / run_key)
    else:
        found = _checkpoints_in(root)
        if root.is_dir():
            for run in root.iterdir():
                if run.is_dir() and not _CHECKPOINT.match(run.name):
                    found += _checkpoints_in(run)
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            log.warning("skipping incomplete checkpoint %s", path)
            continue
        return path
    return None


def checkpoint_step(path: Path | None) -> int | None:
    if path is None:
        return None
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else None


def save_model(trainer: Any, tokenizer: Any, output: str | Path, spec: TrainingSpec) -> Path:
    """Adapter or full weights plus tokenizer; under DeepSpeed every rank takes part in the save."""
    target = model_dir(output, spec)
    trainer.save_model(str(target))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(target))
    return target


def save_merged(
    spec: TrainingSpec,
    base_path: str,
    adapter_path: Path,
    tokenizer: Any,
    output: str | Path,
    labels: list[str] | None,
) -> Path:
    """Merge the adapter into a fresh 16-bit copy of the base, never into a quantized one, and check
    the result: the merged model, and the same model loaded back from disk, give the adapter model's
    logits on a sample (raises MergeCheckFailed otherwise, and nothing is left in ``merged/``)."""
    import shutil

    from peft import PeftModel

    from finetune_trainer.modeling import half_dtype, load_base

    base = load_base(spec, base_path, labels, dtype=half_dtype(), device_map={"": "cpu"})
    adapted = PeftModel.from_pretrained(base, str(adapter_path))
    sample = tokenizer(MERGE_CHECK_TEXT, return_tensors="pt")
    expected = _logits(adapted, sample)
    merged = adapted.merge_and_unload()
    target = Path(output) / "merged"
    try:
        _same_logits(expected, _logits(merged, sample), "after merging")
        merged.save_pretrained(str(target))
        tokenizer.save_pretrained(str(target))
        reloaded = load_base(spec, str(target), labels, dtype=half_dtype(), device_map={"": "cpu"})
        _same_logits(expected, _logits(reloaded, sample), "loaded back from disk")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


MERGE_CHECK_TEXT = "What colour is the sky? It is blue."


class MergeCheckFailed(Exception):
    """The merged model does not compute what the adapter model computes."""


def _logits(model: Any, sample: Any) -> Any:
    import torch

    model.eval()
    with torch.no_grad():
        return model(**sample).logits.float()


def _same_logits(expected: Any, actual: Any, when: str) -> None:
    # 16-bit weights: merging rounds W + BA once; allow that rounding, not a different model.
    scale = float(expected.abs().max()) or 1.0
    worst = float((expected - actual).abs().max())
    if worst > 0.02 * scale:
        raise MergeCheckFailed(
            f"merged model differs {when}: max logit difference {worst:.4g} (scale {scale:.3g})"
        )


def merge_safely(
    spec: TrainingSpec,
    base_path: str,
    adapter_path: Path,
    output: str | Path,
    labels: list[str] | None,
) -> str | None:
    """``save_merged`` in a child process (``python -m finetune_trainer.merge``); None when it worked,
    else why it did not.

    The merge loads the whole 16-bit base after training: on a tight node that is where the kernel's
    out-of-memory killer strikes, and in the trainer's own process it would take the good adapter and
    results down with it (exit 137, a failed run). In a child only the child dies; the run succeeds
    with the adapter, and the summary says that the merged model is missing and why. A child, not a
    fork: forking a process with live tokenizer and OpenMP threads can deadlock.
    """
    import subprocess
    import sys
    import tempfile

    request = {
        "spec": spec.model_dump(mode="json", by_alias=True),
        "base": base_path,
        "adapter": str(adapter_path),
        "output": str(output),
        "labels": labels,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(request, handle)
    try:
        code = subprocess.run(
            [sys.executable, "-m", "finetune_trainer.merge", handle.name], check=False
        ).returncode
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if code == 0:
        return None
    if code in (-9, 137):
        return "the adapter merge ran out of memory (killed); the adapter is saved, merge it on a larger node"
    if code == 3:
        return "the merged model did not reproduce the adapter model's outputs; it was not kept"
    return f"the adapter merge failed (exit {code}); the adapter is saved"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def model_card(
    config: TrainerConfig,
    data_report: dict[str, Any],
    evaluation: dict[str, Any],
    summary_metrics: dict[str, Any],
    licence: str | None = None,
) -> str:
    spec = config.spec
    files = data_report.get("files", [])
    lines = [
        "---",
        "library_name: " + ("peft" if spec.method != "full" else "transformers"),
        f"base_model: {spec.model.name}",
        *([f"license: {licence}"] if licence else []),
        "tags: [finetune-operator, " + f"{spec.task}, {spec.objective}, {spec.method}]",
        "---",
        "",
        f"# {config.job.name} (run {config.job.run})",
        "",
        f"Fine-tuned from `{spec.model.name}`"
        + (f" at revision `{spec.model.revision}`" if spec.model.revision else "")
        + f" with {spec.method} ({spec.objective}, task {spec.task}) by finetune-operator, "
        f"FineTuneJob `{config.job.namespace}/{config.job.name}`.",
        "",
        "## Evaluation (held-out test split)",
        "",
    ]
    tuned, base, change = evaluation.get("test", {}), evaluation.get("base", {}), evaluation.get("delta", {})
    if tuned:
        lines += ["| metric | tuned | base | delta |", "|---|---|---|---|"]
        for key, value in tuned.items():
            b = f"{base[key]:.4f}" if key in base else "-"
            d = f"{change[key]:+.4f}" if key in change else "-"
            lines.append(f"| {key} | {value:.4f} | {b} | {d} |")
    else:
        lines.append("No test split was held out.")
    lines += ["", "## Training", ""]
    for key, value in summary_metrics.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## Data", ""]
    counts = data_report.get("counts", {})
    lines.append(
        f"- records: train {counts.get('train', 0)}, validation {counts.get('validation', 0)}, "
        f"test {counts.get('test', 0)} (format {data_report.get('format')})"
    )
    for entry in files:
        lines.append(
            f"- {entry.get('role')}: `{Path(str(entry.get('path'))).name}` sha256 `{entry.get('sha256')}`"
        )
    lines += ["", "## Provenance", "", f"- seed: {spec.hyperparameters.seed}"]
    for name, version in library_versions().items():
        lines.append(f"- {name} {version}")
    lines += [
        "",
        "Resolved trainer config:",
        "",
        "```json",
        json.dumps(config.model_dump(by_alias=True, exclude_none=True, mode="json"), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
