"""A FineTuneJob whose model, data and output are on a real S3 server (versitygw), credentials in a
Secret, run by the operator on the local control plane; the pod runs through the dev runtime
(hack/devruntime.py), which resolves the Secret as a kubelet would."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "trainer"))
import tiny  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture
def devruntime(cluster: Any, tmp_path: Path) -> Any:
    """The dev runtime for dev-node-0, stopped (and its pods' processes with it) afterwards."""
    log = (tmp_path / "devruntime.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "hack" / "devruntime.py"),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--state",
            str(tmp_path / "pods"),
            "--env",
            "CUDA_VISIBLE_DEVICES=",
            "--env",
            "OMP_NUM_THREADS=2",
            "--env",
            f"PYTHONPATH={os.pathsep.join(str(REPO / d) for d in ('api', 'trainer-image', 'operator'))}",
            "--env",
            "FTJ_STORAGE_ATTEMPTS=2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=REPO,
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_s3_model_data_and_output_reach_succeeded_with_objects_that_exist(
    objectstore: Any,
    kube_api: Any,
    kubectl: Any,
    namespace: str,
    make_finetunejob: Any,
    devruntime: Any,
    tmp_path: Path,
) -> None:
    import s3fs
    from kubernetes import client

    fs = s3fs.S3FileSystem(
        endpoint_url=objectstore.endpoint,
        key=objectstore.access_key,
        secret=objectstore.secret_key,
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    bucket = f"e2e-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    model = tiny.build_llama(tmp_path / "tiny-llama")
    fs.put(str(model) + "/", f"{bucket}/models/tiny-llama/", recursive=True)
    tiny.write_jsonl(tmp_path / "train.jsonl", tiny.prompt_completion_records(80))
    fs.put_file(str(tmp_path / "train.jsonl"), f"{bucket}/data/train.jsonl")

    client.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="s3-credentials"),
            data={k: base64.b64encode(v.encode()).decode() for k, v in objectstore.env().items()},
        ),
    )
    out = f"s3://{bucket}/results/colours"
    ftj = make_finetunejob(
        name="colours",
        model={"name": "tiny-llama", "source": {"uri": f"s3://{bucket}/models/tiny-llama"}},
        dataset={
            "source": {"uri": f"s3://{bucket}/data/train.jsonl"},
            "leakage": "warn",
            "cleaning": {"dedup": {"near": False}},
        },
        hyperparameters={"maxSteps": 6, "batchSize": 8, "learningRate": 0.005, "maxSequenceLength": 64},
        earlyStopping={"enabled": False},
        evaluation={"maxNewTokens": 8, "maxTestSamples": 8, "compareBase": False, "generationMetrics": False},
        checkpointing={"everySteps": 3},
        output={"source": {"uri": out}},
        secrets={"storage": "s3-credentials"},
        distributed={"gpusPerNode": 0},
        resources={"cpu": "1", "memory": "4Gi"},
        scheduling={
            "nodeSelector": {"finetuning.io/dev-runtime": "true"},
            "tolerations": [
                {"key": "finetuning.io/dev-runtime", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    )
    try:
        status = wait_for(
            lambda: (s := ftj.status()).get("phase") in ("Succeeded", "Failed") and s,
            timeout=600,
            what="the run to finish",
            interval=1,
        )
        assert status["phase"] == "Succeeded", status
        assert status["output"]["uri"] == out
        for key in (
            "adapter/adapter_model.safetensors",
            "adapter/adapter_config.json",
            "README.md",
            "evaluation.json",
        ):
            assert fs.info(f"{bucket}/results/colours/{key}")["size"] > 0, key
        checkpoint = status["lastCheckpoint"]
        assert checkpoint["step"] == 6 and checkpoint["uri"].startswith(f"{out}/checkpoints/run-1-")
        assert fs.exists(checkpoint["uri"].removeprefix("s3://") + "/ftj-complete.json")
        # The credentials stayed references: not in the Job the operator rendered (its pods' config
        # annotation included), nor in status.
        job = client.BatchV1Api(kube_api).read_namespaced_job("colours-r1", namespace)
        assert objectstore.secret_key not in str(job.to_dict()) and objectstore.secret_key not in str(status)
    finally:
        kubectl("delete", "pods", "--all", "-n", namespace, "--force", "--grace-period=0", check=False)
