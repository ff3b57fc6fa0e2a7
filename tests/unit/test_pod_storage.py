"""Storage pieces of the trainer pod: credentials by reference only, a token only with a
ServiceAccount, the model cache, and disk for downloads."""

from __future__ import annotations

import json

from finetune_operator import constants as c
from finetune_operator.builders import build_children, build_job
from finetune_operator.pod_storage import downloads


def pod_of(job):
    return job["spec"]["template"]["spec"]


def test_storage_secret_becomes_env_and_files_never_values(owner, settings, make_spec):
    spec = make_spec(
        dataset={"source": {"uri": "s3://data/train.jsonl"}},
        output={"source": {"uri": "gs://results/run"}},
        secrets={"storage": "cloud-creds", "hubToken": {"name": "hf", "key": "token"}},
    )
    children = build_children(owner, spec, 1, "h", settings)
    pod = pod_of(children[-1])
    trainer = pod["containers"][0]
    assert trainer["envFrom"] == [{"secretRef": {"name": "cloud-creds"}}]
    vol = next(v for v in pod["volumes"] if v["name"] == "storage-credentials")
    assert vol == {
        "name": "storage-credentials",
        "secret": {"secretName": "cloud-creds", "defaultMode": 0o440, "optional": True},
    }
    mount = next(m for m in trainer["volumeMounts"] if m["name"] == "storage-credentials")
    assert mount == {
        "name": "storage-credentials",
        "mountPath": c.STORAGE_CREDENTIALS_MOUNT,
        "readOnly": True,
    }
    assert {"name": "FTJ_STORAGE_CREDENTIALS_DIR", "value": c.STORAGE_CREDENTIALS_MOUNT} in trainer["env"]
    # Nothing but references: no env value, ConfigMap or annotation carries anything from a Secret.
    config = children[-1]["spec"]["template"]["metadata"]["annotations"][c.ANNOTATION_CONFIG]
    assert "cloud-creds" not in config and "HF_TOKEN" not in config
    assert all("value" not in e for e in trainer["env"] if e["name"] in ("HF_TOKEN",))
    assert json.loads(config)["paths"]["dataset"] == "s3://data/train.jsonl"


def test_service_account_token_only_with_service_account_name(owner, settings, make_spec):
    plain = pod_of(build_job(owner, make_spec(), 1, "h", settings))
    assert plain["automountServiceAccountToken"] is False and "serviceAccountName" not in plain
    wi = pod_of(build_job(owner, make_spec(serviceAccountName="trainer-irsa"), 1, "h", settings))
    assert wi["serviceAccountName"] == "trainer-irsa"
    assert wi["automountServiceAccountToken"] is True


def test_model_cache_pvc_replaces_the_download_disk_request(owner, settings, make_spec):
    spec = make_spec(model={"name": "org/base", "cache": {"claimName": "hf-cache"}})
    job = build_job(owner, spec, 1, "h", settings)
    pod, trainer = pod_of(job), pod_of(job)["containers"][0]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf-cache"}} in pod["volumes"]
    assert {"name": "model-cache", "mountPath": c.MODEL_CACHE_MOUNT} in trainer["volumeMounts"]
    assert {"name": "FTJ_STORAGE_CACHE", "value": c.MODEL_CACHE_MOUNT} in trainer["env"]
    assert "ephemeral-storage" not in trainer["resources"].get("requests", {})


def test_ephemeral_storage_explicit_or_default_when_downloading(owner, settings, make_spec):
    local = make_spec(
        model={"name": "base", "source": {"pvc": {"claimName": "models"}}},
        distributed={"gpusPerNode": 0},
    )
    assert not downloads(local)
    assert pod_of(build_job(owner, local, 1, "h", settings))["containers"][0]["resources"] == {}
    remote = make_spec(
        model={"name": "base", "source": {"uri": "s3://models/base"}}, distributed={"gpusPerNode": 0}
    )
    assert pod_of(build_job(owner, remote, 1, "h", settings))["containers"][0]["resources"] == {
        "requests": {"ephemeral-storage": "20Gi"}
    }
    sized = make_spec(resources={"ephemeralStorage": "200Gi"})
    res = pod_of(build_job(owner, sized, 1, "h", settings))["containers"][0]["resources"]
    assert res["requests"]["ephemeral-storage"] == res["limits"]["ephemeral-storage"] == "200Gi"
    assert res["limits"]["nvidia.com/gpu"] == "1"
