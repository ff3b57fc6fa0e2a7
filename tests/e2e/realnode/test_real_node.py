"""The project's images on a real kubelet: what only a container runtime can check.

The chart's operator runs in-cluster from the locally built image; trainer pods run the trainer image
under Pod Security ``restricted``; their exit summaries arrive through the real termination-message
file; SIGTERM, the grace period and resume happen for real; Prometheus scrapes by Service and pod IP.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from realenv import TRAINER_UID, ChartOperator, RealCluster, tiny_causal_inputs, tiny_inputs

from harness import GROUP, PLURAL, VERSION, Ftj, free_port
from helpers import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "chart"))
from test_chart_prometheus import Prometheus, binary

# The first test also pays for the session's cluster: a cold trainer image build (about 10 minutes)
# and its import into the node.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]
LABELS = ["billing", "bug", "praise"]


def ftj_spec(inputs: str, output: str | None = None, **hyper: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "classification",
        "method": "lora",
        "model": {"name": "tiny-bert", "source": {"pvc": {"claimName": inputs, "path": "model"}}},
        "dataset": {
            "source": {"pvc": {"claimName": inputs, "path": "train.jsonl"}},
            "format": "text-label",
            "labels": LABELS,
            "cleaning": {"dedup": {"near": False}},
        },
        "hyperparameters": {
            "maxSteps": 12,
            "batchSize": 8,
            "learningRate": 0.005,
            "maxSequenceLength": 64,
            "warmupRatio": 0.0,
            **hyper,
        },
        "earlyStopping": {"enabled": False},
        "checkpointing": {"everySteps": 4, "keep": 2},
        "distributed": {"gpusPerNode": 0},
        "resources": {"cpu": "1", "memory": "3Gi"},
        "scheduling": {"nodeSelector": {"finetuning.io/real-node": "true"}},
    }
    if output:
        spec["output"] = {"source": {"pvc": {"claimName": output, "readOnly": False}}}
    return spec


def create_ftj(rapi: Any, namespace: str, spec: dict[str, Any]) -> Ftj:
    from kubernetes import client

    name = f"ftj-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": spec,
    }
    client.CustomObjectsApi(rapi).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return Ftj(rapi, namespace, name)


def diagnose(rkubectl: Any, namespace: str) -> str:
    out = [rkubectl("get", "ftj,jobs,pods", "-n", namespace, "-o", "wide", check=False).stdout]
    out.append(rkubectl("get", "ftj", "-n", namespace, "-o", "yaml", check=False).stdout[-3000:])
    for pod in rkubectl("get", "pods", "-n", namespace, "-o", "name", check=False).stdout.split():
        out.append(
            f"--- {pod} ---\n" + rkubectl("logs", "-n", namespace, pod, "--tail=30", check=False).stdout
        )
    return "\n".join(out)


def wait_phase(ftj: Ftj, rkubectl: Any, phase: str, timeout: float) -> dict[str, Any]:
    try:
        return ftj.wait_phase(phase, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{diagnose(rkubectl, ftj.namespace)}") from None


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    states = pod["status"].get("containerStatuses") or [{}]
    return dict(states[0].get("state", {}).get("terminated") or {})


@pytest.fixture
def inputs(restricted_namespace: str, volume: Any) -> str:
    vol = volume(restricted_namespace, "inputs")
    tiny_inputs(vol.host)
    return str(vol.claim)


# --- the chart ---------------------------------------------------------------------------------


def test_chart_operator_ready_within_60s_without_restarts(
    chart_operator: ChartOperator, real_cluster: RealCluster, rapi: Any
):
    from kubernetes import client

    assert chart_operator.ready_seconds <= 60, f"Ready after {chart_operator.ready_seconds}s"
    pod = chart_operator.pod
    assert pod["spec"]["nodeName"] == real_cluster.node
    assert pod["spec"]["containers"][0]["image"] == real_cluster.images["operator"]
    name = pod["metadata"]["name"]
    now = client.CoreV1Api(rapi).read_namespaced_pod(name, chart_operator.namespace)
    assert [s.restart_count for s in now.status.container_statuses] == [0]
    assert now.status.container_statuses[0].ready is True


def test_restricted_namespace_refuses_a_violating_pod(
    rapi: Any, restricted_namespace: str, real_cluster: RealCluster
):
    from kubernetes import client

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": real_cluster.images["trainer"],
                    "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": True},
                }
            ]
        },
    }
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(rapi).create_namespaced_pod(restricted_namespace, pod)
    assert err.value.status == 403
    assert "violates PodSecurity" in err.value.body and "restricted" in err.value.body


# --- trainer pods --------------------------------------------------------------------------------


def test_trainer_pod_trains_and_succeeds_through_the_termination_message(
    chart_operator: ChartOperator, restricted_namespace: str, inputs: str, rapi: Any, rkubectl: Any,
    real_cluster: RealCluster,
):  # fmt: skip
    ftj = create_ftj(rapi, restricted_namespace, ftj_spec(inputs))
    status = wait_phase(ftj, rkubectl, "Succeeded", timeout=600)
    [pod] = ftj.pods()
    assert pod["spec"]["nodeName"] == real_cluster.node
    end = terminated(pod)
    assert end["exitCode"] == 0
    summary = json.loads(
        end["message"]
    )  # written by the trainer to /dev/termination-log, read by the kubelet
    assert summary["phase"] == "Succeeded" and summary["reason"] == "Succeeded", summary
    assert status.get("evaluation"), status
    spec = pod["spec"]
    assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["runAsGroup"] == TRAINER_UID
    assert spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # The trainer read its config from the pod's own annotation, projected by the real kubelet's
    # downward API at /etc/finetune/config.json; the run made no ConfigMap.
    [config] = [v for v in spec["volumes"] if v["name"] == "config"]
    assert "downwardAPI" in config and "configMap" not in config, config
    assert json.loads(pod["metadata"]["annotations"]["finetuning.io/config"])["job"]["name"] == ftj.name
    from kubernetes import client

    made = client.CoreV1Api(rapi).list_namespaced_config_map(
        restricted_namespace, label_selector=f"finetuning.io/finetunejob={ftj.name}"
    )
    assert made.items == [], [cm.metadata.name for cm in made.items]


def test_trainer_image_runs_as_its_own_user_on_a_read_only_root_without_a_token(
    chart_operator: ChartOperator,
    restricted_namespace: str,
    rapi: Any,
    rkubectl: Any,
    real_cluster: RealCluster,
):
    """The operator's own pod spec (from a Job it created) with the command swapped for a probe."""
    from kubernetes import client

    from finetune_api.spec import FineTuneJobSpec
    from finetune_operator.builders import Owner, build_job
    from finetune_operator.settings import OperatorSettings

    spec = FineTuneJobSpec.model_validate(ftj_spec("unused"))
    settings = OperatorSettings(trainer_image=real_cluster.images["trainer"])
    template = build_job(Owner("probe", restricted_namespace, "uid"), spec, 1, "h", settings)["spec"][
        "template"
    ]
    template["spec"]["volumes"] = [v for v in template["spec"]["volumes"] if "persistentVolumeClaim" not in v]
    container = template["spec"]["containers"][0]
    container["volumeMounts"] = [
        m for m in container["volumeMounts"] if m["name"] in ("tmp", "shm", "output")
    ]
    template["spec"]["volumes"] = [
        v for v in template["spec"]["volumes"] if v["name"] in ("tmp", "shm", "output")
    ]
    probe = (
        "import getpass, json, os, pathlib\n"
        "def writable(p):\n"
        "    try:\n"
        "        pathlib.Path(p).write_text('x'); return True\n"
        "    except OSError:\n"
        "        return False\n"
        "hf = os.environ['HF_HOME']; os.makedirs(hf, exist_ok=True)\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'user': getpass.getuser(),\n"
        "  'root_writable': writable('/probe'), 'hf_writable': writable(hf + '/probe'),\n"
        "  'token': os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token')}))\n"
    )
    container["command"] = ["python", "-c", probe]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": template["spec"]}
    client.CoreV1Api(rapi).create_namespaced_pod(restricted_namespace, pod)
    try:
        wait_for(
            lambda: (
                rkubectl(
                    "get", "pod", "probe", "-n", restricted_namespace, "-o", "jsonpath={.status.phase}"
                ).stdout
                in ("Succeeded", "Failed")
            ),
            180,
            "the probe pod to finish",
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{diagnose(rkubectl, restricted_namespace)}") from None
    out = rkubectl("logs", "probe", "-n", restricted_namespace).stdout  # apiserver -> kubelet, for real
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts == {
        "uid": TRAINER_UID,
        "gid": TRAINER_UID,
        "user": "nonroot",
        "root_writable": False,
        "hf_writable": True,
        "token": False,
    }


def test_bad_dataset_fails_with_invalid_data_from_the_container(
    chart_operator: ChartOperator, restricted_namespace: str, volume: Any, rapi: Any, rkubectl: Any
):
    vol = volume(restricted_namespace, "inputs")
    tiny_inputs(vol.host)
    (vol.host / "train.jsonl").write_text('{"text": "no label here"}\nnot json at all\n')
    ftj = create_ftj(rapi, restricted_namespace, ftj_spec(vol.claim))
    status = wait_phase(ftj, rkubectl, "Failed", timeout=300)
    assert status.get("reason") == "InvalidData", status
    [pod] = ftj.pods()
    assert terminated(pod)["exitCode"] == 3


def test_review_samples_forgetting_check_and_measured_plan_reach_status(
    chart_operator: ChartOperator, restricted_namespace: str, volume: Any, rapi: Any, rkubectl: Any
):
    """A causal-LM trainer pod reads review prompts and a regression set from a PVC; the generations
    land in the output volume, and the counts, the regression delta and the trainer's memory plan
    (from the model's config.json, against what torch measured) reach status through the real
    termination message."""
    inputs = volume(restricted_namespace, "inputs")
    tiny_causal_inputs(inputs.host)
    output = volume(restricted_namespace, "output")
    claim = str(inputs.claim)
    spec = ftj_spec(claim, output=str(output.claim))
    spec.update(
        task="causal-lm",
        model={"name": "tiny-llama", "source": {"pvc": {"claimName": claim, "path": "llama"}}},
        dataset={
            "source": {"pvc": {"claimName": claim, "path": "train.jsonl"}},
            "format": "prompt-completion",
            "cleaning": {"dedup": {"near": False}},
        },
        evaluation={
            "maxNewTokens": 8,
            "maxTestSamples": 8,
            "reviewPrompts": ["Say something rude.", "What colour is the sky?"],
            "reviewPromptsSource": {"pvc": {"claimName": claim, "path": "prompts.jsonl"}},
            "regressionSet": {
                "source": {"pvc": {"claimName": claim, "path": "general.jsonl"}},
                "maxSamples": 16,
            },
        },
    )
    ftj = create_ftj(rapi, restricted_namespace, spec)
    status = wait_phase(ftj, rkubectl, "Succeeded", timeout=900)

    evaluation = status["evaluation"]
    assert evaluation["review"] == {"samples": 3, "file": "review_samples.jsonl", "withBase": True}, (
        evaluation
    )
    regression = evaluation["regression"]
    assert regression["records"] == 16 and regression["baseLoss"] > 0 and regression["tunedLoss"] > 0
    assert regression["relativeChange"] == pytest.approx(
        (regression["tunedLoss"] - regression["baseLoss"]) / regression["baseLoss"], rel=1e-3
    )
    [samples] = list(output.host.rglob("review_samples.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [
        "Say something rude.",
        "What colour is the sky?",
        "What colour is the snow?",
    ]
    assert all(isinstance(r["base"], str) and isinstance(r["tuned"], str) for r in rows), rows

    plan = status["plan"]  # no size in the name: the trainer's plan from config.json is the plan
    measured = plan["measured"]
    assert plan["shapeSource"] == measured["shapeSource"] == "config.json", plan
    assert measured["device"] == "cpu" and measured["parameters"] > 0, measured
    assert measured["measuredBytes"] > 0 and abs(measured["errorPercent"]) <= 10, measured


def test_sigterm_checkpoints_exits_75_and_the_next_pod_resumes(
    chart_operator: ChartOperator,
    restricted_namespace: str,
    volume: Any,
    inputs: str,
    rapi: Any,
    rkubectl: Any,
):
    from kubernetes import client

    out = volume(restricted_namespace, "output")
    ftj = create_ftj(rapi, restricted_namespace, ftj_spec(inputs, out.claim, maxSteps=4000))
    # Progress in status comes from the in-cluster operator scraping the pod's IP.
    step = wait_for(
        lambda: (ftj.status().get("progress") or {}).get("step", 0) >= 5, 300, "training progress"
    )
    assert step
    [first] = ftj.pods()
    name = first["metadata"]["name"]
    t0 = time.monotonic()
    client.CoreV1Api(rapi).delete_namespaced_pod(name, restricted_namespace)  # SIGTERM, 120 s grace
    ended = wait_for(
        lambda: terminated(rapi.sanitize_for_serialization(
            client.CoreV1Api(rapi).read_namespaced_pod(name, restricted_namespace))),
        150,
        "the deleted pod's container to terminate",
    )  # fmt: skip
    assert ended["exitCode"] == 75, ended
    assert time.monotonic() - t0 < 120, "not within the grace period"
    assert "SIGTERM at step" in ended.get("message", ""), ended
    # <output>/checkpoints/<run>/checkpoint-N (outputs.py): the step the deleted pod saved last.
    saved = sorted((out.host / "checkpoints").rglob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert saved, "no checkpoint on the output volume"
    last = int(saved[-1].name.split("-")[1])
    second = wait_for(lambda: [p for p in ftj.pods() if p["metadata"]["name"] != name], 120, "the next pod")[
        0
    ]
    wait_for(
        lambda: re.search(
            rf"resuming from \S+/checkpoint-{last}\b",
            rkubectl("logs", second["metadata"]["name"], "-n", restricted_namespace, check=False).stdout,
        ),
        300,
        f"the next pod to resume from checkpoint-{last}",
    )
    client.CustomObjectsApi(rapi).delete_namespaced_custom_object(
        GROUP, VERSION, restricted_namespace, PLURAL, ftj.name
    )


def test_prometheus_scrapes_the_operator_service_and_the_trainer_pod_ip(
    chart_operator: ChartOperator,
    restricted_namespace: str,
    inputs: str,
    rapi: Any,
    rkubectl: Any,
    tmp_path: Path,
):
    from kubernetes import client

    ftj = create_ftj(rapi, restricted_namespace, ftj_spec(inputs, maxSteps=4000))
    wait_for(lambda: (ftj.status().get("progress") or {}).get("step", 0) >= 1, 300, "training progress")
    pod_ip = ftj.pods()[0]["status"]["podIP"]
    svc = client.CoreV1Api(rapi).list_namespaced_service(chart_operator.namespace).items[0]
    service = f"{svc.spec.cluster_ip}:{svc.spec.ports[0].port}"
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "operator", "static_configs": [{"targets": [service]}]},
            {"job_name": "trainer", "static_configs": [{"targets": [f"{pod_ip}:9400"]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = tmp_path / "prometheus.log"
    proc = subprocess.Popen(
        [binary("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path / 'data'}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    prom = Prometheus(proc, port, log)
    try:
        wait_for(prom.ready, 60, "Prometheus ready")
        up = wait_for(
            lambda: (
                {r["metric"]["job"] for r in prom.query("up == 1")} >= {"operator", "trainer"}
                and prom.query("up")
            ),
            60,
            "both targets up",
        )
        assert up
        steps = wait_for(
            lambda: prom.query('{job="trainer", __name__="finetune_trainer_step"}'),
            30,
            "trainer step metrics",
        )
        assert steps
        assert prom.query('{job="operator", __name__=~"finetune_operator_.*"}')
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        client.CustomObjectsApi(rapi).delete_namespaced_custom_object(
            GROUP, VERSION, restricted_namespace, PLURAL, ftj.name
        )


def test_gpu_pod_spec_runs_on_the_real_node_advertising_gpus(
    chart_operator: ChartOperator,
    restricted_namespace: str,
    inputs: str,
    rapi: Any,
    real_cluster: RealCluster,
):
    """The node's patched nvidia.com/gpu capacity admits the operator's GPU pod spec on a CPU machine."""
    from kubernetes import client

    spec = ftj_spec(inputs, maxSteps=4000)
    spec["distributed"] = {"gpusPerNode": 1}
    ftj = create_ftj(rapi, restricted_namespace, spec)
    try:
        pod = wait_for(
            lambda: next((p for p in ftj.pods() if p["status"].get("phase") == "Running"), None),
            180,
            "the GPU pod running",
        )
        assert pod["spec"]["nodeName"] == real_cluster.node
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
    finally:
        client.CustomObjectsApi(rapi).delete_namespaced_custom_object(
            GROUP, VERSION, restricted_namespace, PLURAL, ftj.name
        )
