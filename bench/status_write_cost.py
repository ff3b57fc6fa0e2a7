#!/usr/bin/env python3
"""What one FineTuneJob status write costs the API server, by the body the operator sends.

The status subresource stores only the status (it keeps the stored spec and metadata, and computes the
writer's managedFields entry from the stored ones), so a PUT needs only the status and the metadata
without managedFields (``finetune_operator.kube.status_body``). The operator used to send the whole
object back. Prints one JSON object.

Starts its own cluster (hack/localcluster.py, ``ftj-statuscost``), creates N FineTuneJobs as the scale
bench does (no operator runs), then writes a realistic status (the one a run's start writes) to every
one of them with 16 client threads, in rounds that alternate the two bodies (whole object first in
odd pairs, the status body first in even pairs, so drift in the machine's load falls on both). For
each round: the API server's and etcd's CPU seconds (from /proc), wall time and body bytes; then the
per-write medians and the ratio status body / whole object within the run.

    .venv/bin/python bench/status_write_cost.py --count 300 --pairs 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for sub in ("api", "operator", "bench", "hack", "tests", "tests/e2e"):
    sys.path.insert(0, str(REPO / sub))

CLUSTER = "ftj-statuscost"
STAMP = "2026-01-01T00:00:00Z"


def started_status(obj: dict[str, Any]) -> dict[str, Any]:
    """The status a run's start writes for ``obj`` (conditions, run), as the operator's transitions
    build it."""
    from finetune_operator.context import parse_status
    from finetune_operator.transitions import Facts, RunStarted, next_phase

    status = parse_status({})
    name = obj["metadata"]["name"]
    event = RunStarted(1, f"{name}-r1", "28ab9a574723b2e8", "", None, False, False)
    next_phase(status, event, Facts(obj, obj["metadata"].get("generation"), STAMP, 10))
    return status.wire()


def whole_object(obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """What the operator sent before: the object as read, with the new status."""
    return {**obj, "status": status}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=300, help="FineTuneJobs, each written once a round")
    p.add_argument("--pairs", type=int, default=4, help="rounds of each body")
    p.add_argument("--threads", type=int, default=16)
    args = p.parse_args()

    import operator_scale as bench
    from hack_loader import load_hack
    from kubernetes import client, config

    from finetune_operator.kube import send, status_body

    lc = load_hack("localcluster")
    harness = bench._load_harness()
    lc.register_cleanup(CLUSTER)
    info = lc.ensure_up(CLUSTER, owner_pid=os.getpid())
    try:
        kubeconfig = Path(info.kubeconfig)
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = args.threads + 4
        api = client.ApiClient(cfg)
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        bench.install_crd(kubeconfig)
        ns = "status-cost"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        names = [f"s{i:05d}" for i in range(args.count)]
        latest: dict[str, dict[str, Any]] = {}
        pool = ThreadPoolExecutor(args.threads)

        def create(name: str) -> None:
            body = bench.ftj_body(name, harness)

            def post() -> None:
                latest[name] = custom.create_namespaced_custom_object(
                    bench.GROUP, bench.VERSION, ns, bench.PLURAL, body
                )

            bench.create_retrying(post)

        list(pool.map(create, names))
        shapes: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
            "whole_object": whole_object,
            "status_body": status_body,
        }
        rounds: dict[str, list[dict[str, float]]] = {k: [] for k in shapes}
        for pair in range(args.pairs):
            order = list(shapes) if pair % 2 == 0 else list(reversed(shapes))
            for shape in order:
                sizes: list[int] = []

                def put(name: str, shape: str = shape, sizes: list[int] = sizes, pair: int = pair) -> None:
                    status = started_status(latest[name]) | {"message": f"round {pair} {shape}"}
                    body = shapes[shape](latest[name], status)
                    sizes.append(len(json.dumps(body, separators=(",", ":"))))
                    path = f"/apis/{bench.GROUP}/{bench.VERSION}/namespaces/{ns}/{bench.PLURAL}/{name}/status"
                    latest[name] = send(api, "PUT", path, body)

                time.sleep(1.0)  # the previous round's watch fan-out settles
                cpu0, t0 = bench.cpu_by_process(), time.monotonic()
                list(pool.map(put, names))
                wall, spent = time.monotonic() - t0, bench.cpu_spent(cpu0, bench.cpu_by_process())
                rounds[shape].append(
                    {
                        "apiserver_ms_per_write": 1000 * spent.get("kube-apiserver", 0.0) / len(names),
                        "etcd_ms_per_write": 1000 * spent.get("etcd", 0.0) / len(names),
                        "wall_ms_per_write": 1000 * wall / len(names),
                        "body_bytes": statistics.median(sizes),
                    }
                )
        stored = custom.get_namespaced_custom_object(bench.GROUP, bench.VERSION, ns, bench.PLURAL, names[0])
        medians = {
            shape: {key: round(statistics.median(r[key] for r in rs), 3) for key in rs[0]}
            for shape, rs in rounds.items()
        }
        report = {
            "count": args.count,
            "pairs": args.pairs,
            "load_average_start": list(os.getloadavg()),
            "stored_object_bytes": len(json.dumps(stored, separators=(",", ":"))),
            "stored_managed_fields_bytes": len(
                json.dumps(stored["metadata"].get("managedFields"), separators=(",", ":"))
            ),
            "median_per_write": medians,
            "ratio_status_body_to_whole_object": {
                key: round(medians["status_body"][key] / max(medians["whole_object"][key], 1e-9), 3)
                for key in medians["whole_object"]
            },
            "rounds": {
                shape: [{k: round(v, 3) for k, v in r.items()} for r in rs] for shape, rs in rounds.items()
            },
        }
        print(json.dumps(report, indent=1))
        return 0
    finally:
        lc.down(CLUSTER)


if __name__ == "__main__":
    sys.exit(main())
