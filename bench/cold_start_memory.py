#!/usr/bin/env python3
"""Cold-start memory: the operator's peak RSS while it starts over N finished FineTuneJobs, each with
its Job, for kopf list page sizes given on the command line (``FTJ_LIST_CHUNK_SIZE``; 0 lists
everything in one response). Prints one JSON object.

Starts its own cluster (hack/localcluster.py, ``ftj-coldrss``), creates N FineTuneJobs with a
Succeeded status naming run 1 and that run's Job (built by the operator's builders, suspended so no
pod runs), then for each page size (``--repeats`` times, alternating) starts a fresh operator on the
namespace and samples its RSS until ``finetune_operator_jobs{phase="Succeeded"}`` reaches N.

    .venv/bin/python bench/cold_start_memory.py --count 2000 0 200 100 50
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for sub in ("api", "operator", "bench", "hack", "tests", "tests/e2e"):
    sys.path.insert(0, str(REPO / sub))

CLUSTER = "ftj-coldrss"
STAMP = "2026-01-01T00:00:00Z"


def finished(api: Any, harness: Any, namespace: str, i: int) -> None:
    """One FineTuneJob as an operator leaves it after a successful run, and that run's Job."""
    import operator_scale as bench
    from kubernetes import client

    from finetune_api.spec import FineTuneJobSpec
    from finetune_operator.builders import Owner, build_job
    from finetune_operator.naming import spec_hash
    from finetune_operator.settings import OperatorSettings

    custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)
    name = f"c{i:05d}"
    obj = custom.create_namespaced_custom_object(
        bench.GROUP, bench.VERSION, namespace, bench.PLURAL, bench.ftj_body(name, harness)
    )
    spec = FineTuneJobSpec.model_validate(obj["spec"])
    owner = Owner(name=name, namespace=namespace, uid=obj["metadata"]["uid"])
    settings = OperatorSettings(trainer_image="registry.local/finetune-trainer:test")
    job = build_job(owner, spec, 1, spec_hash(obj["spec"]), settings)
    job["spec"]["suspend"] = True
    batch.create_namespaced_job(namespace, job)
    run = {"number": 1, "jobName": job["metadata"]["name"], "specHash": spec_hash(obj["spec"])}
    obj["status"] = {
        "phase": "Succeeded",
        "reason": "Succeeded",
        "message": "The trainer finished.",
        "observedGeneration": obj["metadata"]["generation"],
        "run": {**run, "rerunToken": "", "startTime": STAMP, "completionTime": STAMP},
    }
    custom.replace_namespaced_custom_object_status(
        bench.GROUP, bench.VERSION, namespace, bench.PLURAL, name, obj
    )


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("chunk_sizes", nargs="+", type=int, help="FTJ_LIST_CHUNK_SIZE values (0: one response)")
    p.add_argument("--count", type=int, default=2000, help="finished FineTuneJobs (default 2000)")
    p.add_argument("--repeats", type=int, default=2, help="operator starts per page size (default 2)")
    args = p.parse_args()

    import operator_scale as bench
    from hack_loader import load_hack
    from kubernetes import client, config

    import harness

    lc = load_hack("localcluster")
    lc.register_cleanup(CLUSTER)  # on SIGTERM: the cluster stopped, then the finally below stops the operator
    info = lc.ensure_up(CLUSTER, owner_pid=os.getpid())
    report: dict[str, Any] = {"count": args.count, "load_average_start": os.getloadavg(), "runs": {}}
    op: Any = None
    try:
        api = config.new_client_from_config(str(info.kubeconfig))
        bench.install_crd(Path(info.kubeconfig))
        namespace = "cold"
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: finished(api, harness, namespace, i), range(args.count)))
        report["create_seconds"] = round(time.monotonic() - t0, 1)
        workdir = Path(tempfile.mkdtemp(prefix="ftj-coldrss-"))
        for _ in range(args.repeats):
            for chunk in args.chunk_sizes:
                env = {"FTJ_DEV_METRICS_ENDPOINTS": "false", "MALLOC_ARENA_MAX": "2"}
                env["FTJ_LIST_CHUNK_SIZE"] = str(chunk)
                log = workdir / f"operator-{chunk}.log"
                op = harness.OperatorProcess(Path(info.kubeconfig), [namespace], log, env).start()
                sampler = bench.ProcSampler(op.proc.pid)
                sampler.start()
                started = time.monotonic()
                caught_up = bench.wait_until(
                    lambda op=op: bench.phase_count(op.metrics(), "Succeeded") >= args.count,
                    300,
                    "the operator to catch up",
                )
                seconds = time.monotonic() - started
                sampler.stop_event.set()
                op.kill(signal.SIGTERM)
                report["runs"].setdefault(str(chunk), []).append(
                    {
                        "caught_up": caught_up,
                        "seconds": round(seconds, 1),
                        "rss_peak_mib": round(sampler.peak_rss / 2**20, 1),
                    }
                )
    finally:
        if op is not None:
            op.kill(signal.SIGTERM)
        lc.down(CLUSTER)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
