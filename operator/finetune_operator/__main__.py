"""``python -m finetune_operator``: kopf with the project's settings."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import socket
import sys
from collections.abc import Coroutine
from typing import Any, cast

import kopf

from finetune_operator.context import Context
from finetune_operator.handlers import register
from finetune_operator.kopf_tuning import tune
from finetune_operator.kube import Kube, load_api_client
from finetune_operator.leader import ApiLeaseLock, LeaderElector, LeaseSettings, run_as_leader
from finetune_operator.metrics import LEADER, PhaseBook, serve
from finetune_operator.sanitize import clean_text
from finetune_operator.settings import OperatorSettings

# The ``source`` of the Events the operator posts itself (kopf's own default, so all read the same).
EVENT_COMPONENT = "kopf"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the extra fields handlers attach."""

    _skip = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "settings"}

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(
            {k: v for k, v in record.__dict__.items() if k not in self._skip and not k.startswith("_")}
        )
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def operator_identity() -> str:
    """Who this operator is to its peers: the pod's name in a cluster, else ``user@host/pid``.

    kopf's own default calls ``getpass.getuser()``, which raises in an image whose numeric uid has no
    passwd entry (the chart runs as 65532); the uid number stands in for a missing name.
    """
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    user = next((os.environ[k] for k in ("USER", "LOGNAME") if os.environ.get(k)), str(os.getuid()))
    return f"{user}@{socket.gethostname()}/{os.getpid()}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="finetune-operator", description="Run the FineTuneJob operator.")
    p.add_argument("-n", "--namespace", action="append", default=[], help="namespace to watch (repeatable)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument(
        "--leader-election-lease",
        default=None,
        help="elect a leader on this coordination.k8s.io Lease (default: FTJ_LEADER_ELECTION_LEASE; none)",
    )
    p.add_argument(
        "--leader-election-namespace", default=None, help="the Lease's namespace (default: the pod's)"
    )
    p.add_argument("--kubeconfig", default=None, help="kubeconfig outside a cluster")
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--health-port", type=int, default=None)
    p.add_argument("--log-format", choices=["json", "text"], default="json")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = OperatorSettings.from_env()
    namespaces = tuple(args.namespace) or config.namespaces
    metrics_port = args.metrics_port if args.metrics_port is not None else config.metrics_port
    health_port = args.health_port if args.health_port is not None else config.health_port
    lease = args.leader_election_lease or config.leader_election_lease

    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler], force=True)

    threads = config.max_workers + config.scrape_concurrency
    api = load_api_client(args.kubeconfig, config.api_timeouts, pool_size=threads + 4)
    kube = Kube(api)

    def post_event(obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        reason, message = clean_text(reason, 128), clean_text(message)
        try:
            kopf.event(cast(kopf.Body, obj), type=kind, reason=reason, message=message)
        except LookupError:
            # Outside a kopf handler (the progress loop's threads, the reconcile queue's work) kopf's
            # poster and its queue are not in context: post it ourselves (it used to be lost after the
            # status write).
            kube.post_event(obj, kind, reason, message, EVENT_COMPONENT)

    clusterwide = args.all_namespaces or not namespaces
    fixed = not clusterwide and not any(ch in n for n in namespaces for ch in "*?![")
    config = namespaced_settings(config) if fixed else config
    ctx = Context(kube=kube, settings=config, phases=PhaseBook(), post_event=post_event)
    registry = kopf.OperatorRegistry()
    register(registry, config)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        tune(settings, config, fixed, args.verbose)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if args.kubeconfig:
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_via_client(**kwargs)

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    os.environ["POD_ID"] = operator_identity()  # kopf reads it instead of getpass.getuser()
    liveness = f"http://0.0.0.0:{health_port}/healthz" if health_port else None
    if metrics_port:
        serve(metrics_port)  # a standby is scraped too (finetune_operator_leader 0)

    def operator() -> Coroutine[Any, Any, None]:
        return kopf.operator(
            registry=registry,
            memo=kopf.Memo(ctx=ctx),
            standalone=True,  # one replica acts by leader election (leader.py), not kopf peering
            namespaces=() if clusterwide else namespaces,
            clusterwide=clusterwide,
            liveness_endpoint=liveness,
        )

    if lease is None:
        LEADER.set(1)
        asyncio.run(operator())
        return 0
    election = LeaseSettings(
        name=lease,
        namespace=args.leader_election_namespace or config.leader_election_namespace or pod_namespace(),
        identity=os.environ["POD_ID"],
        lease_duration=config.lease_duration_seconds,
        renew_deadline=config.renew_deadline_seconds,
        retry_period=config.retry_period_seconds,
    )
    elector = LeaderElector(ApiLeaseLock(api, election), election)
    asyncio.run(run_as_leader(elector, operator, health_port))
    return 0


def namespaced_settings(config: OperatorSettings) -> OperatorSettings:
    """Fixed namespaces make no cluster-scope request (the chart grants none): the GPU resource
    check needs `list nodes`, so it is skipped, and said so once."""
    if config.gpu_resource_check == "off":
        return config
    logging.getLogger("finetune_operator").warning(
        "GPU resource check skipped (FTJ_GPU_RESOURCE_CHECK=%s): watching fixed namespaces, the operator "
        "makes no cluster-scope reads such as list nodes",
        config.gpu_resource_check,
    )
    return dataclasses.replace(config, gpu_resource_check="off")


def pod_namespace() -> str:
    """The namespace of the pod this runs in (the service account's), for the Lease."""
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise SystemExit(
            "leader election outside a cluster needs --leader-election-namespace "
            "(or FTJ_LEADER_ELECTION_NAMESPACE)"
        ) from exc


if __name__ == "__main__":
    raise SystemExit(main())
