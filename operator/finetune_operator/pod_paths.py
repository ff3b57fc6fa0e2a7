"""Where each input and output of a run lives inside the trainer pod, and the volumes that put it there.

Pure: a spec in, paths and volume mounts out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune_api.sources import Source
from finetune_api.spec import FineTuneJobSpec, Paths
from finetune_operator import constants as c
from finetune_operator.naming import volume_name


@dataclass(frozen=True)
class Mount:
    """A volume the trainer needs and where it appears in the container."""

    volume: dict[str, Any]
    mount_path: str
    sub_path: str | None = None
    read_only: bool = True


@dataclass(frozen=True)
class Resolved:
    """Where each input and output lives inside the pod."""

    paths: Paths
    mounts: tuple[Mount, ...]


def resolve_source(
    source: Source | None, fallback: str, mount_path: str, role: str
) -> tuple[str, list[Mount]]:
    """Path (or URI) the trainer reads for one input, and the volume that makes it visible."""
    if source is None:
        return fallback, []
    if source.uri is not None:
        uri = source.uri
        return (uri.removeprefix("file://") if uri.startswith("file://") else uri), []
    if source.pvc is not None:
        vol = {
            "name": volume_name("pvc", source.pvc.claim_name),
            "persistentVolumeClaim": {"claimName": source.pvc.claim_name, "readOnly": source.pvc.read_only},
        }
        root = f"/mnt/pvc/{source.pvc.claim_name}"
        path = f"{root}/{source.pvc.path.lstrip('/')}" if source.pvc.path else root
        return path, [Mount(vol, root, read_only=source.pvc.read_only)]
    assert source.config_map is not None
    cm = source.config_map
    vol = {"name": volume_name(f"cm-{role}", cm.name), "configMap": {"name": cm.name}}
    target = f"{mount_path}/{cm.key}"
    return target, [Mount(vol, target, sub_path=cm.key)]


def resolve(spec: FineTuneJobSpec) -> Resolved:
    mounts: list[Mount] = []
    model_path, m = resolve_source(spec.model.source, spec.model.name, c.MODEL_MOUNT, "model")
    mounts += m
    data_path, m = resolve_source(spec.dataset.source, "", f"{c.DATASET_MOUNT}/train", "train")
    mounts += m
    validation = test = None
    if spec.dataset.splits.validation_source is not None:
        validation, m = resolve_source(
            spec.dataset.splits.validation_source, "", f"{c.DATASET_MOUNT}/validation", "validation"
        )
        mounts += m
    if spec.dataset.splits.test_source is not None:
        test, m = resolve_source(spec.dataset.splits.test_source, "", f"{c.DATASET_MOUNT}/test", "test")
        mounts += m
    extra: dict[str, str | None] = {}
    for role, source in (
        ("review", spec.evaluation.review_prompts_source),
        ("regression", spec.evaluation.regression_set.source if spec.evaluation.regression_set else None),
    ):
        if source is not None:
            extra[role], m = resolve_source(source, "", f"{c.DATASET_MOUNT}/{role}", role)
            mounts += m
    out = spec.output.source
    if out is not None and out.pvc is not None:
        vol = {
            "name": volume_name("pvc", out.pvc.claim_name),
            "persistentVolumeClaim": {"claimName": out.pvc.claim_name},
        }
        root = f"/mnt/pvc/{out.pvc.claim_name}"
        output = f"{root}/{out.pvc.path.lstrip('/')}" if out.pvc.path else root
        mounts.append(Mount(vol, root, read_only=False))
    elif out is not None and out.uri is not None and out.uri.startswith("file://"):
        output = out.uri.removeprefix("file://")
    else:
        output = c.OUTPUT_MOUNT
    paths = Paths(
        model=model_path,
        dataset=data_path,
        validation=validation,
        test=test,
        review_prompts=extra.get("review"),
        regression=extra.get("regression"),
        output=output,
    )
    return Resolved(paths=paths, mounts=_merge_mounts(mounts))


def _merge_mounts(mounts: list[Mount]) -> tuple[Mount, ...]:
    """One volume per claim even when model, data and output share it (writable wins)."""
    by_path: dict[str, Mount] = {}
    for m in mounts:
        prev = by_path.get(m.mount_path)
        if prev is None or (prev.read_only and not m.read_only):
            vol = dict(m.volume)
            if "persistentVolumeClaim" in vol and not m.read_only:
                vol["persistentVolumeClaim"] = {**vol["persistentVolumeClaim"], "readOnly": False}
            by_path[m.mount_path] = Mount(vol, m.mount_path, m.sub_path, m.read_only)
    return tuple(by_path.values())
