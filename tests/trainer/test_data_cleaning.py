"""Cleaning: PII redaction per kind with its checks, markup stripping, exact and near duplicates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune_trainer.data import prepare_data
from finetune_trainer.data.dedup import find_duplicates
from finetune_trainer.data.markup import strip_markup
from finetune_trainer.data.pii import iban_ok, luhn_ok, redact
from finetune_trainer.spec import Paths, TrainingSpec


def prepare(tmp_path: Path, records: list[dict[str, Any]], **dataset: Any) -> Any:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    dataset.setdefault("splits", {"validation": 0.0, "test": 0.0})
    spec = TrainingSpec.model_validate(
        {"model": {"name": "m"}, "dataset": {"source": {"uri": "file:///unused"}, **dataset}}
    )
    return prepare_data(spec, Paths(model="m", dataset=str(path), output=str(tmp_path)))


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("email", "write to jane.doe+shop@example.co.uk today", "write to [EMAIL] today"),
        ("phone", "call (555) 123-4567 or +44 20 7946 0958", "call [PHONE] or [PHONE]"),
        ("phone", "ring 555-987-6543 now", "ring [PHONE] now"),
        ("credit-card", "card 4111 1111 1111 1111 expires", "card [CREDIT_CARD] expires"),
        ("credit-card", "amex 378282246310005.", "amex [CREDIT_CARD]."),
        (
            "ip-address",
            "from 192.168.10.20 and 2001:db8::8a2e:370:7334",
            "from [IP_ADDRESS] and [IP_ADDRESS]",
        ),
        ("iban", "pay GB82 WEST 1234 5698 7654 32 or DE89370400440532013000", "pay [IBAN] or [IBAN]"),
        ("api-key", "key sk-proj-abcdefghijklmnopqrstuvwxyz0123", "key [API_KEY]"),
        ("api-key", "ghp_abcdefghijklmnopqrstuvwxyz0123456789 AKIAIOSFODNN7EXAMPLE", "[API_KEY] [API_KEY]"),
        ("api-key", "slack xoxb-1234567890-abcdefghijkl", "slack [API_KEY]"),
        ("api-key", "api_key=9f86d081884c7d659a2feaa0c55ad015 rest", "api_key=[API_KEY] rest"),
        ("api-key", 'token: "dGhpcyBpcyBhIHNlY3JldDEyMw=="', 'token: "[API_KEY]"'),
    ],
)
def test_each_pii_kind_is_redacted_and_counted(kind: str, text: str, expected: str) -> None:
    redacted, counts = redact(text)
    assert redacted == expected
    assert counts[kind] == expected.count("[") and sum(counts.values()) == counts[kind]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "IBAN GB82 WEST 1234 5698 7654 33 fails mod-97",
        "order 123456789 shipped 2024-03-15 at 12:30:45, version 1.2.3, not 999.1.1.1",
        "the token expired_after_inactivity; password reset; std::vector<int>",
    ],
)
def test_lookalikes_that_fail_their_check_are_left_alone(text: str) -> None:
    assert redact(text) == (text, {})


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")


def test_pii_kinds_are_configurable_and_counts_reach_the_report(tmp_path: Path) -> None:
    records = [
        {"prompt": "Who is a@b.io?", "completion": "Call +1 415 555 0100 or mail c@d.org"},
        {"prompt": "Card?", "completion": "4111-1111-1111-1111"},
    ]
    data = prepare(tmp_path, records, cleaning={"pii": {"kinds": ["email"]}})
    assert data.train[0] == {
        "prompt": "Who is [EMAIL]?",
        "completion": "Call +1 415 555 0100 or mail [EMAIL]",
    }
    assert data.train[1]["completion"] == "4111-1111-1111-1111"
    cleaning = data.report["cleaning"]
    assert cleaning["redactions"]["email"] == 2 and cleaning["redactions"]["phone"] == 0
    assert cleaning["records_redacted"] == 1

    everything = prepare(tmp_path, records)
    assert everything.report["cleaning"]["redactions"] | {} == {
        "email": 2,
        "phone": 1,
        "credit-card": 1,
        "ip-address": 0,
        "iban": 0,
        "api-key": 0,
    }
    off = prepare(tmp_path, records, cleaning={"pii": {"enabled": False}})
    assert off.report["cleaning"]["redactions_total"] == 0


def test_markup_is_stripped_and_code_is_not() -> None:
    html = "<div><p>Hello&nbsp;<b>world</b></p><script>track()</script><br>Tom &amp; Jerry</div>"
    assert strip_markup(html) == "Hello world\n\nTom & Jerry"
    code = "def f(a, b):\n    if a < b and b > 0:\n        return List<String>()"
    assert strip_markup(code) == code
    assert strip_markup("Thanks!\n\nSent from my iPhone") == "Thanks!"
    prose = "Notifications arrive with raw HTML tags like <b> in them."
    assert strip_markup(prose) == prose


def test_markup_counts_and_empty_after_stripping(tmp_path: Path) -> None:
    records = [
        {"text": "<p>The export button <em>does nothing</em></p>"},
        {"text": "plain text without tags"},
        {"text": "<p>   </p>"},
    ]
    data = prepare(tmp_path, records)
    assert data.train == [{"text": "The export button does nothing"}, {"text": "plain text without tags"}]
    assert data.report["cleaning"]["markup_stripped"] == 2
    assert data.report["cleaning"]["too_short_removed"] == 1


def test_exact_and_near_duplicates_are_removed_and_counted(tmp_path: Path) -> None:
    base = [
        "The invoice page crashes whenever I add more than ten line items to a draft.",
        "Please add a dark mode, the white background hurts my eyes late at night.",
        "Support answered within minutes and fixed our billing problem, thank you all!",
        "Exporting a report to PDF cuts off the last column on every page I print.",
    ]
    records = [{"text": t} for t in base]
    records.append(
        {"text": "  the INVOICE page crashes whenever I add more than ten line items to a draft. "}
    )
    records.append({"text": "Please add a dark mode; the white background hurts my eyes late at night!!"})
    records.append({"text": "Exporting a report to PDF cuts off the last column on every page I print out."})
    data = prepare(tmp_path, records)
    assert [r["text"] for r in data.train] == base
    removed = data.report["cleaning"]["duplicates_removed"]
    assert removed == {"exact": 1, "near": 2, "total": 3}
    assert data.report["cleaning"]["duplicate_examples"][0] == "line 5 exact-duplicates line 1"

    kept_all = prepare(tmp_path, records, cleaning={"dedup": {"exact": False, "near": False}})
    assert len(kept_all.train) == 7


def test_near_duplicate_threshold_decides() -> None:
    texts = [
        "the quick brown fox jumps over the lazy dog today",
        "the quick brown fox jumped over a lazy dog",
    ]
    assert find_duplicates(texts, exact=True, near=True, threshold=0.95)[0] == [0, 1]
    keep, dropped = find_duplicates(texts, exact=True, near=True, threshold=0.4)
    assert keep == [0] and dropped == [(1, 0, "near")]


def test_same_text_with_two_labels_counts_as_a_conflict(tmp_path: Path) -> None:
    records = [
        {"text": "The app is slow", "label": "Bug Report"},
        {"text": "the app is slow", "label": "UI/UX Complaint"},
        {"text": "Love it", "label": "Praise"},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    spec = TrainingSpec.model_validate(
        {
            "task": "classification",
            "model": {"name": "m"},
            "dataset": {"source": {"uri": "file:///x"}, "splits": {"validation": 0.0, "test": 0.0}},
        }
    )
    data = prepare_data(spec, Paths(model="m", dataset=str(path), output=str(tmp_path)))
    assert len(data.train) == 2
    assert data.report["cleaning"]["label_conflicts"] == 1
