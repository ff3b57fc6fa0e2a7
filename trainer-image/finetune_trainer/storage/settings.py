"""Storage settings from the environment (the operator sets them on the trainer container)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FTJ_STORAGE_CACHE"
ATTEMPTS_ENV = "FTJ_STORAGE_ATTEMPTS"
BACKOFF_ENV = "FTJ_STORAGE_BACKOFF_SECONDS"


def cache_dir() -> Path:
    """Where downloads go: the model-cache volume when the operator mounted one, else the home cache."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "finetune-trainer"


def retry_budget() -> tuple[int, float]:
    """(attempts, first backoff in seconds) for transient storage errors."""
    try:
        attempts = max(1, int(os.environ.get(ATTEMPTS_ENV, "6")))
    except ValueError:
        attempts = 6
    try:
        delay = max(0.0, float(os.environ.get(BACKOFF_ENV, "2")))
    except ValueError:
        delay = 2.0
    return attempts, delay
