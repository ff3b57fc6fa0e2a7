"""Generate the FineTuneJob CRD from the typed models, so the API and the trainer cannot drift.

``python -m finetune_operator.crdgen`` writes ``crds/`` and the chart's copy; a test fails when
either is stale. Pydantic's JSON Schema is turned into a Kubernetes structural schema: references
inlined, ``Optional`` unwrapped, exclusive bounds in OpenAPI v3.0 form, CEL rules kept.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from finetune_api.spec import FineTuneJobSpec
from finetune_api.status import FineTuneJobStatus
from finetune_operator import constants as c

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = f"{c.GROUP}_{c.PLURAL}.yaml"
CRD_PATHS = (REPO / "crds" / CRD_FILE, REPO / "charts" / "finetune-operator" / "crds" / CRD_FILE)

_DROP = {"title", "$defs"}


class SchemaError(ValueError):
    pass


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Convert a pydantic JSON Schema (with $defs) into a structural OpenAPI v3 schema."""
    defs = schema.get("$defs", {})
    return _convert(schema, defs, "spec")


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    node = copy.deepcopy(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        merged = {**copy.deepcopy(target), **node}
        return _convert(merged, defs, path)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _convert({**inner, **node}, defs, path)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"{path}: unions are not supported in a structural schema")
        merged = {**options[0], **node}
        merged.pop("default", None) if node.get("default") is None else None
        return _convert(merged, defs, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
            continue
        if key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
            continue
        out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "integer" if all(isinstance(v, int) for v in out["enum"]) else "string"
    if "properties" in out:
        out["type"] = "object"
        out["properties"] = {k: _convert(v, defs, f"{path}.{k}") for k, v in out["properties"].items()}
    if out.get("type") == "array" and "items" in out:
        out["items"] = _convert(out["items"], defs, f"{path}[]")
    additional = out.pop("additionalProperties", None)
    if isinstance(additional, dict):
        out["additionalProperties"] = _convert(additional, defs, f"{path}.*")
    elif (additional is True and "properties" not in out) or additional is True:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out["type"] = "object"
    return out


def add_factory_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Give objects built by a default factory a ``default`` so the API server fills nested defaults.

    Pydantic leaves factory defaults out of JSON Schema; without them ``kubectl get -o yaml`` would
    not show the resolved hyperparameters.
    """
    props = schema.get("properties", {})
    for name, field in model.model_fields.items():
        prop = props.get(field.alias or name)
        if prop is None:
            continue
        nested = _model_of(field.annotation)
        if field.default_factory is not None:
            value = field.default_factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                value = value.model_dump(by_alias=True, exclude_none=True, mode="json")
            prop.setdefault("default", value)
        if nested is not None:
            add_factory_defaults(nested, prop)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def missing_descriptions(schema: dict[str, Any], path: str = "spec") -> list[str]:
    """Field paths without a description (kubectl explain would show nothing for them)."""
    missing = []
    for name, prop in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        if here == "spec.metadata":
            continue  # the API server forbids describing metadata
        if not prop.get("description"):
            missing.append(here)
        missing += missing_descriptions(prop, here)
        if "items" in prop:
            missing += missing_descriptions(prop["items"], here + "[]")
    return missing


def crd() -> dict[str, Any]:
    spec_schema = structural(FineTuneJobSpec.model_json_schema(by_alias=True, mode="validation"))
    add_factory_defaults(FineTuneJobSpec, spec_schema)
    status_schema = structural(FineTuneJobStatus.model_json_schema(by_alias=True, mode="serialization"))
    spec_schema["description"] = (
        "What to fine-tune, on which data, how, and where it runs. Changing it starts a new run."
    )
    status_schema["description"] = "Observed state, written by the operator."
    status_schema["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status_schema["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    root = {
        "type": "object",
        "description": "A fine-tuning run of a language model: data checks, training, evaluation, output.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: finetuning.io/v1alpha1."},
            "kind": {"type": "string", "description": "FineTuneJob."},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{c.PLURAL}.{c.GROUP}",
            "labels": {c.LABEL_NAME: c.OPERATOR_NAME, "app.kubernetes.io/part-of": c.OPERATOR_NAME},
        },
        "spec": {
            "group": c.GROUP,
            "names": {
                "kind": c.KIND,
                "listKind": f"{c.KIND}List",
                "plural": c.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": list(c.SHORT_NAMES),
                "categories": ["finetuning"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
                        {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
                        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
                        {"name": "Eval loss", "type": "number", "jsonPath": ".status.metrics.evalLoss"},
                        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
                        {"name": "Plan", "type": "string", "jsonPath": ".status.plan.verdict", "priority": 1},
                        {
                            "name": "Est. cost",
                            "type": "number",
                            "jsonPath": ".status.plan.estimatedCost",
                            "priority": 1,
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `python -m finetune_operator.crdgen` from the typed models. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a written CRD is stale")
    args = parser.parse_args(argv)
    text = render()
    missing = missing_descriptions(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    if missing:
        print("fields without a description: " + ", ".join(missing), file=sys.stderr)
        return 1
    stale = [p for p in CRD_PATHS if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p} is stale: run python -m finetune_operator.crdgen", file=sys.stderr)
        return 1 if stale else 0
    for p in CRD_PATHS:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
