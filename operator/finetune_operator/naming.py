"""Deterministic, DNS-safe names for a run's children."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from finetune_operator.constants import MAX_NAME


def truncate(name: str, limit: int = MAX_NAME) -> str:
    """Keep ``name`` within ``limit`` characters; a hash suffix keeps truncated names distinct."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def run_name(job_name: str, run: int) -> str:
    """``<name>-r<run>``; the run suffix always survives truncation.

    The Job name is also a pod label value and the headless Service's name, so it stays within
    63 characters and leaves room for the Job controller's pod suffix only as a generated name.
    """
    suffix = f"-r{run}"
    return truncate(job_name, MAX_NAME - len(suffix)) + suffix


def spec_hash(spec: dict[str, Any]) -> str:
    """Hash of what defines a run: the spec without ``suspend`` (suspending is not a new run)."""
    essence = {k: v for k, v in spec.items() if k != "suspend"}
    canonical = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
