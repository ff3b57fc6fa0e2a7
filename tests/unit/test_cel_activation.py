"""A model's CEL rules are evaluated against one activation, converted to CEL values once.

Each ``execute`` with a plain dict converts the whole object again: for a FineTuneJob's six root
rules that was 6 conversions of the spec, most of the CPU of parsing a new spec in the operator.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import cel
import pytest

from finetune_api import specbase


class RecordingProgram:
    def __init__(self, program: Any, seen: list[Any]) -> None:
        self.program, self.seen = program, seen

    def execute(self, activation: Any) -> Any:
        self.seen.append(activation)
        return self.program.execute(activation)


@pytest.fixture
def activations(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = cel.compile
    monkeypatch.setattr(specbase, "_COMPILED", {})
    monkeypatch.setattr(cel, "compile", lambda rule: RecordingProgram(real(rule), seen))
    return seen


def test_the_rules_of_one_object_share_one_converted_activation(
    make_spec: Any, activations: list[Any]
) -> None:
    spec = make_spec(scheduling={"tolerations": [{"key": "a", "operator": "Exists"}]})
    root_rules = len(specbase._rules_of(type(spec).model_config.get("json_schema_extra")))
    assert root_rules > 1

    activations.clear()
    make_spec(scheduling={"tolerations": [{"key": "a", "operator": "Exists"}]})

    assert activations, "the spec's rules were evaluated"
    assert all(isinstance(a, cel.Context) for a in activations), {type(a).__name__ for a in activations}
    uses = Counter(id(a) for a in activations)
    assert max(uses.values()) == root_rules, "the root's rules all use one activation"
    assert len(uses) < len(activations)


def test_a_rule_that_fails_still_names_its_field(make_spec: Any, activations: list[Any]) -> None:
    with pytest.raises(ValueError, match="qlora"):
        make_spec(method="lora", quantization={"bits": 4})
    with pytest.raises(ValueError, match="Exists must not set a value"):
        make_spec(scheduling={"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]})
