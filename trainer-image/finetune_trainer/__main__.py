"""``python -m finetune_trainer --config PATH``: the entry point of the trainer image.

The config path comes from ``--config`` or, as in the pod, the ``FTJ_CONFIG`` environment variable.
The process exits with the contract's exit code after writing the termination summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from finetune_api import wellknown
from finetune_api.exitcodes import ExitCode


def configure_logging() -> None:
    """Plain timestamped lines on stderr, naming the rank when there are several; library chatter
    (progress bars, info) turned down."""
    world = os.environ.get("WORLD_SIZE", "1")
    rank = f"[rank {os.environ.get('RANK', '0')}] " if world.isdigit() and int(world) > 1 else ""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {rank}%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for noisy in ("transformers", "datasets", "peft", "trl", "accelerate", "deepspeed", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_warning()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - the image always has transformers
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune_trainer", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=os.environ.get("FTJ_CONFIG", wellknown.CONFIG_PATH),
        help="trainer config JSON (default: $FTJ_CONFIG or %(default)s)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    from finetune_trainer.runner import run_config_file

    try:
        return run_config_file(args.config)
    except Exception:  # the runner maps errors itself; this is the last line of defence
        logging.getLogger("finetune_trainer").exception("trainer crashed")
        return int(ExitCode.RETRIABLE)


if __name__ == "__main__":
    sys.exit(main())
