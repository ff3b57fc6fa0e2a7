"""Operator fixtures for the e2e tier: the CRD installed, the operator as a real subprocess, and a
``make_finetunejob(**overrides)`` factory.

The session operator watches every namespace except ``iso-*``; tests that kill or restart an
operator use ``isolated_operator`` on an ``iso-*`` namespace of their own so they never disturb it.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import BASE_SPEC, GROUP, PLURAL, VERSION, Ftj, OperatorProcess, deep_merge
from helpers import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crd_installed(kubectl: Any) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    # `kubectl wait` fails outright while the new CRD has no status.conditions yet: wait for them first.
    wait_for(
        lambda: kubectl(
            "get", f"crd/{PLURAL}.{GROUP}", "-o", "jsonpath={.status.conditions}", check=False
        ).stdout.strip(),
        30,
        "the CRD's status conditions",
    )
    kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")


@pytest.fixture(scope="session")
def operator(
    cluster: Any, crd_installed: None, kube_api: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    from kubernetes import client

    log = tmp_path_factory.mktemp("operator") / "operator.log"
    # One kopf pattern: across several patterns any match serves a namespace, so ["*", "!iso-*"] would
    # serve iso-* too and race every isolated operator.
    op = OperatorProcess(cluster.kubeconfig, ["!iso-*,!kube-*"], log).start()
    # Healthy is not the same as watching: right after the CRD is (re)applied the API server answers
    # 429 while its storage initialises and kopf backs off. A canary that the operator must process
    # (a missing Secret fails it at once, without a Job) proves the watch is live.
    core = client.CoreV1Api(kube_api)
    canary_ns = f"canary-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=canary_ns)))
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": "canary"},
        "spec": deep_merge(
            BASE_SPEC, {"secrets": {"hubToken": {"name": "absent", "key": "t"}}, "preflightTimeoutSeconds": 0}
        ),
    }
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(GROUP, VERSION, canary_ns, PLURAL, body)
    Ftj(kube_api, canary_ns, "canary").wait_phase("Failed", timeout=180)
    core.delete_namespace(canary_ns)
    try:
        yield op
    finally:
        op.kill(signal.SIGTERM)


@pytest.fixture
def isolated_operator(
    cluster: Any, crd_installed: None, kube_api: Any, tmp_path: Path
) -> Iterator[Callable[[], OperatorProcess]]:
    """Operators (start as many as needed, e.g. after a kill) watching one private namespace;
    ``start(**env)`` passes extra environment (operator settings) to that one."""
    from kubernetes import client

    ns = f"iso-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    wait_for(lambda: core.read_namespaced_service_account("default", ns), 30, "default ServiceAccount")
    started: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        op = OperatorProcess(cluster.kubeconfig, [ns], log, env=dict(env)).start()
        started.append(op)
        return op

    start.namespace = ns  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for op in started:
            op.kill()
        try:
            core.delete_namespace(ns)
        except client.ApiException as exc:
            if exc.status != 404:  # a test may have deleted it already
                raise


@pytest.fixture
def make_finetunejob(kube_api: Any, operator: OperatorProcess, namespace: str) -> Callable[..., Ftj]:
    """Create a FineTuneJob from BASE_SPEC merged with ``spec`` overrides (the operator is running)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(kube_api)

    def make(
        name: str | None = None,
        ns: str | None = None,
        annotations: dict[str, str] | None = None,
        **spec_overrides: Any,
    ) -> Ftj:
        name = name or f"ftj-{uuid.uuid4().hex[:6]}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "FineTuneJob",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": deep_merge(BASE_SPEC, spec_overrides),
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, ns or namespace, PLURAL, body)
        return Ftj(kube_api, ns or namespace, name)

    return make
