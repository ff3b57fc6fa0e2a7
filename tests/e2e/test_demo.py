"""`make demo` end to end: the quickstart FineTuneJob really trains on CPU through the dev runtime."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from helpers import load_hack

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_demo_trains_evaluates_and_reports(
    cluster: Any, crd_installed: None, kubectl: Any, tmp_path: Path
) -> None:
    demo_mod = load_hack("demo")
    # iso-* keeps the session operator out: the demo runs its own operator with the chart's RBAC.
    namespace = f"iso-demo-{uuid.uuid4().hex[:6]}"
    demo = demo_mod.Demo(
        kubeconfig=Path(cluster.kubeconfig),
        work=tmp_path / "demo",
        namespace=namespace,
        timeout=720,
        release="ftj-demo-test",
    )
    try:
        status = demo.run()
    finally:
        # Free the dev node for other tests even when the run failed or timed out: nothing but the
        # (now stopped) dev runtime would ever remove pods bound there.
        kubectl("delete", "pods", "--all", "-n", namespace, "--force", "--grace-period=0", check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)[:3000]
    ev = status["evaluation"]
    assert ev["test"]["accuracy"] > ev["base"]["accuracy"] + 0.3, ev
    assert ev["test"]["macro_f1"] > 0.6, ev
    assert status["metrics"]["evalLoss"] < status["metrics"].get("firstTrainLoss", 10)
    assert status["progress"]["step"] > 0
    out = demo.artefacts()
    assert out is not None
    names = {p.name for p in out.iterdir()}
    assert {"adapter", "README.md", "evaluation.json", "data_report.json"} <= names, names
    card = (out / "README.md").read_text()
    assert "all-MiniLM-L6-v2" in card
    report = json.loads((out / "data_report.json").read_text())
    assert report, "empty data report"
