"""What following a run needs from its FineTuneJob's spec: whether it is suspended or queued, whether it
names Secrets, its GPUs and its preflight timeout.

Read from the parsed spec; or, when this version's models refuse the stored spec (a run an earlier
version started, under rules made stricter since), field by field, each value that does not fit read
as unset: the run in flight is still followed to its verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune_api.lenient import validate_dropping
from finetune_api.scheduling import SchedulingSpec, SecretsSpec
from finetune_api.spec import FineTuneJobSpec
from finetune_api.training import DistributedSpec
from finetune_operator.preflight_wait import DEFAULT_TIMEOUT_SECONDS, timeout_of


@dataclass(frozen=True)
class RunFacts:
    suspend: bool
    queued: bool  # a Kueue queue admits the Job
    names_secrets: bool  # spec.secrets names a hub token or a storage Secret
    gpus: int  # per run: GPUs per node x nodes
    preflight_timeout: int  # seconds a missing Secret is waited for

    @classmethod
    def of(cls, spec: FineTuneJobSpec) -> RunFacts:
        distributed = spec.distributed_or_default()
        return cls(
            suspend=spec.suspend,
            queued=bool(spec.scheduling.queue_name),
            names_secrets=bool(spec.secrets.hub_token or spec.secrets.storage),
            gpus=distributed.gpus_per_node * distributed.nodes,
            preflight_timeout=timeout_of(spec),
        )

    @classmethod
    def lenient(cls, raw: Any) -> RunFacts:
        """From a stored spec the models refuse as a whole: each part the facts come from on its own."""
        spec = raw if isinstance(raw, dict) else {}
        distributed, _ = validate_dropping(DistributedSpec, _mapping(spec.get("distributed")))
        scheduling, _ = validate_dropping(SchedulingSpec, _mapping(spec.get("scheduling")))
        secrets, _ = validate_dropping(SecretsSpec, _mapping(spec.get("secrets")))
        timeout = spec.get("preflightTimeoutSeconds")
        return cls(
            suspend=spec.get("suspend") is True,
            queued=bool(scheduling.queue_name),
            names_secrets=bool(secrets.hub_token or secrets.storage),
            gpus=distributed.gpus_per_node * distributed.nodes,
            preflight_timeout=timeout
            if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout >= 0
            else DEFAULT_TIMEOUT_SECONDS,
        )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
