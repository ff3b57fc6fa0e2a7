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

from finetune_api.conditions import CONDITION_DOCS, REASON_DOCS, Phase
from finetune_api.exitcodes import EXIT_MEANINGS, NON_RETRIABLE_EXIT_CODES
from finetune_operator import constants as c
from finetune_operator import crdgen

DOC_PATH = crdgen.REPO / "docs" / "api-reference.md"


# One line per condition type and reason. A test fails when constants.py gains a name without one.
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
        "flips. A phase condition that no longer applies turns False with reason `Now<Phase>` "
        "(listed below), e.g. `NowRunning`.",
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
