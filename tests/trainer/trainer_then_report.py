"""A torchrun worker that runs the trainer as a pod's worker does, then reports what the run left behind.

``python -m torch.distributed.run ... trainer_then_report.py CONFIG OUT``: calls the trainer's entry
point (``python -m finetune_trainer``'s ``main``) and writes ``OUT/rank<N>.json`` with the exit code it
returned and whether this rank's process group was still up afterwards. A group left to the interpreter's
teardown can abort the process at exit (SIGABRT, "terminate called without an active exception"), which
turns a finished run into a failed pod. The report's own clean-up destroys a group left up, so a run that
shows the defect still ends with the trainer's code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    config, out = sys.argv[1], Path(sys.argv[2])
    from finetune_trainer.__main__ import main as trainer_main

    code = trainer_main(["--config", config])
    import torch.distributed as dist

    group_up = bool(dist.is_available() and dist.is_initialized())
    out.mkdir(parents=True, exist_ok=True)
    report = {"code": code, "group_up": group_up}
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(report), encoding="utf-8")
    if group_up:
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
