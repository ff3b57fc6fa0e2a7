"""``python -m finetune_trainer.merge REQUEST.json``: the adapter merge, in a process of its own.

Started by ``outputs.merge_safely`` after the results are written. Exit codes: 0 merged and checked,
3 the merged model does not reproduce the adapter model (nothing kept), 137 out of memory, 1 other.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from finetune_trainer.__main__ import configure_logging

    configure_logging()
    args = sys.argv[1:] if argv is None else argv
    request = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    try:
        from transformers import AutoTokenizer

        from finetune_api.training import TrainingSpec
        from finetune_trainer.outputs import MergeCheckFailed, save_merged

        spec = TrainingSpec.model_validate(request["spec"])
        tokenizer = AutoTokenizer.from_pretrained(request["adapter"])
        target = save_merged(
            spec, request["base"], Path(request["adapter"]), tokenizer, request["output"], request["labels"]
        )
        logging.getLogger(__name__).info("merged model checked and saved to %s", target)
        return 0
    except MergeCheckFailed as exc:
        logging.getLogger(__name__).error("%s", exc)
        return 3
    except MemoryError:
        return 137
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch's, on a GPU
            return 137
        logging.getLogger(__name__).exception("adapter merge failed")
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
