"""Creating a run's children idempotently, and retiring the run they replace.

The rules that keep a run from being lost or duplicated:

- A child that already exists (409) is reused only when it carries this spec's hash and is
  controlled by this very FineTuneJob (same uid). Anything else was left by a crash before a spec
  edit, or by a deleted FineTuneJob of the same name: its run number is skipped, and a stale Job of
  ours is deleted so it never trains next to the new one.
- Old Jobs are deleted only after the new Job exists (create before delete).
- A child the API server refuses for good (400, 403, 422: invalid, forbidden, over quota) raises
  ``ChildRejected`` with the server's message, for the caller to report; other errors propagate
  and are retried.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from finetune_api.spec import FineTuneJobSpec
from finetune_operator import constants as c
from finetune_operator.builders import Owner, build_children
from finetune_operator.kube import Kube
from finetune_operator.naming import label_value, run_name
from finetune_operator.settings import OperatorSettings

log = logging.getLogger("finetune_operator")

REJECTED_STATUSES = (400, 403, 422)
MAX_SKIPPED_RUNS = 16


class ChildRejected(Exception):
    """The API server refused a child with an error that retrying cannot fix."""

    def __init__(self, kind: str, name: str, status: int, message: str) -> None:
        super().__init__(f"{kind} {name} was refused by the API server ({status}): {message}")
        self.kind, self.name, self.status, self.server_message = kind, name, status, message


@dataclass(frozen=True)
class StartedRun:
    number: int
    job: dict[str, Any]


def server_message(exc: ApiException) -> str:
    """The ``message`` of the API server's Status body, or its reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or f"HTTP {exc.status}")


def controller_uid(obj: dict[str, Any]) -> str | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r.get("uid") for r in refs if r.get("controller") and r.get("kind") == c.KIND), None)


def belongs_to_run(obj: dict[str, Any], owner: Owner, digest: str) -> bool:
    """Was this existing child made by this FineTuneJob, from this spec?"""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return controller_uid(obj) == owner.uid and annotations.get(c.ANNOTATION_SPEC_HASH) == digest


def create_run(
    kube: Kube, owner: Owner, spec: FineTuneJobSpec, number: int, digest: str, settings: OperatorSettings
) -> StartedRun:
    """Create (or find, after a crash) the children of run ``number`` or the first free run after it."""
    for _ in range(MAX_SKIPPED_RUNS):
        job = _create_children(kube, owner, spec, number, digest, settings)
        if job is not None:
            return StartedRun(number=number, job=job)
        _discard_stale_job(kube, owner, run_name(owner.name, number))
        number += 1
    raise RuntimeError(f"{MAX_SKIPPED_RUNS} run numbers in a row are taken by stale children")


def _create_children(
    kube: Kube, owner: Owner, spec: FineTuneJobSpec, number: int, digest: str, settings: OperatorSettings
) -> dict[str, Any] | None:
    """The run's Job, or None when a child of this number belongs to another spec or owner."""
    job: dict[str, Any] | None = None
    for child in build_children(owner, spec, number, digest, settings):
        kind, name = child["kind"], child["metadata"]["name"]
        try:
            obj, created = kube.create(child)
        except ApiException as exc:
            if exc.status in REJECTED_STATUSES:
                raise ChildRejected(kind, name, int(exc.status), server_message(exc)) from exc
            raise
        if not created and not belongs_to_run(obj, owner, digest):
            log.warning(
                "existing child is stale: skipping its run number",
                extra={"ftj": f"{owner.namespace}/{owner.name}", "child": f"{kind}/{name}"},
            )
            return None
        if kind == "Job":
            job = obj
    return job


def _discard_stale_job(kube: Kube, owner: Owner, name: str) -> None:
    """Delete the Job of a skipped run number when it is ours (never someone else's object)."""
    job = kube.get_job(owner.namespace, name)
    if job is not None and controller_uid(job) == owner.uid:
        kube.delete_job(owner.namespace, name, uid=job["metadata"].get("uid"))


def retire_other_jobs(kube: Kube, owner: Owner, keep: str) -> list[str]:
    """Delete every unfinished Job of this FineTuneJob except ``keep`` (the run that now exists)."""
    deleted = []
    for job in kube.list_jobs(owner.namespace, f"{c.LABEL_JOB}={label_value(owner.name)}"):
        meta = job.get("metadata") or {}
        if meta.get("name") == keep or meta.get("deletionTimestamp") or controller_uid(job) != owner.uid:
            continue
        if _finished(job):
            continue
        kube.delete_job(owner.namespace, meta["name"], uid=meta.get("uid"))
        deleted.append(str(meta["name"]))
    return deleted


def _finished(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(
        cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True" for cond in conditions
    )
