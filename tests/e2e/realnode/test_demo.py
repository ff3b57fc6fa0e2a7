"""`make demo` end to end, as pods: the quickstart FineTuneJob trains on the real node from the trainer
image, the chart's in-cluster operator reports progress and evaluation, and the artefacts come out of
the output volume."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from realenv import ChartOperator, RealCluster

from helpers import load_hack

# The first test also pays for the session's cluster: a cold trainer image build (about 10 minutes)
# and its import into the node.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]


def test_demo_trains_evaluates_and_reports(
    real_cluster: RealCluster, chart_operator: ChartOperator, rkubectl: Any, tmp_path: Path
) -> None:
    demo = load_hack("demo").Demo(
        kubeconfig=real_cluster.info.kubeconfig,
        work=tmp_path / "demo",
        images=real_cluster.images,
        volumes=real_cluster.volumes,
        namespace=f"demo-{uuid.uuid4().hex[:6]}",
        timeout=1200,
        release=chart_operator.release,
        operator_namespace=chart_operator.namespace,
    )
    try:
        status = demo.run()
        pods = json.loads(rkubectl("get", "pods", "-n", demo.namespace, "-o", "json").stdout)["items"]
    finally:
        rkubectl("delete", "namespace", demo.namespace, "--wait=false", check=False)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=2)[:3000]
    ev = status["evaluation"]
    assert ev["test"]["accuracy"] > ev["base"]["accuracy"] + 0.3, ev
    assert ev["test"]["macro_f1"] > 0.6, ev
    assert status["metrics"]["evalLoss"] < status["metrics"].get("firstTrainLoss", 10)
    assert status["progress"]["step"] > 0  # scraped from the pod IP by the in-cluster operator
    assert {p["spec"]["nodeName"] for p in pods} == {real_cluster.node}
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {real_cluster.images["trainer"]}
    out = demo.artefacts()
    assert out is not None and out.is_relative_to(demo.work), out
    names = {p.name for p in out.iterdir()}
    assert {"adapter", "README.md", "evaluation.json", "data_report.json"} <= names, names
    card = (out / "README.md").read_text()
    assert "all-MiniLM-L6-v2" in card
    report = json.loads((out / "data_report.json").read_text())
    assert report, "empty data report"
