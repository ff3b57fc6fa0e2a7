"""The operator's parsed specs: a bounded cache (memory at fleet size), and a spec parsed again after
eviction does not evaluate its CEL rules again (operator/finetune_operator/context.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from finetune_api import specbase
from finetune_operator import context as context_module
from finetune_operator.context import Context
from finetune_operator.metrics import PhaseBook
from finetune_operator.settings import OperatorSettings


def _body(uid: str, generation: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "generation": generation}, "spec": spec}


def test_specs_are_bounded_and_an_evicted_one_is_not_checked_against_its_rules_again(
    make_spec: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context_module, "SPEC_CACHE", 3)
    ctx = Context(kube=cast(Any, None), settings=OperatorSettings(), phases=PhaseBook(), post_event=print)
    wire = make_spec().wire()
    evaluated: list[str] = []
    program = specbase._cel_program

    def counting(rule: str) -> Any:
        check = program(rule)
        return lambda obj: evaluated.append(rule) or check(obj)

    monkeypatch.setattr(specbase, "_cel_program", counting)
    for i in range(5):
        ctx.parse_spec(_body(f"u{i}", 1, wire))
    assert len(ctx.specs) == 3, "at most SPEC_CACHE parsed specs are kept"
    first_parses = len(evaluated)
    assert first_parses > 0, "a generation seen for the first time passes the CEL rules"

    again = ctx.parse_spec(_body("u0", 1, wire))  # evicted: parsed again
    assert again.method == wire["method"]
    assert len(evaluated) == first_parses, "its rules already held for this generation"

    ctx.parse_spec(_body("u0", 2, wire))  # a new generation: checked in full
    assert len(evaluated) > first_parses
    broken = {**wire, "method": "lora", "quantization": {"bits": 4}}
    with pytest.raises(ValueError, match="qlora"):
        ctx.parse_spec(_body("u9", 1, broken))


def test_a_cel_rule_is_compiled_once_when_many_threads_meet_it_first(monkeypatch) -> None:
    """32 reconcile threads meet their first FineTuneJobs at once: each compiled every rule."""
    import threading
    import time

    import cel

    compiled: list[str] = []
    real = cel.compile

    def counting(text: str) -> Any:
        compiled.append(text)
        time.sleep(0.05)  # as slow as cel-python's first parser build, which let the threads meet
        return real(text)

    monkeypatch.setattr(cel, "compile", counting)
    rule = "self.a != 'never-compiled-before'"
    start = threading.Barrier(8)

    def first_use() -> None:
        start.wait()
        assert specbase._cel_program(rule)({"self": {"a": "x"}})

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert compiled == [rule]


def test_a_rule_that_cannot_be_evaluated_does_not_hold() -> None:
    """As in the API server, where an evaluation error fails validation."""
    assert not specbase._cel_program("self.missing == 1")({"self": {}})
    assert specbase._cel_program("!has(self.missing) || self.missing == 1")({"self": {}})
