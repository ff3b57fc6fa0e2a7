"""The GPU resource check before a run: `warn` (the default) lets a job wait for a GPU node that an
autoscaler has not created yet; `fail` refuses it without a Job; namespaced mode never lists nodes."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from harness import Ftj, OperatorProcess, create_ftj

pytestmark = pytest.mark.e2e

UNKNOWN_GPU = {"resources": {"gpuResourceName": "example.com/tpu"}}


def create(kube_api: Any, namespace: str, name: str) -> Ftj:
    return create_ftj(kube_api, namespace, name, UNKNOWN_GPU)


def test_by_default_a_job_waits_for_a_gpu_no_node_has_yet(make_finetunejob):
    """A scale-from-zero GPU pool: no node advertises the resource until the autoscaler adds one."""
    ftj = make_finetunejob(**UNKNOWN_GPU)
    st = ftj.wait_phase("Pending")
    assert st["run"]["jobName"] == f"{ftj.name}-r1"
    [job] = ftj.jobs()
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["example.com/tpu"] == "1"


def test_fail_refuses_an_unknown_gpu_resource_without_a_job(cluster, isolated_operator, kube_api, tmp_path):
    """A namespace pattern, not a fixed name: with fixed namespaces the operator makes no cluster-scope
    reads and skips the check (test_chart_cluster's namespaced run shows that)."""
    ns = isolated_operator.namespace
    env = {"FTJ_GPU_RESOURCE_CHECK": "fail"}
    op = OperatorProcess(cluster.kubeconfig, [f"{ns}*"], tmp_path / "operator.log", env=env).start()
    try:
        ftj = create(kube_api, ns, "tpu")
        assert ftj.wait_phase("Failed")["reason"] == "UnknownGPUResource"
        assert ftj.jobs() == []
    finally:
        op.kill(signal.SIGTERM)
