"""The two requests of every run's start, a Job POST and a status PUT, against a real HTTP server.

What goes over the wire and what the caller gets back (including every error) is what the client's
generated methods gave; what must not happen is the client's per-call model work on a body the
operator built itself (a Job's pod template validated into ``V1Job`` and walked back into a dict).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from finetune_api.lenient import copy_json
from finetune_operator import constants as c
from finetune_operator.builders import Owner, build_children, build_job
from finetune_operator.kube import Kube, load_api_client, with_timeouts
from finetune_operator.metrics import API_ERRORS, API_REQUESTS
from finetune_operator.settings import OperatorSettings

STATUS_PATH = f"/apis/{c.GROUP}/{c.VERSION}/namespaces/ml/{c.PLURAL}/support-classifier/status"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeApiServer:
    """Records each request; answers from ``replies`` (method, path) -> [(status, JSON body), ...]."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    replies: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)

    def answer(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        queue = self.replies.get((method, path)) or [(500, {"kind": "Status", "message": "no reply"})]
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fake.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            status, reply = fake.answer(self.command, self.path)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()


class CountingApiClient(client.ApiClient):
    """The client, counting how many values its request serialiser walks (one call per value)."""

    walked = 0

    def sanitize_for_serialization(self, obj: Any) -> Any:
        self.walked += 1
        return super().sanitize_for_serialization(obj)


@pytest.fixture
def kube(server: FakeApiServer) -> Kube:
    cfg = client.Configuration()
    cfg.host = server.url
    return Kube(with_timeouts(CountingApiClient(cfg), (2.0, 5.0)))


@pytest.fixture
def job(make_spec: Any) -> dict[str, Any]:
    owner = Owner(name="support-classifier", namespace="ml", uid="0000-1111")
    return build_job(owner, make_spec(), 1, "h1", OperatorSettings(trainer_image="registry.local/t:1"))


def jobs_path(job: dict[str, Any]) -> str:
    return f"/apis/batch/v1/namespaces/{job['metadata']['namespace']}/jobs"


def ftj(status: dict[str, Any] | None = None, version: str = "7") -> dict[str, Any]:
    return {
        "apiVersion": f"{c.GROUP}/{c.VERSION}",
        "kind": c.KIND,
        "metadata": {"name": "support-classifier", "namespace": "ml", "uid": "u", "resourceVersion": version},
        "spec": {"model": {"name": "org/base"}, "dataset": {"source": {"uri": "file:///d.jsonl"}}},
        "status": status or {},
    }


def count(metric: Any, **labels: str) -> float:
    return float(metric.labels(**labels)._value.get())


def test_a_job_is_sent_as_built_without_the_client_walking_it(
    kube: Kube, server: FakeApiServer, job: dict[str, Any]
) -> None:
    stored = {**job, "metadata": {**job["metadata"], "uid": "job-uid", "resourceVersion": "9"}}
    server.replies[("POST", jobs_path(job))] = [(201, stored)]
    posts = count(API_REQUESTS, verb="POST", resource="jobs")
    api = kube.api
    assert isinstance(api, CountingApiClient)

    result, created = kube.create(job)

    assert (result, created) == (stored, True)
    [request] = server.seen
    assert (request.method, request.path) == ("POST", jobs_path(job))
    assert request.headers["Accept"] == "application/json"
    # The operator's own dict, serialised once: the client's V1Job round trip reordered every key.
    assert request.body == json.dumps(job).encode()
    # The manifest has 161 values; only the request's few headers and path parameters are walked.
    assert api.walked <= 10, f"{api.walked} values walked for one Job POST"
    assert count(API_REQUESTS, verb="POST", resource="jobs") == posts + 1


def test_a_job_that_exists_already_is_read_instead(
    kube: Kube, server: FakeApiServer, job: dict[str, Any]
) -> None:
    existing = {**job, "metadata": {**job["metadata"], "uid": "older"}}
    server.replies[("POST", jobs_path(job))] = [(409, {"kind": "Status", "reason": "AlreadyExists"})]
    server.replies[("GET", f"{jobs_path(job)}/{job['metadata']['name']}")] = [(200, existing)]
    errors = count(API_ERRORS, operation="create_job")

    assert kube.create(job) == (existing, False)
    assert count(API_ERRORS, operation="create_job") == errors  # AlreadyExists is success


def test_a_refused_job_raises_the_servers_status_and_is_counted(
    kube: Kube, server: FakeApiServer, job: dict[str, Any]
) -> None:
    refusal = {"kind": "Status", "reason": "Invalid", "message": "spec.template: Invalid value"}
    server.replies[("POST", jobs_path(job))] = [(422, refusal)]
    errors = count(API_ERRORS, operation="create_job")

    with pytest.raises(ApiException) as info:
        kube.create(job)

    assert info.value.status == 422
    assert json.loads(str(info.value.body)) == refusal
    assert count(API_ERRORS, operation="create_job") == errors + 1


def test_a_status_write_sends_only_what_the_status_subresource_reads_and_returns_the_servers_copy(
    kube: Kube, server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status subresource keeps the stored spec and metadata and the stored managedFields (it
    computes the writer's entry itself): the spec and managedFields of the body are decoded by the
    API server and then dropped, half of a stored FineTuneJob's bytes, so they are not sent."""
    deepcopies: list[Any] = []
    real = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda x, *a: deepcopies.append(x) or real(x, *a))
    stored = ftj({"phase": "Pending"}, version="8")
    server.replies[("PUT", STATUS_PATH)] = [(200, stored)]
    puts = count(API_REQUESTS, verb="PUT", resource="finetunejobs/status")
    initial = ftj()
    initial["metadata"] |= {
        "labels": {"team": "search"},
        "annotations": {"note": "kept"},
        "finalizers": ["finetuning.io/cleanup"],
        "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}],
    }
    before = copy_json(initial)
    api = kube.api
    assert isinstance(api, CountingApiClient)

    result = kube.update_status("ml", "support-classifier", lambda obj: {"phase": "Pending"}, initial=initial)

    assert result == stored
    [request] = server.seen
    assert (request.method, request.path) == ("PUT", STATUS_PATH)
    assert request.headers["Accept"] == "application/json"
    meta = {k: v for k, v in before["metadata"].items() if k != "managedFields"}
    assert json.loads(request.body) == {
        "apiVersion": before["apiVersion"],
        "kind": before["kind"],
        "metadata": meta,  # resourceVersion (the write's precondition), uid, labels, finalizers...
        "status": {"phase": "Pending"},
    }
    assert initial == before  # the caller's body is not changed
    assert api.walked <= 10, f"{api.walked} values walked for one status PUT"
    assert deepcopies == [], "the caller's body is copied as decoded JSON"
    assert count(API_REQUESTS, verb="PUT", resource="finetunejobs/status") == puts + 1


def test_the_operators_client_names_itself_to_the_api_server(server: FakeApiServer, tmp_path: Path) -> None:
    """The API server names each writer in managedFields (and audit logs) after its User-Agent: the
    client's default, OpenAPI-Generator, is every Python program's."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    server.replies[("PUT", STATUS_PATH)] = [(200, ftj({"phase": "Pending"}, version="8"))]

    kube = Kube(load_api_client(str(kubeconfig)))
    kube.update_status("ml", "support-classifier", lambda obj: {"phase": "Pending"}, initial=ftj())

    [request] = server.seen
    assert request.headers["User-Agent"] == f"finetune-operator/{version('finetune-operator')}"


def test_a_conflicting_status_write_reads_again_and_retries(kube: Kube, server: FakeApiServer) -> None:
    fresh = ftj({"phase": "Pending"}, version="9")
    server.replies[("PUT", STATUS_PATH)] = [(409, {"kind": "Status", "reason": "Conflict"}), (200, fresh)]
    server.replies[("GET", STATUS_PATH.removesuffix("/status"))] = [(200, fresh)]

    result = kube.update_status("ml", "support-classifier", lambda obj: {"phase": "Running"}, initial=ftj())

    assert result == fresh
    assert [(s.method, s.path) for s in server.seen] == [
        ("PUT", STATUS_PATH),
        ("GET", STATUS_PATH.removesuffix("/status")),
        ("PUT", STATUS_PATH),
    ]
    assert json.loads(server.seen[-1].body)["metadata"]["resourceVersion"] == "9"


def test_a_status_write_to_a_deleted_object_returns_none(kube: Kube, server: FakeApiServer) -> None:
    server.replies[("PUT", STATUS_PATH)] = [(404, {"kind": "Status", "reason": "NotFound"})]
    assert (
        kube.update_status("ml", "support-classifier", lambda obj: {"phase": "Running"}, initial=ftj())
        is None
    )


def test_a_refused_status_write_raises_and_is_counted(kube: Kube, server: FakeApiServer) -> None:
    server.replies[("PUT", STATUS_PATH)] = [(422, {"kind": "Status", "reason": "Invalid"})]
    errors = count(API_ERRORS, operation="update_status")

    with pytest.raises(ApiException) as info:
        kube.update_status("ml", "support-classifier", lambda obj: {"phase": "Running"}, initial=ftj())

    assert info.value.status == 422
    assert count(API_ERRORS, operation="update_status") == errors + 1


@pytest.mark.parametrize(
    ("overrides", "kinds"),
    [
        ({}, ["Job"]),
        (
            {"method": "full", "distributed": {"nodes": 3, "gpusPerNode": 8, "deepspeed": {"zeroStage": 3}}},
            ["Service", "Job"],
        ),
        ({"distributed": {"gpusPerNode": 0}, "suspend": True}, ["Job"]),
    ],
)
def test_the_clients_model_of_each_child_sends_what_the_operator_now_sends(
    make_spec: Any, overrides: dict[str, Any], kinds: list[str]
) -> None:
    """Before, each child went through its client model: the same JSON values must come out of it."""
    owner = Owner(name="support-classifier", namespace="ml", uid="0000-1111")
    settings = OperatorSettings(trainer_image="registry.local/t:1")
    api = client.ApiClient()
    models = {"Job": client.V1Job, "Service": client.V1Service}
    children = build_children(owner, make_spec(**overrides), 2, "h1", settings)
    assert [child["kind"] for child in children] == kinds
    for child in children:
        assert api.sanitize_for_serialization(models[child["kind"]].model_validate(child)) == child
