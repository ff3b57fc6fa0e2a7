"""The trainer's data stage: load, validate, clean, split and report (see ``pipeline.prepare_data``)."""

from __future__ import annotations

from finetune_trainer.data.pipeline import DataError, PreparedData, prepare_data

__all__ = ["DataError", "PreparedData", "prepare_data"]
