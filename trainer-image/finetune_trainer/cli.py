"""``ftj``: run or validate a FineTuneJob manifest on this machine, without a cluster.

``ftj run JOB.yaml [--output DIR]`` builds the same trainer config the operator would render, with
file:// and relative paths resolved against the manifest's directory, and runs the same trainer
(CPU or a local GPU). ``ftj validate JOB.yaml`` checks, cleans and splits the data only.
``ftj plan JOB.yaml`` estimates GPU memory, time and cost before any GPU is spent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune_api.exitcodes import ExitCode
from finetune_api.sources import Source
from finetune_api.spec import FineTuneJobSpec, JobRef, TrainerConfig
from finetune_api.summary import Summary, parse_summary


def local_source(source: Source | None, base_dir: Path, field: str) -> str | None:
    """A local path for a file:// URI or plain relative path; s3://, gs://, az://, hf:// as they are
    (the trainer fetches and uploads them as it does in a pod); PVCs and ConfigMaps are cluster-only."""
    from finetune_trainer.validate_cmd import local_file

    return local_file(source, base_dir, field)


def build_config(
    manifest: str | Path, output: str | None = None, metrics_port: int = 0
) -> tuple[TrainerConfig, FineTuneJobSpec]:
    """The trainer config for a manifest run locally; raises ManifestError with printable lines."""
    from finetune_trainer.storage.locations import is_remote
    from finetune_trainer.validate_cmd import load_manifest, resolve_paths

    name, spec = load_manifest(manifest)
    base_dir = Path(manifest).resolve().parent
    out_dir = output or local_source(spec.output.source, base_dir, "spec.output.source")
    if out_dir is not None and is_remote(out_dir):
        out_dir = None  # results are staged locally, then uploaded
    if out_dir is None:
        out_dir = str(Path.cwd() / "ftj-output" / name)
    data_paths = resolve_paths(spec, manifest, out_dir)
    model = spec.model.name
    if spec.model.source is not None:
        model = local_source(spec.model.source, base_dir, "spec.model.source") or model
    elif (base_dir / model).exists():
        model = str(base_dir / model)
    paths = data_paths.model_copy(update={"model": model, "output": str(Path(out_dir).resolve())})
    config = TrainerConfig(
        job=JobRef(name=name, namespace="local"),
        spec=spec.training(),
        paths=paths,
        metrics_port=metrics_port,
        termination_log=str(Path(paths.output) / "termination-log"),
    )
    return config, spec


def run_command(manifest: str, output: str | None = None, metrics_port: int = 0) -> int:
    from finetune_trainer.__main__ import configure_logging
    from finetune_trainer.runner import run
    from finetune_trainer.validate_cmd import ManifestError

    try:
        config, _ = build_config(manifest, output, metrics_port)
    except ManifestError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return int(ExitCode.INVALID_CONFIG)
    configure_logging()
    Path(config.paths.output).mkdir(parents=True, exist_ok=True)
    code = run(config)
    summary = Summary.from_wire(parse_summary(Path(config.termination_log).read_text(encoding="utf-8")))
    print(f"{config.job.name}: {summary.phase} ({summary.reason}): {summary.message}")
    test = summary.evaluation.test if summary.evaluation else {}
    if test:
        print("  test: " + ", ".join(f"{k} {v:.4g}" for k, v in test.items()))
    print(f"  output: {summary.output.uri if summary.output else config.paths.output}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ftj", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train a FineTuneJob manifest on this machine")
    run_parser.add_argument("manifest", help="FineTuneJob YAML")
    run_parser.add_argument(
        "--output", help="output directory (default: spec.output file:// or ./ftj-output/NAME)"
    )
    run_parser.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port"
    )
    validate_parser = commands.add_parser("validate", help="check, clean and split the data; no training")
    validate_parser.add_argument("manifest", help="FineTuneJob YAML")
    validate_parser.add_argument("--json", action="store_true", help="print the data report as JSON")
    from finetune_trainer.validate_cmd import WRITE_SPLITS_HELP

    validate_parser.add_argument("--write-splits", metavar="DIR", help=WRITE_SPLITS_HELP)
    plan_parser = commands.add_parser("plan", help="GPU memory, time and cost of a manifest, before any GPU")
    plan_parser.add_argument("manifest", help="FineTuneJob YAML")
    plan_parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan_parser.add_argument("--gpu", help="GPU product (nvidia.com/gpu.product label value), e.g. NVIDIA-L4")
    plan_parser.add_argument("--price", type=float, help="price of one GPU-hour, for the cost estimate")
    args = parser.parse_args(argv)
    if args.command == "plan":
        from finetune_trainer.plan_cmd import plan_command

        return plan_command(args.manifest, args.json, args.gpu, args.price)
    if args.command == "run":
        return run_command(args.manifest, args.output, args.metrics_port)
    from finetune_trainer.validate_cmd import validate_command

    return validate_command(args.manifest, json_output=args.json, splits_dir=args.write_splits)


if __name__ == "__main__":
    sys.exit(main())
