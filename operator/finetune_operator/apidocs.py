"""Generate ``docs/api-reference.md`` from the CRD schema, so the reference cannot drift from the API.

``python -m finetune_operator.apidocs`` writes the page; ``--check`` exits 1 when it is stale. The
schema comes from ``crdgen.crd()`` (itself generated from the typed models), the condition types
and reasons from ``constants``, the exit codes from the trainer contract.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_api.conditions import ConditionType, Phase, Reason
from finetune_api.exitcodes import EXIT_MEANINGS, NON_RETRIABLE_EXIT_CODES
from finetune_operator import constants as c
from finetune_operator import crdgen

DOC_PATH = crdgen.REPO / "docs" / "api-reference.md"

# One line per condition type and reason. A test fails when constants.py gains a name without one.
CONDITION_DOCS: dict[str, str] = {
    ConditionType.CREATED: (
        "The run's ConfigMap and Job exist (False, with the pre-flight reason, when none was made)."
    ),
    ConditionType.QUEUED: "Kueue holds the run's Job suspended until it admits it.",
    ConditionType.RUNNING: "At least one trainer pod is ready.",
    ConditionType.SUSPENDED: "`spec.suspend` holds the Job; no pods run.",
    ConditionType.STALLED: (
        "The training step has not advanced for `spec.stallTimeoutSeconds` (the phase stays Running)."
    ),
    ConditionType.SUCCEEDED: "The run finished: trained, evaluated, saved, quality gate met.",
    ConditionType.FAILED: "The run failed; `status.reason` and `status.message` say why.",
}

REASON_DOCS: dict[str, str] = {
    Reason.JOB_CREATED: "The run's Job was created; pods are not running yet.",
    Reason.WAITING_FOR_PODS: "The Job exists and its pods are being scheduled or pulled.",
    Reason.QUEUED_BY_KUEUE: "`spec.scheduling.queueName` is set and Kueue has not admitted the Job yet.",
    Reason.PODS_RUNNING: "Trainer pods are running.",
    Reason.SUSPENDED_BY_USER: "`spec.suspend` is true.",
    Reason.RESUMED: "Reserved: not set by this version (a resumed run goes back to WaitingForPods).",
    Reason.PROGRESSING: "Stalled=False: the step advances again.",
    Reason.NO_PROGRESS: "Stalled=True: no step finished within `spec.stallTimeoutSeconds` of training.",
    Reason.NOT_TRAINING: (
        "Stalled=False: the trainer is evaluating, saving, merging or uploading (`status.progress.stage`), "
        "where no training step is expected."
    ),
    Reason.SUCCEEDED: "The trainer exited 0.",
    Reason.RETRYING: "A pod failed with a retriable error; the Job starts another, which resumes.",
    Reason.BACKOFF_LIMIT_EXCEEDED: "The Job's reason: more retriable failures than `spec.backoffLimit`.",
    Reason.DEADLINE_EXCEEDED: "The Job's reason: the run took longer than `spec.activeDeadlineSeconds`.",
    Reason.JOB_FAILED: "The Job failed without a reason of its own or a trainer exit code.",
    Reason.INVALID_SPEC: "The spec does not parse (an object written before a schema change); no Job.",
    Reason.SECRET_NOT_FOUND: "A Secret named in `spec.secrets` does not exist; no Job.",
    Reason.PVC_NOT_FOUND: "A PersistentVolumeClaim named in a `source.pvc` does not exist; no Job.",
    Reason.CONFIGMAP_NOT_FOUND: "A ConfigMap named in a `source.configMap` does not exist; no Job.",
    Reason.UNKNOWN_GPU_RESOURCE: "No node advertises the GPU resource the pods would request; no Job.",
    Reason.WAITING_FOR_SECRET: (
        "A Secret the run needs does not exist yet; the job stays Pending and is re-checked with backoff "
        "until `spec.preflightTimeoutSeconds` (default 600), then fails with SecretNotFound."
    ),
    Reason.WAITING_FOR_PVC: (
        "Like WaitingForSecret, for a PersistentVolumeClaim (then PersistentVolumeClaimNotFound)."
    ),
    Reason.WAITING_FOR_CONFIGMAP: "Like WaitingForSecret, for a ConfigMap (then ConfigMapNotFound).",
    Reason.JOB_REJECTED: (
        "The API server refused the run's Job, ConfigMap or Service (invalid, forbidden, over quota); its"
        " message is in status.message and an Event. A previous run's Job keeps running until a new Job"
        " exists. Fix the cause, then set the finetuning.io/rerun annotation."
    ),
    Reason.JOB_DELETED: "The run's Job was deleted while it ran.",
    Reason.SUMMARY_LOST: (
        "Succeeded, but the trainer's summary was lost: the Job's pods were gone (deleted, or the Job"
        " removed by its TTL) before the operator read their termination message."
    ),
    Reason.SUPERSEDED: "History only: the run was replaced by a newer one (spec change or re-run).",
    Reason.PLAN_DOES_NOT_FIT: (
        "`spec.admission.memoryCheck` is fail and the memory plan says DoesNotFit; `status.plan` has the "
        "estimate and a suggestion; no Job."
    ),
    Reason.LICENCE_NOT_ALLOWED: (
        "The model's licence (`spec.model.licence`, or the model card's) is not in the operator's allowed "
        "licences, or is unknown where unknown licences are refused; no Job."
    ),
}


@dataclass(frozen=True)
class FieldRow:
    path: str
    type: str
    default: str
    constraints: str
    description: str


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def type_of(node: dict[str, Any]) -> str:
    kind = node.get("type", "object")
    if kind == "array":
        return f"[]{type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{type_of(node['additionalProperties'])}"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (free-form)"
    return str(kind)


def _literal(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


def default_of(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if isinstance(value, dict):
        return "defaults of its fields"
    return f"`{_literal(value)}`"


def constraints_of(node: dict[str, Any]) -> str:
    parts: list[str] = []
    enum = node.get("enum") or (node.get("items") or {}).get("enum")
    if enum:
        parts.append("one of " + ", ".join(f"`{v}`" for v in enum))
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None or high is not None:
        left = "" if low is None else f"{low} {'<' if node.get('exclusiveMinimum') else '≤'} "
        right = "" if high is None else f" {'<' if node.get('exclusiveMaximum') else '≤'} {high}"
        parts.append(f"{left}x{right}")
    if node.get("minLength") is not None or node.get("maxLength") is not None:
        parts.append(f"length {node.get('minLength', 0)} to {node.get('maxLength', 'any')}")
    if node.get("maxItems") is not None:
        parts.append(f"at most {node['maxItems']} items")
    if node.get("pattern"):
        parts.append(f"pattern `{node['pattern']}`")
    return "; ".join(parts)


def field_rows(node: dict[str, Any], path: str) -> list[FieldRow]:
    """Every property below ``node``, depth first, in schema order."""
    rows: list[FieldRow] = []
    required = set(node.get("required") or [])
    for name, prop in (node.get("properties") or {}).items():
        here = f"{path}.{name}"
        description = prop.get("description", "")
        if name in required:
            description = f"**Required.** {description}"
        rows.append(FieldRow(here, type_of(prop), default_of(prop), constraints_of(prop), description))
        rows += field_rows(prop, here)
        items = prop.get("items")
        if isinstance(items, dict) and items.get("properties"):
            rows += field_rows(items, here + "[]")
    return rows


def field_paths(root: str) -> list[str]:
    """All field paths under ``spec`` or ``status`` as the reference lists them."""
    return [row.path for row in field_rows(_schema()["properties"][root], root)]


def cel_rules(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, str]]]:
    found = [(path, rule) for rule in node.get("x-kubernetes-validations") or []]
    for name, prop in (node.get("properties") or {}).items():
        found += cel_rules(prop, f"{path}.{name}")
        items = prop.get("items")
        if isinstance(items, dict):
            found += cel_rules(items, f"{path}.{name}[]")
    return found


def all_cel_rules() -> list[tuple[str, dict[str, str]]]:
    return cel_rules(_schema()["properties"]["spec"], "spec")


def _code_list(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return out


def _fields_section(root: str) -> list[str]:
    node = _schema()["properties"][root]
    rows = [
        [f"`{r.path}`", f"`{r.type}`", r.default, r.constraints, r.description]
        for r in field_rows(node, root)
    ]
    return _table(["Field", "Type", "Default", "Allowed", "Description"], rows)


def render() -> str:
    crd = crdgen.crd()
    version = crd["spec"]["versions"][0]
    lines = [
        "<!-- Generated by `python -m finetune_operator.apidocs` from the CRD schema. Do not edit. -->",
        "",
        f"# API reference: {c.KIND} ({c.API_VERSION})",
        "",
        f"Kind `{c.KIND}`, plural `{c.PLURAL}`, short name `{', '.join(c.SHORT_NAMES)}`, namespaced. "
        "This page is generated from the CustomResourceDefinition, which is generated from the typed "
        "models in `api/finetune_api/` (`spec.py` and the modules it imports, `status.py`); "
        "`kubectl explain ftj.spec` shows the same descriptions.",
        "",
        'An object field whose default is "defaults of its fields" is filled in by the API server '
        "with the defaults listed below it, so `kubectl get ftj NAME -o yaml` shows the resolved values.",
        "",
        "## Spec",
        "",
        *_fields_section("spec"),
        "",
        "## Validation rules (CEL)",
        "",
        "The API server refuses an object that breaks one of these rules, with the message shown.",
        "",
        *_table(
            ["`self` is", "Error names", "Rule", "Message"],
            [
                [f"`{where}`", f"`{where}{rule.get('fieldPath', '')}`", f"`{rule['rule']}`", rule["message"]]
                for where, rule in all_cel_rules()
            ],
        ),
        "",
        "## Status",
        "",
        *_fields_section("status"),
        "",
        "## Printer columns",
        "",
        "`kubectl get ftj` shows these; columns with priority 1 appear only with `-o wide`.",
        "",
        *_table(
            ["Column", "JSON path", "Type", "Priority"],
            [
                [col["name"], f"`{col['jsonPath']}`", col["type"], str(col.get("priority", 0))]
                for col in version["additionalPrinterColumns"]
            ],
        ),
        "",
        "## Phases",
        "",
        _code_list(Phase.ALL) + f". Terminal: {_code_list(Phase.TERMINAL)}.",
        "",
        "## Condition types",
        "",
        "Conditions have the `metav1.Condition` shape (`type`, `status`, `reason`, `message`, "
        "`lastTransitionTime`, `observedGeneration`); `lastTransitionTime` changes only when `status` "
        "flips. A phase condition that no longer applies turns False with reason `Now<Phase>`, "
        "e.g. `NowRunning`.",
        "",
        *_table(["Type", "Meaning when True"], [[f"`{k}`", v] for k, v in CONDITION_DOCS.items()]),
        "",
        "## Reasons",
        "",
        "Operator reasons, found in `status.reason` and in conditions. When a run fails because the "
        "trainer exited non-zero, `status.reason` is the trainer's reason from the exit-code table below.",
        "",
        *_table(["Reason", "Meaning"], [[f"`{k}`", v] for k, v in REASON_DOCS.items()]),
        "",
        "## Trainer exit codes",
        "",
        "The trainer's exit code decides the run's reason. Non-retriable codes "
        f"({', '.join(str(code) for code in NON_RETRIABLE_EXIT_CODES)}) match the Job's podFailurePolicy "
        "rule `FailJob`, so the Job fails at once; other non-zero codes are retried up to "
        "`spec.backoffLimit` times, each retry resuming from the last checkpoint. Any other non-zero "
        "code is reported as `TrainerCrashed` and retried. A pod evicted or preempted (pod condition "
        "`DisruptionTarget`) matches the rule `Ignore`: it does not count against `spec.backoffLimit`.",
        "",
        *_table(
            ["Exit code", "Reason", "Retried", "Meaning"],
            [
                [
                    str(int(code)),
                    f"`{m.reason}`",
                    "-" if code == 0 else ("yes" if m.retriable else "no"),
                    m.description,
                ]
                for code, m in sorted(EXIT_MEANINGS.items())
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when docs/api-reference.md is stale")
    parser.add_argument("--output", type=Path, default=DOC_PATH, help="where to write the page")
    args = parser.parse_args(argv)
    text = render()
    path: Path = args.output
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path} is stale: run python -m finetune_operator.apidocs", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
