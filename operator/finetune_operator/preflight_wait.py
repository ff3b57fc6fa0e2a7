"""Waiting for what a run needs to appear: a Secret, PVC or ConfigMap created seconds after the
FineTuneJob (External Secrets, Argo CD sync waves) must not fail the job. Pure decisions.

The wait is keyed by the generation and rerun token it is for, so a new edit or rerun waits afresh;
it ends when the check passes, or fails the run after ``spec.preflightTimeoutSeconds``.
"""

from __future__ import annotations

from datetime import datetime

from finetune_api.conditions import Phase, Reason
from finetune_api.spec import FineTuneJobSpec
from finetune_api.status import FineTuneJobStatus, PreflightWait
from finetune_api.wellknown import timestamp
from finetune_operator.status import apply_phase, parse_time

DEFAULT_TIMEOUT_SECONDS = 600
WAITABLE: dict[str, str] = {
    Reason.SECRET_NOT_FOUND: Reason.WAITING_FOR_SECRET,
    Reason.PVC_NOT_FOUND: Reason.WAITING_FOR_PVC,
    Reason.CONFIGMAP_NOT_FOUND: Reason.WAITING_FOR_CONFIGMAP,
}


class RecheckLater(Exception):
    """Not ready yet: the handler is retried with backoff (kopf.TemporaryError at the handler edge)."""


def timeout_of(spec: FineTuneJobSpec) -> int:
    t = spec.preflight_timeout_seconds
    return DEFAULT_TIMEOUT_SECONDS if t is None else t


def next_wait(current: PreflightWait | None, key: str, reason: str, now: datetime) -> PreflightWait:
    """The wait to record: the current one when it is for the same generation and token, else new."""
    waiting = WAITABLE[reason]
    if current is not None and current.key == key:
        return current.model_copy(update={"reason": waiting})
    return PreflightWait(key=key, since=timestamp(now), reason=waiting)


def waited_seconds(wait: PreflightWait, now: datetime) -> float:
    return max((now - parse_time(wait.since)).total_seconds(), 0.0)


def hold_pending(
    st: FineTuneJobStatus,
    key: str,
    problem: tuple[str, str],
    timeout: int,
    now: datetime,
    generation: int | None,
) -> tuple[bool, float]:
    """Keep ``st`` Pending with a ``WaitingFor…`` reason while the wait lasts: (changed, seconds waited).
    Once ``timeout`` has passed nothing changes and the caller fails the run."""
    wait = next_wait(st.preflight_wait, key, problem[0], now)
    waited = waited_seconds(wait, now)
    if waited >= timeout:
        return False, waited
    message = f"{problem[1]} Waiting for it up to {timeout} s (spec.preflightTimeoutSeconds)."
    before = (st.phase, st.reason, st.message, st.preflight_wait)
    st.preflight_wait = wait
    apply_phase(st, Phase.PENDING, wait.reason, message, generation, timestamp(now))
    return (st.phase, st.reason, st.message, st.preflight_wait) != before, waited
