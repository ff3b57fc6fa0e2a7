"""Pre-flight: what the schema cannot see (Secrets, PVCs, ConfigMaps, the GPU resource), checked
before a GPU is requested; a missing object that may still appear keeps the job Pending a while."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from finetune_api.conditions import Reason
from finetune_api.spec import FineTuneJobSpec
from finetune_api.status import FineTuneJobStatus
from finetune_operator.builders import gpu_resource
from finetune_operator.context import Context, write
from finetune_operator.preflight_wait import RecheckLater, hold_pending, timeout_of
from finetune_operator.transitions import Change

log = logging.getLogger("finetune_operator")


def preflight(ctx: Context, namespace: str, spec: FineTuneJobSpec) -> tuple[str, str] | None:
    """The first problem found, as (reason, message naming the field), or None."""
    refs = spec.secrets
    if ctx.settings.secret_check != "api":
        refs = refs.model_copy(update={"hub_token": None, "storage": None})  # read from the pods instead
    if refs.hub_token and not _secret_exists(ctx, namespace, refs.hub_token.name):
        return (
            Reason.SECRET_NOT_FOUND,
            f"Secret {refs.hub_token.name!r} (spec.secrets.hubToken) does not exist.",
        )
    if refs.storage and not _secret_exists(ctx, namespace, refs.storage):
        return Reason.SECRET_NOT_FOUND, f"Secret {refs.storage!r} (spec.secrets.storage) does not exist."
    sources = {
        "spec.model.source": spec.model.source,
        "spec.dataset.source": spec.dataset.source,
        "spec.dataset.splits.validationSource": spec.dataset.splits.validation_source,
        "spec.dataset.splits.testSource": spec.dataset.splits.test_source,
        "spec.output.source": spec.output.source,
        "spec.evaluation.reviewPromptsSource": spec.evaluation.review_prompts_source,
        "spec.evaluation.regressionSet.source": (
            spec.evaluation.regression_set.source if spec.evaluation.regression_set else None
        ),
    }
    for where, src in sources.items():
        if src is None:
            continue
        if src.pvc and not ctx.kube.pvc_exists(namespace, src.pvc.claim_name):
            return (
                Reason.PVC_NOT_FOUND,
                f"PersistentVolumeClaim {src.pvc.claim_name!r} ({where}.pvc) does not exist.",
            )
        if src.config_map and not ctx.kube.configmap_exists(namespace, src.config_map.name):
            return (
                Reason.CONFIGMAP_NOT_FOUND,
                f"ConfigMap {src.config_map.name!r} ({where}.configMap) does not exist.",
            )
    return _gpu_problem(ctx, spec)


def _gpu_problem(ctx: Context, spec: FineTuneJobSpec) -> tuple[str, str] | None:
    check = ctx.settings.gpu_resource_check
    if spec.distributed_or_default().gpus_per_node <= 0 or check == "off":
        return None
    resource = gpu_resource(spec, ctx.settings)
    try:
        known = ctx.kube.cluster_has_resource(resource)
    except ApiException as exc:
        if exc.status != 403:
            raise
        log.warning("cannot list nodes (403): GPU resource %r not checked", resource)
        known = True
    if known:
        return None
    message = f"No node advertises the GPU resource {resource!r} (spec.resources.gpuResourceName)."
    if check == "fail":
        return Reason.UNKNOWN_GPU_RESOURCE, message
    log.warning(message)
    return None


def _secret_exists(ctx: Context, namespace: str, name: str) -> bool:
    """The early check; without `get secrets` (403) the pods' status tells instead, a little later."""
    try:
        return ctx.kube.secret_exists(namespace, name)
    except ApiException as exc:
        if exc.status != 403:
            raise
        log.warning("cannot get secrets (403): Secret %r is checked from the pods' status instead", name)
        return True


def wait_for_preflight(
    ctx: Context, body: dict[str, Any], spec: FineTuneJobSpec, problem: tuple[str, str], token: str
) -> tuple[str, str]:
    """Keep the job Pending while a missing object may still appear (raises RecheckLater); the
    problem, naming how long it waited, once the wait is over."""
    timeout = timeout_of(spec)
    key = f"{body['metadata'].get('generation')}:{token}"
    waited: list[float] = []

    def hold(fresh: dict[str, Any], st: FineTuneJobStatus) -> Change:
        changed, seconds = hold_pending(
            st, key, problem, timeout, datetime.now(UTC), fresh["metadata"].get("generation")
        )
        waited[:] = [seconds]
        return Change(changed)

    if timeout > 0:
        write(ctx, body, hold)
        if (waited[0] if waited else timeout) < timeout:
            raise RecheckLater(problem[1])
    return problem[0], f"{problem[1]} Waited {timeout} s (spec.preflightTimeoutSeconds)."
