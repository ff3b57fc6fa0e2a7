#!/usr/bin/env python3
"""Operator chaos benchmark: FineTuneJobs created, changed and deleted while the operator is SIGKILLed
again and again, then an etcd and API server restart; afterwards nothing may be duplicated, orphaned,
stuck or left behind.

Prints one JSON object. What it does, in order:

1. Uses ``--kubeconfig``'s cluster (no control-plane restart then: the bench cannot restart a cluster
   it did not start), or starts its own (hack/localcluster.py, ``ftj-chaos``) and stops it at the end.
2. Starts the operator (tests/e2e/harness.py's ``OperatorProcess``) on a fresh namespace.
3. During a chaos window, at random moments (``--seed``): creates ``--count`` FineTuneJobs, changes
   the spec of ``--change-fraction`` of them once (a new run: ``hyperparameters.epochs``), deletes
   ``--delete-fraction`` of them, and SIGKILLs the operator ``--kills`` times (a new one starts at once,
   as a Deployment would restart it). A finisher ends every Running trainer pod through kwok (exit 0).
4. Restarts etcd, then kube-apiserver (own cluster only).
5. Lets it settle: every FineTuneJob that was not deleted ends Succeeded or Failed, every deleted one
   is gone with its children (garbage collector).
6. Counts, each with the goal 0: ``duplicate_jobs`` (FineTuneJobs with two unfinished Jobs),
   ``extra_runs`` (more Jobs ever created than spec changes + 1), ``orphans`` (Jobs, headless
   Services, pods and ConfigMaps (earlier operators made one per run) of deleted FineTuneJobs),
   ``stuck_finalizers`` (FineTuneJobs being deleted, or carrying a finalizer), ``not_terminal`` and
   ``stale_observed_generation``.

``run_chaos`` is the same thing as a function; tests/e2e/test_chaos.py runs it at CI size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLUSTER_NAME = "ftj-chaos"
GROUP, VERSION, PLURAL = "finetuning.io", "v1alpha1", "finetunejobs"
LABEL_JOB = f"{GROUP}/finetunejob"
TERMINAL = ("Succeeded", "Failed")
QUIET = False


def say(msg: str) -> None:
    if not QUIET:
        print(f"chaos: {msg}", file=sys.stderr, flush=True)


def scale_bench() -> ModuleType:
    """bench/operator_scale.py: its watch, node room and body helpers (bench/ is scripts, not a package)."""
    if str(REPO / "bench") not in sys.path:
        sys.path.append(str(REPO / "bench"))
    import operator_scale

    return operator_scale


@dataclass
class Params:
    count: int = 200
    kills: int = 20
    change_fraction: float = 0.15
    delete_fraction: float = 0.15
    window_seconds: float | None = None  # default: 60 s + 0.5 s per FineTuneJob
    settle_seconds: float | None = None  # default: 300 s + 1 s per FineTuneJob
    seed: int = 11
    operator_env: dict[str, str] = field(default_factory=dict)
    namespace_prefix: str = "chaos"

    @property
    def window(self) -> float:
        return self.window_seconds if self.window_seconds is not None else 60 + 0.5 * self.count

    @property
    def settle(self) -> float:
        return self.settle_seconds if self.settle_seconds is not None else 300 + 1.0 * self.count


@dataclass
class Plan:
    """What happens when (seconds from the window's start), drawn from the seed."""

    actions: list[tuple[float, str, str]]  # (at, "create" | "change" | "delete", name)
    kills: list[float]
    changed: set[str]
    deleted: set[str]


def make_plan(params: Params) -> Plan:
    rng = random.Random(params.seed)
    names = [f"c{i:04d}" for i in range(params.count)]
    window = params.window
    created_at = {n: rng.uniform(0, 0.5 * window) for n in names}
    shuffled = names[:]
    rng.shuffle(shuffled)
    n_change = round(params.change_fraction * params.count)
    n_delete = round(params.delete_fraction * params.count)
    changed = set(shuffled[:n_change])
    deleted = set(shuffled[n_change : n_change + n_delete])
    actions = [(created_at[n], "create", n) for n in names]
    for n in changed:
        actions.append((rng.uniform(created_at[n] + 0.5, 0.9 * window), "change", n))
    for n in deleted:
        actions.append((rng.uniform(created_at[n] + 0.5, 0.9 * window), "delete", n))
    kills = sorted(rng.uniform(0.02 * window, 0.95 * window) for _ in range(params.kills))
    return Plan(sorted(actions), kills, changed, deleted)


class JobLog:
    """Every Job name ever seen per FineTuneJob (from a watch), to count runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, set[str]] = defaultdict(set)

    def on_job(self, etype: str, obj: dict[str, Any], t: float) -> None:
        meta = obj.get("metadata") or {}
        ftj = (meta.get("labels") or {}).get(LABEL_JOB)
        if ftj:
            with self.lock:
                self.jobs[ftj].add(str(meta.get("name")))


def _items(resp: Any) -> list[dict[str, Any]]:
    return list(json.loads(resp.data).get("items") or [])


def _finished(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


class Finisher(threading.Thread):
    """Ends every Running trainer pod through kwok (exit 0), once a second."""

    def __init__(self, core: Any, namespace: str) -> None:
        super().__init__(daemon=True)
        self.core, self.namespace = core, namespace
        self.stop_event = threading.Event()
        self.done: set[str] = set()
        self.errors = 0

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            try:
                pods = _items(
                    self.core.list_namespaced_pod(
                        self.namespace,
                        label_selector=LABEL_JOB,
                        field_selector="status.phase=Running",
                        _preload_content=False,
                    )
                )
            except Exception:
                self.errors += 1
                continue  # the API server may be restarting
            for pod in pods:
                name = pod["metadata"]["name"]
                if name in self.done:
                    continue
                body = {"metadata": {"annotations": {"finetuning.io/test-exit-code": "0"}}}
                try:
                    self.core.patch_namespaced_pod(name, self.namespace, body)
                    self.done.add(name)
                except Exception:
                    self.errors += 1


class Operators:
    """The operator process, restarted after each SIGKILL (as its Deployment would)."""

    def __init__(self, start: Callable[[int], Any]) -> None:
        self.start = start
        self.generation = 0
        self.current = start(0)
        self.kills = 0

    def kill_and_restart(self, down_seconds: float) -> None:
        self.current.kill(signal.SIGKILL)
        self.kills += 1
        time.sleep(down_seconds)  # deliberate: how long the operator stays away
        self.generation += 1
        self.current = self.start(self.generation)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.current.kill(signal.SIGTERM)


def run_chaos(
    api: Any,
    kubeconfig: Path,
    params: Params,
    workdir: Path,
    restart_control_plane: Callable[[], None] | None,
) -> dict[str, Any]:
    """The whole benchmark against ``api``'s cluster; returns the report (see the module docstring)."""
    from kubernetes import client

    scale = scale_bench()
    harness = scale._load_harness()
    core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
    namespace = f"{params.namespace_prefix}-{os.getpid()}-{random.Random().randrange(10**6):06d}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    scale.wait_until(
        lambda: scale._exists(lambda: core.read_namespaced_service_account("default", namespace)), 60, "SA"
    )
    plan = make_plan(params)
    report: dict[str, Any] = {
        "count": params.count,
        "kills_planned": params.kills,
        "changed": len(plan.changed),
        "deleted": len(plan.deleted),
        "seed": params.seed,
        "window_seconds": round(params.window, 1),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    stop = threading.Event()
    joblog = JobLog()
    ready = threading.Event()
    threading.Thread(
        target=scale.watch_forever,
        args=(
            batch.list_namespaced_job,
            (namespace,),
            {"label_selector": LABEL_JOB},
            joblog.on_job,
            stop,
            ready,
        ),
        daemon=True,
    ).start()
    ready.wait(30)

    env = {"FTJ_PROGRESS_INTERVAL": "15", "FTJ_DEV_METRICS_ENDPOINTS": "false", **params.operator_env}

    def start_operator(n: int) -> Any:
        return harness.OperatorProcess(kubeconfig, [namespace], workdir / f"operator-{n}.log", env).start()

    operators = Operators(start_operator)
    finisher = Finisher(core, namespace)
    finisher.start()
    try:
        failures: Counter[str] = Counter()
        rng = random.Random(params.seed + 1)

        def act(kind: str, name: str) -> None:
            try:
                if kind == "create":
                    body = scale.ftj_body(name, harness)
                    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
                elif kind == "change":
                    patch = {"spec": {"hyperparameters": {"epochs": 2}}}
                    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
                else:
                    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except Exception as exc:
                failures[f"{kind}: {type(exc).__name__}"] += 1
                raise

        say(f"chaos window {params.window:.0f}s: {params.count} creates, {len(plan.changed)} changes, "
            f"{len(plan.deleted)} deletes, {params.kills} operator SIGKILLs")  # fmt: skip
        t0 = time.monotonic()
        pending = list(plan.actions)
        kills = list(plan.kills)
        futures = []
        with ThreadPoolExecutor(8) as pool:
            while pending or kills:
                now = time.monotonic() - t0
                while pending and pending[0][0] <= now:
                    _, kind, name = pending.pop(0)
                    futures.append((kind, name, pool.submit(act, kind, name)))
                if kills and kills[0] <= now:
                    kills.pop(0)
                    operators.kill_and_restart(rng.uniform(0.0, 2.0))
                nxt = min([p[0] for p in pending[:1]] + kills[:1], default=now)
                time.sleep(min(max(nxt - (time.monotonic() - t0), 0.0), 0.5))  # the plan's schedule
        # An action that failed (e.g. a create refused while the API server was busy) is retried once, so
        # the plan is carried out; what still fails is reported.
        for kind, name, fut in futures:
            if fut.exception() is not None:
                with contextlib.suppress(Exception):
                    act(kind, name)
        report["chaos_seconds"] = round(time.monotonic() - t0, 1)
        report["operator_kills"] = operators.kills
        report["action_failures"] = dict(failures)

        if restart_control_plane is not None:
            say("restarting etcd and kube-apiserver")
            t_restart = time.monotonic()
            restart_control_plane()
            report["control_plane_restart_seconds"] = round(time.monotonic() - t_restart, 1)
        else:
            report["control_plane_restart_seconds"] = None

        survivors = sorted({a[2] for a in plan.actions} - plan.deleted)

        def ftjs() -> dict[str, dict[str, Any]]:
            resp = custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _preload_content=False
            )
            return {o["metadata"]["name"]: o for o in _items(resp)}

        def leftovers() -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for kind, lister in (
                ("jobs", batch.list_namespaced_job),
                ("services", core.list_namespaced_service),
                ("configmaps", core.list_namespaced_config_map),
                ("pods", core.list_namespaced_pod),
            ):
                items = _items(lister(namespace, label_selector=LABEL_JOB, _preload_content=False))
                names = [
                    f"{kind}/{o['metadata']['name']}"
                    for o in items
                    if (o["metadata"].get("labels") or {}).get(LABEL_JOB) in plan.deleted
                ]
                if names:
                    out[kind] = names
            return out

        def settled() -> bool:
            try:
                objs = ftjs()
            except Exception:
                return False
            # Terminal for the generation the object has now: a spec change not handled yet still shows the
            # previous run's terminal phase, with an older observedGeneration.
            done = all(_finished_current(objs.get(n) or {}) for n in survivors)
            return done and not (set(objs) & plan.deleted) and not leftovers()

        say("settling")
        t_settle = time.monotonic()
        ok = scale.wait_until(settled, params.settle, "every FineTuneJob terminal and every deleted one gone")
        report["settled"] = ok
        report["settle_seconds"] = round(time.monotonic() - t_settle, 1)

        objs = ftjs()
        jobs = _items(batch.list_namespaced_job(namespace, label_selector=LABEL_JOB, _preload_content=False))
        unfinished: Counter[str] = Counter(
            (j["metadata"].get("labels") or {}).get(LABEL_JOB, "?")
            for j in jobs
            if not _finished(j) and not j["metadata"].get("deletionTimestamp")
        )
        with joblog.lock:
            runs = {n: len(v) for n, v in joblog.jobs.items()}
        checks: dict[str, list[str]] = {
            "duplicate_jobs": sorted(n for n, k in unfinished.items() if k > 1),
            "extra_runs": sorted(
                f"{n}: {runs[n]} Jobs" for n in runs if runs[n] > (1 if n not in plan.changed else 2)
            ),
            "orphans": sorted(x for names in leftovers().values() for x in names),
            "stuck_finalizers": sorted(
                n
                for n, o in objs.items()
                if o["metadata"].get("deletionTimestamp") or o["metadata"].get("finalizers")
            ),
            "not_terminal": sorted(
                f"{n}: {((objs.get(n) or {}).get('status') or {}).get('phase')}"
                for n in survivors
                if ((objs.get(n) or {}).get("status") or {}).get("phase") not in TERMINAL
            ),
            "stale_observed_generation": sorted(
                n
                for n, o in objs.items()
                if (o.get("status") or {}).get("observedGeneration") != o["metadata"].get("generation")
            ),
        }
        report.update({k: len(v) for k, v in checks.items()})
        report["examples"] = {k: v[:10] for k, v in checks.items() if v}
        report["phases"] = dict(
            Counter(((o.get("status") or {}).get("phase") or "none") for o in objs.values())
        )
        report["runs_per_changed_job"] = round(
            sum(runs.get(n, 0) for n in plan.changed) / max(len(plan.changed), 1), 2
        )
        report["finisher_errors"] = finisher.errors
        report["goals"] = {k: {"goal": 0, "met": not v} for k, v in checks.items()}
        report["all_goals_met"] = ok and all(not v for v in checks.values())
        report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        report["namespace"] = namespace

        return report
    finally:  # also on an error or a signal unwinding (hack/localcluster.py's register_cleanup)
        finisher.stop_event.set()
        operators.stop()
        stop.set()
        with contextlib.suppress(Exception):
            core.delete_namespace(namespace)


def _finished_current(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    return status.get("phase") in TERMINAL and status.get("observedGeneration") == generation


def main() -> int:
    global QUIET
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--count", type=int, default=200, help="FineTuneJobs (default 200)")
    p.add_argument("--kills", type=int, default=20, help="operator SIGKILLs during the window (default 20)")
    p.add_argument("--change-fraction", type=float, default=0.15)
    p.add_argument("--delete-fraction", type=float, default=0.15)
    p.add_argument("--window", type=float, default=None, help="chaos window (default 60 s + 0.5 s/job)")
    p.add_argument("--settle", type=float, default=None, help="settle timeout (default 300 s + 1 s/job)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--resync-interval", type=float, default=None, help="FTJ_RESYNC_INTERVAL (default 60)")
    p.add_argument("--kubeconfig", help="use this cluster (no control-plane restart)")
    p.add_argument("--keep-logs", action="store_true", help="keep the operators' logs (path in the report)")
    p.add_argument("--json-only", action="store_true")
    args = p.parse_args()
    QUIET = args.json_only
    scale = scale_bench()
    scale.QUIET = args.json_only
    lc = scale.load_hack("localcluster")
    from kubernetes import client, config

    own = args.kubeconfig is None
    if own:
        lc.register_cleanup(CLUSTER_NAME)
        say(f"starting cluster {CLUSTER_NAME}")
        kubeconfig = Path(lc.ensure_up(CLUSTER_NAME, owner_pid=os.getpid()).kubeconfig)
    else:
        kubeconfig = Path(args.kubeconfig)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    api = client.ApiClient(cfg)
    workdir = Path(tempfile.mkdtemp(prefix="ftj-chaos-"))
    env = {"FTJ_RESYNC_INTERVAL": f"{args.resync_interval:g}"} if args.resync_interval else {}
    params = Params(
        count=args.count,
        kills=args.kills,
        change_fraction=args.change_fraction,
        delete_fraction=args.delete_fraction,
        window_seconds=args.window,
        settle_seconds=args.settle,
        seed=args.seed,
        operator_env=env,
    )
    try:
        scale.install_crd(kubeconfig)
        if own:
            scale.make_room(client.CoreV1Api(api), args.count)

        def restart() -> None:
            lc.restart_component(CLUSTER_NAME, "etcd")
            lc.restart_component(CLUSTER_NAME, "kube-apiserver")

        report = run_chaos(api, kubeconfig, params, workdir, restart if own else None)
        report["cluster"] = "own (ftj-chaos)" if own else str(kubeconfig)
        report["operator_logs"] = str(workdir) if args.keep_logs else None
    finally:
        if own:
            say(f"stopping cluster {CLUSTER_NAME}")
            lc.down(CLUSTER_NAME)
        if not args.keep_logs:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        api.close()
    print(json.dumps(report, indent=None if args.json_only else 2))
    return 0 if report["all_goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
