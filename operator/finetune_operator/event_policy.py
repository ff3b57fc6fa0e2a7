"""Which phase changes get a Kubernetes Event (pure).

Every Event is an API write. Each run passes through Pending (its Job created) and Running (its
pods up); those two changes are already in status (phase, conditions with their times), so they post
no Event. An Event marks what a user or an alert acts on: the end of a run, a failure, a wait for a
missing object, a suspension, a queue, a retry, a lapse back to waiting.
"""

from __future__ import annotations

from finetune_api.conditions import Phase, Reason

# (phase, reason) of the transitions every run makes on its way to the end.
ROUTINE: frozenset[tuple[str, str]] = frozenset(
    {(Phase.PENDING, Reason.JOB_CREATED), (Phase.RUNNING, Reason.PODS_RUNNING)}
)


def phase_event(
    old_phase: str | None, new_phase: str, old_reason: str | None, new_reason: str | None
) -> str | None:
    """The Event type ("Normal" or "Warning") a status write deserves, or None for no Event."""
    failed_anew = new_phase == Phase.FAILED and new_reason != old_reason
    if new_phase == old_phase and not failed_anew:
        return None
    if (new_phase, new_reason or new_phase) in ROUTINE:
        return None
    return "Warning" if new_phase == Phase.FAILED else "Normal"
