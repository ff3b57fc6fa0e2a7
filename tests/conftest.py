"""Fixtures shared by every tier. Only tests that ask for ``cluster`` (directly or through
``kube_api``, ``kubectl`` or ``namespace``) start a control plane; unit tests never do.

- ``cluster`` (session): a ``ClusterInfo`` for a fresh local cluster (hack/localcluster.py) named
  ``ftj-test-<pid>``, stopped at the end of the session, at exit, on SIGTERM/SIGHUP and, through
  a watchdog, even if pytest is killed. SIGTERM/SIGHUP then end the session as Ctrl-C does, so every
  fixture's teardown still runs (the operators it started), with exit status 128 + the signal
  (tests/session_signals.py). ``USE_EXISTING_CLUSTER=true`` uses ``$KUBECONFIG`` instead
  and starts nothing. Missing binaries FAIL the test with the command that builds them.
- ``kube_api`` (session): a ``kubernetes.client.ApiClient`` for that cluster.
- ``kubectl`` (session): ``kubectl(*args, input=None, check=True, timeout=60) -> CompletedProcess``.
- ``namespace``: a fresh namespace per test, whose ``default`` ServiceAccount exists (pods need it
  under ServiceAccount admission); deleted afterwards.
- ``objectstore`` (session): a real S3-compatible server (versitygw, hack/objectstore.py) on
  127.0.0.1 with fresh credentials; a missing binary FAILS the test with the command that builds it.
- ``s3_bucket``: a fresh bucket on it, with the AWS_* variables that reach it set for the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import kubectl_runner, load_hack, wait_for
from session_signals import interrupted, pytest_sessionfinish

__all__ = ["pytest_sessionfinish"]  # a hook: pytest finds it in this module

REPO = Path(__file__).resolve().parent.parent
Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


def _existing_cluster() -> Any:
    lc = load_hack("localcluster")
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig or not Path(kubeconfig).is_file():
        pytest.fail("USE_EXISTING_CLUSTER=true needs KUBECONFIG to name a kubeconfig file", pytrace=False)
    with open(kubeconfig) as f:
        kc = yaml.safe_load(f)
    ctx_name = kc.get("current-context")
    ctx = next((c["context"] for c in kc.get("contexts", []) if c["name"] == ctx_name), {})
    cl = next((c["cluster"] for c in kc.get("clusters", []) if c["name"] == ctx.get("cluster")), {})
    return lc.ClusterInfo(
        name=ctx_name or "existing",
        kubeconfig=Path(kubeconfig),
        server=cl.get("server", ""),
        state_dir=Path(),
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """A ready control plane for the whole session (see the module docstring)."""
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        yield _existing_cluster()
        return
    lc = load_hack("localcluster")
    lc.reap_stale()
    name = f"{lc.TEST_NAME_PREFIX}{os.getpid()}"
    lc.register_cleanup(name, unwind=interrupted)
    failure = None
    try:
        info = lc.ensure_up(name, owner_pid=os.getpid())
    except lc.MissingBinariesError as exc:
        failure = str(exc)
    except lc.ClusterError as exc:
        lc.down(name)
        failure = f"the local control plane did not come up: {exc}"
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    try:
        yield info
    finally:
        lc.down(name)


@pytest.fixture(scope="session")
def objectstore() -> Iterator[Any]:
    """The session's object store (see the module docstring); stopped and wiped at the end."""
    store_mod = load_hack("objectstore")
    name = f"test-{os.getpid()}"
    try:
        store = store_mod.up(name)
    except (store_mod.MissingServerError, store_mod.ServerError) as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield store
    finally:
        store_mod.down(name)


@pytest.fixture
def s3_bucket(objectstore: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket named after a uuid; AWS_* point at the session's object store."""
    import s3fs

    for key, value in objectstore.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"ftj-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(
        endpoint_url=objectstore.endpoint,
        key=objectstore.access_key,
        secret=objectstore.secret_key,
        skip_instance_cache=True,
    ).mkdir(bucket)
    return bucket


@pytest.fixture(scope="session")
def kubectl(cluster: Any) -> Kubectl:
    """Run the cached kubectl against the session's cluster."""
    return kubectl_runner(cluster.kubeconfig)


@pytest.fixture(scope="session")
def kube_api(cluster: Any) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` bound to the session's cluster (not the global config)."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(kube_api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, ready for pods; deleted (not awaited) afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"finetuning.io/test": "true"}))
    )
    wait_for(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
