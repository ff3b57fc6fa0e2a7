"""docs/api-reference.md is generated from the CRD and must stay current and complete."""

from __future__ import annotations

from pathlib import Path

from finetune_api.conditions import CONDITION_DOCS, REASON_DOCS, ConditionType, Reason, reason_names
from finetune_api.exitcodes import EXIT_MEANINGS
from finetune_operator import apidocs, crdgen


def page() -> str:
    return apidocs.DOC_PATH.read_text(encoding="utf-8")


def test_reference_is_current():
    assert apidocs.main(["--check"]) == 0, "run: python -m finetune_operator.apidocs"


def test_check_fails_on_a_stale_page(tmp_path: Path):
    stale = tmp_path / "api-reference.md"
    stale.write_text("old\n", encoding="utf-8")
    assert apidocs.main(["--check", "--output", str(stale)]) == 1
    assert apidocs.main(["--output", str(stale)]) == 0
    assert apidocs.main(["--check", "--output", str(stale)]) == 0


def spec_paths_from_the_models() -> list[str]:
    """Every spec field path, walked from the CRD schema independently of apidocs' own walk."""
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    found: list[str] = []

    def walk(node: dict, path: str) -> None:
        for name, prop in (node.get("properties") or {}).items():
            found.append(f"{path}.{name}")
            walk(prop, f"{path}.{name}")
            if isinstance(prop.get("items"), dict):
                walk(prop["items"], f"{path}.{name}[]")

    walk(schema, "spec")
    return found


def test_every_spec_field_is_documented():
    text = page()
    paths = spec_paths_from_the_models()
    assert len(paths) > 100
    missing = [p for p in paths if f"| `{p}` |" not in text]
    assert missing == []


def test_every_status_field_is_documented():
    text = page()
    missing = [p for p in apidocs.field_paths("status") if f"| `{p}` |" not in text]
    assert missing == []


def test_defaults_and_ranges_are_shown():
    text = page()
    assert "| `spec.hyperparameters.epochs` | `number` | `3.0` | 0.0 < x ≤ 1000.0 |" in text
    assert "| `spec.dataset.splits.validation` | `number` | `0.1` | 0.0 ≤ x < 1.0 |" in text
    assert "one of `full`, `lora`, `qlora`" in text


def test_every_cel_rule_appears_with_its_message():
    text = page()
    rules = apidocs.all_cel_rules()
    assert len(rules) >= 10
    for _, rule in rules:
        assert rule["message"] in text


def test_printer_columns_are_listed():
    text = page()
    for col in crdgen.crd()["spec"]["versions"][0]["additionalPrinterColumns"]:
        assert f"`{col['jsonPath']}`" in text


def _public(cls: type) -> set[str]:
    return {v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)}


def test_every_condition_type_and_reason_has_a_line():
    assert set(CONDITION_DOCS) == _public(ConditionType)
    assert set(REASON_DOCS) == _public(Reason) == reason_names()
    assert all(doc.strip() for doc in [*CONDITION_DOCS.values(), *REASON_DOCS.values()])
    text = page()
    for name in [*CONDITION_DOCS, *REASON_DOCS]:
        assert f"| `{name}` |" in text


def test_every_exit_code_is_listed():
    text = page()
    for code, meaning in EXIT_MEANINGS.items():
        assert f"| {int(code)} | `{meaning.reason}` |" in text
