"""Every Kubernetes API call the operator makes, in one place (official client, synchronous)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast
from urllib.parse import quote

import urllib3
from kubernetes import client, config

# Imported by name, i.e. now: the client imports each API class lazily on first use under an import
# lock, and 32 handler threads waited on it in the first burst (9 % of create time at N=500).
from kubernetes.client import BatchV1Api, CoreV1Api, CustomObjectsApi, rest
from kubernetes.client.exceptions import ApiException

from finetune_api.lenient import copy_json
from finetune_operator import constants as c
from finetune_operator.metrics import API_ERRORS, API_REQUESTS

METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


DEFAULT_TIMEOUTS = (5.0, 30.0)


class DeadlineRESTClient(rest.RESTClientObject):
    """The client's transport with a connect and a read timeout on every request.

    The official client waits forever by default: a half-open connection after an API server
    failover would hold a worker thread for good. Read timeouts are not retried here (the request
    may have been applied); the handler's retry with backoff decides.
    """

    def __init__(self, configuration: client.Configuration, timeouts: tuple[float, float]) -> None:
        configuration.retries = urllib3.Retry(total=2, connect=2, read=0, redirect=0, status=0)
        super().__init__(configuration)
        self.timeouts = timeouts

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        verb, resource = request_labels(method, url)
        API_REQUESTS.labels(verb=verb, resource=resource).inc()
        if not kwargs.get("_request_timeout"):
            kwargs["_request_timeout"] = self.timeouts
        return super().request(method, url, *args, **kwargs)


def resource_of(url: str) -> str:
    """The resource a request URL names, with its subresource: ``/api/v1/namespaces/a/pods/b/status``
    is ``pods/status``; ``/apis/g/v/namespaces/a/finetunejobs`` is ``finetunejobs``."""
    return request_labels("GET", url)[1]


def request_labels(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of a request, as the API server's own metrics name them: a GET of a collection
    is a ``LIST`` (a ``WATCH`` with ``watch=true``), a GET of one object a ``GET``."""
    parsed = urllib3.util.parse_url(url)
    parts = [p for p in (parsed.path or "").split("/") if p]
    api = parts[:1] in (["api"], ["apis"])
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else parts
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]  # a namespaced resource; ["namespaces", name] is the namespace itself
    if not rest:
        return method.upper(), "other"
    resource = rest[0] if len(rest) < 3 else f"{rest[0]}/{rest[2]}"
    verb = method.upper()
    if verb == "GET" and api and len(rest) == 1:
        query = parsed.query or ""
        verb = "WATCH" if "watch=true" in query or "watch=1" in query else "LIST"
    return verb, resource


def with_timeouts(
    api: client.ApiClient, timeouts: tuple[float, float] = DEFAULT_TIMEOUTS, pool_size: int = 64
) -> client.ApiClient:
    """``api`` with (connect, read) timeouts on every call that does not set its own, and a connection
    pool as large as the threads that share it (the client's default, 5 per CPU, makes every thread
    beyond it open and discard a TLS connection per request)."""
    api.configuration.connection_pool_maxsize = max(api.configuration.connection_pool_maxsize, pool_size)
    api.rest_client = DeadlineRESTClient(api.configuration, timeouts)
    return api


def user_agent() -> str:
    """How the operator names itself to the API server, which names each writer in managedFields and
    audit logs after it (the client's default, ``OpenAPI-Generator/...``, is every Python program's)."""
    try:
        return f"finetune-operator/{version('finetune-operator')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "finetune-operator/unknown"


def load_api_client(
    kubeconfig: str | None = None, timeouts: tuple[float, float] = DEFAULT_TIMEOUTS, pool_size: int = 64
) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig; timeouts on every call."""
    try:
        config.load_incluster_config()
        api = client.ApiClient()
    except config.ConfigException:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        api = client.ApiClient(cfg)
    api.user_agent = user_agent()
    return with_timeouts(api, timeouts, pool_size)


def _wire(response: Any) -> dict[str, Any]:
    """The JSON the API server sent (what watch events carry too: timestamps as ``...Z``)."""
    return cast(dict[str, Any], json.loads(response.data))


def send(api: client.ApiClient, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """``method`` of ``body`` (a dict of JSON values the operator built) to ``path``; the stored object.

    The request and its errors are the client's generated methods' (same URL, headers, JSON body and
    transport, so the same timeouts, retries and request metric; a status other than 2xx raises
    ``ApiException`` with the server's body), without their per-call model work: they validate the
    body against its parameter's type (a Job's whole pod template into a ``V1Job`` model), walk the
    model back into a dict, then serialise it and decode the answer into one again (about a fifth of
    the operator's CPU per FineTuneJob went to the client in a burst).
    """
    safe = api.configuration.safe_chars_for_path_param
    method, url, headers, _, _ = api.param_serialize(
        method,
        "/".join(quote(part, safe=safe) for part in path.split("/")),
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=body)
    response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return _wire(response)


def status_body(obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """What a PUT to ``obj``'s status subresource needs: ``status``, and ``obj``'s metadata (its
    resourceVersion is the write's precondition) without managedFields.

    The subresource stores only the status: it keeps the stored spec and metadata, and it computes the
    writer's managedFields entry from the stored ones (those in the body are ignored). The spec and
    managedFields are about three quarters of a stored FineTuneJob, which the API server would decode
    and drop (5-12 % of its CPU per status write, ``bench/status_write_cost.py``). The metadata stays
    whole: the API server's field manager compares it with the stored one, and labels or finalizers
    missing from the body would be taken from their owners' managedFields entries.
    """
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, "status": status}


@dataclass
class Kube:
    """Thin wrapper over the typed APIs, counting errors for /metrics."""

    api: client.ApiClient

    @property
    def core(self) -> CoreV1Api:
        return CoreV1Api(self.api)

    @property
    def batch(self) -> BatchV1Api:
        return BatchV1Api(self.api)

    @property
    def custom(self) -> CustomObjectsApi:
        return CustomObjectsApi(self.api)

    # -- children ---------------------------------------------------------------------------------
    def create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a child; AlreadyExists returns the existing object (deterministic names make it done)."""
        kind = manifest["kind"]
        ns = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        collection, read = {
            "Service": (f"/api/v1/namespaces/{ns}/services", self.core.read_namespaced_service),
            "Job": (f"/apis/batch/v1/namespaces/{ns}/jobs", self.batch.read_namespaced_job),
        }[kind]
        # The manifest and the server's JSON as they are: no model objects built and turned back into
        # dicts (CPU in the handler threads, the first time also a lazy import of every model class).
        try:
            return send(self.api, "POST", collection, manifest), True
        except ApiException as exc:
            if exc.status != 409:
                API_ERRORS.labels(operation=f"create_{kind.lower()}").inc()
                raise
        return _wire(read(name, ns, _preload_content=False)), False

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(
            lambda: _wire(self.batch.read_namespaced_job(name, namespace, _preload_content=False)),
            "get_job",
            sanitize=False,
        )

    def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        self._call(
            lambda: self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": suspend}}),
            "patch_job",
        )

    def delete_job(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete a Job and, in the background, its pods; with ``uid``, only that very object."""
        preconditions = client.V1Preconditions(uid=uid) if uid else None
        body = client.V1DeleteOptions(propagation_policy="Background", preconditions=preconditions)
        try:
            self.batch.delete_namespaced_job(name, namespace, body=body)
        except ApiException as exc:
            if exc.status == 409 and uid:
                return  # the name is now another object's: the one we meant is gone
            if exc.status != 404:
                API_ERRORS.labels(operation="delete_job").inc()
                raise

    def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        jobs = self._call(
            lambda: _wire(
                self.batch.list_namespaced_job(
                    namespace, label_selector=label_selector, _preload_content=False
                )
            ),
            "list_jobs",
        )
        return list(jobs.get("items") or [])

    def job_page(
        self, namespace: str, label_selector: str, limit: int, token: str | None = None
    ) -> dict[str, Any]:
        """One page of a namespace's Jobs (``token``: the previous page's ``metadata.continue``)."""
        page: dict[str, Any] = self._call(
            lambda: _wire(
                self.batch.list_namespaced_job(
                    namespace,
                    label_selector=label_selector,
                    limit=limit,
                    _continue=token,
                    _preload_content=False,
                )
            ),
            "list_jobs",
        )
        return page

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self._call(
            lambda: _wire(
                self.core.list_namespaced_pod(
                    namespace, label_selector=f"{c.LABEL_JOB_NAME}={job_name}", _preload_content=False
                )
            ),
            "list_pods",
        )
        return list(pods.get("items") or [])

    def job_events(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        """Events about one Job (the Job controller's verdict outlives a Job removed by its TTL)."""
        selector = f"involvedObject.kind=Job,involvedObject.name={job_name}"
        try:
            events = _wire(
                self.core.list_namespaced_event(namespace, field_selector=selector, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status == 403:
                return []  # without `list events` a vanished Job reads as deleted
            API_ERRORS.labels(operation="list_events").inc()
            raise
        return list(events.get("items") or [])

    # -- the FineTuneJob ----------------------------------------------------------------------------
    def get_ftj(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(
            lambda: self.custom.get_namespaced_custom_object(c.GROUP, c.VERSION, namespace, c.PLURAL, name),
            "get_finetunejob",
            sanitize=False,
        )

    def update_status(
        self,
        namespace: str,
        name: str,
        mutate: Callable[[dict[str, Any]], dict[str, Any] | None],
        attempts: int = 8,
        initial: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Read-modify-write of status with optimistic concurrency.

        ``mutate`` gets the whole object and returns the new status, or None for "no change"
        (then nothing is written: an idle operator makes no API writes). ``initial`` (the body kopf
        just delivered) saves the first read; a stale one costs a 409 and a fresh read.
        """
        for attempt in range(attempts):
            obj = (
                copy_json(initial) if attempt == 0 and initial is not None else self.get_ftj(namespace, name)
            )
            if obj is None:
                return None
            new_status = mutate(obj)
            if new_status is None or new_status == obj.get("status"):
                return obj
            path = f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{namespace}/{c.PLURAL}/{name}/status"
            try:
                return send(self.api, "PUT", path, status_body(obj, new_status))
            except ApiException as exc:
                if exc.status == 409 and attempt < attempts - 1:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if exc.status == 404:
                    return None
                API_ERRORS.labels(operation="update_status").inc()
                raise  # conflicts exhausted too: the caller retries, nothing is reported as written
        raise ValueError("update_status needs at least one attempt")

    # -- Events -----------------------------------------------------------------------------------
    def post_event(self, obj: dict[str, Any], kind: str, reason: str, message: str, component: str) -> None:
        """A core/v1 Event about ``obj``, as kopf posts them (same fields, same ``source``); for code
        that runs outside a kopf handler, where kopf's own poster is out of reach."""
        meta = obj.get("metadata") or {}
        now = datetime.now(UTC).isoformat()
        body: dict[str, Any] = {
            "metadata": {"namespace": meta["namespace"], "generateName": "kopf-event-"},
            "type": kind,
            "reason": reason,
            "message": message,
            "action": "Action?",
            "reportingComponent": component,
            "reportingInstance": "dev",
            "source": {"component": component},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": now,
        }
        self._call(
            lambda: self.core.create_namespaced_event(
                meta["namespace"], cast(Any, body), _preload_content=False
            ),
            "post_event",
        )

    # -- pre-flight checks ------------------------------------------------------------------------
    def exists_metadata_only(self, path: str, operation: str) -> bool:
        """Existence check that never transfers an object's data (used for Secrets)."""
        method, url, headers, _body, _post = self.api.param_serialize(
            "GET", path, header_params={"Accept": METADATA_ONLY}, auth_settings=["BearerToken"]
        )
        try:
            response = self.api.call_api(method, url, header_params=headers)
            response.read()
            code = int(response.status)
        except ApiException as exc:
            code = int(exc.status or 0)
        if 200 <= code < 300:
            return True
        if code == 404:
            return False
        API_ERRORS.labels(operation=operation).inc()
        raise ApiException(status=code, reason=f"GET {path}")

    def secret_exists(self, namespace: str, name: str) -> bool:
        return self.exists_metadata_only(f"/api/v1/namespaces/{namespace}/secrets/{name}", "get_secret")

    def pvc_exists(self, namespace: str, name: str) -> bool:
        return self.exists_metadata_only(
            f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}", "get_pvc"
        )

    def configmap_exists(self, namespace: str, name: str) -> bool:
        return self.exists_metadata_only(f"/api/v1/namespaces/{namespace}/configmaps/{name}", "get_configmap")

    def cluster_has_resource(self, resource: str) -> bool:
        nodes = self._call(lambda: self.core.list_node(), "list_nodes")
        return any(resource in (n.status.allocatable or {}) for n in nodes.items)

    # -- helpers ------------------------------------------------------------------------------------
    def _get(self, fn: Callable[[], Any], operation: str, sanitize: bool = True) -> dict[str, Any] | None:
        try:
            obj = fn()
        except ApiException as exc:
            if exc.status == 404:
                return None
            API_ERRORS.labels(operation=operation).inc()
            raise
        result: dict[str, Any] = self.api.sanitize_for_serialization(obj) if sanitize else obj
        return result

    def _call(self, fn: Callable[[], Any], operation: str) -> Any:
        try:
            return fn()
        except ApiException:
            API_ERRORS.labels(operation=operation).inc()
            raise
