from __future__ import annotations

from pathlib import Path

import yaml

from finetune_api.training import TrainingSpec
from finetune_operator import crdgen

REPO = Path(__file__).resolve().parents[2]


def schema():
    return crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_written_crds_are_current_and_identical():
    """crds/ is generated from the typed models; the chart's copy must match byte for byte."""
    assert crdgen.main(["--check"]) == 0, "run: python -m finetune_operator.crdgen"
    top, chart = crdgen.CRD_PATHS
    assert top.read_text() == chart.read_text()


def test_every_field_has_a_description():
    assert crdgen.missing_descriptions(schema()) == []


def test_trainer_config_fields_are_all_in_the_crd():
    """Every field the trainer reads is in the API (the CRD is generated from the same models)."""
    spec = schema()["properties"]["spec"]

    def walk(model, node, path):
        for name, field in model.model_fields.items():
            alias = field.alias or name
            assert alias in node["properties"], f"{path}.{alias} missing from the CRD"
            nested = crdgen._model_of(field.annotation)
            if nested is not None:
                walk(nested, node["properties"][alias], f"{path}.{alias}")

    walk(TrainingSpec, spec, "spec")


def test_schema_is_structural():
    """No unions or refs survive, and unknown fields are preserved only where documented."""
    text = yaml.safe_dump(schema())
    assert "$ref" not in text and "anyOf" not in text and "allOf" not in text
    preserved = []

    def walk(node, path):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            preserved.append(path)
        for k, v in (node.get("properties") or {}).items():
            walk(v, f"{path}.{k}")
        if "items" in node:
            walk(node["items"], path + "[]")

    walk(schema(), "")
    assert ".spec" not in preserved
    assert all(p.startswith(".status") for p in preserved), preserved


def test_printer_columns():
    cols = [c["name"] for c in crdgen.crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert cols == ["Phase", "Model", "Method", "Progress", "Eval loss", "Reason", "Plan", "Est. cost", "Age"]
