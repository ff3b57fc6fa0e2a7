"""The trainer's Prometheus endpoint: every name in ``contract.Metric.ALL``, nothing else.

The operator scrapes the rank-0 pod and mirrors these gauges into the FineTuneJob's status, so
the names come from the contract module and every one is served from the first scrape on (a
missing series would read as "no progress" to the operator). A private registry keeps the
process's default collectors out of the contract surface.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from finetune_api.metrics import Metric, Stage, metric_name

_HELP: dict[str, str] = {
    Metric.STEP: "Optimizer steps done.",
    Metric.TOTAL_STEPS: "Optimizer steps the run will take.",
    Metric.EPOCH: "Epochs done (fractional).",
    Metric.TRAIN_LOSS: "Training loss of the latest logged step.",
    Metric.EVAL_LOSS: "Validation loss of the latest evaluation.",
    Metric.BEST_EVAL_LOSS: "Lowest validation loss so far.",
    Metric.LEARNING_RATE: "Current learning rate.",
    Metric.GRAD_NORM: "Gradient norm of the latest logged step (before clipping).",
    Metric.TOKENS_PER_SECOND: "Training tokens per second over the latest logging window.",
    Metric.TOKENS_TOTAL: "Training tokens seen by this process.",
    Metric.SAMPLES_PER_SECOND: "Training samples per second over the latest logging window.",
    Metric.MEMORY_BYTES: "Memory in use per device (cuda:N allocated, or cpu resident set size).",
    Metric.ETA_SECONDS: "Estimated seconds until the last step, from the recent step rate.",
    Metric.LAST_STEP_TIMESTAMP_SECONDS: "Unix time of the latest finished step (a heartbeat).",
    Metric.STAGE: "1 for the stage the trainer is in (loading, data, training, evaluating, ...), else 0.",
}

# The runner's stages (RunRecord.stage) by the contract's coarser names.
_RUNNER_STAGES: dict[str, str] = {
    "config": Stage.LOADING,
    "launch": Stage.LOADING,
    "fetch": Stage.LOADING,
    "data": Stage.DATA,
    "model": Stage.LOADING,
    "setup": Stage.LOADING,
    "evaluate-base": Stage.EVALUATING,
    "train": Stage.TRAINING,
    "evaluate": Stage.EVALUATING,
    "save": Stage.SAVING,
    "merge": Stage.MERGING,
    "upload": Stage.UPLOADING,
}


def stage_of(runner_stage: str) -> str:
    """The contract stage of one of the runner's stages (unknown ones count as loading)."""
    return _RUNNER_STAGES.get(runner_stage, Stage.LOADING)


@dataclass
class _Rate:
    """Step rate over a sliding window, so a slow first step (compilation, warm-up) fades out."""

    window: int = 20
    points: list[tuple[float, int]] = field(default_factory=list)

    def add(self, when: float, step: int) -> None:
        self.points.append((when, step))
        del self.points[: -self.window]

    def steps_per_second(self) -> float | None:
        if len(self.points) < 2:
            return None
        (t0, s0), (t1, s1) = self.points[0], self.points[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        return (s1 - s0) / (t1 - t0)


class TrainerMetrics:
    """Gauges for one training run, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._gauges: dict[str, Gauge] = {}
        for short in Metric.ALL:
            if short in (Metric.TOKENS_TOTAL, Metric.MEMORY_BYTES, Metric.STAGE):
                continue
            self._gauges[short] = Gauge(metric_name(short), _HELP[short], registry=self.registry)
        # prometheus_client appends ``_total`` to counters itself.
        tokens = metric_name(Metric.TOKENS_TOTAL).removesuffix("_total")
        self._tokens = Counter(tokens, _HELP[Metric.TOKENS_TOTAL], registry=self.registry)
        self._memory = Gauge(
            metric_name(Metric.MEMORY_BYTES), _HELP[Metric.MEMORY_BYTES], ["device"], registry=self.registry
        )
        self._stages = Gauge(
            metric_name(Metric.STAGE), _HELP[Metric.STAGE], ["stage"], registry=self.registry
        )
        self.stage = ""
        self.set_stage(Stage.LOADING)
        self._tokens_seen = 0
        self._rate = _Rate()
        self._lock = threading.Lock()
        self._best_eval: float | None = None
        self.update_memory()

    def set(self, short: str, value: float) -> None:
        self._gauges[short].set(value)

    def set_stage(self, stage: str) -> None:
        """Enter ``stage`` (one of ``Stage.ALL``): its series reads 1, every other stage's 0."""
        if stage not in Stage.ALL:
            raise ValueError(f"unknown stage {stage!r}")
        if stage == self.stage:
            return
        for name in Stage.ALL:
            self._stages.labels(stage=name).set(1 if name == stage else 0)
        self.stage = stage

    def value(self, short: str) -> float:
        """The current value (for tests and the summary); reads the sample the endpoint would serve."""
        sample = self.registry.get_sample_value(metric_name(short))
        return float("nan") if sample is None else sample

    def on_step(self, step: int, total_steps: int, epoch: float, when: float | None = None) -> None:
        when = time.time() if when is None else when
        with self._lock:
            self._rate.add(when, step)
            rate = self._rate.steps_per_second()
        self.set(Metric.STEP, step)
        self.set(Metric.TOTAL_STEPS, total_steps)
        self.set(Metric.EPOCH, epoch)
        self.set(Metric.LAST_STEP_TIMESTAMP_SECONDS, when)
        if rate:
            self.set(Metric.ETA_SECONDS, max(0.0, (total_steps - step) / rate))
        elif step >= total_steps > 0:
            self.set(Metric.ETA_SECONDS, 0.0)

    def on_tokens(self, tokens_seen: int) -> None:
        """Advance the token counter to ``tokens_seen`` (a running total); never goes back."""
        with self._lock:
            delta = tokens_seen - self._tokens_seen
            if delta > 0:
                self._tokens.inc(delta)
                self._tokens_seen = tokens_seen

    def on_eval_loss(self, loss: float) -> None:
        self.set(Metric.EVAL_LOSS, loss)
        if self._best_eval is None or loss < self._best_eval:
            self._best_eval = loss
            self.set(Metric.BEST_EVAL_LOSS, loss)

    def update_memory(self, per_rank: list[dict[str, int]] | None = None) -> None:
        """Set the memory gauges: this process's figures, or every rank's (``gather_memory``), each
        labelled ``rank<R>:<device>`` so the operator's maximum covers every GPU of the run."""
        if per_rank is None or len(per_rank) == 1:
            figures = per_rank[0] if per_rank else memory_in_use()
        else:
            figures = {
                f"rank{rank}:{device}": used
                for rank, own in enumerate(per_rank)
                for device, used in own.items()
            }
        for device, used in figures.items():
            self._memory.labels(device=device).set(used)


def memory_in_use(peak: bool = False) -> dict[str, int]:
    """Bytes in use by this process: its own GPU's allocator figure (``peak``: the maximum since the
    start) and its resident set size. A CUDA allocator only knows its own process's memory, so in a
    multi-GPU pod each rank reports its device and rank 0 gathers them (``gather_from_all``)."""
    out: dict[str, int] = {"cpu": _rss_bytes()}
    torch: Any
    try:
        import torch
    except ImportError:  # the operator side imports this module without torch
        return out
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        read = torch.cuda.max_memory_allocated if peak else torch.cuda.memory_allocated
        out[f"cuda:{index}"] = int(read(index))
    return out


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


class MetricsServer:
    """The HTTP endpoint; port 0 in the config means no endpoint (the gauges still update)."""

    def __init__(self, metrics: TrainerMetrics, port: int, addr: str = "0.0.0.0") -> None:
        self.metrics = metrics
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        if port:
            self._server, self._thread = start_http_server(port, addr=addr, registry=metrics.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)  # shutdown() has stopped its loop; the port is free after this
            self._thread = None
