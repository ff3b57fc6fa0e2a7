"""When the Job watch last showed each Job and the operator folded what it showed into the Job's
FineTuneJob: the evidence the periodic resync (resync.py) needs to leave that FineTuneJob out.

Filled by the Job event handler (handlers.py), live or parked. Only a handling that ended without an
error and found the Job to be the current run of its FineTuneJob counts, and a handling that fails
first forgets the Job's earlier sighting: a Job event lost to a refused status write leaves no
evidence, so the next sweep reconciles the FineTuneJob (a Job event carries the whole Job, so a later
one handled without error folds everything the failed one showed). A Job's DELETED event removes its
entry; the resync drops every entry older than its interval before each sweep, so the table holds
only Jobs the watch showed within the last interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetune_operator.constants import KIND

JobKey = tuple[str, str]


@dataclass(frozen=True)
class Sighting:
    at: float  # time.monotonic() when its handling ended
    suspended: bool  # the Job's spec.suspend as shown
    owner: str | None = None  # its FineTuneJob's uid: a re-created object of that name has the Job's name too


class JobSightings:
    """Job (namespace, name) -> its last sighting; handler threads and the event loop share it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[JobKey, Sighting] = {}

    def handle(self, job: dict[str, Any], deleted: bool, fold: Callable[[], bool]) -> None:
        """Run ``fold`` (the Job event's handling: did it fold the current run's Job?) and record the
        sighting when it did; an exception from it propagates, with the earlier sighting forgotten."""
        meta = job.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        with self._lock:
            self._seen.pop(key, None)
        if fold() and not deleted:
            suspended = bool((job.get("spec") or {}).get("suspend"))
            sighting = Sighting(self._clock(), suspended, owner_uid(meta))
            with self._lock:
                self._seen[key] = sighting

    def get(self, namespace: str, name: str) -> Sighting | None:
        with self._lock:
            return self._seen.get((namespace, name))

    def prune(self, before: float) -> None:
        """Drop every sighting older than ``before`` (a time.monotonic() value)."""
        with self._lock:
            self._seen = {k: s for k, s in self._seen.items() if s.at >= before}

    def __len__(self) -> int:
        return len(self._seen)


def owner_uid(job_meta: dict[str, Any]) -> str | None:
    """The uid of the FineTuneJob that owns a Job (its metadata), if any."""
    refs: list[dict[str, Any]] = job_meta.get("ownerReferences") or []
    uid = next((r.get("uid") for r in refs if r.get("kind") == KIND), None)
    return str(uid) if uid is not None else None
