"""An operator starting over more existing FineTuneJobs than any worker limit processes every one.

Guards the start-up deadlock of issue 11: kopf fills the ``finetunejobs`` index from per-object
workers and holds every handler until the index is complete; with a worker limit below the number of
objects, the workers that exist wait for objects that can never get a worker. The test uses the
operator's DEFAULT settings and more objects than the old limit (128).
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from finetune_operator.naming import spec_hash
from harness import BASE_SPEC, GROUP, PLURAL, VERSION, Ftj, deep_merge
from helpers import wait_for

pytestmark = pytest.mark.e2e

FINISHED = 280
NEW = 20
KOPF_PREFIX = "kopf.finetuning.io"


def _finished_by_an_older_operator(custom: Any, ns: str, obj: dict[str, Any]) -> str:
    """What an operator that ran this FineTuneJob to success leaves behind: kopf's record of the
    handled spec (its own storage API builds it) and a terminal status. Returns the resourceVersion."""
    import kopf

    name = obj["metadata"]["name"]
    storage = kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX, key="last-handled-configuration")
    patch = kopf.Patch()
    storage.store(body=kopf.Body(obj), patch=patch, essence=storage.build(body=kopf.Body(obj)))
    obj = custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, dict(patch))
    stamp = "2026-01-01T00:00:00Z"
    obj["status"] = {
        "phase": "Succeeded",
        "reason": "Succeeded",
        "message": "The trainer finished.",
        "observedGeneration": obj["metadata"]["generation"],
        "run": {
            "number": 1,
            "jobName": f"{name}-r1",
            "specHash": spec_hash(obj["spec"]),
            "rerunToken": "",
            "startTime": stamp,
            "completionTime": stamp,
        },
    }
    done = custom.replace_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name, obj)
    return str(done["metadata"]["resourceVersion"])


def _count(metrics: str, phase: str) -> int:
    m = re.search(rf'^finetune_operator_jobs\{{phase="{phase}"\}} (\S+)$', metrics, re.M)
    return int(float(m.group(1))) if m else 0


def test_cold_start_over_more_objects_than_a_worker_limit(isolated_operator, kube_api):
    from kubernetes import client

    ns = isolated_operator.namespace
    custom = client.CustomObjectsApi(kube_api)
    spec = deep_merge(BASE_SPEC, {"distributed": {"gpusPerNode": 0}})

    def create(i: int) -> tuple[str, str | None]:
        name = f"old-{i:03d}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": name}}
        obj = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {**body, "spec": spec})
        return name, (_finished_by_an_older_operator(custom, ns, obj) if i < FINISHED else None)

    with ThreadPoolExecutor(16) as pool:
        created = dict(pool.map(create, range(FINISHED + NEW)))
    finished = {name: rv for name, rv in created.items() if rv is not None}

    started = time.monotonic()
    op = isolated_operator()  # default settings
    wait_for(
        lambda: _count(op.metrics(), "Succeeded") == FINISHED,
        120,
        "every finished FineTuneJob resumed",
    )
    fresh = [Ftj(kube_api, ns, name) for name, rv in created.items() if rv is None]
    wait_for(lambda: all(f.status().get("phase") for f in fresh), 120, "every new FineTuneJob started")
    seconds = round(time.monotonic() - started, 1)

    listing = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    now = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in listing["items"]}
    written = sorted(n for n, rv in finished.items() if now[n] != rv)
    assert not written, f"{len(written)} finished FineTuneJobs were written on start, e.g. {written[:3]}"
    print("\nCOLD-START " + json.dumps({"objects": FINISHED + NEW, "caught_up_seconds": seconds}))
