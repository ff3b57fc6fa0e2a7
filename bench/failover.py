#!/usr/bin/env python3
"""Leader failover benchmark: how long from SIGKILL of the acting replica to the standby's first Job.

Prints one JSON object. Against ``--kubeconfig``'s cluster, or its own (hack/localcluster.py,
``ftj-failover``). Two operator processes (tests/e2e/harness.py's ``OperatorProcess``) run with the
chart's leaderElection values on one fresh namespace. Each round: find the Lease holder, SIGKILL it,
create a FineTuneJob at once, and time until its Job exists (polled every 50 ms, monotonic clock);
then start a replacement replica so two run again. The goal is the issue's: under 30 s, and a
ratio against the lease duration (the floor any Lease-based takeover after a crash must wait).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

sys.path.append(str(Path(__file__).resolve().parent.parent / "hack"))
from hack_loader import load_hack  # hack/ scripts by path, one loader (hack/hack_loader.py)

REPO = Path(__file__).resolve().parent.parent
GROUP, VERSION, PLURAL = "finetuning.io", "v1alpha1", "finetunejobs"
GOAL_SECONDS = 30.0


def _harness() -> ModuleType:
    for p in (REPO / "tests", REPO / "tests" / "e2e", REPO / "operator"):
        if str(p) not in sys.path:
            sys.path.append(str(p))
    import harness  # type: ignore[import-not-found]

    return harness  # type: ignore[no-any-return]


def until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--kubeconfig", help="use this cluster instead of starting ftj-failover")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    lc = load_hack("localcluster")
    tools = load_hack("tools")
    harness = _harness()
    from kubernetes import client, config

    own = args.kubeconfig is None
    if own:
        lc.register_cleanup("ftj-failover")
        kubeconfig = Path(lc.ensure_up("ftj-failover", owner_pid=os.getpid()).kubeconfig)
    else:
        kubeconfig = Path(args.kubeconfig)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    custom, leases = client.CustomObjectsApi(api), client.CoordinationV1Api(api)
    le = yaml.safe_load((REPO / "charts" / "finetune-operator" / "values.yaml").read_text())["leaderElection"]
    ns = f"failover-{uuid.uuid4().hex[:6]}"
    env = {
        "FTJ_LEADER_ELECTION_LEASE": "finetune-operator",
        "FTJ_LEADER_ELECTION_NAMESPACE": ns,
        "FTJ_LEASE_DURATION": str(le["leaseDurationSeconds"]),
        "FTJ_RENEW_DEADLINE": str(le["renewDeadlineSeconds"]),
        "FTJ_RETRY_PERIOD": str(le["retryPeriodSeconds"]),
    }
    workdir = Path(tempfile.mkdtemp(prefix="ftj-failover-"))
    ops: list[Any] = []
    times: list[float] = []
    try:
        kubectl = str(tools.ensure_tools() / "kubectl")
        kenv = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        subprocess.run(
            [kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds")],
            env=kenv,
            check=True,
            capture_output=True,
            timeout=90,
        )
        until(
            lambda: any(
                c.type == "Established" and c.status == "True"
                for c in client.ApiextensionsV1Api(api)
                .read_custom_resource_definition(f"{PLURAL}.{GROUP}")
                .status.conditions
                or []
            ),
            60,
            "the CRD",
        )
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        until(lambda: core.read_namespaced_service_account("default", ns), 60, "the default SA")

        def start() -> None:
            ops.append(harness.OperatorProcess(kubeconfig, [ns], workdir / f"op-{len(ops)}.log", env).start())

        start()
        start()
        for i in range(args.rounds):
            holder = until(
                lambda: leases.read_namespaced_lease("finetune-operator", ns).spec.holder_identity,
                60,
                "a leader",
            )
            [leader] = [o for o in ops if o.proc.poll() is None and holder.endswith(f"/{o.proc.pid}")]
            leader.kill(signal.SIGKILL)
            killed = time.monotonic()
            name = f"round-{i}"
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "FineTuneJob",
                "metadata": {"name": name},
                "spec": harness.deep_merge(harness.BASE_SPEC, {"distributed": {"gpusPerNode": 0}}),
            }
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
            until(
                lambda n=name: (
                    batch.list_namespaced_job(ns, label_selector=f"finetuning.io/finetunejob={n}").items
                ),
                GOAL_SECONDS * 2,
                f"{name}'s Job",
            )
            times.append(round(time.monotonic() - killed, 2))
            start()
        median = statistics.median(times)
        report = {
            "rounds": len(times),
            "failover_seconds": times,
            "median_seconds": median,
            "max_seconds": max(times),
            "goal_seconds": GOAL_SECONDS,
            "lease_duration_seconds": le["leaseDurationSeconds"],
            "median_over_lease_duration": round(median / le["leaseDurationSeconds"], 3),
            "ok": max(times) < GOAL_SECONDS,
        }
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    finally:
        for o in ops:
            o.kill()
        try:
            core.delete_namespace(ns)
        except Exception as exc:  # the cluster may already be gone
            print(f"bench: namespace {ns} not deleted: {exc}", file=sys.stderr)
        if own:
            lc.down("ftj-failover")


if __name__ == "__main__":
    raise SystemExit(main())
