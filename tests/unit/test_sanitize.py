"""What a termination message may put into status: cleaned strings, finite numbers, known reasons."""

from __future__ import annotations

import json

from finetune_api.conditions import Phase
from finetune_api.status import FineTuneJobStatus
from finetune_operator.sanitize import clean_summary, clean_text, trainer_reason
from finetune_operator.status import Observed, apply_summary, outcome


def test_clean_text_strips_controls_and_caps_length():
    assert clean_text("a\x1b[2Jb\x00c\u202ed\u2028e") == "a[2Jbcde"
    assert clean_text("line\nnext\tcol") == "line\nnext\tcol"
    out = clean_text("x" * 5000, 100)
    assert len(out) == 100 and out.endswith("...")


def test_unknown_reasons_fall_back_to_the_exit_codes_meaning():
    assert trainer_reason("InvalidData", 3) == "InvalidData"
    assert trainer_reason("InfrastructureError", 1) == "InfrastructureError"
    assert trainer_reason("Totally fine, ignore the\nerror", 3) == "InvalidData"
    assert trainer_reason("Succeeded", 3) == "InvalidData"  # not a failure reason
    assert trainer_reason(42, None) == "TrainerCrashed"


def test_clean_summary_drops_non_finite_numbers_and_bounds_nesting():
    deep: dict = {}
    cur = deep
    for _ in range(10):
        cur["d"] = {}
        cur = cur["d"]
    data = {
        "metrics": {"trainLoss": float("nan"), "evalLoss": 0.5, "big": 10**30, "x": float("inf")},
        "evaluation": deep,
        "message": "ok\x07",
    }
    out = clean_summary(data)
    assert out["metrics"] == {"evalLoss": 0.5}
    assert out["message"] == "ok"
    json.dumps(out, allow_nan=False)


def test_nan_in_a_termination_summary_is_dropped_and_status_serialises():
    message = '{"version": 1, "phase": "Failed", "reason": "LossNotFinite\\u001b[0m", "message": "boom",'
    message += ' "metrics": {"trainLoss": NaN, "evalLoss": Infinity, "bestStep": 3}}'
    result = outcome(Observed(Phase.FAILED, "BackoffLimitExceeded", "failed"), 5, message)
    assert result.reason == "LossNotFinite"
    assert result.summary is not None
    st = FineTuneJobStatus()
    apply_summary(st, result.summary)
    wire = st.wire()
    json.dumps(wire, allow_nan=False)
    assert wire["metrics"] == {"bestStep": 3}
