"""Job events that wait while their FineTuneJob is being reconciled (handlers.py).

The Job a reconcile creates reaches the operator's Job watch before the status write naming it has
returned; handled at once, its event would need a GET of the FineTuneJob. Parked, it is handled
after the reconcile against the body the reconcile left, with every other event of that FineTuneJob's
Jobs that arrived meanwhile, in order.
"""

from __future__ import annotations

import threading
from typing import Any

from finetune_operator.ftj_index import Key


class ParkedJobEvents:
    """Job events that wait for the reconcile of their FineTuneJob that is running now.

    ``park`` (a handler thread) and ``drain`` (the reconcile's end, in the event loop) take one lock:
    an event is either parked while the key is open and handed back by ``drain``, or refused and
    handled by its caller at once; never lost between the two. The newest event per Job is kept.
    The key stays open while what ``drain`` handed back is handled, and closes on the ``drain`` that
    finds nothing: an event newer than a parked one is never handled before it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Key, dict[str, tuple[dict[str, Any], bool]]] = {}

    def open(self, key: Key) -> None:
        with self._lock:
            self._open.setdefault(key, {})

    def park(self, key: Key, job: dict[str, Any], deleted: bool) -> bool:
        with self._lock:
            waiting = self._open.get(key)
            if waiting is None:
                return False
            name = str((job.get("metadata") or {}).get("name"))
            waiting.pop(name, None)  # re-inserted last: events are handed back in arrival order
            waiting[name] = (job, deleted)
            return True

    def close(self, key: Key) -> None:
        with self._lock:
            self._open.pop(key, None)

    def drain(self, key: Key) -> list[tuple[dict[str, Any], bool]]:
        """What is parked for ``key`` (the key stays open), or nothing (and the key closes)."""
        with self._lock:
            waiting = self._open.get(key)
            if not waiting:
                self._open.pop(key, None)
                return []
            self._open[key] = {}
            return list(waiting.values())
