"""Leader election on a ``coordination.k8s.io/v1`` Lease: with several replicas exactly one acts.

Why a Lease and not kopf peering: kopf peering pauses every peer of equal priority (all replicas of
one Deployment have the same one), needs the kopf.dev CRDs installed cluster-wide, and a paused peer
finishes its in-flight handlers. A Lease is what kube-controller-manager, kube-scheduler and
controller-runtime use, needs one namespaced Role, and `kubectl get lease` shows who leads.

The algorithm is client-go's: a candidate takes the Lease when nobody holds it, or when the record
has not changed for ``lease_duration`` by its *own* monotonic clock (no trust in other hosts'
clocks); every write carries the resourceVersion it read, so two candidates never both win. The
leader renews every ``retry_period``; when it cannot renew for ``renew_deadline`` (< lease_duration)
it stops acting at once (the process exits and the Deployment restarts it), before any standby can
take the Lease. On a clean shutdown the leader releases the Lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from finetune_operator.metrics import LEADER

log = logging.getLogger(__name__)

# EX_TEMPFAIL: not an error in this replica, only a reason to start over as a candidate.
LOST_EXIT_CODE = 75


@dataclass(frozen=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retryPeriod < renewDeadline < leaseDuration, not "
                f"{self.retry_period:g} / {self.renew_deadline:g} / {self.lease_duration:g}"
            )


@dataclass(frozen=True)
class Record:
    """The Lease's spec, as the election reads it."""

    holder: str | None
    lease_duration: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int


class LeaseLock(Protocol):
    """Read and write one Lease; ``write`` must fail (return False) when ``version`` is stale."""

    def read(self) -> tuple[Record, str] | None: ...

    def create(self, record: Record) -> bool: ...

    def write(self, record: Record, version: str) -> bool: ...


def now_micro() -> str:
    """metav1.MicroTime on the wire."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiLeaseLock:
    """``LeaseLock`` over the API server. Request timeouts shorter than the renew deadline, so a
    hung connection cannot outlive the leadership it is trying to keep."""

    def __init__(self, api: client.ApiClient, settings: LeaseSettings) -> None:
        self.api = client.CoordinationV1Api(api)
        self.name, self.namespace = settings.name, settings.namespace
        self.timeout = (min(settings.retry_period, 5.0), max(settings.renew_deadline / 2, 1.0))

    def read(self) -> tuple[Record, str] | None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        spec = lease.spec or client.V1LeaseSpec()
        record = Record(
            holder=spec.holder_identity or None,
            lease_duration=int(spec.lease_duration_seconds or 0),
            acquire_time=_iso(spec.acquire_time),
            renew_time=_iso(spec.renew_time),
            transitions=int(spec.lease_transitions or 0),
        )
        return record, str((lease.metadata or client.V1ObjectMeta()).resource_version)

    def _body(self, record: Record, version: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version is not None:
            meta["resourceVersion"] = version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": record.holder,
                "leaseDurationSeconds": record.lease_duration,
                "acquireTime": record.acquire_time,
                "renewTime": record.renew_time,
                "leaseTransitions": record.transitions,
            },
        }

    def create(self, record: Record) -> bool:
        try:
            self.api.create_namespaced_lease(
                self.namespace,
                self._body(record, None),  # type: ignore[arg-type]  # the client sends dicts as they are
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def write(self, record: Record, version: str) -> bool:
        try:
            self.api.replace_namespaced_lease(
                self.name,
                self.namespace,
                self._body(record, version),  # type: ignore[arg-type]
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)


class LeaderElector:
    """One candidate. ``try_acquire_or_renew`` is synchronous (run it in a thread); the async
    methods wait for leadership and watch over it."""

    def __init__(
        self,
        lock: LeaseLock,
        settings: LeaseSettings,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], str] = now_micro,
    ) -> None:
        self.lock, self.settings, self.clock, self.wall = lock, settings, clock, wall
        self._observed: Record | None = None
        self._observed_at = 0.0
        self.last_renew = float("-inf")

    @property
    def identity(self) -> str:
        return self.settings.identity

    def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this candidate holds the Lease afterwards."""
        now = self.clock()
        mine = Record(
            holder=self.identity,
            lease_duration=round(self.settings.lease_duration),
            acquire_time=self.wall(),
            renew_time=self.wall(),
            transitions=0,
        )
        current = self.lock.read()
        if current is None:
            if self.lock.create(mine):
                self._won(mine, now)
                return True
            return False
        record, version = current
        if record != self._observed:
            self._observed, self._observed_at = record, now
        held_by_other = record.holder is not None and record.holder != self.identity
        if held_by_other and now < self._observed_at + self.settings.lease_duration:
            return False
        if record.holder == self.identity:
            mine = Record(
                self.identity, mine.lease_duration, record.acquire_time, mine.renew_time, record.transitions
            )
        else:
            mine = Record(
                self.identity, mine.lease_duration, mine.acquire_time, mine.renew_time, record.transitions + 1
            )
        if not self.lock.write(mine, version):
            return False
        self._won(mine, now)
        return True

    def _won(self, record: Record, now: float) -> None:
        self._observed, self._observed_at, self.last_renew = record, now, now

    def release(self) -> None:
        """Give the Lease up (clean shutdown) so a standby need not wait out the duration."""
        current = self.lock.read()
        if current is None or current[0].holder != self.identity:
            return
        record, version = current
        released = Record(None, 1, record.acquire_time, self.wall(), record.transitions)
        if self.lock.write(released, version):
            log.info("released the leader Lease", extra={"lease": self.settings.name})

    async def _attempt(self, timeout: float) -> bool:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.try_acquire_or_renew), timeout)
        except (TimeoutError, ApiException, OSError) as exc:
            log.warning("leader Lease attempt failed: %s", exc, extra={"lease": self.settings.name})
            return False
        except Exception as exc:  # urllib3 errors and the like: keep trying, never crash the wait
            log.warning("leader Lease attempt failed: %r", exc, extra={"lease": self.settings.name})
            return False

    async def acquire(self) -> None:
        """Return once this candidate leads."""
        logged = False
        while not await self._attempt(self.settings.renew_deadline):
            if not logged:
                log.info(
                    "standing by: another replica holds the leader Lease",
                    extra={"lease": self.settings.name, "holder": self._observed and self._observed.holder},
                )
                logged = True
            await asyncio.sleep(self.settings.retry_period)
        log.info("became the leader", extra={"lease": self.settings.name, "identity": self.identity})

    async def hold(self) -> None:
        """Renew until the Lease cannot be renewed within ``renew_deadline``; then return (lost)."""
        while True:
            await asyncio.sleep(self.settings.retry_period)
            left = self.last_renew + self.settings.renew_deadline - self.clock()
            renewed = left > 0 and await self._attempt(left)
            if not renewed and self.clock() - self.last_renew >= self.settings.renew_deadline:
                return


def exit_now() -> None:
    """Leadership lost: stop acting *now*. In-flight handlers must not finish writing after another
    replica may have taken over, so no graceful shutdown; the Deployment restarts the container."""
    log.critical("lost the leader Lease: exiting so that only the new leader acts")
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(LOST_EXIT_CODE)


async def serve_standby_health(port: int) -> web.AppRunner:
    """/healthz while standing by (kopf serves it once this replica leads), so probes pass."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"leader": False})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # the kubelet probes the pod IP
    return runner


async def run_as_leader(
    elector: LeaderElector,
    operator: Callable[[], Coroutine[Any, Any, None]],
    health_port: int | None,
    on_lost: Callable[[], None] = exit_now,
) -> None:
    """Stand by until this replica leads, then run ``operator`` while the Lease is held.

    ``operator`` returning (SIGTERM, clean stop) releases the Lease; losing the Lease calls
    ``on_lost`` at once.
    """
    standby = await serve_standby_health(health_port) if health_port else None
    try:
        await elector.acquire()
    finally:
        if standby is not None:
            await standby.cleanup()
    LEADER.set(1)
    work = asyncio.create_task(operator(), name="operator")
    guard = asyncio.create_task(elector.hold(), name="leader lease")
    try:
        done, _ = await asyncio.wait({work, guard}, return_when=asyncio.FIRST_COMPLETED)
        if guard in done:
            LEADER.set(0)
            on_lost()
            work.cancel()
            return
        await work
    finally:
        guard.cancel()
    LEADER.set(0)
    await asyncio.to_thread(elector.release)
