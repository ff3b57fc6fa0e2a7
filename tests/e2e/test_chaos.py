"""bench/operator_chaos.py at CI size: FineTuneJobs created, changed and deleted while the operator is
SIGKILLed 5 times, then an etcd and API server restart; nothing duplicated, orphaned, stuck or left
unfinished afterwards (issue 11). The full size (200 FineTuneJobs, 20 kills) is the benchmark."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import create_ftj
from helpers import load_hack, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _chaos() -> Any:
    spec = importlib.util.spec_from_file_location(
        "ftj_bench_operator_chaos", REPO / "bench" / "operator_chaos.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_chaos_at_ci_size_leaves_nothing_duplicated_orphaned_or_stuck(
    cluster: Any, crd_installed: None, kube_api: Any, tmp_path: Path
):
    chaos = _chaos()
    lc = load_hack("localcluster")

    def restart() -> None:
        lc.restart_component(cluster.name, "etcd")
        lc.restart_component(cluster.name, "kube-apiserver")

    params = chaos.Params(
        count=40,
        kills=5,
        window_seconds=60,
        settle_seconds=300,
        seed=7,
        # iso-*: the session operator leaves it to this test's operators
        namespace_prefix="iso-chaos",
        operator_env={"FTJ_RESYNC_INTERVAL": "5"},
    )
    report = chaos.run_chaos(kube_api, Path(cluster.kubeconfig), params, tmp_path, restart)

    assert report["operator_kills"] == 5
    assert report["control_plane_restart_seconds"] is not None
    assert report["settled"], report
    for key in (
        "duplicate_jobs",
        "extra_runs",
        "orphans",
        "stuck_finalizers",
        "not_terminal",
        "stale_observed_generation",
    ):
        assert report[key] == 0, (key, report["examples"], report)
    # The plan really changed and deleted some: a run per changed FineTuneJob beyond its first.
    assert report["changed"] == 6 and report["deleted"] == 6


def test_a_watch_that_expires_while_jobs_finish_loses_no_terminal_transition(
    cluster: Any, isolated_operator: Any, kube_api: Any
):
    """The operator is frozen (SIGSTOP) while three runs finish, and the API server restarts, so the
    resource version its watches hold is expired (410 Gone) when it wakes: only the relist after the
    410 can bring the FineTuneJobs to Succeeded (the resync is an hour away)."""
    from kubernetes import client

    ns = isolated_operator.namespace
    op = isolated_operator(FTJ_RESYNC_INTERVAL="3600")
    ftjs = [create_ftj(kube_api, ns, f"w{i}") for i in range(3)]
    for ftj in ftjs:
        ftj.wait_phase("Running")
    batch = client.BatchV1Api(kube_api)
    held = json.loads(batch.list_namespaced_job(ns, _preload_content=False).data)["metadata"][
        "resourceVersion"
    ]
    os.kill(op.proc.pid, signal.SIGSTOP)
    try:
        for ftj in ftjs:
            ftj.finish_pods(f"{ftj.name}-r1", 0)
        wait_for(
            lambda: all(
                any(
                    c["type"] == "Complete" and c["status"] == "True"
                    for c in j["status"].get("conditions") or []
                )
                for ftj in ftjs
                for j in ftj.jobs()
            ),
            60,
            "the three Jobs to complete",
        )
        load_hack("localcluster").restart_component(cluster.name, "kube-apiserver")

        def expired() -> bool:
            resp = batch.list_namespaced_job(
                ns, watch=True, resource_version=held, timeout_seconds=5, _preload_content=False
            )
            try:
                first = json.loads(next(iter(resp.read().splitlines()), b"{}") or b"{}")
            finally:
                resp.release_conn()
            return first.get("type") == "ERROR" and first.get("object", {}).get("code") == 410

        wait_for(expired, 60, "the held resource version to be expired (410 Gone)")
        assert all(ftj.status()["phase"] == "Running" for ftj in ftjs)
    finally:
        os.kill(op.proc.pid, signal.SIGCONT)
    for ftj in ftjs:
        st = ftj.wait_phase("Succeeded", timeout=90)
        assert st["run"]["completionTime"]
        assert [j["metadata"]["name"] for j in ftj.jobs()] == [f"{ftj.name}-r1"]
