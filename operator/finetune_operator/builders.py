"""Pure builders: a FineTuneJob in, plain manifest dicts out. No API calls, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune_api import wellknown
from finetune_api.exitcodes import NON_RETRIABLE_EXIT_CODES
from finetune_api.launch import launch_command
from finetune_api.spec import FineTuneJobSpec, JobRef, TrainerConfig
from finetune_api.specbase import rules_already_checked
from finetune_operator import constants as c
from finetune_operator import pod_config
from finetune_operator.naming import label_value, run_name
from finetune_operator.pod_paths import resolve
from finetune_operator.pod_storage import storage_parts
from finetune_operator.settings import OperatorSettings


@dataclass(frozen=True)
class Owner:
    """The FineTuneJob that owns a run's children."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""))

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def labels(owner: Owner, run: int) -> dict[str, str]:
    return {
        c.LABEL_NAME: "finetune-trainer",
        c.LABEL_INSTANCE: label_value(owner.name),
        c.LABEL_COMPONENT: "trainer",
        c.LABEL_MANAGED_BY: c.OPERATOR_NAME,
        c.LABEL_JOB: label_value(owner.name),
        c.LABEL_RUN: str(run),
    }


def _metadata(owner: Owner, run: int, name: str, spec_hash: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, run),
        "annotations": {c.ANNOTATION_SPEC_HASH: spec_hash},
        "ownerReferences": [owner.reference()],
    }


def trainer_config(
    owner: Owner, spec: FineTuneJobSpec, run: int, allowed_licences: tuple[str, ...] = ()
) -> TrainerConfig:
    return TrainerConfig(
        job=JobRef(name=owner.name, namespace=owner.namespace, uid=owner.uid, run=run),
        spec=spec.training(),
        paths=resolve(spec).paths,
        metrics_port=wellknown.METRICS_PORT,
        allowed_licences=list(allowed_licences),
    )


def build_service(owner: Owner, run: int, spec_hash: str) -> dict[str, Any]:
    """Headless Service giving each indexed pod a stable DNS name for the torchrun rendezvous."""
    name = run_name(owner.name, run)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, run, name, spec_hash),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {c.LABEL_JOB_NAME: name},
            "ports": [
                {
                    "name": "rendezvous",
                    "port": wellknown.RENDEZVOUS_PORT,
                    "targetPort": wellknown.RENDEZVOUS_PORT,
                }
            ],
        },
    }


def needs_service(spec: FineTuneJobSpec) -> bool:
    return spec.distributed_or_default().nodes > 1


def trainer_command(spec: FineTuneJobSpec, job_name: str) -> list[str]:
    """The trainer's command: ``finetune_trainer.launch``, which passes the trainer's exit code on."""
    dist = spec.distributed_or_default()
    return launch_command(
        nodes=dist.nodes,
        procs_per_node=max(dist.gpus_per_node, 1),
        rdzv_host=f"{job_name}-0.{job_name}",
        rdzv_port=wellknown.RENDEZVOUS_PORT,
        config=wellknown.CONFIG_PATH,
    )


def _env(spec: FineTuneJobSpec, owner: Owner, run: int, settings: OperatorSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "FTJ_JOB_NAME", "value": owner.name},
        {"name": "FTJ_RUN", "value": str(run)},
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": c.TRAINER_HF_HOME},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    env += [{"name": k, "value": v} for k, v in sorted(settings.trainer_env.items())]
    if spec.secrets.hub_token is not None:
        ref = spec.secrets.hub_token
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def _resources(spec: FineTuneJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    amounts: dict[str, str] = {}
    if spec.resources.cpu:
        amounts["cpu"] = spec.resources.cpu
    if spec.resources.memory:
        amounts["memory"] = spec.resources.memory
    gpus = spec.distributed_or_default().gpus_per_node
    if gpus > 0:
        amounts[gpu_resource(spec, settings)] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def gpu_resource(spec: FineTuneJobSpec, settings: OperatorSettings) -> str:
    return spec.resources.gpu_resource_name or settings.gpu_resource_name


def _tolerations(spec: FineTuneJobSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if spec.distributed_or_default().gpus_per_node > 0:
        out.append({"key": settings.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"})
    out += [t.wire() for t in spec.scheduling.tolerations or []]
    return out


def pod_failure_policy() -> dict[str, Any]:
    """Disruptions never count as failures; non-retriable trainer exits fail the Job at once.

    The first matching rule wins, so the disruption rule comes first: a preempted pod killed after
    its grace period exits 137 and must not be mistaken for an out-of-memory kill.
    """
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": c.CONTAINER_NAME,
                    "operator": "In",
                    "values": list(NON_RETRIABLE_EXIT_CODES),
                },
            },
        ]
    }


def build_job(
    owner: Owner, spec: FineTuneJobSpec, run: int, spec_hash: str, settings: OperatorSettings
) -> dict[str, Any]:
    """The run's Job, from a validated spec (its CEL rules are not evaluated again for the parts)."""
    with rules_already_checked():
        return _build_job(owner, spec, run, spec_hash, settings)


def _build_job(
    owner: Owner, spec: FineTuneJobSpec, run: int, spec_hash: str, settings: OperatorSettings
) -> dict[str, Any]:
    name = run_name(owner.name, run)
    dist = spec.distributed_or_default()
    resolved = resolve(spec)
    config = pod_config.encode(trainer_config(owner, spec, run, settings.allowed_licences))
    volumes: list[dict[str, Any]] = [
        pod_config.volume(),
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shared_memory}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        pod_config.mount(),
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if resolved.paths.output == c.OUTPUT_MOUNT:
        volumes.append({"name": "output", "emptyDir": {}})
        mounts.append({"name": "output", "mountPath": c.OUTPUT_MOUNT})
    seen: set[str] = set()
    for m in resolved.mounts:
        if m.volume["name"] not in seen:
            volumes.append(m.volume)
            seen.add(m.volume["name"])
        mount: dict[str, Any] = {"name": m.volume["name"], "mountPath": m.mount_path, "readOnly": m.read_only}
        if m.sub_path:
            mount["subPath"] = m.sub_path
        mounts.append(mount)

    container: dict[str, Any] = {
        "name": c.CONTAINER_NAME,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": "IfNotPresent",
        "command": trainer_command(spec, name),
        "env": _env(spec, owner, run, settings),
        "ports": [{"name": "metrics", "containerPort": wellknown.METRICS_PORT, "protocol": "TCP"}],
        "resources": _resources(spec, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": wellknown.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    storage = storage_parts(spec, settings)
    container["env"] += storage.env
    container["volumeMounts"] += storage.mounts
    volumes += storage.volumes
    if storage.env_from:
        container["envFrom"] = storage.env_from
    for kind, amounts in (("requests", storage.requests), ("limits", storage.limits)):
        if amounts:
            container["resources"][kind] = {**container["resources"].get(kind, {}), **amounts}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 120,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": c.TRAINER_UID,
            "runAsGroup": c.TRAINER_UID,
            "fsGroup": c.TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        **storage.pod,
    }
    tolerations = _tolerations(spec, settings)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    sched = spec.scheduling
    if sched.node_selector:
        pod_spec["nodeSelector"] = dict(sched.node_selector)
    if sched.affinity:
        pod_spec["affinity"] = sched.affinity.wire()
    if sched.priority_class_name:
        pod_spec["priorityClassName"] = sched.priority_class_name
    if dist.nodes > 1:
        pod_spec["subdomain"] = name

    meta = _metadata(owner, run, name, spec_hash)
    if sched.queue_name:
        meta["labels"][c.LABEL_KUEUE_QUEUE] = sched.queue_name
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "completions": dist.nodes,
        "parallelism": dist.nodes,
        "suspend": bool(spec.suspend or sched.queue_name),
        "podFailurePolicy": pod_failure_policy(),
        "template": {
            "metadata": {"labels": labels(owner, run), "annotations": {c.ANNOTATION_CONFIG: config}},
            "spec": pod_spec,
        },
    }
    if dist.nodes > 1:
        job_spec["completionMode"] = "Indexed"
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def build_children(
    owner: Owner, spec: FineTuneJobSpec, run: int, spec_hash: str, settings: OperatorSettings
) -> list[dict[str, Any]]:
    """Everything a run needs, in creation order: the Job last, so its pods find their Service. The
    trainer's config is not a child: it rides in the Job's pod template (``pod_config``).

    ``pod_config.ConfigTooLarge`` when the config does not fit in that annotation.
    """
    with rules_already_checked():
        job = build_job(owner, spec, run, spec_hash, settings)
        return [build_service(owner, run, spec_hash), job] if needs_service(spec) else [job]
