"""Cleaning: PII redaction per kind with its checks, markup stripping, exact and near duplicates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune_api.spec import Paths
from finetune_api.training import TrainingSpec
from finetune_trainer.data import prepare_data
from finetune_trainer.data.dedup import find_duplicates
from finetune_trainer.data.markup import strip_markup
from finetune_trainer.data.pii import PII_KINDS, Redactor, iban_ok, luhn_ok


def redact(text: str) -> tuple[str, dict[str, int]]:
    """One string through the cleaning stage's redactor: the new text and the count per kind."""
    redactor = Redactor(PII_KINDS)
    return redactor(text), dict(redactor.counts)


def prepare(tmp_path: Path, records: list[dict[str, Any]], objective: str = "sft", **dataset: Any) -> Any:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    dataset.setdefault("splits", {"validation": 0.0, "test": 0.0})
    spec = TrainingSpec.model_validate(
        {
            "model": {"name": "m"},
            "objective": objective,
            "dataset": {"source": {"uri": "file:///unused"}, **dataset},
        }
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
        "ssn": 0,
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


# ---------------------------------------------------------------------------------------------------
# cleaning never changes training targets


def test_markup_stripping_never_touches_completions_or_the_prompt_boundary(tmp_path: Path) -> None:
    prompt = "### Instruction:\nFormat the <b>greeting</b> in the page\n\n### Response:\n"
    completion = '```html\n<p class="hi">Hello,   <b>world</b></p>\n```\n\n\n    indented line\n'
    data = prepare(
        tmp_path, [{"prompt": prompt, "completion": completion}], cleaning={"dedup": {"near": False}}
    )
    (record,) = data.train
    assert record["completion"] == completion  # the target, byte for byte
    # the prompt lost its tags but kept its boundary: the response starts after "### Response:\n"
    assert record["prompt"] == "### Instruction:\nFormat the greeting in the page\n\n### Response:\n"
    plain = "### Instruction:\nSay hi\n\n### Response:\n"
    data = prepare(tmp_path, [{"prompt": plain, "completion": "hi"}])
    assert data.train[0]["prompt"] == plain and data.report["cleaning"]["markup_stripped"] == 0


def test_markup_stripping_never_touches_chosen_rejected_or_assistant_turns(tmp_path: Path) -> None:
    preference = {"prompt": "<p>Which tag?</p>", "chosen": "<em>This</em> one", "rejected": "<b>That</b>  "}
    spec = {"cleaning": {"dedup": {"near": False}}}
    data = prepare(tmp_path, [preference], objective="dpo", **spec)
    assert data.train == [
        {"prompt": "Which tag?", "chosen": "<em>This</em> one", "rejected": "<b>That</b>  "}
    ]

    chat = {
        "messages": [
            {"role": "system", "content": "<p>Be brief.</p>"},
            {"role": "user", "content": "Show a <b>bold</b> tag"},
            {"role": "assistant", "content": "Use <b>bold</b>:\n\n\n    <b>x</b>"},
            {"role": "tool", "content": "<div>result</div>"},
            {"role": "assistant", "content": "Done.  "},
        ]
    }
    data = prepare(tmp_path, [chat], **spec)
    assert [m["content"] for m in data.train[0]["messages"]] == [
        "Be brief.",
        "Show a bold tag",
        "Use <b>bold</b>:\n\n\n    <b>x</b>",
        "result",
        "Done.  ",
    ]


def test_a_shared_system_prompt_does_not_make_chats_near_duplicates(tmp_path: Path) -> None:
    system = (
        "You are the support assistant of Acme Cloud Storage. Answer in two sentences at most, in a "
        "friendly and professional tone. Never promise refunds, credits or delivery dates; point the "
        "customer to the billing team instead. Quote the relevant policy section when you refuse. "
        "Do not ask for passwords, full card numbers or security answers. If the question concerns "
        "legal matters, data protection requests or law enforcement, hand over to a human agent. "
        "Use metric units, ISO dates and the customer's own language. Keep product names exactly as "
        "written in the catalogue, including capitalisation and trademarks."
    )
    questions = [
        ("How do I reset my password?", "Use the link on the sign-in page."),
        ("Can I change my billing address?", "Yes, under Settings, Billing."),
        ("Why was my card declined?", "Your bank refused the charge; call them."),
        ("Where is my invoice for March?", "Invoices are under Account, Documents."),
        ("How do I delete my account?", "Write to support from your account e-mail."),
        ("Does the app work offline?", "Only the reader works without a connection."),
    ]
    records = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in questions
    ]
    data = prepare(tmp_path, records, leakage="fail", splits={"validation": 0.34, "test": 0.0, "seed": 1})
    assert data.report["cleaning"]["duplicates_removed"]["total"] == 0
    assert len(data.train) + len(data.validation) == len(questions)
    assert data.report["leakage"]["near"] == 0


@pytest.mark.parametrize(
    "text",
    [
        "Upgrade to version 2.1.0.1 first.",
        "fixed in v10.0.0.1 and v1.2.3.4",
        "See section 10.2.3.4 and § 4.1.2.3 of the manual.",
        "Firmware 3.0.0.12 is required.",
    ],
)
def test_version_strings_and_section_numbers_are_not_ip_addresses(text: str) -> None:
    assert redact(text) == (text, {})


def test_us_social_security_numbers_are_redacted() -> None:
    assert redact("SSN 123-45-6789 on file")[0] == "SSN [SSN] on file"
    assert redact("ssn: 078 05 1120.")[0] == "ssn: [SSN]."
    # never issued: area 000/666/9xx, group 00, serial 0000; and phone numbers stay phones
    for text in ("000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000"):
        assert redact(text) == (text, {}), text
    assert redact("call 555-123-4567")[0] == "call [PHONE]"


LABELLED = Path(__file__).parent / "data" / "pii_markup_labelled.jsonl"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "preparing-data.md"


def test_labelled_set_false_positives_and_negatives() -> None:
    """The counts docs/preparing-data.md publishes are the ones the code gets on the labelled set."""
    from collections import Counter

    pii_fp = pii_fn = markup_fp = markup_fn = 0
    for line in LABELLED.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if item["kind"] == "pii":
            _, found = redact(item["text"])
            expected = Counter(item["expected"])
            for kind in set(found) | set(expected):
                difference = found.get(kind, 0) - expected.get(kind, 0)
                pii_fp += max(difference, 0)
                pii_fn += max(-difference, 0)
        else:
            changed = strip_markup(item["text"]) != item["text"]
            markup_fp += changed and not item["expected"]
            markup_fn += item["expected"] and not changed
    assert (pii_fp, pii_fn, markup_fp, markup_fn) == (1, 0, 0, 0)
    docs = DOCS.read_text(encoding="utf-8")
    assert f"| PII redaction | {pii_fp} | {pii_fn} |" in docs
    assert f"| Markup stripping | {markup_fp} | {markup_fn} |" in docs
