"""``ftj plan JOB.yaml [--json]``: the memory, time and cost plan of a FineTuneJob, offline.

The model's shape comes from its ``config.json`` (a local source, or the local Hub cache), never from
the weights; failing that, from the size in its name. A local dataset file gives the record count
and a token estimate of about four characters per token.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from finetune_api.exitcodes import ExitCode
from finetune_api.planning import DataSize, Plan, architecture, gpus, make_plan
from finetune_api.spec import FineTuneJobSpec

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
CHARS_PER_TOKEN = 4.0


def resolve_architecture(spec: FineTuneJobSpec, base_dir: Path) -> architecture.Architecture | None:
    """The model's shape from the first place that has it: local files, Hub cache, then its name."""
    from finetune_trainer.data.loading import local_path

    candidates: list[Path] = []
    source = spec.model.source
    if source is not None and source.uri and source.uri.startswith("file://"):
        candidates.append(local_path(source.uri, base_dir))
    if source is None:
        candidates.append(base_dir / spec.model.name)
        cached = architecture.hub_cache_config(spec.model.name, spec.model.revision)
        if cached is not None:
            candidates.append(cached)
    for path in candidates:
        config = path / "config.json" if path.is_dir() else path
        if config.name == "config.json" and config.is_file():
            return architecture.load(config)
    return architecture.from_name(spec.model.name)


def local_data_size(spec: FineTuneJobSpec, base_dir: Path) -> DataSize | None:
    """Records and mean tokens of a local JSONL/JSON/CSV dataset (characters / 4), else None."""
    from finetune_trainer.data.loading import local_path

    uri = spec.dataset.source.uri
    if not uri or not uri.startswith("file://"):
        return None
    path = local_path(uri, base_dir)
    if not path.is_file() or path.suffix.lower() == ".parquet":
        return None
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if path.suffix.lower() == ".csv":
        lines = lines[1:]
    elif path.suffix.lower() == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return None
        lines = [json.dumps(r) for r in records] if isinstance(records, list) else []
    if not lines:
        return None
    return DataSize(records=len(lines), mean_tokens=sum(map(len, lines)) / len(lines) / CHARS_PER_TOKEN)


def plan_for(
    spec: FineTuneJobSpec,
    base_dir: Path,
    gpu_product: str | None = None,
    price: float | None = None,
    table: dict[str, gpus.GpuProduct] | None = None,
) -> Plan | None:
    arch = resolve_architecture(spec, base_dir)
    if arch is None:
        return None
    product = gpu_product or (spec.scheduling.node_selector or {}).get(GPU_PRODUCT_LABEL)
    memory = gpus.parse_quantity(spec.resources.gpu_memory) if spec.resources.gpu_memory else None
    return make_plan(
        spec.training(),
        arch,
        gpu=gpus.lookup(product, table),
        gpu_memory=memory,
        data=local_data_size(spec, base_dir),
        price_per_gpu_hour=price,
    )


def format_plan(name: str, plan: Plan, out: TextIO) -> None:
    s = plan.to_status()
    gpu = s.get("gpuProduct") or s["gpuMemorySource"]
    capacity = f" of {s['gpuMemoryGiB']} GiB" if "gpuMemoryGiB" in s else ""
    print(f"{name}: {s['verdict']}: {s['perGpuMemoryGiB']} GiB per GPU{capacity} ({gpu})", file=out)
    print(
        f"  model: {_count(s['parameters'])} parameters from the {s['shapeSource']}, "
        f"{_count(s['trainableParameters'])} trainable",
        file=out,
    )
    terms = ", ".join(f"{k} {v}" for k, v in s["memoryGiB"].items())
    print(f"  memory (GiB): {terms}; dominant: {s['dominantTerm']}", file=out)
    if "suggestion" in s:
        print(f"  suggestion: {s['suggestion']}", file=out)
    if "tokens" in s:
        print(f"  about {s['tokens']:,} tokens in {s.get('steps', '?')} optimizer steps", file=out)
    if "gpuHours" in s:
        cost = (
            f", {s['estimatedCost']} at {s['pricePerGpuHour']} per GPU-hour" if "estimatedCost" in s else ""
        )
        print(f"  about {s['gpuHours']} GPU-hours{cost}", file=out)


def _count(n: int) -> str:
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def plan_command(
    manifest: str, json_output: bool = False, gpu_product: str | None = None, price: float | None = None
) -> int:
    from finetune_trainer.validate_cmd import ManifestError, load_manifest

    try:
        name, spec = load_manifest(manifest)
    except ManifestError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return int(ExitCode.INVALID_CONFIG)
    plan = plan_for(spec, Path(manifest).resolve().parent, gpu_product, price)
    if plan is None:
        print(
            f"{name}: no plan: the shape of {spec.model.name!r} is unknown here (no local config.json, "
            "not in the Hub cache, no size in its name)",
            file=sys.stderr,
        )
        return int(ExitCode.INVALID_CONFIG)
    if json_output:
        json.dump({"name": name, **plan.to_status()}, sys.stdout, indent=2)
        print()
    else:
        format_plan(name, plan, sys.stdout)
    return 0
