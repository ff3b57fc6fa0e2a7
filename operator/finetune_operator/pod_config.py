"""The trainer's config as a pod annotation, projected into the pod by the downward API.

A run used to carry its config in a ConfigMap of its own: one more API write per run, one more child
to create idempotently and to garbage-collect. The pod template's annotation costs no write beyond the
Job's, and a ``downwardAPI`` volume (allowed by Pod Security ``restricted``) puts it at the path the
trainer has always read. Annotations are limited to 256 KiB per object, so an oversized config is
refused with the field that makes it large, never truncated.
"""

from __future__ import annotations

import json
from typing import Any

from finetune_api import wellknown
from finetune_api.spec import TrainerConfig
from finetune_operator import constants as c

VOLUME = "config"


class ConfigTooLarge(ValueError):
    """The trainer's config does not fit in a pod annotation."""

    def __init__(self, size: int, limit: int, field: str, field_size: int) -> None:
        super().__init__(
            f"The trainer's config is {_kib(size)} KiB as JSON, more than the {_kib(limit)} KiB a pod"
            f" annotation ({c.ANNOTATION_CONFIG}) may carry; Kubernetes allows 256 KiB of annotations per"
            f" pod. Its largest part is {field} ({_kib(field_size)} KiB): make it smaller (long prompt"
            " lists belong in a file, e.g. spec.evaluation.reviewPromptsSource)."
        )
        self.size, self.limit, self.field = size, limit, field


def encode(config: TrainerConfig, limit: int = c.CONFIG_ANNOTATION_MAX_BYTES) -> str:
    """Compact JSON for the annotation; ``ConfigTooLarge`` when key and value exceed ``limit`` bytes."""
    wire = config.wire()
    text = _compact(wire)
    size = len(c.ANNOTATION_CONFIG.encode()) + len(text.encode())
    if size > limit:
        field, field_size = largest_field(wire)
        raise ConfigTooLarge(size, limit, field, field_size)
    return text


def largest_field(wire: dict[str, Any]) -> tuple[str, int]:
    """The dotted path of the object that holds most of ``wire``'s bytes (down to a list or value)."""
    path: list[str] = []
    node: Any = wire
    size = len(_compact(wire).encode())
    while isinstance(node, dict) and node:
        key, child = max(node.items(), key=lambda kv: len(_compact(kv[1]).encode()))
        path.append(str(key))
        node, size = child, len(_compact(child).encode())
    return ".".join(path), size


def volume() -> dict[str, Any]:
    fieldref = {"fieldPath": f"metadata.annotations['{c.ANNOTATION_CONFIG}']"}
    return {"name": VOLUME, "downwardAPI": {"items": [{"path": wellknown.CONFIG_FILE, "fieldRef": fieldref}]}}


def mount() -> dict[str, Any]:
    return {"name": VOLUME, "mountPath": wellknown.CONFIG_DIR, "readOnly": True}


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _kib(n: int) -> str:
    return f"{n / 1024:.0f}"
