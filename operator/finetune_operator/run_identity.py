"""When a FineTuneJob needs a new run: the user changed the spec or asked for a rerun, nothing else.

The API server fills in defaults when it reads an object, so the stored spec of every FineTuneJob
changes when a CRD upgrade adds a defaulted field or a default changes: a hash of that spec alone
would start a new run of every job, finished ones too, at the next operator start. A user's edit
always moves ``metadata.generation``; defaulting, an operator restart or an operator upgrade never
do. So a new run needs the generation to have moved since the current run started *and* the spec to
differ in what defines a run (its hash leaves out ``suspend`` and every field at its default, so
suspending or a newly defaulted field is not a new run). A rerun needs a token never used before,
so Git restoring an older annotation, or removing it, starts nothing. Pure: no API calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from finetune_api.spec import FineTuneJobSpec

FIRST_RUN = "first run"
RERUN = "rerun requested"
SPEC_CHANGED = "spec changed"


@dataclass(frozen=True)
class CurrentRun:
    """What status records about the current run."""

    spec_hash: str
    rerun_token: str
    generation: int | None  # None: started by an operator version that did not record it


def run_digest(spec: FineTuneJobSpec) -> str:
    """Hash of what defines a run: the spec without ``suspend`` and without fields at their default."""
    essence = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude_none=True)
    essence.pop("suspend", None)
    canonical = json.dumps(essence, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def new_run_reason(
    run: CurrentRun | None,
    used_tokens: Iterable[str],
    generation: int | None,
    observed_generation: int | None,
    token: str,
    digest: Callable[[], str],
    legacy_digest: Callable[[], str],
) -> str | None:
    """Why a new run must start now, or None when the current run is the one the user asked for.

    ``digest`` and ``legacy_digest`` are called only when the generation moved: parsing the spec
    is the costly part, and most calls (resync, resume) find nothing changed.
    """
    if run is None:
        return FIRST_RUN
    if token and token != run.rerun_token and token not in set(used_tokens):
        return RERUN
    started_at = run.generation if run.generation is not None else observed_generation
    if generation is None or started_at is None or generation <= started_at:
        return None
    current = digest() if run.generation is not None else legacy_digest()
    return SPEC_CHANGED if current != run.spec_hash else None


def current_run(status: dict[str, Any]) -> CurrentRun | None:
    """The current run from a status as stored (camelCase), for callers without the typed model."""
    run = status.get("run") or {}
    if not run:
        return None
    generation = run.get("generation")
    return CurrentRun(
        spec_hash=str(run.get("specHash", "")),
        rerun_token=str(run.get("rerunToken", "")),
        generation=int(generation) if isinstance(generation, int) else None,
    )


def used_tokens(status: dict[str, Any]) -> list[str]:
    """Rerun tokens of the runs in the history (the current run's is checked on its own)."""
    return [str(h.get("rerunToken")) for h in status.get("history") or [] if h.get("rerunToken")]
