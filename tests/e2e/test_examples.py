"""Every FineTuneJob manifest in examples/ is applied with kubectl and reaches its end state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Ftj
from helpers import wait_for
from summaries import trainer_summary

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml"))
pytestmark = pytest.mark.e2e


def references(spec: dict[str, Any]) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """Secrets, PVCs and ConfigMaps a manifest refers to (a user creates these beforehand)."""
    secrets, pvcs, cms = set(), set(), set()
    found = spec.get("secrets") or {}
    if found.get("hubToken"):
        secrets.add(found["hubToken"]["name"])
    if found.get("storage"):
        secrets.add(found["storage"])

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "pvc" in node and isinstance(node["pvc"], dict):
                pvcs.add(node["pvc"]["claimName"])
            if "configMap" in node and isinstance(node["configMap"], dict):
                cms.add((node["configMap"]["name"], node["configMap"]["key"]))
            for v in node.values():
                walk(v)

    walk(spec)
    return secrets, pvcs, cms


def test_every_example_is_covered():
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.yaml", "lora-sft.yaml", "qlora-chat.yaml", "full-deepspeed-multinode.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_reaches_its_end_state(path, operator, namespace, kubectl, kube_api):
    from kubernetes import client

    doc = yaml.safe_load(path.read_text())
    secrets, pvcs, cms = references(doc["spec"])
    core = client.CoreV1Api(kube_api)
    for name in secrets:
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": {"token": "x"}})
    for name in pvcs:
        # A pre-bound PV: the scheduler will not place a pod whose claim is unbound.
        core.create_persistent_volume(
            {
                "metadata": {"name": f"{namespace}-{name}"[:63]},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "hostPath": {"path": f"/tmp/{name}"},
                    "storageClassName": "",
                    "claimRef": {"namespace": namespace, "name": name},
                    "persistentVolumeReclaimPolicy": "Delete",
                },
            }
        )
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": f"{namespace}-{name}"[:63],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
    for name, key in cms:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": {key: "{}\n"}})
    kubectl("apply", "-n", namespace, "-f", str(path))
    ftj = Ftj(kube_api, namespace, doc["metadata"]["name"])
    job_name = f"{ftj.name}-r1"
    spec = doc["spec"]
    if (spec.get("scheduling") or {}).get("queueName"):
        assert ftj.wait_phase("Queued")["reason"] == "QueuedByKueue"
        return
    if (spec.get("scheduling") or {}).get("nodeSelector", {}).get("finetuning.io/real-node") == "true":
        # For the real node (tests/e2e/realnode runs it there, as `make demo` does); this cluster has none.
        pods = wait_for(lambda: ftj.pods(job_name), 60, "the pod")
        assert pods[0]["spec"]["nodeSelector"] == {"finetuning.io/real-node": "true"}
        assert not pods[0]["spec"].get("nodeName")
        return
    ftj.wait_phase("Running", timeout=90)
    nodes = (spec.get("distributed") or {}).get("nodes", 1)
    pods = wait_for(lambda: len(p := ftj.pods(job_name)) == nodes and p, 60, f"{nodes} pods")
    assert all(p["spec"]["nodeName"].startswith("gpu-node-") for p in pods)
    message = trainer_summary(0, metrics={"eval_loss": 0.9})
    ftj.finish_pods(job_name, 0, message, count=nodes)
    st = ftj.wait_phase("Succeeded", timeout=90)
    assert st["metrics"]["evalLoss"] == 0.9
