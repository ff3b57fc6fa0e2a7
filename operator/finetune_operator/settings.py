"""Operator settings from flags and environment (the chart sets the environment)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Literal

from finetune_api.planning.gpus import GpuProduct, parse_quantity

GpuCheck = Literal["fail", "warn", "off"]
SecretCheck = Literal["api", "pod"]
LicenceCheck = Literal["fail", "warn"]


@dataclass(frozen=True)
class OperatorSettings:
    trainer_image: str = "ghcr.io/finetune-operator/trainer:0.1.0"
    gpu_resource_name: str = "nvidia.com/gpu"
    gpu_toleration_key: str = "nvidia.com/gpu"
    # warn: a scale-from-zero GPU pool (Karpenter, cluster-autoscaler) has no GPU node until a pod asks.
    gpu_resource_check: GpuCheck = "warn"
    # api: a metadata-only GET before the run (needs `get secrets`); pod: no Secret access at all,
    # a missing Secret is read from the pod's CreateContainerConfigError instead.
    secret_check: SecretCheck = "api"
    namespaces: tuple[str, ...] = ()
    metrics_port: int = 8080
    health_port: int = 8081
    progress_interval_seconds: float = 15.0
    # Progress is scraped every progress interval but written to status at most this often, except
    # what someone acts on (a condition flip, the first progress, a new stage or evaluation result):
    # at 15 s / 60 s a training fleet costs the API server 4x fewer status writes (docs/benchmarks.md).
    progress_write_interval_seconds: float = 60.0
    scrape_timeout_seconds: float = 3.0
    api_connect_timeout_seconds: float = 5.0
    resync_interval_seconds: float = 60.0
    api_read_timeout_seconds: float = 30.0
    scrape_concurrency: int = 8
    dev_metrics_endpoints: bool = False
    history_limit: int = 5
    max_workers: int = 32
    # Objects per page of kopf's initial LIST of FineTuneJobs and Jobs (0: all at once). Over 2,000 of
    # each, a restart peaked at 291-295 MiB listing them at once, 165-245 MiB in pages of 50-200.
    # Also the page size of the resync's LIST of a namespace's Jobs (job_relist.py).
    list_chunk_size: int = 100
    scrape_pod_ips: bool = True
    # Leader election (leader.py): the Lease's name and namespace; no name runs without election.
    leader_election_lease: str | None = None
    leader_election_namespace: str | None = None
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    trainer_env: dict[str, str] = field(default_factory=dict)
    # Requested per pod that downloads a model or data without a model cache ("" requests nothing).
    download_ephemeral_storage: str = "20Gi"
    allowed_licences: tuple[str, ...] = ()
    unknown_licence: LicenceCheck = "warn"
    default_gpu_product: str | None = None
    gpu_prices: dict[str, float] = field(default_factory=dict)
    gpu_products: dict[str, GpuProduct] = field(default_factory=dict)

    @property
    def api_timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds for every synchronous API call."""
        return (self.api_connect_timeout_seconds, self.api_read_timeout_seconds)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        e = dict(os.environ if env is None else env)
        base = cls()
        check = e.get("FTJ_GPU_RESOURCE_CHECK", base.gpu_resource_check)
        if check not in ("fail", "warn", "off"):
            raise ValueError(f"FTJ_GPU_RESOURCE_CHECK must be fail, warn or off, not {check!r}")
        secret_check = e.get("FTJ_SECRET_CHECK", base.secret_check)
        if secret_check not in ("api", "pod"):
            raise ValueError(f"FTJ_SECRET_CHECK must be api or pod, not {secret_check!r}")
        extra = {
            k.removeprefix("FTJ_TRAINER_ENV_"): v for k, v in e.items() if k.startswith("FTJ_TRAINER_ENV_")
        }
        return cls(
            trainer_image=e.get("FTJ_TRAINER_IMAGE", base.trainer_image),
            gpu_resource_name=e.get("FTJ_GPU_RESOURCE_NAME", base.gpu_resource_name),
            gpu_toleration_key=e.get("FTJ_GPU_TOLERATION_KEY", base.gpu_toleration_key),
            gpu_resource_check=check,  # type: ignore[arg-type]
            secret_check=secret_check,  # type: ignore[arg-type]
            namespaces=tuple(n for n in e.get("FTJ_NAMESPACES", "").replace(",", " ").split() if n),
            metrics_port=int(e.get("FTJ_METRICS_PORT", base.metrics_port)),
            health_port=int(e.get("FTJ_HEALTH_PORT", base.health_port)),
            progress_interval_seconds=float(e.get("FTJ_PROGRESS_INTERVAL", base.progress_interval_seconds)),
            progress_write_interval_seconds=_seconds(
                "FTJ_PROGRESS_WRITE_INTERVAL",
                e.get("FTJ_PROGRESS_WRITE_INTERVAL", str(base.progress_write_interval_seconds)),
            ),
            scrape_timeout_seconds=float(e.get("FTJ_SCRAPE_TIMEOUT", base.scrape_timeout_seconds)),
            scrape_concurrency=int(e.get("FTJ_SCRAPE_CONCURRENCY", base.scrape_concurrency)),
            dev_metrics_endpoints=_flag("FTJ_DEV_METRICS_ENDPOINTS", e),
            history_limit=int(e.get("FTJ_HISTORY_LIMIT", base.history_limit)),
            resync_interval_seconds=float(e.get("FTJ_RESYNC_INTERVAL", base.resync_interval_seconds)),
            api_connect_timeout_seconds=float(
                e.get("FTJ_API_CONNECT_TIMEOUT", base.api_connect_timeout_seconds)
            ),
            api_read_timeout_seconds=float(e.get("FTJ_API_READ_TIMEOUT", base.api_read_timeout_seconds)),
            max_workers=int(e.get("FTJ_MAX_WORKERS", base.max_workers)),
            list_chunk_size=int(e.get("FTJ_LIST_CHUNK_SIZE", base.list_chunk_size)),
            scrape_pod_ips=_scrape_pod_ips(e.get("FTJ_SCRAPE_POD_IPS", "auto"), e),
            leader_election_lease=e.get("FTJ_LEADER_ELECTION_LEASE") or None,
            leader_election_namespace=e.get("FTJ_LEADER_ELECTION_NAMESPACE") or None,
            lease_duration_seconds=float(e.get("FTJ_LEASE_DURATION", base.lease_duration_seconds)),
            renew_deadline_seconds=float(e.get("FTJ_RENEW_DEADLINE", base.renew_deadline_seconds)),
            retry_period_seconds=float(e.get("FTJ_RETRY_PERIOD", base.retry_period_seconds)),
            trainer_env=extra,
            download_ephemeral_storage=e.get(
                "FTJ_DOWNLOAD_EPHEMERAL_STORAGE", base.download_ephemeral_storage
            ),
            allowed_licences=tuple(
                n.lower() for n in e.get("FTJ_ALLOWED_LICENCES", "").replace(",", " ").split() if n
            ),
            unknown_licence=_choice(
                "FTJ_UNKNOWN_LICENCE", e.get("FTJ_UNKNOWN_LICENCE", "warn"), ("fail", "warn")
            ),  # type: ignore[arg-type]
            default_gpu_product=e.get("FTJ_GPU_PRODUCT") or None,
            gpu_prices=_prices(e.get("FTJ_GPU_PRICES", "")),
            gpu_products=_products(e.get("FTJ_GPU_PRODUCTS", "")),
        )


def _scrape_pod_ips(value: str, env: dict[str, str]) -> bool:
    """auto: only inside a cluster, where pod IPs are routable."""
    if value == "auto":
        return bool(env.get("KUBERNETES_SERVICE_HOST"))
    if value not in ("true", "false"):
        raise ValueError(f"FTJ_SCRAPE_POD_IPS must be auto, true or false, not {value!r}")
    return value == "true"


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{name} must be a number of seconds (0 or more), not {value!r}")
    return seconds


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _prices(text: str) -> dict[str, float]:
    """``{"NVIDIA-H100-80GB-HBM3": 4.5, ...}``: price of one GPU-hour by product (chart value)."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"FTJ_GPU_PRICES must be a JSON object of product to price: {exc}") from exc
    if not isinstance(raw, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in raw.values()
    ):
        raise ValueError("FTJ_GPU_PRICES must map GPU products to non-negative numbers")
    return {str(k): float(v) for k, v in raw.items()}


def _products(text: str) -> dict[str, GpuProduct]:
    """``{"NVIDIA-B200": {"memory": "180Gi", "bf16Tflops": 2250}}``: products for the plan (chart value)."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"FTJ_GPU_PRODUCTS must be a JSON object of product to its figures: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError("FTJ_GPU_PRODUCTS must be a JSON object of product to its figures")
    out: dict[str, GpuProduct] = {}
    for name, figures in raw.items():
        try:
            memory = parse_quantity(str(figures["memory"]))
            tflops = float(figures["bf16Tflops"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(
                f"FTJ_GPU_PRODUCTS[{name!r}] needs memory (a quantity such as 80Gi) and bf16Tflops: {exc}"
            ) from exc
        if not (memory > 0 and math.isfinite(tflops) and tflops > 0):
            raise ValueError(f"FTJ_GPU_PRODUCTS[{name!r}]: memory and bf16Tflops must be positive")
        out[str(name)] = GpuProduct(str(name), memory, tflops)
    return out


def _flag(name: str, env: dict[str, str]) -> bool:
    value = env.get(name, "false")
    if value not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value == "true"
