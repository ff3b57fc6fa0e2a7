"""The operator's kopf settings (kopf_tuning.tune)."""

from __future__ import annotations

import logging

import kopf

from finetune_operator.kopf_tuning import IDLE_WORKER_SECONDS, NoDiffBase, tune
from finetune_operator.settings import OperatorSettings


def test_kopf_keeps_no_diff_base_and_no_per_event_success_lines() -> None:
    settings = kopf.OperatorSettings()
    kopf_objects = logging.getLogger("kopf.objects")
    level = kopf_objects.level
    try:
        tune(settings, OperatorSettings(trainer_image="t"), fixed_namespaces=True, verbose=False)
        assert isinstance(settings.persistence.diffbase_storage, NoDiffBase)
        job = kopf.Body({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{}]}}}})
        assert settings.persistence.diffbase_storage.build(body=job) == {}
        assert settings.persistence.diffbase_storage.fetch(body=job) is None
        assert not kopf_objects.isEnabledFor(logging.INFO)
        assert kopf_objects.isEnabledFor(logging.WARNING)
        assert settings.queueing.worker_limit is None
        assert settings.queueing.idle_timeout == IDLE_WORKER_SECONDS < 5.0
        assert settings.scanning.disabled
        assert settings.watching.chunk_size == 100, "the initial LIST in pages (memory at restart)"
    finally:
        kopf_objects.setLevel(level)


def test_verbose_keeps_kopfs_per_event_lines() -> None:
    kopf_objects = logging.getLogger("kopf.objects")
    level = kopf_objects.level
    try:
        kopf_objects.setLevel(logging.NOTSET)
        tune(
            kopf.OperatorSettings(), OperatorSettings(trainer_image="t"), fixed_namespaces=False, verbose=True
        )
        assert kopf_objects.level == logging.NOTSET
    finally:
        kopf_objects.setLevel(level)
