"""What the progress loop knows per run between status writes: when it last wrote the run's progress,
and the newest progress it scraped (written or not yet).

Progress is written at most every ``progress_write_interval`` (``progress.due``), so between writes
the newest step lives only here: the next scrape folds into it (heartbeats and the Stalled clock
behave as if every scrape had been written), and the run's final status write folds it in under the
trainer's summary. In memory only: after a restart the first scrape of each run is written.
"""

from __future__ import annotations

import threading
from collections.abc import Set
from dataclasses import dataclass

from finetune_operator.status import ScrapedProgress

# (FineTuneJob uid, Job name): a deleted and re-created FineTuneJob reuses its Job names.
RunKey = tuple[str, str]


@dataclass(frozen=True)
class _Entry:
    latest: ScrapedProgress
    written_at: float | None


class ProgressBook:
    """Thread-safe: the loop's pool threads record, the Job event handlers read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[RunKey, _Entry] = {}

    def latest(self, key: RunKey) -> ScrapedProgress | None:
        with self._lock:
            entry = self._runs.get(key)
        return entry.latest if entry else None

    def written_at(self, key: RunKey) -> float | None:
        with self._lock:
            entry = self._runs.get(key)
        return entry.written_at if entry else None

    def record(self, key: RunKey, latest: ScrapedProgress, written_at: float | None) -> None:
        """The newest progress of a run; ``written_at`` when it was just written (None: not written)."""
        with self._lock:
            entry = self._runs.get(key)
            kept = written_at if written_at is not None else (entry.written_at if entry else None)
            self._runs[key] = _Entry(latest, kept)

    def keep_only(self, keys: Set[RunKey]) -> None:
        """Forget runs that are no longer Running (their final write has folded them in)."""
        with self._lock:
            self._runs = {k: v for k, v in self._runs.items() if k in keys}


def run_key(body: dict[str, object], job_name: str) -> RunKey:
    meta = body.get("metadata")
    uid = meta.get("uid") if isinstance(meta, dict) else None
    return str(uid or ""), job_name
