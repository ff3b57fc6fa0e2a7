"""The local control plane behaves like a real cluster where the operator depends on it.

Each test exercises a real component (scheduler, Job controller, garbage collector, CEL admission,
RBAC, kwok's pod stages) so that a regression in hack/localcluster.py or hack/kwok/ shows up here,
not as a mysterious operator test failure.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from kubernetes import client

from helpers import wait_for

pytestmark = pytest.mark.e2e

GPU_NODES = {"gpu-node-0", "gpu-node-1"}
GPU_TOLERATION = client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
EXIT_CODE = "finetuning.io/test-exit-code"
TERMINATION_MESSAGE = "finetuning.io/test-termination-message"
TEST_DELAY = "finetuning.io/test-delay"


def _pod(
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    gpus: int = 0,
    tolerations: list[client.V1Toleration] | None = None,
    node_selector: dict[str, str] | None = None,
) -> client.V1Pod:
    resources = client.V1ResourceRequirements(
        requests={"cpu": "100m", **({"nvidia.com/gpu": str(gpus)} if gpus else {})},
        limits={"nvidia.com/gpu": str(gpus)} if gpus else None,
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations),
        spec=client.V1PodSpec(
            restart_policy="Never",
            automount_service_account_token=False,
            tolerations=tolerations,
            node_selector=node_selector,
            containers=[client.V1Container(name="main", image="busybox:1.37", resources=resources)],
        ),
    )


def _phase(core: client.CoreV1Api, ns: str, name: str) -> str:
    return str(core.read_namespaced_pod(name, ns).status.phase)


def test_fake_nodes_advertise_gpus_labels_and_taints(kubectl: Any) -> None:
    nodes = {
        n["metadata"]["name"]: n for n in json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    }
    assert GPU_NODES | {"cpu-node-0", "dev-node-0"} <= set(nodes)
    for name in GPU_NODES:
        node = nodes[name]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert "nvidia.com/gpu" not in nodes["cpu-node-0"]["status"]["allocatable"]
    assert nodes["dev-node-0"]["metadata"]["labels"]["finetuning.io/dev-runtime"] == "true"


def test_gpu_job_lands_on_a_gpu_node_and_completes(kube_api: Any, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="train"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations={EXIT_CODE: "0"}),
                spec=_pod("unused", gpus=1, tolerations=[GPU_TOLERATION]).spec,
            ),
        ),
    )
    batch.create_namespaced_job(namespace, job)

    def complete() -> bool:
        conds = batch.read_namespaced_job_status("train", namespace).status.conditions or []
        return any(c.type == "Complete" and c.status == "True" for c in conds)

    wait_for(complete, timeout=60, what="Job train to complete")
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=train").items
    assert pods, "the Job controller created no pod"
    assert {p.spec.node_name for p in pods} <= GPU_NODES
    assert all(p.status.phase == "Succeeded" for p in pods)


def test_pod_without_gpu_toleration_never_lands_on_a_gpu_node(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, _pod("wants-gpu", gpus=1))
    plain = [f"plain-{i}" for i in range(4)]
    for name in plain:
        core.create_namespaced_pod(namespace, _pod(name))

    def unschedulable() -> bool:
        conds = core.read_namespaced_pod("wants-gpu", namespace).status.conditions or []
        return any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable" for c in conds
        )

    wait_for(unschedulable, timeout=30, what="the GPU pod without toleration to be reported Unschedulable")
    assert core.read_namespaced_pod("wants-gpu", namespace).spec.node_name is None
    for name in plain:
        wait_for(lambda n=name: _phase(core, namespace, n) == "Running", timeout=30, what=f"{name} Running")
        assert core.read_namespaced_pod(name, namespace).spec.node_name not in GPU_NODES


def test_deleting_an_owner_deletes_its_dependents(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[ref]))
    )
    child_pod = _pod("child-pod")
    child_pod.metadata.owner_references = [ref]
    core.create_namespaced_pod(namespace, child_pod)
    core.delete_namespaced_config_map("owner", namespace)

    def gone(read: Any, name: str) -> bool:
        try:
            read(name, namespace)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(lambda: gone(core.read_namespaced_config_map, "child"), timeout=30, what="child ConfigMap GC")
    wait_for(lambda: gone(core.read_namespaced_pod, "child-pod"), timeout=30, what="child Pod GC")


def test_crd_cel_rule_refuses_a_bad_object_with_its_message(kube_api: Any) -> None:
    ext, custom = client.ApiextensionsV1Api(kube_api), client.CustomObjectsApi(kube_api)
    suffix = uuid.uuid4().hex[:6]
    group, singular, plural = "e2e.finetuning.io", f"widget{suffix}", f"widget{suffix}s"
    message = "spec.minReplicas must not exceed spec.maxReplicas"
    spec_schema = {
        "type": "object",
        "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}},
        "x-kubernetes-validations": [{"rule": "self.minReplicas <= self.maxReplicas", "message": message}],
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Cluster",
            "names": {"plural": plural, "singular": singular, "kind": f"Widget{suffix.upper()}"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}}},
                }
            ],
        },
    }
    kind = f"Widget{suffix.upper()}"
    ext.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            conds = ext.read_custom_resource_definition(f"{plural}.{group}").status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conds)

        wait_for(established, timeout=30, what="the CRD to be Established")

        def obj(name: str, lo: int, hi: int) -> dict[str, Any]:
            return {
                "apiVersion": f"{group}/v1",
                "kind": kind,
                "metadata": {"name": name},
                "spec": {"minReplicas": lo, "maxReplicas": hi},
            }

        # The first create may race the new endpoint's registration; retry only until it is served.
        wait_for(
            lambda: custom.create_cluster_custom_object(group, "v1", plural, obj("good", 1, 2)),
            timeout=30,
            what="a valid custom object to be accepted",
        )
        with pytest.raises(client.ApiException) as err:
            custom.create_cluster_custom_object(group, "v1", plural, obj("bad", 3, 2))
        assert err.value.status == 422
        assert message in err.value.body
    finally:
        ext.delete_custom_resource_definition(f"{plural}.{group}")


def test_serviceaccount_without_permissions_is_denied(kube_api: Any, namespace: str, cluster: Any) -> None:
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    # A legacy token Secret is filled in by kube-controller-manager's serviceaccount-token
    # controller, so this also proves that controller and its signing key work.
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(
                name="nobody-token", annotations={"kubernetes.io/service-account.name": "nobody"}
            ),
            type="kubernetes.io/service-account-token",
        ),
    )
    data = wait_for(
        lambda: (core.read_namespaced_secret("nobody-token", namespace).data or {}).get("token"),
        timeout=30,
        what="the token controller to fill in the ServiceAccount token",
    )
    config = client.Configuration()
    config.host = kube_api.configuration.host
    config.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    config.api_key = {"authorization": "Bearer " + base64.b64decode(data).decode()}
    with client.ApiClient(config) as as_nobody:
        pods = client.CoreV1Api(as_nobody)
        with pytest.raises(client.ApiException) as err:
            pods.list_namespaced_pod(namespace)
        assert err.value.status == 403
        assert f"system:serviceaccount:{namespace}:nobody" in err.value.body

        # Granting the permission makes the same call pass: the denial came from RBAC.
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="pod-reader"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="pod-reader"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)],
            ),
        )
        wait_for(lambda: pods.list_namespaced_pod(namespace) is not None, timeout=15, what="RBAC grant")


def test_termination_message_from_test_annotation_is_in_pod_status(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    summary = '{"version": 1, "phase": "Failed", "reason": "InvalidData", "message": "line 3: bad JSON"}'
    core.create_namespaced_pod(
        namespace, _pod("fails", annotations={EXIT_CODE: "3", TERMINATION_MESSAGE: summary, TEST_DELAY: "1s"})
    )
    core.create_namespaced_pod(namespace, _pod("succeeds", annotations={EXIT_CODE: "0"}))
    core.create_namespaced_pod(namespace, _pod("keeps-running"))

    wait_for(lambda: _phase(core, namespace, "fails") == "Running", timeout=30, what="fails to run first")
    wait_for(lambda: _phase(core, namespace, "fails") == "Failed", timeout=30, what="fails to fail")
    terminated = core.read_namespaced_pod("fails", namespace).status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.message == summary
    assert terminated.reason == "Error"

    wait_for(lambda: _phase(core, namespace, "succeeds") == "Succeeded", timeout=30, what="succeeds")
    ok = core.read_namespaced_pod("succeeds", namespace).status.container_statuses[0].state.terminated
    assert (ok.exit_code, ok.reason) == (0, "Completed")
    # Started together with the others and long since Running: no annotation, no exit.
    assert _phase(core, namespace, "keeps-running") == "Running"


def test_kwok_leaves_dev_node_pods_to_the_local_runner(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    dev = _pod(
        "on-dev",
        annotations={EXIT_CODE: "0"},
        node_selector={"finetuning.io/dev-runtime": "true"},
        tolerations=[client.V1Toleration(key="finetuning.io/dev-runtime", operator="Exists")],
    )
    core.create_namespaced_pod(namespace, dev)
    wait_for(
        lambda: core.read_namespaced_pod("on-dev", namespace).spec.node_name == "dev-node-0",
        timeout=30,
        what="the dev pod to be bound to dev-node-0",
    )
    # A pod bound after it reaches Running through kwok; by then kwok has seen the dev pod too.
    core.create_namespaced_pod(namespace, _pod("sentinel"))
    wait_for(lambda: _phase(core, namespace, "sentinel") == "Running", timeout=30, what="sentinel Running")
    status = core.read_namespaced_pod("on-dev", namespace).status
    assert status.phase == "Pending"
    assert status.pod_ip is None
    # No kubelet and no kwok stage finalizes it: force-delete so the namespace can go.
    core.delete_namespaced_pod("on-dev", namespace, grace_period_seconds=0)
