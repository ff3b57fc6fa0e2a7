#!/usr/bin/env python3
"""Operator scale benchmark: N FineTuneJobs in a burst against the real control plane with kwok.

Prints one JSON object. What it does, in order:

1. Uses ``--kubeconfig``'s cluster, or starts its own (hack/localcluster.py, named ``ftj-bench``) and
   stops it at the end. In its own cluster it raises cpu-node-0's capacity (pods, CPU, memory and
   ephemeral storage: each trainer pod requests 20Gi of disk) so all N pods run at once.
2. Installs the CRD, makes a fresh namespace and starts the operator as a subprocess
   (tests/e2e/harness.py's ``OperatorProcess``) watching only that namespace, with the production
   progress interval (15 s) unless told otherwise.
3. Watches FineTuneJobs and Jobs from this process and timestamps each event as it arrives
   (monotonic clock; server timestamps have one-second resolution).
4. Creates N FineTuneJobs in a burst from a thread pool. The FineTuneJobs ask for no GPU
   (``distributed.gpusPerNode: 0``, no ``resources``) so every pod can schedule on the CPU node.
5. Waits for every FineTuneJob to be Running. Unless ``--progress-sweeps 0``, it then points every
   Running pod at a fake trainer /metrics served by this process (the dev-mode
   ``finetuning.io/metrics-endpoint`` annotation; the step advances on every scrape, as for a fleet
   that is training) and measures the progress loop over that many sweeps with all N Running: sweep
   time against the interval, operator CPU and RSS, API requests and status writes per sweep.
6. Annotates each Running pod with
   ``finetuning.io/test-exit-code: "0"`` (kwok then ends it) - pods that only become Running later,
   when capacity frees up in a shared cluster, are annotated as they appear - and waits for every
   FineTuneJob to be Succeeded.
7. Waits for the cluster to settle and counts API writes over an idle window.

Latencies: create->Job-created is from the create call returning to the Job's ADDED event;
Job-finished->status is from the Job's ``Complete`` condition event to the FineTuneJob's
``phase: Succeeded`` event. API writes are kube-apiserver ``apiserver_request_total`` (verbs POST,
PUT, PATCH, DELETE) by resource, after minus before; that counter has no client label, so the report
splits them into the operator's resources and everyone else's (the bench's own creates and pod
annotations, kube-controller-manager, the scheduler, kwok), and counts Events by their source.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent / "hack"))
from hack_loader import load_hack  # hack/ scripts by path, one loader (hack/hack_loader.py)

REPO = Path(__file__).resolve().parent.parent

CLUSTER_NAME = "ftj-bench"
GROUP, VERSION, PLURAL = "finetuning.io", "v1alpha1", "finetunejobs"
LABEL_JOB = f"{GROUP}/finetunejob"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")
# Resources only the operator writes (besides the bench's own FineTuneJob creates, subtracted below).
OPERATOR_RESOURCES = ("finetunejobs", "finetunejobs/status", "configmaps", "jobs", "services")
GOALS = {"job_created_p99_seconds": 2.0, "rss_mib": 200.0, "idle_writes": 0}
QUIET = False


def say(msg: str) -> None:
    if not QUIET:
        print(f"bench: {msg}", file=sys.stderr, flush=True)


def _load_harness() -> ModuleType:
    """tests/e2e/harness.py imports ``helpers`` from tests/, so both go on the path."""
    for p in (REPO / "tests", REPO / "tests" / "e2e"):
        if str(p) not in sys.path:
            sys.path.append(str(p))
    import harness  # type: ignore[import-not-found]

    return harness  # type: ignore[no-any-return]


def stats(values: Iterable[float]) -> dict[str, Any]:
    vals = sorted(values)
    if not vals:
        return {"n": 0}

    def pct(q: float) -> float:
        # nearest-rank percentile
        return round(vals[max(0, min(len(vals) - 1, int(-(-q * len(vals) // 1)) - 1))], 3)

    return {
        "n": len(vals),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": round(vals[-1], 3),
        "mean": round(sum(vals) / len(vals), 3),
    }


# --- watches ---------------------------------------------------------------------------------------


class Recorder:
    """First-arrival times of the transitions we measure, keyed by FineTuneJob name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: dict[str, float] = {}  # the create call returned
        self.job_added: dict[str, float] = {}
        self.ftj_seen: dict[str, float] = {}  # the FineTuneJob's first watch event here
        self.job_done: dict[str, float] = {}  # Job condition Complete=True
        self.job_criteria: dict[str, float] = {}  # SuccessCriteriaMet=True (before Complete)
        self.annotated: dict[str, float] = {}
        self.phase: dict[str, dict[str, float]] = defaultdict(dict)
        self.current_phase: dict[str, str] = {}
        self.steps: dict[str, int] = {}  # status.progress.step as last seen
        self.events: Counter[str] = Counter()
        self.last_event = time.monotonic()

    def on_ftj(self, etype: str, obj: dict[str, Any], t: float) -> None:
        name = obj["metadata"]["name"]
        phase = (obj.get("status") or {}).get("phase")
        step = ((obj.get("status") or {}).get("progress") or {}).get("step")
        with self.lock:
            self.events[f"finetunejobs/{etype}"] += 1
            self.last_event = t
            self.ftj_seen.setdefault(name, t)
            if isinstance(step, int):
                self.steps[name] = step
            if phase:
                self.phase[phase].setdefault(name, t)
                self.current_phase[name] = phase

    def on_job(self, etype: str, obj: dict[str, Any], t: float) -> None:
        ftj = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_JOB)
        with self.lock:
            self.events[f"jobs/{etype}"] += 1
            self.last_event = t
            if not ftj:
                return
            self.job_added.setdefault(ftj, t)
            for cond in (obj.get("status") or {}).get("conditions") or []:
                if cond.get("status") != "True":
                    continue
                if cond.get("type") == "Complete":
                    self.job_done.setdefault(ftj, t)
                elif cond.get("type") == "SuccessCriteriaMet":
                    self.job_criteria.setdefault(ftj, t)

    def count(self, phase: str) -> int:
        with self.lock:
            return len(self.phase.get(phase, {}))

    def behind(self, served: Counter[str]) -> int:
        """FineTuneJobs whose status shows an older step than their fake trainer last served."""
        with self.lock:
            return sum(1 for name, step in served.items() if self.steps.get(name, -1) < step)

    def in_phase(self, phase: str) -> int:
        """FineTuneJobs whose latest event shows ``phase`` (``count`` is: ever reached it)."""
        with self.lock:
            return sum(1 for p in self.current_phase.values() if p == phase)


def watch_forever(
    list_fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    handle: Callable[[str, dict[str, Any], float], None],
    stop: threading.Event,
    ready: threading.Event,
) -> None:
    """A raw watch (no model deserialization, to keep the bench's own CPU small), restarted on expiry."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.watch.watch import iter_resp_lines

    rv: str | None = None
    while not stop.is_set():
        try:
            if rv is None:
                resp = list_fn(*args, **kwargs, _preload_content=False)
                listing = json.loads(resp.data)
                rv = listing["metadata"]["resourceVersion"]
                t = time.monotonic()
                for item in listing.get("items") or []:
                    handle("ADDED", item, t)
                ready.set()
            resp = list_fn(
                *args,
                **kwargs,
                watch=True,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=30,
                _preload_content=False,
            )
            try:
                for line in iter_resp_lines(resp):
                    t = time.monotonic()
                    event = json.loads(line)
                    etype, obj = event.get("type"), event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            rv = None
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if etype != "BOOKMARK":
                        handle(etype, obj, t)
                    if stop.is_set():
                        break
            finally:
                resp.release_conn()
        except ApiException as exc:
            if exc.status == 410:
                rv = None
            else:
                time.sleep(0.5)
        except Exception as exc:
            if stop.is_set():
                break  # the cluster is going away
            say(f"watch restart after {type(exc).__name__}: {exc}")
            time.sleep(0.5)


# --- process and API-server metrics ---------------------------------------------------------------


class ProcSampler(threading.Thread):
    """RSS and CPU seconds of the operator process, sampled twice a second."""

    def __init__(self, pid: int) -> None:
        import psutil

        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.stop_event = threading.Event()
        self.peak_rss = 0
        self.rss = 0
        self.cpu = 0.0
        self.samples: list[tuple[float, int, float]] = []
        self._sample()

    def _sample(self) -> None:
        with contextlib.suppress(Exception):
            rss = self.proc.memory_info().rss
            cpu = self.proc.cpu_times()
            self.rss = rss
            self.cpu = cpu.user + cpu.system
            self.peak_rss = max(self.peak_rss, rss)
            self.samples.append((time.monotonic(), rss, self.cpu))

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            self._sample()

    def snapshot(self) -> tuple[int, float]:
        self._sample()
        return self.rss, self.cpu


def cpu_by_process() -> dict[str, float]:
    """CPU seconds so far of every process on this machine, grouped by what it is: the control plane's
    parts, the operator, this bench, and the rest. Two of these subtracted show where a phase's CPU
    went (the machine's cores are shared by all of them)."""
    import psutil

    parts = (
        "kube-apiserver",
        "etcd",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "py-spy",
        "lean_operator",
    )
    me = os.getpid()
    out: Counter[str] = Counter()
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times = proc.info.get("cpu_times")
        if times is None:
            continue
        cmd = proc.info.get("cmdline") or [""]
        # by executable (paths in arguments name the cluster's directory, .local/kwok/...)
        exe = os.path.basename(cmd[0])
        key = next((k for k in parts if exe == k or exe.startswith(k + "-")), "other")
        if proc.info["pid"] == me:
            key = "bench"
        elif "finetune_operator" in cmd[1:3]:
            key = "operator"
        out[key] += times.user + times.system
    return dict(out)


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    spent = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in after}
    spent = {k: v for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v > 0}
    spent["total"] = round(sum(spent.values()), 2)
    return spent


_SAMPLE = re.compile(
    r"^(apiserver_request_total|apiserver_request_duration_seconds_(?:sum|count))\{([^}]*)\}\s+(\S+)"
)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


class ApiServerMetrics:
    """kube-apiserver's own /metrics: requests and server-side latency by (resource, verb)."""

    def __init__(self, api: Any) -> None:
        method, url, headers, _b, _p = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
        text = api.call_api(method, url, header_params=headers).read().decode()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.seconds: Counter[tuple[str, str]] = Counter()
        self.timed: Counter[tuple[str, str]] = Counter()
        self.refused: Counter[tuple[str, str]] = Counter()  # write requests answered 4xx (409s mostly)
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if not m:
                continue
            labels = dict(_LABEL.findall(m.group(2)))
            res = labels.get("resource", "")
            if not res or labels.get("verb") == "WATCH":
                continue
            if labels.get("subresource"):
                res += "/" + labels["subresource"]
            key = (res, labels.get("verb", ""))
            value = float(m.group(3))
            if m.group(1) == "apiserver_request_total":
                self.requests[key] += int(value)
                if labels.get("code", "").startswith("4"):
                    self.refused[key] += int(value)
            elif m.group(1).endswith("_sum"):
                self.seconds[key] += value
            else:
                self.timed[key] += int(value)

    def writes(self) -> Counter[tuple[str, str]]:
        return Counter({k: v for k, v in self.requests.items() if k[1] in WRITE_VERBS})

    def refused_writes(self) -> Counter[tuple[str, str]]:
        return Counter({k: v for k, v in self.refused.items() if k[1] in WRITE_VERBS})

    def latency_since(self, before: ApiServerMetrics, resources: Iterable[str]) -> dict[str, Any]:
        """Mean server-side latency (ms) and count of each request on ``resources`` since ``before``."""
        out: dict[str, Any] = {}
        for key in sorted(self.timed):
            if key[0] not in resources:
                continue
            n = self.timed[key] - before.timed.get(key, 0)
            if n > 0:
                secs = self.seconds[key] - before.seconds.get(key, 0.0)
                out[f"{key[1]} {key[0]}"] = {"n": n, "mean_ms": round(1000 * secs / n, 1)}
        return out


def diff_writes(
    after: Counter[tuple[str, str]], before: Counter[tuple[str, str]]
) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for key, n in after.items():
        d = n - before.get(key, 0)
        if d:
            out[key[0]][key[1]] = d
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def event_sources(core: Any, namespace: str) -> Counter[str]:
    """Events in the namespace by "source/reason" (sum of ``count``, so PATCHed repeats count)."""
    resp = core.list_namespaced_event(namespace, _preload_content=False)
    out: Counter[str] = Counter()
    for ev in json.loads(resp.data).get("items") or []:
        src = (ev.get("source") or {}).get("component") or ev.get("reportingComponent") or "?"
        out[f"{src}/{ev.get('reason')}"] += int(ev.get("count") or 1)
    return out


def by_source(events: Counter[str], source: str) -> int:
    return sum(v for k, v in events.items() if k.split("/", 1)[0] == source)


def operator_metrics(text: str) -> dict[str, Any]:
    """The operator's own view: its latency histograms, handler durations and API errors."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"handler_seconds": {}, "api_errors": {}, "api_requests": {}, "resync_queued": 0}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if fam.name == "finetune_operator_api_requests" and s.name.endswith("_total"):
                out["api_requests"][f"{s.labels['verb']} {s.labels['resource']}"] = int(s.value)
            elif fam.name == "finetune_operator_resync_queued" and s.name.endswith("_total"):
                out["resync_queued"] = int(s.value)
            elif fam.name == "finetune_operator_handler_duration_seconds" and s.name.endswith(
                ("_sum", "_count")
            ):
                h = out["handler_seconds"].setdefault(s.labels["handler"], {})
                h["sum" if s.name.endswith("_sum") else "count"] = round(s.value, 3)
            elif fam.name == "finetune_operator_api_errors" and s.name.endswith("_total"):
                out["api_errors"][s.labels.get("operation", "?")] = s.value
            elif fam.name in (
                "finetune_operator_job_created_latency_seconds",
                "finetune_operator_status_latency_seconds",
            ) and s.name.endswith(("_sum", "_count", "_bucket")):
                key = fam.name.removeprefix("finetune_operator_")
                h = out.setdefault(key, {"buckets": {}})
                if s.name.endswith("_bucket"):
                    h["buckets"][s.labels["le"]] = s.value
                else:
                    h["sum" if s.name.endswith("_sum") else "count"] = round(s.value, 3)
    for h in out["handler_seconds"].values():
        if h.get("count"):
            h["mean"] = round(h["sum"] / h["count"], 4)
    return out


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Wall-clock samples (py-spy --idle, collapsed stacks) in the operator's handlers, by handler and
    by the Kubernetes API method (or other blocking call) they were inside."""
    api_frame = re.compile(r"^\w+\.(\w+) \((?:.*/)?kubernetes/client/api/\w+\.py")
    other = re.compile(r"(?:^|\.)(urlopen|model_validate|deepcopy|sanitize_for_serialization|sleep|wire) \(")
    handler = re.compile(r"(?:^|\.)(work|job_event|progress) \((?:.*/)?finetune_operator/handlers\.py")
    by_call: Counter[str] = Counter()
    by_handler: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if "finetune_operator/handlers.py" not in stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        h = next((m.group(1) for f in frames if (m := handler.search(f))), "?")
        call = next((m.group(1) for f in frames if (m := api_frame.match(f))), None)
        if call is None:
            call = next((m.group(1) for f in frames if (m := other.search(f))), "python (other)")
        total += n
        by_handler[h] += n
        by_call[f"{h}: {call}"] += n
    return {
        "handler_samples": total,
        "by_handler_pct": {k: round(100 * v / total, 1) for k, v in by_handler.most_common()}
        if total
        else {},
        "by_call_pct": {k: round(100 * v / total, 1) for k, v in by_call.most_common(top)} if total else {},
    }


# --- the progress loop with N Running ---------------------------------------------------------------


class FakeTrainers:
    """One loopback HTTP server standing in for every trainer's /metrics (``/metrics/<ftj>``).

    Each scrape of a path answers the next step, so every sweep finds progress to write, as for a
    fleet that is training. Counts scrapes per FineTuneJob."""

    def __init__(self) -> None:
        import http.server

        self.lock = threading.Lock()
        self.scrapes: Counter[str] = Counter()
        trainers = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                with trainers.lock:
                    trainers.scrapes[name] += 1
                    step = trainers.scrapes[name]
                body = (
                    f"finetune_trainer_step {step}\nfinetune_trainer_total_steps 1000000\n"
                    f"finetune_trainer_epoch {step / 1000000:.6f}\nfinetune_trainer_train_loss 0.5\n"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, ftj: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/metrics/{ftj}"

    def scraped(self) -> Counter[str]:
        with self.lock:
            return Counter(self.scrapes)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sweep_count(metrics_text: str) -> int:
    m = re.search(
        r'^finetune_operator_handler_duration_seconds_count\{handler="progress_sweep"\} (\S+)$',
        metrics_text,
        re.M,
    )
    return int(float(m.group(1))) if m else 0


def sweep_seconds_sum(metrics_text: str) -> float:
    m = re.search(
        r'^finetune_operator_handler_duration_seconds_sum\{handler="progress_sweep"\} (\S+)$',
        metrics_text,
        re.M,
    )
    return float(m.group(1)) if m else 0.0


def measure_progress_loop(
    *,
    api: Any,
    core: Any,
    namespace: str,
    op: Any,
    sampler: ProcSampler,
    trainers: FakeTrainers,
    running: int,
    sweeps: int,
    interval: float,
    write_interval: float,
    threads: int,
) -> dict[str, Any]:
    """Point every Running pod at the fake trainers, let the loop find them all (warm-up: one pod
    LIST per job, then the endpoint is cached), then measure ``sweeps`` whole sweeps.

    Progress is written at once the first time, then every ``write_interval``: all runs come due in
    the same sweep, so per-sweep writes are only representative over a window of whole write
    intervals (``window_in_write_intervals``; e.g. 8 sweeps of 15 s for 60 s)."""
    from kubernetes import client

    resp = core.list_namespaced_pod(
        namespace, label_selector=LABEL_JOB, field_selector="status.phase=Running", _preload_content=False
    )
    pods = [
        (p["metadata"]["name"], p["metadata"]["labels"][LABEL_JOB])
        for p in json.loads(resp.data).get("items") or []
    ]

    def point(pod: str, ftj: str) -> None:
        body = {"metadata": {"annotations": {"finetuning.io/metrics-endpoint": trainers.url(ftj)}}}
        with contextlib.suppress(client.ApiException):
            core.patch_namespaced_pod(pod, namespace, body)

    say(f"progress loop: pointing {len(pods)} Running pods at the fake trainers")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: point(*p), pods))
    warm = wait_until(
        lambda: len(trainers.scraped()) >= len(pods),
        3 * interval + 60,
        lambda: f"every trainer scraped once ({len(trainers.scraped())}/{len(pods)})",
    )
    # Measure whole sweeps: from the end of one to the end of the sweeps-th after it.
    first = sweep_count(op.metrics())
    wait_until(lambda: sweep_count(op.metrics()) > first, 2 * interval + 60, "a sweep boundary")
    text = op.metrics()
    start_sweeps, start_sum = sweep_count(text), sweep_seconds_sum(text)
    server_before = ApiServerMetrics(api)
    scrapes_before = sum(trainers.scraped().values())
    rss_before, cpu_before = sampler.snapshot()
    peak_before = sampler.peak_rss
    sampler.peak_rss = rss_before  # the peak inside the window
    t0 = time.monotonic()
    done = wait_until(
        lambda: sweep_count(op.metrics()) >= start_sweeps + sweeps,
        sweeps * (2 * interval + 30),
        f"{sweeps} progress sweeps",
    )
    seconds = time.monotonic() - t0
    text = op.metrics()
    server_after = ApiServerMetrics(api)
    rss_after, cpu_after = sampler.snapshot()
    peak_window = sampler.peak_rss
    sampler.peak_rss = max(peak_before, peak_window)
    n_sweeps = max(sweep_count(text) - start_sweeps, 1)
    sweep_mean = (sweep_seconds_sum(text) - start_sum) / n_sweeps
    requests: dict[str, float] = {}
    for key, n in server_after.requests.items():
        d = n - server_before.requests.get(key, 0)
        if d and key[0] in (*OPERATOR_RESOURCES, "pods", "events"):
            requests[f"{key[1]} {key[0]}"] = round(d / n_sweeps, 1)
    status_writes = sum(
        server_after.requests.get(("finetunejobs/status", v), 0)
        - server_before.requests.get(("finetunejobs/status", v), 0)
        for v in ("PUT", "PATCH")
    )
    mib = 1024 * 1024
    return {
        "complete": warm and done,
        "running": running,
        "pods_pointed": len(pods),
        "interval_s": interval,
        "write_interval_s": write_interval,
        "sweeps": n_sweeps,
        "window_in_write_intervals": round(n_sweeps * interval / write_interval, 2) if write_interval else 0,
        "window_seconds": round(seconds, 1),
        "sweep_seconds_mean": round(sweep_mean, 2),
        "sweep_to_interval": round(sweep_mean / interval, 3),
        "scrapes_per_sweep": round((sum(trainers.scraped().values()) - scrapes_before) / n_sweeps, 1),
        "status_writes_per_sweep": round(status_writes / n_sweeps, 1),
        "status_writes_per_running_per_sweep": round(status_writes / n_sweeps / max(running, 1), 3),
        "status_writes_per_second": round(status_writes / max(seconds, 1e-9), 2),
        "api_requests_per_sweep": dict(sorted(requests.items())),
        "operator_cpu_seconds_per_sweep": round((cpu_after - cpu_before) / n_sweeps, 2),
        "operator_cpu_fraction": round((cpu_after - cpu_before) / max(seconds, 1e-9), 3),
        "rss_mib": {
            "window_start": round(rss_before / mib, 1),
            "window_peak": round(peak_window / mib, 1),
            "window_end": round(rss_after / mib, 1),
        },
    }


# --- the run ---------------------------------------------------------------------------------------


def create_retrying(create: Callable[[], Any]) -> None:
    """One create call, retried (up to five tries) when the API server throttles or is briefly away."""
    from kubernetes import client

    for attempt in range(5):
        try:
            create()
            return
        except client.ApiException as exc:
            if exc.status not in (429, 500, 503) or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def ftj_body(name: str, harness: ModuleType) -> dict[str, Any]:
    spec = harness.deep_merge(harness.BASE_SPEC, {"distributed": {"gpusPerNode": 0}})
    spec.pop("resources", None)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def watch_ftjs_and_jobs(api: Any, namespace: str, rec: Recorder, stop: threading.Event) -> None:
    """The bench's own FineTuneJob and Job watches of ``namespace`` into ``rec`` (until ``stop``), open
    when this returns."""
    from kubernetes import client

    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    readies = []
    for list_fn, fargs, kwargs, handle in (
        (custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL), {}, rec.on_ftj),
        (batch.list_namespaced_job, (namespace,), {"label_selector": LABEL_JOB}, rec.on_job),
    ):
        ready = threading.Event()
        readies.append(ready)
        threading.Thread(
            target=watch_forever, args=(list_fn, fargs, kwargs, handle, stop, ready), daemon=True
        ).start()
    for ready in readies:
        ready.wait(30)
    time.sleep(1)  # let both watch connections open before the burst


def create_ftjs(
    api: Any, harness: ModuleType, namespace: str, names: list[str], threads: int, rec: Recorder
) -> None:
    """The burst: a FineTuneJob for each of ``names`` from ``threads`` client threads; ``rec.created``
    gets the moment each create call returned."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api)

    def create(name: str) -> None:
        body = ftj_body(name, harness)
        create_retrying(
            lambda: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        )
        with rec.lock:
            rec.created[name] = time.monotonic()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, names))


def wait_until(
    pred: Callable[[], bool],
    timeout: float,
    what: str | Callable[[], str],
    tick: Callable[[], None] | None = None,
) -> bool:
    deadline = time.monotonic() + timeout
    last_log = 0.0
    while time.monotonic() < deadline:
        if tick:
            tick()
        if pred():
            return True
        if time.monotonic() - last_log > 10:
            say(f"waiting for {what() if callable(what) else what}")
            last_log = time.monotonic()
        time.sleep(0.25)
    say(f"gave up waiting for {what() if callable(what) else what} after {timeout:.0f}s")
    return False


def build_direct_children(name: str, namespace: str, harness: ModuleType) -> list[dict[str, Any]]:
    """What a hand-rolled script would create for ``name``: a ConfigMap holding the trainer's config
    and the Job the operator's own builders make, without an owner (an owner that does not exist would
    make the garbage collector delete them). The operator itself creates only the Job: the config
    rides in its pod template's annotation."""
    from finetune_api import wellknown
    from finetune_api.spec import FineTuneJobSpec
    from finetune_operator.builders import Owner, build_job, trainer_config
    from finetune_operator.naming import spec_hash
    from finetune_operator.settings import OperatorSettings

    raw = ftj_body(name, harness)["spec"]
    spec = FineTuneJobSpec.model_validate(raw)
    settings = OperatorSettings(trainer_image="registry.local/finetune-trainer:test")
    owner = Owner(name=name, namespace=namespace, uid="")
    job = build_job(owner, spec, 1, spec_hash(raw), settings)
    job["metadata"].pop("ownerReferences", None)
    config = json.dumps(trainer_config(owner, spec, 1).wire(), sort_keys=True)
    meta = {k: v for k, v in job["metadata"].items() if k in ("name", "namespace", "labels")}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {wellknown.CONFIG_FILE: config},
    }
    return [configmap, job]


def start_apiserver_profile(api: Any, seconds: float, path: Path | None) -> threading.Thread | None:
    """Record the API server's own CPU profile (Go pprof, ``/debug/pprof/profile``) for ``seconds`` into
    ``path``, in the background; read it with ``go tool pprof -top <kube-apiserver binary> <path>``."""
    if path is None:
        return None

    def record() -> None:
        request = api.param_serialize(
            "GET",
            "/debug/pprof/profile",
            query_params=[("seconds", str(max(int(seconds), 1)))],
            auth_settings=["BearerToken"],
        )
        path.write_bytes(api.call_api(*request, _request_timeout=seconds + 60).read())

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    return thread


def direct_baseline(
    api: Any,
    harness: ModuleType,
    count: int,
    threads: int,
    timeout: float,
    profile: tuple[float, Path] | None = None,
) -> dict[str, Any]:
    """The API server's own ceiling on this machine, now: the same ConfigMaps and Jobs created directly
    with the same client concurrency, timed to the Job's ADDED event on a watch, as for the operator."""
    from kubernetes import client

    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    namespace = f"bench-direct-{os.getpid()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    rec = Recorder()
    stop, ready = threading.Event(), threading.Event()
    threading.Thread(
        target=watch_forever,
        args=(
            batch.list_namespaced_job,
            (namespace,),
            {"label_selector": LABEL_JOB},
            rec.on_job,
            stop,
            ready,
        ),
        daemon=True,
    ).start()
    ready.wait(30)
    time.sleep(1)
    names = [f"d{i:05d}" for i in range(count)]
    manifests = {n: build_direct_children(n, namespace, harness) for n in names}
    creators = {"ConfigMap": core.create_namespaced_config_map, "Job": batch.create_namespaced_job}

    def create(name: str) -> None:
        with rec.lock:
            rec.created[name] = time.monotonic()
        for child in manifests[name]:
            create_retrying(functools.partial(creators[child["kind"]], namespace, child))

    say(f"direct baseline: {count} ConfigMaps + Jobs with {threads} threads")
    cpu0 = cpu_by_process()
    profiler = start_apiserver_profile(api, *profile) if profile else None
    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, names))
    ok = wait_until(lambda: len(rec.job_added) >= count, timeout, "every direct Job")
    if profiler is not None:
        profiler.join()
    t_jobs = max(rec.job_added.values(), default=time.monotonic())
    cpu1 = cpu_by_process()
    stop.set()
    latency = [rec.job_added[k] - rec.created[k] for k in rec.created if k in rec.job_added]
    with contextlib.suppress(Exception):
        core.delete_namespace(namespace, propagation_policy="Background")
    wait_until(lambda: not _exists(lambda: core.read_namespace(namespace)), 300, "the direct namespace gone")
    return {
        "complete": ok,
        "jobs_per_s": round(len(rec.job_added) / max(t_jobs - t0, 1e-9), 2),
        "create_to_job_seconds": stats(latency),
        "cpu_seconds_by_process": cpu_spent(cpu0, cpu1),
    }


def ftj_only_baseline(
    api: Any, harness: ModuleType, count: int, threads: int, timeout: float
) -> dict[str, Any]:
    """What the CRD alone costs, with no operator: the same FineTuneJobs created in a namespace nothing
    reconciles, with the same client concurrency, and how late a watch sees them (the API server's
    watch delivery of FineTuneJobs, which the operator has to wait for before it can act)."""
    from kubernetes import client

    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"bench-ftj-only-{os.getpid()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    rec = Recorder()
    stop, ready = threading.Event(), threading.Event()
    threading.Thread(
        target=watch_forever,
        args=(
            custom.list_namespaced_custom_object,
            (GROUP, VERSION, namespace, PLURAL),
            {},
            rec.on_ftj,
            stop,
            ready,
        ),
        daemon=True,
    ).start()
    ready.wait(30)
    time.sleep(1)  # let the watch connection open before the burst

    say(f"FineTuneJobs alone: {count} with {threads} threads, no operator")
    t0 = time.monotonic()
    create_ftjs(api, harness, namespace, [f"f{i:05d}" for i in range(count)], threads, rec)
    seconds = time.monotonic() - t0
    ok = wait_until(lambda: len(rec.ftj_seen) >= count, timeout, "every FineTuneJob on the watch")
    stop.set()
    with contextlib.suppress(Exception):
        core.delete_namespace(namespace, propagation_policy="Background")
    wait_until(
        lambda: not _exists(lambda: core.read_namespace(namespace)),
        300,
        "the FineTuneJob-only namespace gone",
    )
    return {
        "complete": ok,
        "creates_per_s": round(count / max(seconds, 1e-9), 2),
        "create_to_watch_event_seconds": stats(
            max(rec.ftj_seen[k] - rec.created[k], 0.0) for k in rec.created if k in rec.ftj_seen
        ),
    }


# --- the least any operator could cost: a compiled stand-in (bench/lean_operator) ------------------

LEAN_NAME, LEAN_UID = "leanftjname", "leanftjuid"  # placeholders (valid in every field they go to)


def lean_templates(harness: ModuleType, namespace: str) -> dict[str, Any]:
    """What the operator sends for one FineTuneJob until it is Running and after, made by its own
    builders and transitions, with placeholders the stand-in fills in per object."""
    from finetune_api.spec import FineTuneJobSpec
    from finetune_api.status import FineTuneJobStatus
    from finetune_api.wellknown import timestamp
    from finetune_operator import constants as c
    from finetune_operator.admission import admit
    from finetune_operator.builders import Owner, build_children
    from finetune_operator.run_identity import run_digest
    from finetune_operator.settings import OperatorSettings
    from finetune_operator.status import JobView, observe_job, outcome
    from finetune_operator.transitions import Facts, JobSeen, RunStarted, next_phase

    raw = ftj_body(LEAN_NAME, harness)
    spec = FineTuneJobSpec.model_validate(raw["spec"])
    settings = OperatorSettings(trainer_image="registry.local/finetune-trainer:test")
    owner = Owner(name=LEAN_NAME, namespace=namespace, uid=LEAN_UID)
    digest = run_digest(spec)
    (job,) = build_children(owner, spec, 1, digest, settings)
    job_name = job["metadata"]["name"]
    obj = {**raw, "metadata": {"name": LEAN_NAME, "namespace": namespace, "generation": 1}}
    facts = Facts(obj, 1, timestamp(), settings.history_limit)
    st = FineTuneJobStatus()
    gpus = spec.distributed.gpus_per_node * spec.distributed.nodes
    next_phase(st, RunStarted(1, job_name, digest, "", admit(spec, settings).plan, False, False), facts)
    statuses = {"Pending": st.wire()}
    now = timestamp()
    job_status = {"active": 1, "ready": 1, "startTime": now}
    view = JobView.from_job({"spec": {}, "status": job_status})
    next_phase(st, JobSeen(job_name, view, observe_job(view, False, False), None, gpus), facts)
    statuses["Running"] = st.wire()
    done = {
        "succeeded": 1,
        "startTime": now,
        "completionTime": now,
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}],
    }
    view = JobView.from_job({"spec": {}, "status": done})
    summary = json.dumps({"metrics": {"step": 10, "total_steps": 10, "train_loss": 0.5}})
    result = outcome(observe_job(view, False, False), 0, summary)
    next_phase(st, JobSeen(job_name, view, observe_job(view, False, False), result, gpus), facts)
    statuses["Succeeded"] = st.wire()
    text = json.dumps(statuses).replace(job_name, "__JOB_NAME__").replace(LEAN_NAME, "__FTJ_NAME__")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "plural": PLURAL,
        "job": json.dumps(job).replace(LEAN_NAME, "__FTJ_NAME__").replace(LEAN_UID, "__FTJ_UID__"),
        "jobName": job_name.replace(LEAN_NAME, "__FTJ_NAME__"),
        "statuses": json.loads(text),
        "jobLabelSelector": f"{c.LABEL_MANAGED_BY}={c.OPERATOR_NAME}",
    }


@functools.cache
def build_lean_operator(workdir: Path) -> Path:
    """``go build`` of bench/lean_operator (standard library only: nothing is downloaded), once a run."""
    binary = workdir / "lean_operator"
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=REPO / "bench" / "lean_operator", env=env, check=True
    )
    return binary


def lean_baseline(
    api: Any,
    harness: ModuleType,
    count: int,
    threads: int,
    timeout: float,
    workdir: Path,
    status: str = "all",
) -> dict[str, Any]:
    """The operator path with a compiled stand-in in the operator's place (bench/lean_operator): the same
    FineTuneJobs, the same Job and status writes, timed the same way. What is left between it and the
    direct path, any operator pays here; what is between it and the operator is the operator's own.
    ``status``: ``all`` (a write per phase, as the operator), ``pending`` (the run's start only: the
    pods of a real cluster are Running long after a burst) or ``none`` (what status writes cost)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    namespace = f"bench-lean-{status}-{os.getpid()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    templates = workdir / "lean-templates.json"
    templates.write_text(json.dumps(lean_templates(harness, namespace)))
    binary = build_lean_operator(workdir)
    cfg = api.configuration
    lean = subprocess.Popen(
        [
            str(binary),
            f"--server={cfg.host}",
            f"--ca={cfg.ssl_ca_cert}",
            f"--cert={cfg.cert_file}",
            f"--key={cfg.key_file}",
            f"--namespace={namespace}",
            f"--templates={templates}",
            "--workers=32",
            f"--status={str(status).lower()}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    rec = Recorder()
    stop = threading.Event()
    try:
        assert lean.stdout is not None
        if lean.stdout.readline().strip() != "ready":
            raise RuntimeError("the lean operator did not start (its stderr is above)")
        watch_ftjs_and_jobs(api, namespace, rec, stop)
        say(f"lean operator: {count} FineTuneJobs with {threads} threads, a compiled stand-in reconciling")
        cpu0 = cpu_by_process()
        t0 = time.monotonic()
        create_ftjs(api, harness, namespace, [f"l{i:05d}" for i in range(count)], threads, rec)
        ok = wait_until(lambda: len(rec.job_added) >= count, timeout, "every lean operator Job")
        t_jobs = max(rec.job_added.values(), default=time.monotonic())
        cpu1 = cpu_by_process()
        running = status != "all" or wait_until(
            lambda: rec.count("Running") >= count, timeout, "every lean FineTuneJob Running"
        )
    finally:
        stop.set()
        lean.terminate()
        counts_line = (lean.communicate(timeout=30)[0] or "").strip().splitlines()
    counts = json.loads(counts_line[-1]) if counts_line else {}
    with contextlib.suppress(Exception):
        core.delete_namespace(namespace, propagation_policy="Background")
    wait_until(lambda: not _exists(lambda: core.read_namespace(namespace)), 300, "the lean namespace gone")
    return {
        "complete": ok and running,
        "jobs_per_s": round(len(rec.job_added) / max(t_jobs - t0, 1e-9), 2),
        "create_to_job_seconds": stats(
            rec.job_added[k] - rec.created[k] for k in rec.created if k in rec.job_added
        ),
        "create_to_ftj_watch_event_seconds": stats(
            max(rec.ftj_seen[k] - rec.created[k], 0.0) for k in rec.created if k in rec.ftj_seen
        ),
        "cpu_seconds_by_process_until_all_jobs": cpu_spent(cpu0, cpu1),
        "requests": counts,
    }


def create_unrelated_jobs(api: Any, namespace: str, count: int, threads: int) -> float:
    """Suspended Jobs without the operator's labels (no pods): a server-side selector must hide them."""
    from kubernetes import client

    batch = client.BatchV1Api(api)

    def create(i: int) -> None:
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": f"unrelated-{i:05d}", "labels": {"app": "someone-else"}},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "registry.local/other:1"}],
                    }
                },
            },
        }
        create_retrying(lambda: batch.create_namespaced_job(namespace, body))

    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, range(count)))
    return round(time.monotonic() - t0, 1)


def phase_count(metrics_text: str, phase: str) -> int:
    m = re.search(rf'^finetune_operator_jobs\{{phase="{phase}"\}} (\S+)$', metrics_text, re.M)
    return int(float(m.group(1))) if m else 0


def main() -> int:
    global QUIET
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--count", type=int, default=500, help="FineTuneJobs to create (default 500)")
    p.add_argument("--kubeconfig", help="use this cluster instead of starting ftj-bench")
    p.add_argument("--json-only", action="store_true", help="print only the JSON report")
    p.add_argument("--threads", type=int, default=16, help="client threads for the create burst")
    p.add_argument("--idle-seconds", type=float, default=60.0, help="idle window for counting writes")
    p.add_argument("--progress-interval", type=float, default=15.0, help="FTJ_PROGRESS_INTERVAL (s)")
    p.add_argument(
        "--progress-write-interval",
        type=float,
        default=60.0,
        help="FTJ_PROGRESS_WRITE_INTERVAL (s; 0 writes every moved step, as before it existed)",
    )
    p.add_argument("--max-workers", type=int, default=None, help="FTJ_MAX_WORKERS (operator default: 32)")
    p.add_argument("--timeout", type=float, default=None, help="per-phase timeout (default 120 + 1.2 s/job)")
    p.add_argument("--keep-log", action="store_true", help="keep the operator log (path in the report)")
    p.add_argument("--py-spy", metavar="PATH", help="profile the operator with this py-spy (adds overhead)")
    p.add_argument(
        "--py-spy-cpu",
        action="store_true",
        help="with --py-spy: on-CPU samples only (where the operator's CPU goes), kept with the log",
    )
    p.add_argument(
        "--py-spy-gil",
        action="store_true",
        help="with --py-spy: samples of the thread holding the GIL only (where the operator's Python time "
        "goes in a burst), kept with the log",
    )
    p.add_argument("--no-direct", action="store_true", help="skip the direct Job+ConfigMap baseline")
    p.add_argument(
        "--lean-operator",
        action="store_true",
        help="also run the operator path with a compiled stand-in that makes only the operator's Job and "
        "status writes (bench/lean_operator, built with go): the least any operator could cost here",
    )
    p.add_argument(
        "--apiserver-profile",
        metavar="DIR",
        help="record the API server's CPU profile of each burst into DIR (direct.pprof, operator.pprof)",
    )
    p.add_argument(
        "--apiserver-profile-seconds", type=float, default=8.0, help="length of each API server profile"
    )
    p.add_argument("--unrelated-jobs", type=int, default=0, help="unrelated Jobs in the namespace first")
    p.add_argument(
        "--progress-sweeps",
        type=int,
        default=3,
        help="progress-loop sweeps to measure with N Running (0: skip)",
    )
    p.add_argument(
        "--operator-env", action="append", default=[], metavar="KEY=VALUE", help="extra operator environment"
    )
    p.add_argument("--no-cold-start", action="store_true", help="skip the restart over the finished jobs")
    args = p.parse_args()
    QUIET = args.json_only
    phase_timeout = args.timeout or 120 + 1.2 * args.count

    lc = load_hack("localcluster")
    harness = _load_harness()
    from kubernetes import client, config

    own = args.kubeconfig is None
    if own:
        lc.register_cleanup(CLUSTER_NAME)
        say(f"starting cluster {CLUSTER_NAME}")
        info = lc.ensure_up(CLUSTER_NAME, owner_pid=os.getpid())
        kubeconfig = Path(info.kubeconfig)
    else:
        kubeconfig = Path(args.kubeconfig)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = args.threads + 8  # the burst threads plus the two watches
    api = client.ApiClient(cfg)
    core = client.CoreV1Api(api)

    workdir = Path(tempfile.mkdtemp(prefix="ftj-bench-"))
    namespace = f"bench-{os.getpid()}"
    stop = threading.Event()
    op: Any = None
    spy: subprocess.Popen[bytes] | None = None
    trainers: FakeTrainers | None = None
    report: dict[str, Any] = {"count": args.count, "load_average_start": list(os.getloadavg())}
    try:
        install_crd(kubeconfig)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        wait_until(
            lambda: _exists(lambda: core.read_namespaced_service_account("default", namespace)), 60, "SA"
        )

        if own:
            make_room(core, args.count)
        capacity = _pod_capacity(core, namespace)
        report["pod_capacity_for_bench"] = capacity

        if not args.no_direct:
            profile = None
            if args.apiserver_profile:
                profile = (args.apiserver_profile_seconds, Path(args.apiserver_profile) / "direct.pprof")
            report["direct"] = direct_baseline(api, harness, args.count, args.threads, phase_timeout, profile)
        if not args.no_direct:
            report["ftj_only"] = ftj_only_baseline(api, harness, args.count, args.threads, phase_timeout)
        if args.lean_operator:
            report["lean_operator"] = lean_baseline(
                api, harness, args.count, args.threads, phase_timeout, workdir
            )
            for status in ("pending", "none"):
                report[f"lean_operator_status_{status}"] = lean_baseline(
                    api, harness, args.count, args.threads, phase_timeout, workdir, status=status
                )
        if args.unrelated_jobs:
            say(f"creating {args.unrelated_jobs} unrelated Jobs")
            report["unrelated_jobs"] = {
                "count": args.unrelated_jobs,
                "create_seconds": create_unrelated_jobs(api, namespace, args.unrelated_jobs, args.threads),
            }

        # As in production: no dev endpoints (the harness turns them on for the e2e tests).
        # The progress measurement points pods at loopback trainers, which only dev mode scrapes
        # (the operator runs outside the cluster, where pod IPs are not routable).
        op_env = {
            "FTJ_PROGRESS_INTERVAL": f"{args.progress_interval:g}",
            "FTJ_PROGRESS_WRITE_INTERVAL": f"{args.progress_write_interval:g}",
            "FTJ_DEV_METRICS_ENDPOINTS": "true" if args.progress_sweeps else "false",
            "MALLOC_ARENA_MAX": "2",  # as the operator image sets it (Dockerfile)
        }
        if args.max_workers:
            op_env["FTJ_MAX_WORKERS"] = str(args.max_workers)
        op_env.update(kv.split("=", 1) for kv in args.operator_env)
        log_path = workdir / "operator.log"
        op = harness.OperatorProcess(kubeconfig, [namespace], log_path, op_env).start()
        sampler = ProcSampler(op.proc.pid)
        sampler.start()
        rss_start, cpu_start = sampler.snapshot()
        if args.py_spy:
            spy_args = ["record", "--pid", str(op.proc.pid), "--nonblocking", "--rate", "25"]
            if args.py_spy_gil:
                spy_args.append("--gil")
            elif not args.py_spy_cpu:
                spy_args.append("--idle")
            spy = subprocess.Popen(
                [args.py_spy, *spy_args, "--format", "raw", "-o", str(workdir / "profile.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        rec = Recorder()
        watch_ftjs_and_jobs(api, namespace, rec, stop)

        server_before = ApiServerMetrics(api)
        writes_before = server_before.writes()
        names = [f"b{i:05d}" for i in range(args.count)]

        say(f"creating {args.count} FineTuneJobs with {args.threads} threads")
        machine_cpu_start = cpu_by_process()
        profiler = start_apiserver_profile(
            api,
            args.apiserver_profile_seconds,
            Path(args.apiserver_profile) / "operator.pprof" if args.apiserver_profile else None,
        )
        t0 = time.monotonic()
        create_ftjs(api, harness, namespace, names, args.threads, rec)
        t_created = time.monotonic()
        cpu_after_create = sampler.snapshot()[1]

        jobs_ok = wait_until(
            lambda: len(rec.job_added) >= args.count,
            phase_timeout,
            lambda: f"every Job ({len(rec.job_added)}/{args.count})",
        )
        t_jobs = time.monotonic()
        cpu_after_jobs = sampler.snapshot()[1]
        if profiler is not None:
            profiler.join()
        machine_cpu_jobs = cpu_by_process()
        running_ok = wait_until(
            lambda: rec.count("Running") >= args.count,
            phase_timeout,
            lambda: f"every Running ({rec.count('Running')}/{args.count})",
        )
        t_running = time.monotonic()
        if not running_ok:
            say(f"{rec.count('Running')} of {args.count} reached Running; finishing the rest as they start")
        progress_writes: Counter[tuple[str, str]] = Counter()
        if args.progress_sweeps:
            trainers = FakeTrainers()
            progress_before = ApiServerMetrics(api).writes()
            report["progress_loop"] = measure_progress_loop(
                api=api,
                core=core,
                namespace=namespace,
                op=op,
                sampler=sampler,
                trainers=trainers,
                running=rec.in_phase("Running"),
                sweeps=args.progress_sweeps,
                interval=args.progress_interval,
                write_interval=args.progress_write_interval,
                threads=args.threads,
            )
            # From here scrapes fail and change nothing. Progress scraped since a run's last write
            # is written within one write interval: wait for it, so the lifecycle count below leaves
            # out every progress write (they grow with a run's length; reported per sweep instead).
            served = trainers.scraped()
            trainers.close()
            trainers = None
            closed = time.monotonic()
            report["progress_loop"]["newest_progress_written"] = wait_until(
                lambda: rec.behind(served) == 0,
                args.progress_write_interval + 2 * args.progress_interval + 30,
                lambda: f"the last scraped step in status ({rec.behind(served)} behind)",
            )
            report["progress_loop"]["newest_progress_written_seconds"] = round(time.monotonic() - closed, 1)
            progress_writes = Counter(ApiServerMetrics(api).writes())
            progress_writes.subtract(progress_before)
            report["progress_loop"]["operator_writes_outside_lifecycle"] = {
                f"{verb} {res}": n
                for (res, verb), n in progress_writes.items()
                if n and res in OPERATOR_RESOURCES
            }

        patch_pool = ThreadPoolExecutor(args.threads)
        pending_patches: set[str] = set()

        def annotate_running() -> None:
            resp = core.list_namespaced_pod(
                namespace,
                label_selector=LABEL_JOB,
                field_selector="status.phase=Running",
                _preload_content=False,
            )
            for pod in json.loads(resp.data).get("items") or []:
                meta = pod["metadata"]
                ftj = (meta.get("labels") or {}).get(LABEL_JOB)
                if not ftj or "finetuning.io/test-exit-code" in (meta.get("annotations") or {}):
                    continue
                if meta["name"] in pending_patches:
                    continue
                pending_patches.add(meta["name"])
                patch_pool.submit(finish_pod, meta["name"], ftj)

        def finish_pod(pod: str, ftj: str) -> None:
            body = {
                "metadata": {
                    "annotations": {
                        "finetuning.io/test-exit-code": "0",
                        "finetuning.io/test-termination-message": json.dumps(
                            {"metrics": {"step": 10, "total_steps": 10, "train_loss": 0.5}}
                        ),
                    }
                }
            }
            with contextlib.suppress(client.ApiException):
                core.patch_namespaced_pod(pod, namespace, body)
                with rec.lock:
                    rec.annotated.setdefault(ftj, time.monotonic())

        say("finishing pods")
        t_finish = time.monotonic()
        last_scan = [0.0]

        def tick() -> None:
            if time.monotonic() - last_scan[0] >= 2:
                last_scan[0] = time.monotonic()
                with contextlib.suppress(Exception):
                    annotate_running()

        done_ok = wait_until(
            lambda: rec.count("Succeeded") >= args.count,
            phase_timeout,
            lambda: f"every Succeeded ({rec.count('Succeeded')}/{args.count})",
            tick=tick,
        )
        t_done = time.monotonic()
        patch_pool.shutdown(wait=True)
        rss_done, cpu_done = sampler.snapshot()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
            report["profile"] = summarize_profile(workdir / "profile.txt")
        server_done = ApiServerMetrics(api)
        writes_done = server_done.writes()
        events_done = event_sources(core, namespace)

        # idle: wait for the watches to go quiet (max 60 s), then count writes over the window
        wait_until(lambda: time.monotonic() - rec.last_event > 5, 60, "the watches to go quiet")
        idle_events_before = Counter(rec.events)
        idle_before = ApiServerMetrics(api).writes()
        idle_cpu_before = sampler.snapshot()[1]
        say(f"idle window {args.idle_seconds:g}s")
        time.sleep(args.idle_seconds)  # deliberate: this measures what happens when nothing should
        idle_after = ApiServerMetrics(api).writes()
        rss_end, cpu_end = sampler.snapshot()
        idle_events = Counter(rec.events)
        idle_events.subtract(idle_events_before)
        events_end = event_sources(core, namespace)
        sampler.stop_event.set()
        op_metrics = operator_metrics(op.metrics())
        rss_peak_run = sampler.peak_rss

        cold: dict[str, Any] | None = None
        if not args.no_cold_start:
            say(f"cold start: a new operator over {args.count} existing FineTuneJobs")
            op.kill(signal.SIGTERM)
            cold_before = ApiServerMetrics(api).writes()
            t_cold = time.monotonic()
            op = harness.OperatorProcess(
                kubeconfig, [namespace], workdir / "operator-cold.log", op_env
            ).start()
            cold_sampler = ProcSampler(op.proc.pid)
            cold_sampler.start()
            caught_up = wait_until(
                lambda: phase_count(op.metrics(), "Succeeded") >= args.count,
                phase_timeout,
                "the restarted operator to resume every FineTuneJob",
            )
            cold_seconds = time.monotonic() - t_cold
            time.sleep(5)  # writes a resume would make land within a few seconds
            cold_writes = diff_writes(ApiServerMetrics(api).writes(), cold_before)
            cold_sampler.stop_event.set()
            cold = {
                "caught_up": caught_up,
                "seconds_to_caught_up": round(cold_seconds, 1),
                "operator_writes": {r: v for r, v in cold_writes.items() if r in OPERATOR_RESOURCES},
                "rss_peak_mib": round(cold_sampler.peak_rss / (1024 * 1024), 1),
            }

        n = args.count
        created_to_job = [rec.job_added[k] - rec.created[k] for k in rec.created if k in rec.job_added]
        by_creation = sorted(rec.created, key=rec.created.__getitem__)
        tenths = [
            by_creation[i * len(by_creation) // 10 : (i + 1) * len(by_creation) // 10] for i in range(10)
        ]
        finish_to_status = [
            rec.phase["Succeeded"][k] - rec.job_done[k] for k in rec.job_done if k in rec.phase["Succeeded"]
        ]
        criteria_to_status = [
            rec.phase["Succeeded"][k] - rec.job_criteria[k]
            for k in rec.job_criteria
            if k in rec.phase["Succeeded"]
        ]
        annotate_to_status = [
            rec.phase["Succeeded"][k] - rec.annotated[k] for k in rec.annotated if k in rec.phase["Succeeded"]
        ]
        create_to_running = [
            rec.phase["Running"][k] - rec.created[k] for k in rec.created if k in rec.phase["Running"]
        ]
        run_writes = diff_writes(writes_done - progress_writes, writes_before)
        per_job = {res: {v: round(c / n, 2) for v, c in verbs.items()} for res, verbs in run_writes.items()}
        op_total = sum(sum(v.values()) for r, v in run_writes.items() if r in OPERATOR_RESOURCES)
        op_total -= run_writes.get("finetunejobs", {}).get("POST", 0)  # the bench's own creates
        op_events = by_source(events_done, "kopf")
        idle_writes = diff_writes(idle_after, idle_before)
        idle_op = {r: v for r, v in idle_writes.items() if r in OPERATOR_RESOURCES}
        idle_kopf_events = by_source(events_end, "kopf") - by_source(events_done, "kopf")
        mib = 1024 * 1024
        direct = report.get("direct") or {}
        operator_rate = round(len(rec.job_added) / max(t_jobs - t0, 1e-9), 2)
        report.update(
            {
                # Stable keys, compared across runs (issue 11).
                "direct_jobs_per_s": direct.get("jobs_per_s"),
                "operator_jobs_per_s": operator_rate,
                "ratio_operator_to_direct": round(operator_rate / direct["jobs_per_s"], 2)
                if direct.get("jobs_per_s")
                else None,
                # The least any operator could cost here (--lean-operator), relative to the direct path.
                "ratio_lean_operator_to_direct": round(
                    report["lean_operator"]["jobs_per_s"] / direct["jobs_per_s"], 2
                )
                if direct.get("jobs_per_s") and "lean_operator" in report
                else None,
                "lean_operator_create_to_job_p99_s": (
                    (report.get("lean_operator") or {}).get("create_to_job_seconds") or {}
                ).get("p99"),
                **{
                    f"ratio_lean_operator_status_{status}_to_direct": round(
                        report[f"lean_operator_status_{status}"]["jobs_per_s"] / direct["jobs_per_s"], 2
                    )
                    if direct.get("jobs_per_s") and f"lean_operator_status_{status}" in report
                    else None
                    for status in ("pending", "none")
                },
                # The CRD's own ceiling: FineTuneJobs created with no operator, relative to the direct path.
                "ftj_only_creates_per_s": (report.get("ftj_only") or {}).get("creates_per_s"),
                "direct_create_to_job_p50_s": (direct.get("create_to_job_seconds") or {}).get("p50"),
                "direct_create_to_job_p99_s": (direct.get("create_to_job_seconds") or {}).get("p99"),
                "operator_create_to_job_p50_s": stats(created_to_job).get("p50"),
                "operator_create_to_job_p99_s": stats(created_to_job).get("p99"),
                "operator_writes_per_job": round((op_total + op_events) / n, 2),
                # Of those, write requests the API server refused (409 conflicts: a write from a stale
                # read, retried on a fresh one); the progress window's, if any, are included.
                "operator_refused_writes_per_job": round(
                    sum(
                        v
                        for (res, _verb), v in (
                            server_done.refused_writes() - server_before.refused_writes()
                        ).items()
                        if res in OPERATOR_RESOURCES
                    )
                    / n,
                    2,
                ),
                # A FineTuneJob's create handler should run once (twice meant a second Job GET,
                # status write and kopf PATCH per object); the periodic resync's reconciles of
                # unfinished objects (through the same queue) are counted apart.
                "reconciles_per_job": round(
                    (
                        (op_metrics["handler_seconds"].get("reconcile") or {}).get("count", 0)
                        - op_metrics["resync_queued"]
                    )
                    / n,
                    2,
                ),
                "resync_reconciles_per_job": round(op_metrics["resync_queued"] / n, 2),
                "rss_peak_mib": round(rss_peak_run / mib, 1),
                "cold_start": cold,
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
                "cluster": "own (ftj-bench)" if own else str(kubeconfig),
                "operator_env": op_env,
                "complete": {"jobs": jobs_ok, "running": running_ok, "succeeded": done_ok},
                "create_burst_seconds": round(t_created - t0, 2),
                "create_to_job_created_seconds": stats(created_to_job),
                # Where the lag builds: the p50 of each tenth of the burst in creation order (a queue
                # grows from tenth to tenth; a fixed pipeline delay does not), and how late this
                # bench's own FineTuneJob watch saw each create (the API server's watch delivery).
                "create_to_job_p50_by_tenth_s": [
                    stats(rec.job_added[k] - rec.created[k] for k in part if k in rec.job_added).get("p50")
                    for part in tenths
                ],
                "ftj_watch_event_to_job_seconds": stats(
                    rec.job_added[k] - rec.ftj_seen[k]
                    for k in rec.created
                    if k in rec.ftj_seen and k in rec.job_added
                ),
                "create_to_ftj_watch_event_seconds": stats(
                    max(rec.ftj_seen[k] - rec.created[k], 0.0) for k in rec.created if k in rec.ftj_seen
                ),
                "job_finished_to_status_seconds": stats(finish_to_status),
                "job_success_criteria_to_status_seconds": stats(criteria_to_status),
                "pod_annotated_to_status_seconds": stats(annotate_to_status),
                "create_to_running_seconds": stats(create_to_running),
                "throughput_jobs_per_second": {
                    "job_created": round(len(rec.job_added) / max(t_jobs - t0, 1e-9), 2),
                    "running": round(rec.count("Running") / max(t_running - t0, 1e-9), 2),
                    "succeeded": round(rec.count("Succeeded") / max(t_done - t_finish, 1e-9), 2),
                },
                # where the machine's CPU went from the first FineTuneJob POST to the last Job
                "cpu_seconds_by_process_until_all_jobs": cpu_spent(machine_cpu_start, machine_cpu_jobs),
                "phase_seconds": {
                    "all_jobs_created": round(t_jobs - t0, 2),
                    "all_running": round(t_running - t0, 2),
                    "finish_all_succeeded": round(t_done - t_finish, 2),
                },
                "operator": {
                    "rss_mib": {
                        "start": round(rss_start / mib, 1),
                        "peak": round(sampler.peak_rss / mib, 1),
                        "after_succeeded": round(rss_done / mib, 1),
                        "end": round(rss_end / mib, 1),
                    },
                    "cpu_seconds": {
                        "create_burst": round(cpu_after_create - cpu_start, 2),
                        "until_all_jobs": round(cpu_after_jobs - cpu_start, 2),
                        "total_until_succeeded": round(cpu_done - cpu_start, 2),
                        "idle_window": round(cpu_end - idle_cpu_before, 2),
                    },
                    "metrics": op_metrics,
                },
                "api_writes": {
                    "total_per_job": round(sum(sum(v.values()) for v in run_writes.values()) / n, 2),
                    "operator_per_job": round((op_total + op_events) / n, 2),
                    "operator_resources_per_job": round(op_total / n, 2),
                    "kopf_events_per_job": round(op_events / n, 2),
                    "by_resource_per_job": per_job,
                    "events_by_source_reason": dict(sorted(events_done.items())),
                    "apiserver_latency_during_run": server_done.latency_since(
                        server_before,
                        ("finetunejobs", "finetunejobs/status", "configmaps", "jobs", "jobs/status", "pods"),
                    ),
                    "note": "operator = finetunejobs PATCH/PUT (+status), configmaps, jobs, services "
                    "writes and Events from 'kopf'; the bench adds 1 FTJ POST (excluded) and "
                    "1 pod PATCH per job; writes while the progress loop was measured (pointing pods at "
                    "the fake trainers, warm-up, the sweeps) are left out and reported there",
                },
                "idle": {
                    "seconds": args.idle_seconds,
                    "writes_by_resource": idle_writes,
                    "operator_resource_writes": idle_op,
                    "operator_writes": sum(sum(v.values()) for v in idle_op.values()) + idle_kopf_events,
                    "kopf_events": idle_kopf_events,
                    "watch_events": {k: v for k, v in idle_events.items() if v},
                },
                "goals": {
                    "job_created_p99_seconds": {
                        "goal": GOALS["job_created_p99_seconds"],
                        "met": stats(created_to_job).get("p99", 1e9) <= GOALS["job_created_p99_seconds"],
                    },
                    "rss_mib": {"goal": GOALS["rss_mib"], "met": sampler.peak_rss / mib <= GOALS["rss_mib"]},
                    "idle_operator_writes": {
                        "goal": 0,
                        "met": not idle_op and idle_kopf_events == 0,
                    },
                },
                "operator_log": str(log_path) if args.keep_log else None,
                "py_spy_raw_profile": str(workdir / "profile.txt") if args.keep_log and args.py_spy else None,
            }
        )
    finally:  # also on a signal: hack/localcluster.py's register_cleanup stops the cluster, then unwinds
        stop.set()
        if op is not None:
            op.kill(signal.SIGTERM)
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        if trainers is not None:
            trainers.close()
        if own:
            say(f"stopping cluster {CLUSTER_NAME}")
            lc.down(CLUSTER_NAME)
        else:
            with contextlib.suppress(Exception):
                core.delete_namespace(namespace)
        if not args.keep_log:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        api.close()
    print(json.dumps(report, indent=None if args.json_only else 2))
    return 0


def _exists(fn: Callable[[], Any]) -> bool:
    try:
        fn()
        return True
    except Exception:
        return False


def install_crd(kubeconfig: Path) -> None:
    """The repository's CRD, applied and Established."""
    kubectl = str(load_hack("tools").ensure_tools() / "kubectl")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    apply = ["apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")]
    # A control plane that has just started can refuse the first apply (its own API still being set up).
    deadline = time.monotonic() + 60
    while True:
        applied = subprocess.run([kubectl, *apply], env=env, capture_output=True, text=True, timeout=90)
        if applied.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"kubectl apply of the CRD failed: {applied.stderr}")
        time.sleep(1)
    # `kubectl wait` fails at once while the new CRD has no status.conditions yet: ask again.
    wait = ["wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s"]
    for _ in range(30):
        done = subprocess.run([kubectl, *wait], env=env, capture_output=True, text=True, timeout=90)
        if done.returncode == 0:
            return
        time.sleep(1)
    raise RuntimeError(f"the CRD never became Established: {done.stderr}")


def make_room(core: Any, count: int) -> None:
    """Raise cpu-node-0's capacity so ``count`` trainer pods run at once: each asks for 20Gi of
    ephemeral storage (the operator's download default), so its 500Gi held 25 pods, not 110."""
    room = {"pods": str(count + 120), "cpu": str(32 + count), "memory": f"{128 + count}Gi"}
    room["ephemeral-storage"] = f"{500 + 25 * count}Gi"
    core.patch_node_status("cpu-node-0", {"status": {"capacity": room, "allocatable": room}})


def _quantity(value: str) -> int:
    from kubernetes.utils import parse_quantity

    return int(parse_quantity(value))  # type: ignore[no-untyped-call]


def _pod_capacity(core: Any, namespace: str, per_pod_storage: str = "20Gi") -> int:
    """Trainer pods that still fit on untainted kwok nodes: free pod slots, and free ephemeral storage
    for ``per_pod_storage`` each (what a trainer pod without a model cache requests)."""
    nodes = json.loads(core.list_node(_preload_content=False).data).get("items") or []
    pods = json.loads(core.list_pod_for_all_namespaces(_preload_content=False).data).get("items") or []
    used: Counter[str] = Counter()
    disk: Counter[str] = Counter()
    for p in pods:
        node = p["spec"].get("nodeName")
        if not node or (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        used[node] += 1
        for ctr in p["spec"].get("containers") or []:
            asked = ((ctr.get("resources") or {}).get("requests") or {}).get("ephemeral-storage")
            disk[node] += _quantity(asked) if asked else 0
    free = 0
    for node in nodes:
        if node["spec"].get("taints"):
            continue
        alloc = (node.get("status") or {}).get("allocatable", {})
        name = node["metadata"]["name"]
        slots = max(int(alloc.get("pods", "0")) - used[name], 0)
        storage = max(_quantity(alloc.get("ephemeral-storage", "0")) - disk[name], 0)
        free += min(slots, storage // _quantity(per_pod_storage))
    return free


if __name__ == "__main__":
    sys.exit(main())
