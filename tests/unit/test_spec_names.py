"""The typed spec refuses the same names the CRD refuses (`ftj validate` and the operator agree)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from finetune_api.spec import FineTuneJobSpec
from finetune_api.validation import format_errors
from spec_cases import NAME_CASES, merge

BASE: dict[str, Any] = {"model": {"name": "org/m"}, "dataset": {"source": {"uri": "s3://b/train.jsonl"}}}


@pytest.mark.parametrize("what, patch, expected", NAME_CASES, ids=[c[0] for c in NAME_CASES])
def test_model_refuses_what_the_crd_refuses_naming_the_field(what, patch, expected):
    with pytest.raises(ValidationError) as info:
        FineTuneJobSpec.model_validate(merge(BASE, patch))
    field = expected.removeprefix("spec.").split("[")[0].split(".")[-1]
    assert field in format_errors(info.value, "spec"), f"{what}: {format_errors(info.value, 'spec')}"
