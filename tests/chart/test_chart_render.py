"""The chart rendered without a cluster: lint, every ci/ scenario, RBAC shape, guards and the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import CHART, REPO, SCENARIOS, Helm, find

RULE_KINDS = {"ClusterRole", "Role"}


def rules_of(doc: dict[str, Any]) -> dict[str, set[str]]:
    """{"group/resource": verbs} of a Role or ClusterRole."""
    out: dict[str, set[str]] = {}
    for rule in doc["rules"]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault(f"{group}/{res}", set()).update(rule["verbs"])
    return out


def test_scenarios_exist():
    names = {p.name for p in SCENARIOS}
    assert {"default-values.yaml", "namespaced-values.yaml", "monitoring-values.yaml"} <= names


@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda p: p.name if p else "defaults")
def test_lint_strict(helm: Helm, values: Path | None):
    args = ["-f", str(values)] if values else []
    res = helm("lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in res.stdout


def test_every_value_has_a_doc_comment():
    """helm-docs convention: each value, or the map above it, has a `# --` comment block."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing: list[str] = []
    documented_above: list[tuple[int, bool]] = []  # (indent, documented) of enclosing keys
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        while documented_above and documented_above[-1][0] >= indent:
            documented_above.pop()
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        documented = j >= 0 and lines[j].strip().startswith("# --")
        inherited = any(doc for _, doc in documented_above)
        is_parent = stripped.endswith(":")
        if not (documented or inherited or is_parent):
            missing.append(stripped.split(":", 1)[0])
        documented_above.append((indent, documented))
    assert not missing, f"values without a '# --' comment: {missing}"


def test_schema_is_strict_on_leaf_objects():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False

    def walk(node: dict[str, Any], path: str) -> None:
        props = node.get("properties")
        if props is not None and node.get("type") == "object":
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in props.items():
                if isinstance(child, dict):
                    walk(child, f"{path}.{key}")

    walk(schema, "values")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert schema["properties"]["gpu"]["properties"]["resourceCheck"]["enum"] == ["fail", "warn", "off"]


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--set", "imageTag=1"], "additional properties 'imageTag' not allowed"),
        (["--set", "gpu.resourceCheck=maybe"], "resourceCheck"),
        (["--set", "image.digest=sha256:abc"], "digest"),
        (["--set", "watchNamespaces={team-*}"], "watchNamespaces"),
        (["--set", "operator.logFormat=xml"], "logFormat"),
        (["--set", "serviceMonitor.interval=soon"], "interval"),
    ],
)
def test_schema_refuses_bad_values(helm: Helm, flags: list[str], needle: str):
    res = helm("template", "x", str(CHART), *flags, check=False)
    assert res.returncode != 0
    assert needle in res.stderr


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (
            ["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"],
            "replicaCount > 1 needs leaderElection.enabled",
        ),
        (["--set", "leaderElection.renewDeadlineSeconds=15"], "retryPeriodSeconds < renewDeadlineSeconds"),
        (["--set", "operator.healthPort=8080"], "must differ"),
        (["--set", "prometheusRule.enabled=true"], "prometheusRule.enabled needs serviceMonitor.enabled"),
        (
            ["--set", "rbac.create=false", "--set", "serviceAccount.create=false"],
            "set serviceAccount.name",
        ),
        (["--set-string", "trainer.env.FTJ_X=1"], "reserved"),
        (
            ["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.scrapeTimeout=30s"],
            "scrapeTimeout must be shorter",
        ),
    ],
)
def test_fail_guards(helm: Helm, flags: list[str], needle: str):
    res = helm("template", "x", str(CHART), *flags, check=False)
    assert res.returncode != 0 and needle in res.stderr, res.stderr


def watch_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles that serve watched namespaces (not the leader-election Role)."""
    return [r for r in find(docs, "Role") if not r["metadata"]["name"].endswith("-leader-election")]


def test_defaults_are_cluster_wide_with_least_privilege(helm: Helm):
    docs = helm.template()
    assert [r["metadata"]["name"] for r in find(docs, "Role")] == ["ftj-finetune-operator-leader-election"]
    [cr] = find(docs, "ClusterRole")
    rules = rules_of(cr)
    assert "/secrets" not in rules, "no Secret permission unless rbac.secretExistenceCheck is set"
    assert rules["finetuning.io/finetunejobs/finalizers"] == {"update"}, "blockOwnerDeletion needs it"
    assert env_of(docs)["FTJ_SECRET_CHECK"] == "pod"
    assert env_of(docs)["FTJ_GPU_RESOURCE_CHECK"] == "warn", "scale-from-zero GPU pools must work"
    assert rules["/nodes"] == {"list"}
    assert rules["/namespaces"] == {"list", "watch"}, "kopf's start-up discovery, read-only"
    assert rules["finetuning.io/finetunejobs"] == {"get", "list", "watch", "patch"}
    assert rules["finetuning.io/finetunejobs/status"] == {"get", "update"}
    assert rules["/configmaps"] == {"get"}, "the run's config rides in the pod: ConfigMaps are only checked"
    assert rules["/services"] == {"create", "get"}, "a multi-node run's headless Service"
    assert "*" not in {v for verbs in rules.values() for v in verbs}
    assert not any(k.startswith("kopf.dev/") for k in rules)
    [crb] = find(docs, "ClusterRoleBinding")
    assert crb["subjects"][0] == {
        "kind": "ServiceAccount",
        "name": "ftj-finetune-operator",
        "namespace": "ftj-system",
    }
    [dep] = find(docs, "Deployment")
    assert "--all-namespaces" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not {d["kind"] for d in docs} & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}


def test_namespaced_mode_uses_the_same_rules_per_namespace(helm: Helm):
    cluster_docs = helm.template()
    docs = helm.template("-f", str(CHART / "ci" / "namespaced-values.yaml"))
    roles = watch_roles(docs)
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ci-team-a", "ci-team-b"]
    [cluster_role] = find(cluster_docs, "ClusterRole")
    cluster_scoped = {"/nodes", "/namespaces", "apiextensions.k8s.io/customresourcedefinitions"}
    namespaced_part = {k: v for k, v in rules_of(cluster_role).items() if k not in cluster_scoped}
    for role in roles:
        assert rules_of(role) == namespaced_part
    bindings = find(docs, "RoleBinding")
    assert {b["subjects"][0]["name"] for b in bindings} == {"ftj-operator"}
    assert find(docs, "ClusterRole") == [] and find(docs, "ClusterRoleBinding") == [], (
        "namespaced mode has no cluster-scope rule at all"
    )
    args = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ci-team-a" in args and "--namespace=ci-team-b" in args
    assert "--all-namespaces" not in args


def test_gpu_check_off_drops_the_node_rule(helm: Helm):
    [cr] = find(helm.template("--set", "gpu.resourceCheck=off"), "ClusterRole")
    assert "/nodes" not in rules_of(cr)
    docs = helm.template("-f", str(CHART / "ci" / "hardened-values.yaml"))
    assert find(docs, "ClusterRole") == []
    [dep] = find(docs, "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("@sha256:" + "0123456789abcdef" * 4)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FTJ_GPU_RESOURCE_CHECK"] == "off" and env["FTJ_GPU_RESOURCE_NAME"] == "amd.com/gpu"
    assert env["FTJ_TRAINER_ENV_HF_HUB_OFFLINE"] == "1"


def test_operator_identity_is_the_pod_name(helm: Helm):
    """The Lease holder (and kopf's identity) is the pod's name; kopf's default asks /etc/passwd for
    the uid's name, which the chart's uid has none of."""
    [dep] = find(helm.template(), "Deployment")
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


@pytest.mark.parametrize("namespaced", [False, True])
def test_two_replicas_elect_a_leader_on_a_lease_with_a_namespaced_role(helm: Helm, namespaced: bool):
    flags = ["--set", "replicaCount=2"] + (["--set", "watchNamespaces={team-a}"] if namespaced else [])
    docs = helm.template(*flags)
    [dep] = find(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FTJ_LEADER_ELECTION_LEASE"]["value"] == "ftj-finetune-operator"
    assert env["FTJ_LEADER_ELECTION_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert [env[k]["value"] for k in ("FTJ_LEASE_DURATION", "FTJ_RENEW_DEADLINE", "FTJ_RETRY_PERIOD")] == [
        "15",
        "10",
        "2",
    ]
    [role] = [d for d in find(docs, "Role") if d["metadata"]["name"].endswith("-leader-election")]
    assert role["metadata"]["namespace"] == "ftj-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["ftj-finetune-operator"],
            "verbs": ["get", "update"],
        },
    ]
    assert not any("kopf.dev" in r.get("apiGroups", []) for d in docs for r in d.get("rules") or [])
    [pdb] = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_one_replica_has_no_disruption_budget(helm: Helm):
    assert find(helm.template(), "PodDisruptionBudget") == []


def test_deployment_meets_pod_security_restricted(helm: Helm):
    [dep] = find(helm.template(), "Deployment")
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["image"] == "ghcr.io/finetune-operator/operator:0.1.0"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert "--metrics-port=8080" in c["args"] and "--health-port=8081" in c["args"]
    assert c["resources"]["requests"]["memory"] == "128Mi"


def test_monitoring_objects(helm: Helm):
    docs = helm.template("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    [sm] = find(docs, "ServiceMonitor")
    [svc] = find(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    [pm] = find(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "finetune-trainer"}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    [rule] = find(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "FineTuneJobFailed",
        "FineTuneJobStalled",
        "FineTuneOperatorDown",
        "FineTuneOperatorApiErrors",
    } <= alerts
    assert all(r["labels"]["team"] == "ml-platform" for g in rule["spec"]["groups"] for r in g["rules"])
    dash = find(docs, "ConfigMap", "ftj-finetune-operator-dashboard")[0]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dash["data"]["finetune-operator.json"])
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for series in (
        "finetune_operator_jobs",
        "finetune_trainer_train_loss",
        "finetune_trainer_eval_loss",
        "finetune_trainer_tokens_per_second",
        "finetune_trainer_memory_bytes",
    ):
        assert series in exprs
    [argo] = find(docs, "ConfigMap", "ftj-finetune-operator-argocd-health")
    lua = argo["data"]["resource.customizations.health.finetuning.io_FineTuneJob"]
    assert lua == (CHART / "argocd" / "health.lua").read_text().rstrip("\n")


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_every_alert_has_a_runbook_that_exists(helm: Helm):
    [rule] = find(helm.template("-f", str(CHART / "ci" / "monitoring-values.yaml")), "PrometheusRule")
    base = "https://github.com/finetune-operator/finetune-operator/blob/main/docs/troubleshooting.md#"
    anchors = heading_anchors((REPO / "docs" / "troubleshooting.md").read_text())
    for r in (r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r):
        url = r["annotations"].get("runbook_url", "")
        assert url.startswith(base), f"{r['alert']}: runbook_url {url!r}"
        assert url.removeprefix(base) in anchors, f"{r['alert']}: no heading for {url}"


def test_chart_crds_are_the_generated_ones():
    for path in (REPO / "crds").glob("*.yaml"):
        assert (CHART / "crds" / path.name).read_text() == path.read_text()


def test_image_tag_follows_app_version_and_values(helm: Helm):
    [dep] = find(helm.template("--set", "image.tag=1.2.3"), "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("operator:1.2.3")


def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    [dep] = find(docs, "Deployment")
    return {e["name"]: e.get("value", "") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("namespaced", [False, True])
def test_secret_existence_check_is_an_opt_in_rule(helm: Helm, namespaced: bool):
    flags = ["--set", "rbac.secretExistenceCheck=true"]
    if namespaced:
        flags += ["--set", "watchNamespaces={a,b}"]
    docs = helm.template(*flags)
    roles = watch_roles(docs) if namespaced else find(docs, "ClusterRole")
    assert roles and all(rules_of(r)["/secrets"] == {"get"} for r in roles)
    assert env_of(docs)["FTJ_SECRET_CHECK"] == "api"


def test_namespaced_mode_grants_children_only_in_served_namespaces(helm: Helm):
    docs = helm.template("--set", "watchNamespaces={team-a,team-b}")
    assert sorted(r["metadata"]["namespace"] for r in watch_roles(docs)) == ["team-a", "team-b"]
    for cluster_role in find(docs, "ClusterRole"):
        rules = rules_of(cluster_role)
        for namespaced in ("batch/jobs", "/configmaps", "/services", "/pods", "/secrets", "/events"):
            assert namespaced not in rules, f"{namespaced} must not be granted cluster-wide"
