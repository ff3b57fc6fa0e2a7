"""The chart against the real control plane: server-side dry-runs, install/upgrade/uninstall, and the
operator running with exactly the chart's RBAC (a kubeconfig carrying the ServiceAccount's token)."""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import CHART, SCENARIOS, Helm

from harness import BASE_SPEC, GROUP, PLURAL, VERSION, Ftj, OperatorProcess
from helpers import wait_for
from summaries import trainer_summary

pytestmark = pytest.mark.e2e

API_ERRORS = re.compile(r"^finetune_operator_api_errors_total\{.*\} [1-9]", re.M)


def sa_kubeconfig(admin_kubeconfig: Path, token: str, dest: Path) -> Path:
    """A kubeconfig for the same API server that authenticates with ``token`` and nothing else."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    ctx_name = admin["current-context"]
    ctx = next(c["context"] for c in admin["contexts"] if c["name"] == ctx_name)
    cluster = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "operator-sa", "user": {"token": token}}],
        "contexts": [{"name": "operator-sa", "context": {"cluster": cluster["name"], "user": "operator-sa"}}],
        "current-context": "operator-sa",
    }
    dest.write_text(yaml.safe_dump(config))
    dest.chmod(0o600)
    return dest


def create_ftj(kube_api: Any, namespace: str, name: str | None = None, **spec: Any) -> Ftj:
    from kubernetes import client

    name = name or f"ftj-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {**BASE_SPEC, **spec},
    }
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return Ftj(kube_api, namespace, name)


@pytest.fixture
def released(cluster_helm: Helm) -> Iterator[list[tuple[str, str]]]:
    """(release, namespace) pairs installed by a test; uninstalled afterwards whatever happened."""
    releases: list[tuple[str, str]] = []
    yield releases
    for release, ns in releases:
        cluster_helm("uninstall", release, "--namespace", ns, "--ignore-not-found", check=False)


# -- rendered manifests ------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda p: p.name if p else "defaults")
def test_rendered_manifests_pass_server_side_dry_run(
    helm: Helm, kubectl: Any, crds_for_chart: None, values: Path | None, tmp_path: Path
):
    release_ns = f"iso-dry-{uuid.uuid4().hex[:6]}"
    args = ["-f", str(values)] if values else []
    docs = helm.template(*args, release="dry", namespace=release_ns, include_crds=True)
    namespaces = sorted({d["metadata"]["namespace"] for d in docs if d["metadata"].get("namespace")})
    assert release_ns in namespaces
    created = []
    try:
        for ns in namespaces:
            if kubectl("get", "namespace", ns, check=False).returncode != 0:
                kubectl("create", "namespace", ns)
                created.append(ns)
        manifest = tmp_path / "rendered.yaml"
        manifest.write_text(yaml.safe_dump_all(docs))
        res = kubectl(
            "apply", "--server-side", "--dry-run=server", "--field-manager=chart-test", "-f", str(manifest)
        )
        applied = [line for line in res.stdout.splitlines() if "(server dry run)" in line]
        assert len(applied) == len(docs), res.stdout
    finally:
        for ns in created:
            kubectl("delete", "namespace", ns, "--wait=false", check=False)


# -- install / upgrade / uninstall -------------------------------------------------------------------
def namespaced_leftovers(kubectl: Any, namespaces: list[str], release: str) -> list[str]:
    kinds = kubectl("api-resources", "--namespaced=true", "--verbs=list", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    out = []
    for ns in namespaces:
        res = kubectl(
            "get",
            ",".join(kinds),
            "-n",
            ns,
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
            "--ignore-not-found",
            check=False,
        )
        out += [line for line in res.stdout.splitlines() if line.strip()]
    return out


def test_install_upgrade_uninstall(
    cluster_helm: Helm, kubectl: Any, crds_for_chart: None, iso_namespaces: Any, released: list[Any]
):
    ns = iso_namespaces("rel")
    watched = iso_namespaces("watch")
    release = f"ftj{uuid.uuid4().hex[:5]}"
    full = f"{release}-finetune-operator"
    released.append((release, ns))
    cluster_helm(
        "install", release, str(CHART), "--namespace", ns, "-f", str(CHART / "ci" / "monitoring-values.yaml")
    )

    kubectl("wait", "--for=condition=Established", "crd/finetunejobs.finetuning.io", "--timeout=30s")
    kubectl("get", "deployment", full, "-n", ns)
    kubectl("get", "serviceaccount", full, "-n", ns)
    kubectl("get", "clusterrole", full)
    kubectl("get", "clusterrolebinding", full)
    kubectl(
        "get",
        "servicemonitor,podmonitor,prometheusrule",
        "-n",
        ns,
        "-l",
        f"app.kubernetes.io/instance={release}",
    )
    sa = f"system:serviceaccount:{ns}:{full}"
    can = kubectl("auth", "can-i", "list", "finetunejobs.finetuning.io", "-A", f"--as={sa}", check=False)
    assert can.stdout.strip() == "yes"
    can = kubectl("auth", "can-i", "list", "secrets", "-n", watched, f"--as={sa}", check=False)
    assert can.stdout.strip() == "no", "Secrets: never list"
    can = kubectl("auth", "can-i", "get", "secrets", "-n", watched, f"--as={sa}", check=False)
    assert can.stdout.strip() == "no", "Secrets: no access unless rbac.secretExistenceCheck is set"
    notes = cluster_helm("get", "notes", release, "--namespace", ns).stdout
    assert "every namespace" in notes

    # Upgrade into namespaced mode with other settings: the ClusterRole gives way to a Role.
    cluster_helm(
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        ns,
        "--set",
        f"watchNamespaces={{{watched}}}",
        "--set",
        "gpu.resourceCheck=warn",
        "--set",
        "operator.logFormat=text",
    )
    dep = yaml.safe_load(kubectl("get", "deployment", full, "-n", ns, "-o", "yaml").stdout)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert f"--namespace={watched}" in container["args"] and "--log-format=text" in container["args"]
    assert {e["name"]: e.get("value") for e in container["env"]}["FTJ_GPU_RESOURCE_CHECK"] == "warn"
    kubectl("get", "role", full, "-n", watched)
    kubectl("get", "rolebinding", full, "-n", watched)
    assert kubectl("get", "clusterrole", full, check=False).returncode != 0
    assert kubectl("get", "clusterrole", f"{full}-cluster", check=False).returncode != 0
    assert kubectl("get", "servicemonitor", full, "-n", ns, check=False).returncode != 0
    history = yaml.safe_load(cluster_helm("history", release, "--namespace", ns, "-o", "yaml").stdout)
    assert [h["revision"] for h in history] == [1, 2]

    cluster_helm("uninstall", release, "--namespace", ns, "--wait", "--timeout=60s")
    released.clear()
    wait_for(
        lambda: not namespaced_leftovers(kubectl, [ns, watched], release),
        60,
        "no namespaced objects of the release after uninstall",
    )
    assert kubectl("get", "clusterrole", f"{full}-cluster", check=False).returncode != 0
    kubectl("get", "crd", "finetunejobs.finetuning.io")  # Helm never deletes CRDs (data safety)


# -- the operator with exactly the chart's permissions ---------------------------------------------
def install_for_operator(
    helm: Helm, kubectl: Any, mode: str, release_ns: str, watched: str, released: list[Any]
) -> tuple[str, str]:
    release = f"rb{uuid.uuid4().hex[:6]}"
    released.append((release, release_ns))
    args = ["--set", f"watchNamespaces={{{watched}}}"] if mode == "namespaced" else []
    # The operator below runs with default settings: the metadata-only Secret check (FTJ_SECRET_CHECK=api).
    args += ["--set", "rbac.secretExistenceCheck=true"]
    # replicaCount=0: the test runs the operator itself, as the chart's ServiceAccount.
    helm("install", release, str(CHART), "--namespace", release_ns, "--set", "replicaCount=0", *args)
    full = f"{release}-finetune-operator"
    token = kubectl("create", "token", full, "-n", release_ns, "--duration=1h").stdout.strip()
    return full, token


@pytest.mark.parametrize("mode", ["namespaced", "cluster-wide"])
def test_operator_with_exactly_the_charts_rbac_drives_a_finetunejob_to_succeeded(
    cluster: Any,
    cluster_helm: Helm,
    kubectl: Any,
    kube_api: Any,
    crds_for_chart: None,
    iso_namespaces: Any,
    released: list[Any],
    lua_health: Any,
    tmp_path: Path,
    mode: str,
):
    release_ns, watched = iso_namespaces("rbac"), iso_namespaces("rbacw")
    full, token = install_for_operator(cluster_helm, kubectl, mode, release_ns, watched, released)
    kubeconfig = sa_kubeconfig(Path(cluster.kubeconfig), token, tmp_path / "sa.kubeconfig")
    who = kubectl(
        "auth", "whoami", "--kubeconfig", str(kubeconfig), "-o", "jsonpath={.status.userInfo.username}"
    )
    assert who.stdout == f"system:serviceaccount:{release_ns}:{full}"

    sa = f"system:serviceaccount:{release_ns}:{full}"
    if mode == "namespaced":
        # No cluster-scope permission at all: not even the reads kopf or the GPU check could use.
        for verb, what in (("list", "nodes"), ("list", "namespaces"), ("watch", "namespaces")):
            can = kubectl("auth", "can-i", verb, what, f"--as={sa}", check=False).stdout.strip()
            assert can == "no", f"{verb} {what}: {can}"
        can = kubectl("auth", "can-i", "list", "customresourcedefinitions", f"--as={sa}", check=False)
        assert can.stdout.strip() == "no"
        bindings = yaml.safe_load(kubectl("get", "clusterrolebindings", "-o", "yaml").stdout)["items"]
        bound = [
            b["metadata"]["name"]
            for b in bindings
            if any(s.get("name") == full for s in b.get("subjects") or [])
        ]
        assert bound == [], f"ClusterRoleBindings for the operator: {bound}"

    # A cluster-wide operator would also reconcile other tests' namespaces; the ClusterRole's reach is
    # checked with can-i, the operator itself watches one namespace. Leader election as the chart
    # configures it: the Lease in the release namespace, through the chart's Role.
    election = {"FTJ_LEADER_ELECTION_LEASE": full, "FTJ_LEADER_ELECTION_NAMESPACE": release_ns}
    op = OperatorProcess(kubeconfig, [watched], tmp_path / "operator.log", env=election).start()
    try:
        ftj = create_ftj(kube_api, watched)
        running = ftj.wait_phase("Running", 60)
        assert lua_health(ftj.get())["status"] == "Progressing"
        ftj.finish_pods(
            running["run"]["jobName"],
            0,
            trainer_summary(0, "done"),
        )
        done = ftj.wait_phase("Succeeded", 60)
        assert done["observedGeneration"] == ftj.get()["metadata"]["generation"]
        assert lua_health(ftj.get())["status"] == "Healthy"

        failing = create_ftj(kube_api, watched)
        run = failing.wait_phase("Running", 60)["run"]["jobName"]
        failing.finish_pods(run, 2, trainer_summary(2, "bad lr"))
        failing.wait_phase("Failed", 60)
        hs = lua_health(failing.get())
        assert hs["status"] == "Degraded" and "InvalidConfig" in hs["message"]
        # Secrets: the metadata-only existence check works with `get` alone, both ways.
        kubectl("create", "secret", "generic", "hub-token", "-n", watched, "--from-literal=token=x")
        with_secret = create_ftj(
            kube_api, watched, secrets={"hubToken": {"name": "hub-token", "key": "token"}}
        )
        with_secret.wait_phase("Running", 60)
        missing = create_ftj(
            kube_api,
            watched,
            secrets={"hubToken": {"name": "absent", "key": "token"}},
            preflightTimeoutSeconds=0,
        )
        assert missing.wait_phase("Failed", 60)["reason"] == "SecretNotFound"

        assert API_ERRORS.search(op.metrics()) is None, op.metrics()
        log = op.log_tail(1000)
        assert not re.search(r"\b403\b|[Ff]orbidden", log), log
        lease = yaml.safe_load(kubectl("get", "lease", full, "-n", release_ns, "-o", "yaml").stdout)
        assert lease["spec"]["holderIdentity"].endswith(f"/{op.proc.pid}")
        if mode == "namespaced":
            assert "GPU resource check skipped" in log
    finally:
        op.kill(signal.SIGTERM)


@pytest.mark.parametrize(
    ("resource", "refusal"),
    [("jobs", r"jobs(\.batch)? is forbidden"), ("finetunejobs/finalizers", r"cannot set blockOwnerDeletion")],
)
def test_the_same_run_fails_with_one_rule_removed(
    cluster: Any,
    cluster_helm: Helm,
    kubectl: Any,
    kube_api: Any,
    crds_for_chart: None,
    iso_namespaces: Any,
    released: list[Any],
    tmp_path: Path,
    resource: str,
    refusal: str,
):
    """Proves the RBAC test can fail: without the `batch/jobs` rule, or without `finetunejobs/finalizers`
    (OwnerReferencesPermissionEnforcement is on in the test cluster), no run starts, and the run says
    why (JobRejected with the API server's message) instead of waiting forever."""
    release_ns, watched = iso_namespaces("rbacx"), iso_namespaces("rbacxw")
    full, token = install_for_operator(cluster_helm, kubectl, "namespaced", release_ns, watched, released)
    role = yaml.safe_load(kubectl("get", "role", full, "-n", watched, "-o", "yaml").stdout)
    kept = [r for r in role["rules"] if resource not in r["resources"]]
    assert len(kept) == len(role["rules"]) - 1
    role["rules"] = kept
    kubectl("replace", "-f", "-", input=yaml.safe_dump(role))
    verb, what = (
        ("create", "jobs.batch")
        if resource == "jobs"
        else ("update", "finetunejobs.finetuning.io/finalizers")
    )
    wait_for(
        lambda: (
            kubectl(
                "auth",
                "can-i",
                verb,
                what,
                "-n",
                watched,
                f"--as=system:serviceaccount:{release_ns}:{full}",
                check=False,
            ).stdout.strip()
            == "no"
        ),
        30,
        "the rule removal to take effect",
    )
    kubeconfig = sa_kubeconfig(Path(cluster.kubeconfig), token, tmp_path / "sa.kubeconfig")
    op = OperatorProcess(kubeconfig, [watched], tmp_path / "operator.log").start()
    try:
        ftj = create_ftj(kube_api, watched)
        try:
            st = ftj.wait_phase("Failed", 60)
        except TimeoutError:
            raise AssertionError(f"status: {ftj.status()}\n{op.log_tail(30)}") from None
        assert st["reason"] == "JobRejected" and re.search(refusal, st["message"]), st["message"]
        assert ftj.jobs() == []
    finally:
        op.kill(signal.SIGTERM)


def test_gitops_example_finetunejob_is_accepted(kubectl: Any, crds_for_chart: None, iso_namespaces: Any):
    from chartlib import REPO

    ns = iso_namespaces("gitops")
    rendered = kubectl("kustomize", str(REPO / "examples" / "gitops" / "finetunejobs")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert [d["kind"] for d in docs] == ["FineTuneJob"]
    assert docs[0]["metadata"]["namespace"] == "ml-training"
    docs[0]["metadata"]["namespace"] = ns
    res = kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs))
    assert "serverside-applied (server dry run)" in res.stdout
