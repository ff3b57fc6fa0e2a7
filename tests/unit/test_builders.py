from __future__ import annotations

import json

import pytest

from finetune_api.exitcodes import ExitCode
from finetune_api.spec import TrainerConfig
from finetune_operator import constants as c
from finetune_operator.builders import build_children, build_job, trainer_command
from finetune_operator.pod_config import ConfigTooLarge


def container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


def test_single_gpu_lora_job_shape(owner, settings, make_spec):
    job = build_job(owner, make_spec(), 1, "h1", settings)
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == "support-classifier-r1"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "0000-1111"
    assert job["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH] == "h1"
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container(job)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container(job)["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container(job)["command"] == [
        "python",
        "-m",
        "finetune_trainer.launch",
        "--config",
        "/etc/finetune/config.json",
    ]
    assert "completionMode" not in job["spec"]
    assert job["spec"]["suspend"] is False
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


def test_pod_failure_policy_fails_fast_on_user_errors_and_ignores_disruption(owner, settings, make_spec):
    rules = build_job(owner, make_spec(), 1, "h", settings)["spec"]["podFailurePolicy"]["rules"]
    fail = next(r for r in rules if r["action"] == "FailJob")
    assert set(fail["onExitCodes"]["values"]) == {2, 3, 4, 5, 6, 7, 8, 9, 10, 137}
    assert ExitCode.RETRIABLE not in fail["onExitCodes"]["values"]
    ignore = next(r for r in rules if r["action"] == "Ignore")
    assert rules.index(ignore) < rules.index(fail), "a preempted pod exiting 137 must hit Ignore first"
    assert ignore["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]


def test_multi_node_is_indexed_with_headless_service(owner, settings, make_spec):
    spec = make_spec(method="full", distributed={"nodes": 3, "gpusPerNode": 8, "deepspeed": {"zeroStage": 3}})
    kinds = [m["kind"] for m in build_children(owner, spec, 2, "h", settings)]
    assert kinds == ["Service", "Job"]
    children = {m["kind"]: m for m in build_children(owner, spec, 2, "h", settings)}
    job, svc = children["Job"], children["Service"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["template"]["spec"]["subdomain"] == svc["metadata"]["name"] == "support-classifier-r2"
    assert svc["spec"]["clusterIP"] == "None"
    cmd = container(job)["command"]
    assert cmd[:3] == ["python", "-m", "finetune_trainer.launch"]
    assert "--nnodes=3" in cmd and "--nproc-per-node=8" in cmd
    assert "--master-addr=support-classifier-r2-0.support-classifier-r2" in cmd
    # Every pod runs the same command; the launcher takes its node rank from JOB_COMPLETION_INDEX.
    assert not any("JOB_COMPLETION_INDEX" in arg for arg in cmd)


def test_multi_gpu_single_node_runs_the_launcher(make_spec):
    cmd = trainer_command(make_spec(method="full", distributed={"gpusPerNode": 4}), "x-r1")
    assert cmd == [
        "python", "-m", "finetune_trainer.launch", "--nnodes=1", "--nproc-per-node=4",
        "--config", "/etc/finetune/config.json",
    ]  # fmt: skip


def test_kueue_queue_creates_suspended_job_with_label(owner, settings, make_spec):
    job = build_job(owner, make_spec(scheduling={"queueName": "team-a"}), 1, "h", settings)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][c.LABEL_KUEUE_QUEUE] == "team-a"


def test_user_suspend_creates_suspended_job(owner, settings, make_spec):
    assert build_job(owner, make_spec(suspend=True), 1, "h", settings)["spec"]["suspend"] is True


def test_scheduling_and_limits_copied(owner, settings, make_spec):
    spec = make_spec(
        scheduling={
            "priorityClassName": "high",
            "nodeSelector": {"pool": "a100"},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {}},
        },
        resources={"cpu": "8", "memory": "64Gi", "gpuResourceName": "amd.com/gpu"},
        backoffLimit=1,
        activeDeadlineSeconds=3600,
        ttlSecondsAfterFinished=60,
    )
    job = build_job(owner, spec, 1, "h", settings)
    pod = job["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "high"
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert {"key": "spot", "operator": "Exists"} in pod["tolerations"]
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert container(job)["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "amd.com/gpu": "1"}
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (1, 3600)
    assert job["spec"]["ttlSecondsAfterFinished"] == 60


def test_cpu_only_run_requests_no_gpu_and_no_toleration(owner, settings, make_spec):
    job = build_job(owner, make_spec(distributed={"gpusPerNode": 0}), 1, "h", settings)
    assert "tolerations" not in job["spec"]["template"]["spec"]
    assert container(job)["resources"] == {"requests": {"ephemeral-storage": "20Gi"}}  # the Hub download


def test_secrets_by_reference_only(owner, settings, make_spec):
    spec = make_spec(secrets={"hubToken": {"name": "hf", "key": "token"}, "storage": "s3-creds"})
    c0 = container(build_job(owner, spec, 1, "h", settings))
    hf = next(e for e in c0["env"] if e["name"] == "HF_TOKEN")
    assert hf == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert c0["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_pvc_sources_share_one_volume_and_output_is_writable(owner, settings, make_spec):
    spec = make_spec(
        model={"name": "llama", "source": {"pvc": {"claimName": "models", "path": "llama-3-8b"}}},
        dataset={"source": {"pvc": {"claimName": "models", "path": "data/train.jsonl"}}},
        output={"source": {"pvc": {"claimName": "results", "path": "runs/a"}}},
    )
    job = build_job(owner, spec, 1, "h", settings)
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["pvc-models"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert vols["pvc-results"]["persistentVolumeClaim"]["readOnly"] is False
    cfg = config_of(job)
    assert cfg.paths.model == "/mnt/pvc/models/llama-3-8b"
    assert cfg.paths.dataset == "/mnt/pvc/models/data/train.jsonl"
    assert cfg.paths.output == "/mnt/pvc/results/runs/a"


def test_configmap_dataset_is_mounted_by_key(owner, settings, make_spec):
    spec = make_spec(dataset={"source": {"configMap": {"name": "tiny-data", "key": "train.jsonl"}}})
    job = build_job(owner, spec, 1, "h", settings)
    mount = next(m for m in container(job)["volumeMounts"] if m.get("subPath") == "train.jsonl")
    assert mount["mountPath"] == "/data/train/train.jsonl"


def config_of(job) -> TrainerConfig:
    """The trainer's config as the pod's downward API volume would hand it over."""
    return TrainerConfig.model_validate(
        json.loads(job["spec"]["template"]["metadata"]["annotations"][CONFIG])
    )


CONFIG = "finetuning.io/config"


def test_the_pod_carries_a_trainer_config_the_trainer_can_read(owner, settings, make_spec):
    spec = make_spec(method="qlora", hyperparameters={"epochs": 1, "learningRate": 1e-4})
    job = build_job(owner, spec, 4, "h", settings)
    text = job["spec"]["template"]["metadata"]["annotations"][CONFIG]
    assert "\n" not in text and ", " not in text, "compact JSON: every byte counts against 256 KiB"
    cfg = config_of(job)
    assert cfg.job.run == 4 and cfg.job.name == "support-classifier" and cfg.job.uid == "0000-1111"
    assert cfg.spec.method == "qlora" and cfg.spec.learning_rate() == 1e-4
    assert cfg.spec == spec.training()
    assert cfg.paths.dataset == "/data/train.jsonl"
    assert cfg.paths.output == "/output"
    assert cfg.allowed_licences == list(settings.allowed_licences)


def test_the_config_is_projected_by_the_downward_api_at_the_path_the_trainer_reads(
    owner, settings, make_spec
):
    job = build_job(owner, make_spec(), 1, "h", settings)
    pod = job["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume == {
        "name": "config",
        "downwardAPI": {
            "items": [{"path": "config.json", "fieldRef": {"fieldPath": f"metadata.annotations['{CONFIG}']"}}]
        },
    }
    [mount] = [m for m in container(job)["volumeMounts"] if m["name"] == "config"]
    assert mount == {"name": "config", "mountPath": "/etc/finetune", "readOnly": True}
    assert container(job)["command"][-2:] == ["--config", "/etc/finetune/config.json"]
    assert not any("configMap" in v for v in pod["volumes"]), "no ConfigMap of the operator's own"


def test_a_run_is_one_job_and_no_configmap(owner, settings, make_spec):
    assert [m["kind"] for m in build_children(owner, make_spec(), 1, "h", settings)] == ["Job"]


def test_a_config_too_large_for_an_annotation_is_refused_naming_the_field(owner, settings, make_spec):
    prompts = ["p" * 4000] * 60  # the CRD allows 200 prompts of 4,000 characters: 800 kB
    with pytest.raises(ConfigTooLarge) as refused:
        build_job(owner, make_spec(evaluation={"reviewPrompts": prompts}), 1, "h", settings)
    message = str(refused.value)
    assert "spec.evaluation.reviewPrompts" in message, message
    assert "200 KiB" in message and "finetuning.io/config" in message, message
    assert refused.value.size > 200 * 1024
    job = build_job(owner, make_spec(evaluation={"reviewPrompts": prompts[:45]}), 1, "h", settings)
    assert len(config_of(job).spec.evaluation.review_prompts or []) == 45, "not truncated below the bound"


def test_long_names_stay_within_63_characters(settings, make_spec):
    from finetune_operator.builders import Owner

    long = Owner(name="a" * 250, namespace="ml", uid="u")
    for child in build_children(long, make_spec(distributed={"nodes": 1}), 12, "h", settings):
        assert len(child["metadata"]["name"]) <= 63
        assert child["metadata"]["name"].endswith("-r12")
        assert all(len(v) <= 63 for v in child["metadata"]["labels"].values())


def test_building_a_job_does_not_evaluate_the_specs_cel_rules_again(owner, settings, make_spec, monkeypatch):
    """The spec's CEL rules ran when it was validated; the models a Job is built from are parts of it.
    Evaluating them again (pure-Python CEL) took 3/4 of the operator's CPU per new FineTuneJob."""
    from finetune_api import specbase
    from finetune_api.spec import FineTuneJobSpec

    spec = make_spec()
    evaluated: list[str] = []
    program = specbase._cel_program

    def counting(rule: str):
        check = program(rule)
        return lambda obj: evaluated.append(rule) or check(obj)

    monkeypatch.setattr(specbase, "_cel_program", counting)
    build_children(owner, spec, 1, "h1", settings)
    assert evaluated == []
    # Outside the builders the rules still hold: a spec that breaks one is refused.
    wire = spec.wire()
    FineTuneJobSpec.model_validate(wire)
    assert evaluated, "validating a spec evaluates its rules"
    with pytest.raises(ValueError, match="qlora"):
        FineTuneJobSpec.model_validate({**wire, "method": "lora", "quantization": {"bits": 4}})
