"""A new run starts only when the user changed the spec or asked for a rerun: the table of cases."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from finetune_api.spec import FineTuneJobSpec
from finetune_operator.run_identity import (
    FIRST_RUN,
    RERUN,
    SPEC_CHANGED,
    CurrentRun,
    new_run_reason,
    run_digest,
)


def never() -> str:
    raise AssertionError("the spec is hashed only when the generation moved")


def fixed(value: str) -> Callable[[], str]:
    return lambda: value


RUN = CurrentRun(spec_hash="h1", rerun_token="", generation=3)
LEGACY = CurrentRun(spec_hash="raw1", rerun_token="", generation=None)

CASES = [
    # (name, run, used tokens, generation, observedGeneration, token, digest, legacy digest, expected)
    ("no run yet", None, [], 1, None, "", never, never, FIRST_RUN),
    ("restart, nothing changed", RUN, [], 3, 3, "", never, never, None),
    ("CRD upgrade adds a defaulted field", RUN, [], 3, 3, "", never, never, None),
    ("user edit", RUN, [], 4, 3, "", fixed("h2"), never, SPEC_CHANGED),
    ("suspend toggled (hash leaves it out)", RUN, [], 4, 4, "", fixed("h1"), never, None),
    ("legacy run, nothing changed since observed", LEGACY, [], 5, 5, "", never, never, None),
    ("legacy run, edited while away", LEGACY, [], 6, 5, "", never, fixed("raw2"), SPEC_CHANGED),
    ("legacy run, generation moved, same spec", LEGACY, [], 6, 5, "", never, fixed("raw1"), None),
    ("legacy run, nothing observed yet", LEGACY, [], 6, None, "", never, never, None),
    ("new rerun token", RUN, [], 3, 3, "t1", never, never, RERUN),
    ("rerun token unchanged", CurrentRun("h1", "t1", 3), [], 3, 3, "t1", never, never, None),
    ("rerun annotation removed", CurrentRun("h1", "t1", 3), [], 3, 3, "", never, never, None),
    ("Git restores an older token", CurrentRun("h1", "t2", 3), ["t1"], 3, 3, "t1", never, never, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("run", "used", "generation", "observed", "token", "digest", "legacy", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_new_run_reason(run, used, generation, observed, token, digest, legacy, expected) -> None:
    assert new_run_reason(run, used, generation, observed, token, digest, legacy) == expected


def spec(**over: object) -> FineTuneJobSpec:
    base: dict[str, object] = {"model": {"name": "m"}, "dataset": {"source": {"uri": "s3://b/d.jsonl"}}}
    return FineTuneJobSpec.model_validate({**base, **over})


def test_digest_ignores_suspend_and_fields_at_their_default() -> None:
    plain = run_digest(spec())
    assert run_digest(spec(suspend=True)) == plain
    # What the API server stores after defaulting, and what a new CRD's defaults add: same run.
    defaulted = FineTuneJobSpec.model_validate(spec().model_dump(mode="json", by_alias=True))
    assert run_digest(defaulted) == plain
    assert run_digest(spec(hyperparameters={"epochs": 3})) == plain
    assert run_digest(spec(hyperparameters={"epochs": 4})) != plain
    assert run_digest(spec(model={"name": "other"})) != plain
