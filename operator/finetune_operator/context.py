"""What every reconcile step shares (clients, settings, caches) and the one way status is written.

``write`` is the effectful edge of the transitions: it applies a pure transition to the freshest
status, writes it, and only after the write succeeded counts the run, updates the phase gauge and
posts an Event when the phase changed. A 409 re-runs the transition on a fresh read, so what a
discarded attempt asked for never happens.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from finetune_api.spec import FineTuneJobSpec
from finetune_api.specbase import rules_already_checked
from finetune_api.status import FineTuneJobStatus
from finetune_operator.event_policy import phase_event
from finetune_operator.health import Heartbeats
from finetune_operator.kube import Kube
from finetune_operator.metrics import RUNS, PhaseBook
from finetune_operator.progress_book import ProgressBook
from finetune_operator.settings import OperatorSettings
from finetune_operator.transitions import Change, observe_generation

log = logging.getLogger("finetune_operator")

SPEC_CACHE = 256

EventPoster = Callable[[dict[str, Any], str, str, str], None]
Transition = Callable[[dict[str, Any], FineTuneJobStatus], Change]


@dataclass
class Context:
    kube: Kube
    settings: OperatorSettings
    phases: PhaseBook
    post_event: EventPoster
    # Caches that only save API calls and CPU; losing them (a restart) costs one extra call each.
    seen_jobs: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    endpoints: dict[str, tuple[str, str]] = field(default_factory=dict)
    specs: OrderedDict[tuple[str, int], FineTuneJobSpec] = field(default_factory=OrderedDict)
    # Object generations whose spec passed its CEL rules once: parsed again (evicted from ``specs``),
    # only the structure is checked (a few bytes each instead of ~11 kB for a parsed spec).
    checked: set[tuple[str, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    heartbeats: Heartbeats = field(default_factory=Heartbeats)
    # Told every FineTuneJob body the operator wrote or read (the handlers keep the newest as their copy).
    remember: Callable[[dict[str, Any]], object] = field(default=lambda body: None)
    # Progress scraped but not yet written (progress_loop.py); a run's final write folds it in.
    progress_book: ProgressBook = field(default_factory=ProgressBook)

    def parse_spec(self, body: dict[str, Any]) -> FineTuneJobSpec:
        """The typed spec, parsed (with its CEL rules) once per object generation.

        The most recently used SPEC_CACHE specs are kept: at 2,000 FineTuneJobs a parsed spec for
        each was ~23 MB of the operator's memory. One parsed again skips its CEL rules, which
        that generation already passed (CEL is most of a parse).
        """
        meta = body["metadata"]
        key = (str(meta.get("uid", "")), int(meta.get("generation") or 0))
        with self.lock:
            spec = self.specs.get(key)
            if spec is not None:
                self.specs.move_to_end(key)
                return spec
            checked = key in self.checked
        if checked:
            with rules_already_checked():
                spec = FineTuneJobSpec.model_validate(body.get("spec") or {})
        else:
            spec = FineTuneJobSpec.model_validate(body.get("spec") or {})
        with self.lock:
            if len(self.checked) > 65536:
                self.checked.clear()
            self.checked.add(key)
            self.specs[key] = spec
            while len(self.specs) > SPEC_CACHE:
                self.specs.popitem(last=False)
        return spec


def parse_status(obj: dict[str, Any]) -> FineTuneJobStatus:
    return FineTuneJobStatus.from_stored(obj.get("status"))


@dataclass
class _Attempt:
    phase: str | None = None
    reason: str | None = None
    change: Change | None = None
    written: FineTuneJobStatus | None = None


def write(ctx: Context, obj: dict[str, Any], transition: Transition) -> Change | None:
    """Apply ``transition`` to the freshest status and write it. Returns the change that was written,
    or None when nothing was (no change, or the object is gone)."""
    meta = obj["metadata"]
    attempt = _Attempt()

    def wrapped(fresh: dict[str, Any]) -> dict[str, Any] | None:
        st = parse_status(fresh)
        attempt.phase, attempt.reason, attempt.change, attempt.written = st.phase, st.reason, None, None
        change = transition(fresh, st)
        if not (change.changed | observe_generation(fresh, st)):
            return None
        wire = st.wire()
        if wire == fresh.get("status"):
            return None
        attempt.change, attempt.written = change, st
        return wire

    result = ctx.kube.update_status(meta["namespace"], meta["name"], wrapped, initial=obj)
    if result is not None:
        ctx.remember(result)
    change, st = attempt.change, attempt.written
    if result is None or change is None or st is None or st.phase is None:
        return None
    if change.counted:
        RUNS.labels(result=change.counted).inc()
    ctx.phases.set(f"{meta['namespace']}/{meta['name']}", st.phase)
    kind = phase_event(attempt.phase, st.phase, attempt.reason, st.reason)
    if kind is not None:
        ctx.post_event(result, kind, st.reason or st.phase, st.message or "")
    if st.phase != attempt.phase:
        log.info(
            "phase change",
            extra={"ftj": f"{meta['namespace']}/{meta['name']}", "from": attempt.phase, "to": st.phase},
        )
    return change
