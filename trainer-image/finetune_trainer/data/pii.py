"""Personal-data and secret redaction with checks that keep false positives down.

Regular expressions alone redact order numbers as credit cards and version strings as addresses;
so card numbers must pass the Luhn check, IBANs the ISO 13616 mod-97 check, IP addresses must
parse with ``ipaddress`` and not follow "version", "section", "v" or "§", and US Social Security
numbers must fall in the issued ranges. A number that fails its check is left as it is. Measured on
a labelled set in tests/trainer/data/pii_markup_labelled.jsonl (counts in docs/preparing-data.md).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PII_KINDS = ("email", "phone", "credit-card", "ip-address", "iban", "api-key", "ssn")
PLACEHOLDERS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "credit-card": "[CREDIT_CARD]",
    "ip-address": "[IP_ADDRESS]",
    "iban": "[IBAN]",
    "api-key": "[API_KEY]",
    "ssn": "[SSN]",
}

_API_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic style
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r")(?![A-Za-z0-9_-])"
)
# A long hex or base64 value after key=, token=, secret=, password= ... (only the value is replaced).
_ASSIGNED_SECRET = re.compile(
    r"(?i)(\b(?:api[_-]?key|access[_-]?key|secret(?:[_-]?key)?|token|auth[_-]?token|password|passwd|bearer)"
    r"[\"']?\s*(?:[=:]|\s)\s*[\"']?)([A-Za-z0-9+/_=.-]{16,})"
)
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d]|\.\d)")
# US Social Security numbers as written (AAA-GG-SSSS or with spaces), without the ranges the SSA never
# issues: area 000, 666 and 900-999, group 00, serial 0000.
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
# Words after which a dotted quad is a version or a section number, not an address: "version 2.1.0.1",
# "v2.1.0.1", "section 10.2.3.4", "§ 4.1.2.3".
_NUMBERING = re.compile(
    r"(?i)(?:\b(?:v|ver|version|versions|release|rel|build|patch|firmware|revision|rev|section|sections|sec"
    r"|chapter|ch|clause|article|art|rule|step|item|paragraph|para|appendix|table|figure|fig|part|no|oid)\.?"
    r"|[§¶#])\s*[:-]?\s*$"
)
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"  # international, +CC ...
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
    r"|\d{3} \d{3} \d{4}"  # 555 123 4567
    r"|0\d{2,4}[ -]\d{3,4}[ -]\d{3,4}"  # national trunk prefix: 020 7946 0958
    r")(?!\w)"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits)


def _ipv4(match: re.Match[str]) -> bool:
    try:
        ipaddress.IPv4Address(match.group())
    except ValueError:
        return False
    return not _NUMBERING.search(match.string[max(0, match.start() - 24) : match.start()])


def _ipv6(match: re.Match[str]) -> bool:
    text = match.group()
    if sum(1 for part in text.split(":") if part) < 2:
        return False  # "::", "a::" and C++ scopes such as "std::" are not worth redacting
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _phone(match: re.Match[str]) -> bool:
    return 7 <= len(re.sub(r"\D", "", match.group())) <= 15


def _iban(match: re.Match[str]) -> bool:
    return iban_ok(match.group())


def _assigned_secret(match: re.Match[str]) -> bool:
    """Secrets mix letters and digits; "token expired_because_of_inactivity" is prose."""
    value = match.group(2)
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    check: Callable[[re.Match[str]], bool] | None = None
    group: int = 0


# Order matters: secrets first (they contain digit runs), cards and IBANs before phones.
_RULES: tuple[_Rule, ...] = (
    _Rule("api-key", _API_KEY),
    _Rule("api-key", _ASSIGNED_SECRET, _assigned_secret, group=2),
    _Rule("email", _EMAIL),
    _Rule("credit-card", _CARD, _card),
    _Rule("ssn", _SSN),
    _Rule("iban", _IBAN, _iban),
    _Rule("ip-address", _IPV6, _ipv6),
    _Rule("ip-address", _IPV4, _ipv4),
    _Rule("phone", _PHONE, _phone),
)


class Redactor:
    """Replaces the enabled kinds with placeholders and counts what it replaced, per kind."""

    def __init__(self, kinds: Iterable[str] = PII_KINDS) -> None:
        wanted = set(kinds)
        unknown = wanted - set(PII_KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds: {', '.join(sorted(unknown))}")
        self.rules = [rule for rule in _RULES if rule.kind in wanted]
        self.counts: Counter[str] = Counter()

    def __call__(self, text: str) -> str:
        for rule in self.rules:
            text = rule.pattern.sub(functools.partial(self._replace, rule), text)
        return text

    def _replace(self, rule: _Rule, match: re.Match[str]) -> str:
        if rule.check is not None and not rule.check(match):
            return match.group()
        self.counts[rule.kind] += 1
        if rule.group:
            start, end = match.span(rule.group)
            base = match.start()
            whole = match.group()
            return whole[: start - base] + PLACEHOLDERS[rule.kind] + whole[end - base :]
        return PLACEHOLDERS[rule.kind]
