"""Exit summaries for tests, made by the trainer's own encoder: never written by hand, so a test cannot
pass on a shape the trainer does not emit."""

from __future__ import annotations

from typing import Any

from finetune_api.exitcodes import ExitCode
from finetune_api.summary import encode_summary
from finetune_trainer.run_record import RunRecord, summary_of


def trainer_summary(code: int = 0, message: str = "", **record: Any) -> str:
    """The termination message the trainer writes when it exits with ``code`` after a run that filled
    ``record`` (RunRecord fields: metrics, evaluation, dataset, output_uri, checkpoint)."""
    return encode_summary(summary_of(ExitCode(code), message, RunRecord(**record)))
