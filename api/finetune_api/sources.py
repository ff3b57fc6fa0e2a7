"""Where files come from or go to: a URI, a PersistentVolumeClaim, a ConfigMap; Secret references."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from finetune_api.specbase import CONFIG_KEY, CONFIG_KEY_RULE, DNS_SUBDOMAIN, Model, cel


class SecretKeyRef(Model):
    """A key in a Secret in the job's namespace; the value never appears in spec or status."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(CONFIG_KEY_RULE, "a Secret key must not be '.' or start with '..'", ".key")
            ]
        }
    )

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the Secret (a DNS subdomain).",
    )
    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY, description="Key inside the Secret.")


class PvcSource(Model):
    claim_name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="PersistentVolumeClaim name."
    )
    path: str = Field(default="", max_length=1024, description="Path inside the volume (file or directory).")
    read_only: bool = Field(default=True, description="Mount the claim read-only.")


class ConfigMapSource(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(CONFIG_KEY_RULE, "a ConfigMap key must not be '.' or start with '..'", ".key")
            ]
        }
    )

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="ConfigMap name.")
    key: str = Field(
        min_length=1, max_length=253, pattern=CONFIG_KEY, description="Key of the ConfigMap holding the file."
    )


class Source(Model):
    """Where files come from or go to. Exactly one of uri, pvc or configMap."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.uri), has(self.pvc), has(self.configMap)].filter(x, x).size() == 1",
                    "exactly one of uri, pvc or configMap must be set",
                )
            ]
        }
    )

    uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^(file|s3|gs|az|hf)://.+",
        description=(
            "A URI: file:// (a path inside the pod or, for `ftj run`, on this machine), s3://bucket/key, "
            "gs://bucket/key, az://container/blob (fetched and uploaded by the trainer, verified) or "
            "hf://org/name[@revision][/path] (a Hub repository; hf://datasets/org/name/file for data)."
        ),
    )
    pvc: PvcSource | None = Field(default=None, description="A path on a PersistentVolumeClaim.")
    config_map: ConfigMapSource | None = Field(
        default=None, description="A small file held in a ConfigMap (datasets up to about 1 MiB)."
    )


class ModelCacheSpec(Model):
    claim_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="PersistentVolumeClaim (ReadWriteMany to share across nodes).",
    )
