"""Deterministic names for a run's children, valid Kubernetes names by construction.

Every name the operator derives (Jobs, Services, volumes, label values) goes through
this module. A source that is already a valid name of the target kind and fits is used as it is,
so the usual ``<name>-r<run>`` stays readable; any other source is lower-cased, stripped of the
characters the kind forbids, shortened, and gets a hash of the *original* source as a suffix, so
two different sources never end up with the same name (``a.b`` and ``a-b`` differ; two long claim
names with a common prefix differ).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from finetune_operator.constants import MAX_NAME

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035: what a Service name must be
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_HASH_LEN = 8
# An Indexed Job's pod hostname is ``<job name>-<index>`` and must itself be a DNS label, so run
# names leave room for ``-255`` (nodes is at most 256).
MAX_RUN_NAME = MAX_NAME - len("-255")


def short_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:_HASH_LEN]


def dns_label(source: str, limit: int = MAX_NAME) -> str:
    """An RFC 1035 label (lower-case alphanumerics and ``-``, starting with a letter) of at most ``limit``.

    Valid for every object name the operator creates (Job, Service), for volume names
    and for pod hostnames and subdomains.
    """
    if len(source) <= limit and _DNS_LABEL.match(source):
        return source
    cleaned = re.sub(r"[^a-z0-9-]+", "-", source.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"x-{cleaned}".rstrip("-")
    stem = cleaned[: limit - _HASH_LEN - 1].rstrip("-")
    return f"{stem}-{short_hash(source)}"


def label_value(source: str) -> str:
    """A valid label value (at most 63 characters, alphanumeric at both ends) for ``source``."""
    if len(source) <= MAX_NAME and _LABEL_VALUE.match(source):
        return source
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", source)
    stem = cleaned[: MAX_NAME - _HASH_LEN - 1].strip("-_.")
    return f"{stem}-{short_hash(source)}" if stem else short_hash(source)


def run_name(job_name: str, run: int) -> str:
    """``<name>-r<run>``: the name of a run's Job and headless Service.

    The run suffix always survives; the FineTuneJob's name (a DNS subdomain of up to 253
    characters, dots allowed) is made a DNS label first.
    """
    suffix = f"-r{run}"
    return dns_label(job_name, MAX_RUN_NAME - len(suffix)) + suffix


def volume_name(kind: str, source: str) -> str:
    """The pod volume for ``source`` (a claim or ConfigMap name); distinct sources, distinct volumes."""
    return dns_label(f"{kind}-{source}")


def spec_hash(spec: dict[str, Any]) -> str:
    """Hash of what defines a run: the spec without ``suspend`` (suspending is not a new run)."""
    essence = {k: v for k, v in spec.items() if k != "suspend"}
    canonical = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
