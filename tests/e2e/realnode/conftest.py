"""Fixtures for the real-node tier: the project's images in a real kubelet's containerd, the chart
installed with the locally built operator image, and FineTuneJobs whose trainer pods really run.

- ``real_cluster`` (session): a local control plane plus one real node (hack/realnode.py) with the
  operator, trainer and pause images imported (built first by hack/images.py when not cached). Its
  fixtures have their own names (``rkubectl``, ``rapi``): the kwok tier's session fixtures are bound to
  the other cluster.
- ``chart_operator`` (session): ``helm install`` of charts/finetune-operator with the local operator
  image (``imagePullPolicy: Never``) in a namespace enforcing Pod Security ``restricted``.
- ``restricted_namespace``: a fresh namespace enforcing ``restricted``.
- ``volume``: a host directory offered to pods as a PersistentVolumeClaim (restricted pods may not
  use hostPath themselves); files written there by uid 65532 are visible to the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from realenv import RESTRICTED, ChartOperator, RealCluster, Volume

from helpers import kubectl_runner, load_hack, wait_for
from session_signals import interrupted

OPERATOR_NAMESPACE = "finetune-system"  # the chart's documented namespace, as in `make demo`
Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[RealCluster]:
    lc = load_hack("localcluster")
    lc.reap_stale()
    name = f"{lc.TEST_NAME_PREFIX}real-{os.getpid()}"
    lc.register_cleanup(name, unwind=interrupted)
    try:
        info = lc.ensure_up(
            name, owner_pid=os.getpid(), timeout=300, real_node=lc.RealNode(("operator", "trainer"), gpus=2)
        )
    except (
        Exception
    ) as exc:  # missing binaries or packages, a failed image build, a node that never got Ready
        lc.down(name)
        pytest.fail(f"the cluster with a real node did not come up: {exc}", pytrace=False)
    node = lc.status(name)["real_node"]
    volumes = info.state_dir / "volumes"
    volumes.mkdir(mode=0o755, exist_ok=True)
    try:
        yield RealCluster(info, node["name"], node["ip"], node["images"], volumes)
    finally:
        lc.down(name)


@pytest.fixture(scope="session")
def rkubectl(real_cluster: RealCluster) -> Kubectl:
    return kubectl_runner(real_cluster.info.kubeconfig)


@pytest.fixture(scope="session")
def rapi(real_cluster: RealCluster) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(real_cluster.info.kubeconfig))
    try:
        yield client
    finally:
        client.close()


def _namespace(rapi: Any, name: str, labels: dict[str, str]) -> None:
    from kubernetes import client

    core = client.CoreV1Api(rapi)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    wait_for(lambda: core.read_namespaced_service_account("default", name), 30, f"default SA in {name}")


@pytest.fixture
def restricted_namespace(rapi: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    from kubernetes import client

    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    _namespace(rapi, name, {**RESTRICTED, "finetuning.io/test": "true"})
    yield name
    client.CoreV1Api(rapi).delete_namespace(name)


@pytest.fixture(scope="session")
def chart_operator(
    real_cluster: RealCluster, rkubectl: Kubectl, rapi: Any, tmp_path_factory: pytest.TempPathFactory
) -> ChartOperator:
    """The chart installed exactly as `make demo` installs it (hack/demo.py), timed to Ready."""
    from kubernetes import client

    demo = load_hack("demo").Demo(
        kubeconfig=real_cluster.info.kubeconfig,
        work=tmp_path_factory.mktemp("chart"),
        images=real_cluster.images,
        volumes=real_cluster.volumes,
        operator_namespace=OPERATOR_NAMESPACE,
    )
    t0 = time.monotonic()
    try:
        demo.install_operator()
    except (SystemExit, subprocess.CalledProcessError) as exc:
        pods = rkubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "yaml", check=False).stdout
        raise AssertionError(f"the chart's operator did not become Ready: {exc}\n{pods[-4000:]}") from None
    ready = round(time.monotonic() - t0, 1)
    pods = (
        client.CoreV1Api(rapi)
        .list_namespaced_pod(OPERATOR_NAMESPACE, label_selector="app.kubernetes.io/component=operator")
        .items
    )
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return ChartOperator(
        OPERATOR_NAMESPACE, demo.release, ready, dict(rapi.sanitize_for_serialization(pods[0]))
    )


@pytest.fixture
def volume(real_cluster: RealCluster, tmp_path: Path) -> Callable[[str, str], Volume]:
    """``volume(namespace, name)``: a host directory bound to a PVC ``name`` in ``namespace``, writable
    by the trainer's uid (the same PersistentVolume the demo makes)."""
    demo_mod = load_hack("demo")

    def make(namespace: str, name: str) -> Volume:
        demo = demo_mod.Demo(
            kubeconfig=real_cluster.info.kubeconfig,
            work=tmp_path / "demo",
            images=real_cluster.images,
            volumes=real_cluster.volumes,
            namespace=namespace,
        )
        host = demo.volume(name, writable=True)
        wait_for(
            lambda: (
                demo.kubectl("get", "pvc", name, "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
                == "Bound"
            ),
            60,
            f"PVC {namespace}/{name} bound",
        )
        return Volume(name, host)

    return make
