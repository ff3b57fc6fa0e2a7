"""Which phase changes post an Event: every Event is an API write (issue 11's write budget)."""

from __future__ import annotations

import pytest

from finetune_api.conditions import Phase, Reason
from finetune_operator.event_policy import phase_event


@pytest.mark.parametrize(
    ("old_phase", "new_phase", "old_reason", "new_reason", "expected"),
    [
        # the two transitions every run makes: status says it, no Event
        (None, Phase.PENDING, None, Reason.JOB_CREATED, None),
        (Phase.PENDING, Phase.RUNNING, Reason.JOB_CREATED, Reason.PODS_RUNNING, None),
        (Phase.SUCCEEDED, Phase.PENDING, Reason.SUCCEEDED, Reason.JOB_CREATED, None),  # a rerun starts
        # what someone acts on
        (Phase.RUNNING, Phase.SUCCEEDED, Reason.PODS_RUNNING, Reason.SUCCEEDED, "Normal"),
        (Phase.RUNNING, Phase.FAILED, Reason.PODS_RUNNING, Reason.JOB_FAILED, "Warning"),
        (None, Phase.FAILED, None, Reason.INVALID_SPEC, "Warning"),
        (Phase.FAILED, Phase.FAILED, Reason.JOB_FAILED, Reason.JOB_DELETED, "Warning"),
        (None, Phase.PENDING, None, Reason.WAITING_FOR_SECRET, "Normal"),
        (Phase.RUNNING, Phase.PENDING, Reason.PODS_RUNNING, Reason.WAITING_FOR_PODS, "Normal"),
        (Phase.RUNNING, Phase.SUSPENDED, Reason.PODS_RUNNING, Reason.SUSPENDED_BY_USER, "Normal"),
        (None, Phase.QUEUED, None, Reason.QUEUED_BY_KUEUE, "Normal"),
        (
            Phase.SUSPENDED,
            Phase.PENDING,
            Reason.SUSPENDED_BY_USER,
            Reason.WAITING_FOR_PODS,
            "Normal",
        ),  # resumed
        # no phase change, no new failure: nothing to tell
        (Phase.RUNNING, Phase.RUNNING, Reason.PODS_RUNNING, Reason.PODS_RUNNING, None),
        (Phase.FAILED, Phase.FAILED, Reason.JOB_FAILED, Reason.JOB_FAILED, None),
        (Phase.PENDING, Phase.PENDING, Reason.WAITING_FOR_SECRET, Reason.WAITING_FOR_PVC, None),
    ],
)
def test_phase_event(old_phase, new_phase, old_reason, new_reason, expected):
    assert phase_event(old_phase, new_phase, old_reason, new_reason) == expected
