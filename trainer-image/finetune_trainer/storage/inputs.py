"""Bring a run's remote inputs (model, training/validation/test files) into the local cache.

The trainer's ``paths`` name what the operator resolved: a local path (PVC, ConfigMap, file://), an
object-store URI, ``hf://...`` or, for a model without a source, its bare Hub id. ``stage_inputs``
returns the same paths with every remote one replaced by its verified local copy; the stages after
it only ever read local files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from finetune_api.spec import Paths
from finetune_api.training import TrainingSpec
from finetune_trainer.storage import hub, objects
from finetune_trainer.storage.errors import NOT_FOUND, StorageError
from finetune_trainer.storage.locations import (
    HUB_SCHEME,
    OBJECT_SCHEMES,
    LocationError,
    looks_like_hub_id,
    parse_hub,
    scheme_of,
)
from finetune_trainer.storage.settings import CACHE_ENV, cache_dir

log = logging.getLogger(__name__)

MODEL_FIELD_SOURCE = "spec.model.source.uri"
MODEL_FIELD_NAME = "spec.model.name"
DATA_FIELDS = {
    "dataset": "spec.dataset.source.uri",
    "validation": "spec.dataset.splits.validationSource.uri",
    "test": "spec.dataset.splits.testSource.uri",
    "review_prompts": "spec.evaluation.reviewPromptsSource.uri",
    "regression": "spec.evaluation.regressionSet.source.uri",
}


def _slot(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def hub_cache(cache: Path) -> Path | None:
    """The Hub cache inside the model-cache volume when the operator mounted one; else the library's."""
    return cache / "hub" if os.environ.get(CACHE_ENV) else None


def stage_model(spec: TrainingSpec, location: str, cache: Path) -> str:
    field = MODEL_FIELD_SOURCE if spec.model.source is not None else MODEL_FIELD_NAME
    scheme = scheme_of(location)
    if scheme in OBJECT_SCHEMES:
        return str(objects.download(location, cache / "models" / _slot(location), field))
    if scheme == HUB_SCHEME or (spec.model.source is None and looks_like_hub_id(location)):
        try:
            ref = parse_hub(location, spec.model.revision)
        except LocationError as exc:
            raise StorageError(NOT_FOUND, location, field, str(exc)) from exc
        return str(hub.fetch(ref, field, hub_cache(cache)))
    return location


def stage_file(location: str, field: str, cache: Path) -> str:
    scheme = scheme_of(location)
    if scheme in OBJECT_SCHEMES:
        local = objects.download(location, cache / "data" / _slot(location), field)
    elif scheme == HUB_SCHEME:
        try:
            ref = parse_hub(location)
        except LocationError as exc:
            raise StorageError(NOT_FOUND, location, field, str(exc)) from exc
        if not ref.path:
            raise StorageError(NOT_FOUND, location, field, "name a file inside the repository")
        local = hub.fetch(ref, field, hub_cache(cache))
    else:
        return location
    if not local.is_file():
        raise StorageError(NOT_FOUND, location, field, "this names a folder; the data must be one file")
    return str(local)


def stage_inputs(spec: TrainingSpec, paths: Paths, cache: Path | None = None) -> Paths:
    """``paths`` with every remote input replaced by its verified local copy (see the module doc)."""
    cache = cache or cache_dir()
    staged = stage_data(paths, cache).model_copy(update={"model": stage_model(spec, paths.model, cache)})
    if staged != paths:
        log.info("inputs staged under %s", cache)
    return staged


def stage_data(paths: Paths, cache: Path | None = None) -> Paths:
    """``paths`` with the remote training, validation and test files replaced by local copies."""
    cache = cache or cache_dir()
    update: dict[str, str | None] = {}
    for role, field in DATA_FIELDS.items():
        value = getattr(paths, role)
        update[role] = stage_file(value, field, cache) if value else value
    return paths.model_copy(update=update)
