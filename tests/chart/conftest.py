"""Fixtures for the chart tier: helm, rendering, the Argo CD Lua health check, and the CRDs the chart's
monitoring objects need on a bare API server.

Rendering tests need only the helm binary (hack/tools.py caches it). Cluster tests also use the
``cluster``/``kubectl``/``kube_api`` fixtures from tests/conftest.py and the e2e harness (OperatorProcess,
Ftj) from tests/e2e/harness.py. Namespaces of cluster tests are named ``iso-*`` so that the e2e
session operator (which watches everything but ``iso-*``) never reconciles their FineTuneJobs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chartlib import CHART, FIXTURES, REPO, Helm, LuaHealth, tools_dir


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(tools_dir() / "helm")


@pytest.fixture(scope="session")
def cluster_helm(cluster: Any) -> Helm:
    return Helm(tools_dir() / "helm", Path(cluster.kubeconfig))


@pytest.fixture(scope="session")
def crds_for_chart(kubectl: Any) -> None:
    """The FineTuneJob CRD (from crds/) and the prometheus-operator stand-ins, established."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("apply", "--server-side", "-f", str(FIXTURES / "prometheus-operator-crds.test-stub.yaml"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd/finetunejobs.finetuning.io",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/podmonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
        "--timeout=60s",
    )


@pytest.fixture
def iso_namespaces(kube_api: Any) -> Iterator[Callable[[str], str]]:
    """Create ``iso-<stem>-<id>`` namespaces on demand; all are deleted afterwards."""
    from kubernetes import client

    from helpers import wait_for

    core = client.CoreV1Api(kube_api)
    made: list[str] = []

    def make(stem: str) -> str:
        name = f"iso-{stem}-{uuid.uuid4().hex[:6]}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        wait_for(lambda: core.read_namespaced_service_account("default", name), 30, f"SA default in {name}")
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            try:
                core.delete_namespace(name)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture(scope="session")
def lua_health() -> LuaHealth:
    return LuaHealth((CHART / "argocd" / "health.lua").read_text())
