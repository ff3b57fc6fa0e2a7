from __future__ import annotations

import json
import subprocess
import sys

import pytest

from finetune_api.exitcodes import NON_RETRIABLE_EXIT_CODES, ExitCode, meaning_of
from finetune_api.summary import SUMMARY_MAX_BYTES, SummaryError, decode_summary, encode_summary


def test_exit_code_classes():
    assert ExitCode.RETRIABLE not in NON_RETRIABLE_EXIT_CODES
    assert {2, 3, 4, 5, 6, 7, 8, 9, 10, 137} == set(NON_RETRIABLE_EXIT_CODES)
    assert ExitCode.OUTPUT_UPLOAD_FAILED not in NON_RETRIABLE_EXIT_CODES
    assert meaning_of(1).retriable and meaning_of(1).reason == "TrainerCrashed"


def test_oversized_summary_is_trimmed_message_first():
    big = {"phase": "Failed", "reason": "InvalidData", "message": "x" * 10000, "metrics": {"trainLoss": 1.0}}
    text = encode_summary(big)
    assert len(text.encode()) <= SUMMARY_MAX_BYTES
    data = decode_summary(text)
    assert data["reason"] == "InvalidData" and data["metrics"] == {"trainLoss": 1.0}
    assert data["message"].endswith("...")


def test_huge_details_are_dropped_but_reason_survives():
    text = encode_summary({"phase": "Succeeded", "reason": "Succeeded", "evaluation": {"k" * 9000: 1}})
    assert len(text.encode()) <= SUMMARY_MAX_BYTES
    assert decode_summary(text)["reason"] == "Succeeded"


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"version": 9}', "version"),
        (json.dumps({"version": 1, "metrics": 3}), "metrics"),
        ("{}" + " " * 5000, "over"),
    ],
)
def test_bad_summaries_say_why(text, why):
    with pytest.raises(SummaryError, match=why):
        decode_summary(text)


def test_shared_modules_never_import_torch_or_the_trainer():
    code = (
        "import sys, pkgutil, importlib, finetune_api, finetune_operator.__main__;"
        "api = pkgutil.walk_packages(finetune_api.__path__, 'finetune_api.');"
        "[importlib.import_module(m.name) for m in api];"
        "print(sorted(m for m in ('torch', 'finetune_trainer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
