"""Which FineTuneJobs the periodic resync takes: not the ones kopf's handlers have not reached yet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from finetune_api.wellknown import timestamp
from finetune_operator.resync import needs_resync


def _body(age_seconds: float, status: dict | None = None) -> dict:
    created = timestamp(datetime.now(UTC) - timedelta(seconds=age_seconds))
    return {"metadata": {"creationTimestamp": created}, "spec": {}, "status": status or {}}


def test_a_new_object_without_a_run_is_left_to_the_create_handler():
    assert needs_resync(_body(30)) is False


def test_an_object_without_a_run_long_after_creation_is_resynced():
    assert needs_resync(_body(3600)) is True


def test_a_running_object_is_resynced_whatever_its_age():
    assert needs_resync(_body(5, {"phase": "Running", "run": {"number": 1, "jobName": "x-r1"}})) is True
