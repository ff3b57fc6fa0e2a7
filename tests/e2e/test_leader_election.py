"""Two operator replicas with the chart's leader-election settings: one acts, the other takes over.

Each operator is a real process against the real API server; the Lease is a real
coordination.k8s.io object. The leader is killed with SIGKILL (no chance to release the Lease), so
the standby must wait out the lease duration, exactly as after a node failure.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Ftj, OperatorProcess, create_ftj
from helpers import wait_for

pytestmark = pytest.mark.e2e

CHART_VALUES = Path(__file__).resolve().parents[2] / "charts" / "finetune-operator" / "values.yaml"
LEASE = "finetune-operator"
TAKEOVER_LIMIT = 30.0


def chart_leader_env(namespace: str) -> dict[str, str]:
    """The environment the chart's Deployment gives each replica (values.yaml's leaderElection)."""
    le = yaml.safe_load(CHART_VALUES.read_text())["leaderElection"]
    assert le["enabled"] is True, "the chart must elect a leader by default"
    return {
        "FTJ_LEADER_ELECTION_LEASE": LEASE,
        "FTJ_LEADER_ELECTION_NAMESPACE": namespace,
        "FTJ_LEASE_DURATION": str(le["leaseDurationSeconds"]),
        "FTJ_RENEW_DEADLINE": str(le["renewDeadlineSeconds"]),
        "FTJ_RETRY_PERIOD": str(le["retryPeriodSeconds"]),
    }


def create(kube_api: Any, namespace: str, name: str) -> Ftj:
    return create_ftj(kube_api, namespace, name)


def holder(kube_api: Any, namespace: str) -> str | None:
    from kubernetes import client

    lease = client.CoordinationV1Api(kube_api).read_namespaced_lease(LEASE, namespace)
    return lease.spec.holder_identity or None


def metric(op: OperatorProcess, name: str) -> float:
    """Sum of every sample of ``name`` on the operator's /metrics (0 when absent)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(op.metrics()))


def test_one_replica_acts_and_the_other_takes_over_after_sigkill(isolated_operator, kube_api):
    ns = isolated_operator.namespace
    env = chart_leader_env(ns)
    ops = [isolated_operator(**env), isolated_operator(**env)]
    identity = wait_for(lambda: holder(kube_api, ns), 30, "a replica to hold the Lease")
    [leader] = [op for op in ops if identity.endswith(f"/{op.proc.pid}")]
    [standby] = [op for op in ops if op is not leader]

    first = create(kube_api, ns, "first")
    first.wait_phase("Running", timeout=60)
    assert metric(leader, "finetune_operator_leader") == 1
    assert metric(standby, "finetune_operator_leader") == 0
    # The standby never ran a handler: it serves health and metrics only.
    assert metric(standby, "finetune_operator_handler_duration_seconds_count") == 0
    assert metric(leader, "finetune_operator_handler_duration_seconds_count") > 0

    names = [f"burst-{i:02d}-{uuid.uuid4().hex[:4]}" for i in range(50)]
    created: list[str] = []

    def burst() -> None:
        for name in names:
            create(kube_api, ns, name)
            created.append(name)
            time.sleep(0.1)

    creator = threading.Thread(target=burst)
    creator.start()
    wait_for(lambda: len(created) >= 10, 30, "the first FineTuneJobs of the burst")
    leader.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    nxt = create(kube_api, ns, "next")
    wait_for(lambda: nxt.jobs(), TAKEOVER_LIMIT + 5, "the standby to create the next FineTuneJob's Job")
    failover = time.monotonic() - killed_at
    creator.join(timeout=60)
    assert len(created) == 50

    assert failover < TAKEOVER_LIMIT, f"takeover took {failover:.1f}s"
    assert wait_for(lambda: holder(kube_api, ns), 5, "the new holder") != identity
    assert metric(standby, "finetune_operator_leader") == 1

    everything = [first, nxt, *(Ftj(kube_api, ns, n) for n in names)]
    for ftj in everything:
        wait_for(
            lambda f=ftj: f.jobs() and (f.status().get("run") or {}).get("number"), 60, f"{ftj.name}'s run"
        )
    for ftj in everything:
        jobs = [j["metadata"]["name"] for j in ftj.jobs()]
        assert jobs == [f"{ftj.name}-r1"], f"{ftj.name} has Jobs {jobs}"
        assert ftj.status()["run"]["number"] == 1


def test_a_frozen_leader_is_replaced_and_stops_acting_when_it_wakes(isolated_operator, kube_api):
    """SIGSTOP stands in for a network partition or a stalled node: the leader cannot renew. The
    standby takes over after the lease duration; when the old leader runs again its renew deadline has
    long passed, so it exits (75) instead of acting beside the new leader."""
    ns = isolated_operator.namespace
    env = chart_leader_env(ns)
    ops = [isolated_operator(**env), isolated_operator(**env)]
    identity = wait_for(lambda: holder(kube_api, ns), 30, "a replica to hold the Lease")
    [leader] = [op for op in ops if identity.endswith(f"/{op.proc.pid}")]
    [standby] = [op for op in ops if op is not leader]
    assert leader.proc is not None

    os.kill(leader.proc.pid, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        during = create(kube_api, ns, "during-partition")
        wait_for(lambda: during.jobs(), TAKEOVER_LIMIT + 5, "the standby to create the Job")
        assert time.monotonic() - frozen_at < TAKEOVER_LIMIT
        assert metric(standby, "finetune_operator_leader") == 1
    finally:
        os.kill(leader.proc.pid, signal.SIGCONT)
    assert leader.proc.wait(timeout=15) == 75, leader.log_tail()
    assert "lost the leader Lease" in leader.log_tail()

    after = create(kube_api, ns, "after-partition")
    wait_for(lambda: after.jobs(), 30, "the new leader to go on serving")
    for ftj in (during, after):
        assert [j["metadata"]["name"] for j in ftj.jobs()] == [f"{ftj.name}-r1"]
