"""The pre-flight wait: Pending with a WaitingFor… reason until the timeout, keyed by generation and token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from finetune_api.conditions import Phase, Reason
from finetune_api.status import FineTuneJobStatus
from finetune_operator.preflight_wait import hold_pending

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = (Reason.SECRET_NOT_FOUND, "Secret 'hub' (spec.secrets.hubToken) does not exist.")


@pytest.mark.parametrize(
    ("problem", "waiting"),
    [
        (SECRET, Reason.WAITING_FOR_SECRET),
        ((Reason.PVC_NOT_FOUND, "PersistentVolumeClaim 'data' ..."), Reason.WAITING_FOR_PVC),
        ((Reason.CONFIGMAP_NOT_FOUND, "ConfigMap 'prompts' ..."), Reason.WAITING_FOR_CONFIGMAP),
    ],
)
def test_a_missing_object_keeps_the_job_pending_until_the_timeout(problem: tuple[str, str], waiting: str):
    st = FineTuneJobStatus()
    assert hold_pending(st, "1:", problem, 60, T0, 1) == (True, 0.0)
    assert (st.phase, st.reason) == (Phase.PENDING, waiting)
    assert st.message == f"{problem[1]} Waiting for it up to 60 s (spec.preflightTimeoutSeconds)."
    assert hold_pending(st, "1:", problem, 60, T0 + timedelta(seconds=30), 1) == (False, 30.0)
    before = st.wire()
    assert hold_pending(st, "1:", problem, 60, T0 + timedelta(seconds=60), 1) == (False, 60.0)
    assert st.wire() == before, "over the timeout the caller fails the run; the wait writes nothing"


def test_a_new_generation_or_rerun_token_waits_afresh():
    st = FineTuneJobStatus()
    hold_pending(st, "1:", SECRET, 60, T0, 1)
    changed, waited = hold_pending(st, "2:", SECRET, 60, T0 + timedelta(seconds=600), 2)
    assert changed and waited == 0.0 and st.preflight_wait is not None and st.preflight_wait.key == "2:"
    changed, waited = hold_pending(st, "2:tok", SECRET, 60, T0 + timedelta(seconds=900), 2)
    assert changed and waited == 0.0
