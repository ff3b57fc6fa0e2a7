"""Fixtures for the chart tier: helm, rendering, the Argo CD Lua health check, and the CRDs the chart's
monitoring objects need on a bare API server.

Rendering tests need only the helm binary (hack/tools.py caches it). Cluster tests also use the
``cluster``/``kubectl``/``kube_api`` fixtures from tests/conftest.py and the e2e harness (OperatorProcess,
Ftj) from tests/e2e/harness.py. Namespaces of cluster tests are named ``iso-*`` so that the e2e
session operator (which watches everything but ``iso-*``) never reconciles their FineTuneJobs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "finetune-operator"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))

sys.path.insert(0, str(REPO / "tests" / "e2e"))  # harness.py: OperatorProcess, Ftj


def _tools_dir() -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ftj_chart_tools", REPO / "hack" / "tools.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.ensure_tools())


class Helm:
    """The cached helm binary, optionally bound to a kubeconfig."""

    def __init__(self, binary: Path, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ}
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        res = subprocess.run(
            [str(self.binary), *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res

    def template(
        self, *args: str, release: str = "ftj", namespace: str = "ftj-system", include_crds: bool = False
    ) -> list[dict[str, Any]]:
        extra = ["--include-crds"] if include_crds else []
        out = self("template", release, str(CHART), "--namespace", namespace, *extra, *args).stdout
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(_tools_dir() / "helm")


@pytest.fixture(scope="session")
def cluster_helm(cluster: Any) -> Helm:
    return Helm(_tools_dir() / "helm", Path(cluster.kubeconfig))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


@pytest.fixture(scope="session")
def crds_for_chart(kubectl: Any) -> None:
    """The FineTuneJob CRD (from crds/) and the prometheus-operator stand-ins, established."""
    kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
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


class LuaHealth:
    """The chart's Argo CD health script, run the way Argo CD runs it: ``obj`` global, table back."""

    def __init__(self, source: str) -> None:
        import lupa.lua51  # Argo CD runs health scripts in gopher-lua, a Lua 5.1

        self.lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
        self.fn = self.lua.eval(f"function(obj) {source}\nend")

    def __call__(self, obj: dict[str, Any]) -> dict[str, str]:
        result = self.fn(self._table(obj))
        return {k: result[k] for k in ("status", "message")}

    def _table(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.lua.table_from({k: self._table(v) for k, v in value.items()})
        if isinstance(value, list):
            return self.lua.table_from([self._table(v) for v in value])
        return value


@pytest.fixture(scope="session")
def lua_health() -> LuaHealth:
    return LuaHealth((CHART / "argocd" / "health.lua").read_text())
