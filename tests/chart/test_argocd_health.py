"""The Argo CD health check (charts/finetune-operator/argocd/health.lua), executed in Lua 5.1 like Argo CD.

Status objects here have the operator's shape; the cluster test (test_chart_cluster.py) also runs the
script on FineTuneJobs that the operator itself drove to Running, Succeeded and Failed.
"""

from __future__ import annotations

from typing import Any

import pytest


def ftj(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "finetuning.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "support-bot", "namespace": "ml", "generation": generation},
        "spec": {"model": {"name": "org/tiny-llama"}, "method": "lora"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def condition(type_: str, status: str, reason: str = "R", message: str = "") -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"phase": "Pending", "observedGeneration": 1, "reason": "WaitingForPods"}, "Progressing"),
        ({"phase": "Queued", "observedGeneration": 1, "reason": "QueuedByKueue"}, "Progressing"),
        ({"phase": "Running", "observedGeneration": 1, "progress": {"summary": "10/40"}}, "Progressing"),
        ({"phase": "Suspended", "observedGeneration": 1, "reason": "SuspendedByUser"}, "Suspended"),
        ({"phase": "Succeeded", "observedGeneration": 1, "reason": "Succeeded"}, "Healthy"),
        (
            {"phase": "Failed", "observedGeneration": 1, "reason": "InvalidData", "message": "line 7"},
            "Degraded",
        ),
    ],
)
def test_phase_to_health(lua_health, status, expected):
    assert lua_health(ftj(status))["status"] == expected


def test_no_status_yet_is_progressing(lua_health):
    hs = lua_health(ftj(None))
    assert hs["status"] == "Progressing" and "operator" in hs["message"]


def test_a_new_generation_not_yet_observed_is_progressing_even_if_the_old_run_succeeded(lua_health):
    hs = lua_health(ftj({"phase": "Succeeded", "observedGeneration": 1}, generation=2))
    assert hs["status"] == "Progressing" and "generation 2" in hs["message"]


def test_failure_message_carries_reason_and_message(lua_health):
    hs = lua_health(
        ftj({"phase": "Failed", "reason": "InvalidData", "message": 'line 7: "completion" empty'})
    )
    assert hs == {"status": "Degraded", "message": 'InvalidData: line 7: "completion" empty'}


def test_running_shows_progress(lua_health):
    hs = lua_health(ftj({"phase": "Running", "progress": {"summary": "10/40"}, "conditions": []}))
    assert hs == {"status": "Progressing", "message": "Running (step 10/40)"}


def test_stalled_run_is_degraded(lua_health):
    st = {
        "phase": "Running",
        "conditions": [
            condition("Running", "True"),
            condition("Stalled", "True", "NoProgress", "step 12 unchanged for 900s"),
        ],
    }
    hs = lua_health(ftj(st))
    assert hs["status"] == "Degraded" and "step 12" in hs["message"]
    st["conditions"][1]["status"] = "False"
    assert lua_health(ftj(st))["status"] == "Progressing"


def test_unknown_phase_is_unknown(lua_health):
    assert lua_health(ftj({"phase": "Exploded"}))["status"] == "Unknown"


def test_script_uses_only_what_argo_cd_offers():
    from chartlib import CHART

    source = (CHART / "argocd" / "health.lua").read_text()
    for forbidden in ("require", "io.", "os.", 'string.format("%q'):
        assert forbidden not in source


def test_running_message_shows_the_step_next_to_the_operators_message(lua_health):
    """status.message is always set while running, and it used to hide the step entirely."""
    status = {
        "phase": "Running",
        "observedGeneration": 1,
        "reason": "PodsRunning",
        "message": "Trainer pods are running.",
        "progress": {"summary": "120/400"},
    }
    hs = lua_health(ftj(status))
    assert hs == {"status": "Progressing", "message": "PodsRunning: Trainer pods are running. (step 120/400)"}
