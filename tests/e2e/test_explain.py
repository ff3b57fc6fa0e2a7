"""`kubectl explain` documents the whole FineTuneJob, status included: the API server serves the CRD's
schema, so every status field the operator writes has a type and a description there."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import wait_for

pytestmark = pytest.mark.e2e


def explain(kubectl: Any, path: str) -> str:
    """``kubectl explain`` once the API server publishes the CRD's schema (seconds after it is applied)."""
    return wait_for(
        lambda: (res := kubectl("explain", path, check=False)).returncode == 0 and res.stdout,
        60,
        f"kubectl explain {path}",
    )


@pytest.mark.parametrize(
    "path, expected",
    [
        ("finetunejob.status.evaluation", ["Test-set evaluation", "base", "delta", "regression", "review"]),
        ("finetunejob.status.evaluation.regression.relativeChange", ["positive means the tuned model"]),
        ("finetunejob.status.dataset.tokens", ["Token statistics", "truncated"]),
        ("finetunejob.status.metrics", ["firstTrainLoss", "tokensTotal", "evalLoss"]),
        ("finetunejob.status.lastCheckpoint", ["step", "uri"]),
    ],
)
def test_kubectl_explain_documents_the_status(kubectl, crd_installed, path, expected):
    text = explain(kubectl, path)
    missing = [word for word in expected if word not in text]
    assert missing == [], text
