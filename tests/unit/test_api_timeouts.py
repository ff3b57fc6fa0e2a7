"""Every synchronous API call gives up on a server that accepts connections and never answers.

The "server" is a real listening socket whose connections are never served (a half-open API
server after a failover looks like this to the client).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from finetune_operator.kube import Kube, with_timeouts

READ_TIMEOUT = 0.5


@pytest.fixture
def silent_server() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections complete in the kernel's backlog; nobody ever reads them
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def kube(silent_server: str) -> Kube:
    cfg = client.Configuration()
    cfg.host = silent_server
    return Kube(with_timeouts(client.ApiClient(cfg), (0.5, READ_TIMEOUT)))


CALLS: dict[str, Callable[[Kube], Any]] = {
    "get_ftj": lambda k: k.get_ftj("ns", "x"),
    "get_job": lambda k: k.get_job("ns", "x"),
    "list_jobs": lambda k: k.list_jobs("ns", "a=b"),
    "job_page": lambda k: k.job_page("ns", "a=b", 100),
    "job_pods": lambda k: k.job_pods("ns", "x"),
    "delete_job": lambda k: k.delete_job("ns", "x"),
    "create": lambda k: k.create({"kind": "Job", "metadata": {"name": "x", "namespace": "ns"}}),
    "update_status": lambda k: k.update_status("ns", "x", lambda obj: {"phase": "Running"}),
    "secret_exists": lambda k: k.secret_exists("ns", "x"),
    "cluster_has_resource": lambda k: k.cluster_has_resource("nvidia.com/gpu"),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_call_times_out_instead_of_hanging(kube: Kube, name: str) -> None:
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        CALLS[name](kube)
    elapsed = time.monotonic() - started
    assert elapsed < 10 * READ_TIMEOUT, f"{name} took {elapsed:.1f}s"
    assert "timed out" in str(info.value).lower() or "timeout" in type(info.value).__name__.lower(), (
        info.value
    )
