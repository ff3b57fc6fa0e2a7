#!/usr/bin/env python3
"""A real local Kubernetes control plane for tests and the demo: ``up | down | status``.

kwokctl's ``binary`` runtime does the heavy lifting (PKI, kubeconfig, component flags, pid files,
free ports) and we point every one of its binaries at the local cache, so it never downloads
anything. On top of it this module adds what kwokctl does not: our kwok stages and fake nodes
(hack/kwok/), etcd without fsync, 127.0.0.1-only ports picked by the OS, a readiness check that
waits for the ``default`` ServiceAccount and Ready nodes, an admin kubeconfig with embedded
credentials, and a stop that kills only processes run from this cluster's own ``bin/`` (or the
kwokctl creating it): pid files alone could name a recycled pid, or miss a component whose pid file
was not written yet.

Each cluster lives in ``.local/kwok/clusters/<name>/`` (gitignored); ``down`` removes it. kwokctl
starts every component with setsid, so each is its own process group and a terminal's Ctrl-C does
not reach it: callers that must not leak processes use ``register_cleanup`` (on SIGTERM/SIGHUP it
stops the cluster, then unwinds the caller, whose ``finally`` stops what it started itself) and/or an
owner pid, which starts a small watchdog that stops the cluster when the owner dies, even by SIGKILL.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from hack_loader import load_hack

REPO = Path(__file__).resolve().parent.parent
KWOK_CONFIG_DIR = REPO / "hack" / "kwok"
LOCAL = REPO / ".local"
KWOK_WORKDIR = LOCAL / "kwok"
ADMIN_KUBECONFIG = LOCAL / "kubeconfig"
DEFAULT_NAME = "ftj"
TEST_NAME_PREFIX = "ftj-test-"
DEV_RUNTIME_LABEL = "finetuning.io/dev-runtime"
STATE_FILE = "ftj-state.json"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kwokctl")
# Components kwokctl runs, named after their pid files in <state>/pids/.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller")
BUILD_HINT = (
    "build them once with `make binaries` (hack/build-binaries.sh; a cold build takes about "
    "12 minutes on 2 cores), or point KUBEBUILDER_ASSETS / TEST_ASSET_<NAME> at binaries you have"
)


class MissingBinariesError(RuntimeError):
    """The control plane's binaries are not in the cache (or where the user said they are)."""


class ClusterError(RuntimeError):
    """The cluster did not come up; the message carries the tail of the relevant logs."""


@dataclass(frozen=True)
class ClusterInfo:
    """What a caller needs to talk to a running cluster."""

    name: str
    kubeconfig: Path
    server: str
    state_dir: Path
    pids: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started: bool = False  # True when this call started it (so this caller should stop it)
    start_seconds: float | None = None  # start-to-ready wall time of this call, if it started it


tools = load_hack("tools")


def log(msg: str) -> None:
    print(f"localcluster: {msg}", file=sys.stderr, flush=True)


def state_dir(name: str = DEFAULT_NAME) -> Path:
    return KWOK_WORKDIR / "clusters" / name


def node_binaries() -> dict[str, Path]:
    """kubelet and kube-proxy for the real node, built by hack/build-binaries.sh like the rest."""
    found = {}
    for name in ("kubelet", "kube-proxy"):
        path = tools.user_asset(name) or tools.bin_dir() / name
        if not os.access(path, os.X_OK):
            raise MissingBinariesError(f"missing real-node binary {name} (looked for {path}); {BUILD_HINT}")
        found[name] = Path(path).resolve()
    return found


def find_binaries() -> dict[str, Path]:
    """Locate every binary, envtest conventions first; fail with instructions if any is missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in BINARIES:
        path = tools.user_asset(name) or tools.bin_dir() / name
        if os.access(path, os.X_OK):
            found[name] = Path(path).resolve()
        else:
            missing.append(f"{name} (looked for {path})")
    if missing:
        raise MissingBinariesError(
            "missing control-plane binaries: " + ", ".join(missing) + "; " + BUILD_HINT
        )
    try:
        found["kubectl"] = (tools.ensure_tools() / "kubectl").resolve()
    except (OSError, subprocess.CalledProcessError, SystemExit) as exc:
        raise MissingBinariesError(f"kubectl unavailable ({exc}); run `make tools`") from exc
    return found


def binary_versions(bins: dict[str, Path]) -> dict[str, str]:
    """One line of ``--version`` per binary, recorded so a report can say what actually ran."""
    out: dict[str, str] = {}
    for name, path in bins.items():
        args = ["version", "--client"] if name == "kubectl" else ["--version"]
        try:
            res = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30)
            lines = (res.stdout or res.stderr).strip().splitlines()
            out[name] = lines[0].strip() if lines else "?"
        except (OSError, subprocess.TimeoutExpired) as exc:
            out[name] = f"? ({exc})"
    return out


def _free_ports(n: int) -> list[int]:
    """Ports the OS hands out on 127.0.0.1; random, so concurrent sessions rarely collide."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def load_nodes() -> list[dict[str, Any]]:
    with open(KWOK_CONFIG_DIR / "nodes.yaml") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def runner_nodes(nodes: list[dict[str, Any]]) -> list[str]:
    """Nodes whose pods the local process runner executes; kwok's pod stages must skip them."""
    return sorted(
        n["metadata"]["name"]
        for n in nodes
        if str(n["metadata"].get("labels", {}).get(DEV_RUNTIME_LABEL, "")).lower() == "true"
    )


def build_stages(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All stages for kwok; Pod stages get a ``.spec.nodeName NotIn <runner nodes>`` clause.

    A stage's selector sees only the pod, not its node's labels, so the node-label rule is resolved
    here from nodes.yaml.
    """
    skip = runner_nodes(nodes)
    stages: list[dict[str, Any]] = []
    for fname in ("stages-node.yaml", "stages-pod.yaml"):
        with open(KWOK_CONFIG_DIR / fname) as f:
            stages.extend(d for d in yaml.safe_load_all(f) if d)
    for st in stages:
        if skip and st["spec"]["resourceRef"]["kind"] == "Pod":
            exprs = st["spec"].setdefault("selector", {}).setdefault("matchExpressions", [])
            exprs.append({"key": ".spec.nodeName", "operator": "NotIn", "values": skip})
    return stages


def kwokctl_config(
    bins: dict[str, Path], kube_version: str, ports: list[int], real_node_pki: Path | None = None
) -> dict[str, Any]:
    """kwokctl options: every binary local, loopback only, real authn/authz/admission.

    With ``real_node_pki`` (the cluster's pki dir) the apiserver also gets what a real kubelet and
    its pods need (hack/realnode.py): kubelet client credentials, an advertised address pods reach.
    """
    etcd, etcd_peer, apiserver, kwok, kcm, sched = ports
    config: dict[str, Any] = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "kubeVersion": kube_version,
            "securePort": True,
            "kubeAuthorization": True,  # --authorization-mode=Node,RBAC; SA signing key for KCM
            "kubeAdmission": True,  # default admission plugins, ServiceAccount included
            # kwokctl multiplies this by its heartbeat factor (5): KCM's --node-monitor-period
            # becomes 5s, upstream's default, instead of kwokctl's 25s.
            "kubeControllerManagerNodeMonitorPeriodMilliseconds": 1000,
            "components": list(COMPONENTS),
            "etcdBinary": str(bins["etcd"]),
            "kubeApiserverBinary": str(bins["kube-apiserver"]),
            "kubeControllerManagerBinary": str(bins["kube-controller-manager"]),
            "kubeSchedulerBinary": str(bins["kube-scheduler"]),
            "kwokControllerBinary": str(bins["kwok"]),
            "kubectlBinary": str(bins["kubectl"]),
            "etcdPort": etcd,
            "etcdPeerPort": etcd_peer,
            "kubeApiserverPort": apiserver,
            "kwokControllerPort": kwok,
            "kubeControllerManagerPort": kcm,
            "kubeSchedulerPort": sched,
        },
        "componentsPatches": [
            {"name": "etcd", "extraArgs": [{"key": "unsafe-no-fsync", "value": "true"}]},
            {
                "name": "kube-apiserver",
                # OpenShift's default: creating a child with blockOwnerDeletion needs update on the
                # owner's finalizers, which the chart's RBAC test then proves it grants.
                "extraArgs": [
                    {"key": "enable-admission-plugins", "value": "OwnerReferencesPermissionEnforcement"}
                ],
            },
            {
                "name": "kube-controller-manager",
                # The default set ("*") already has job, garbage-collector, serviceaccount and
                # serviceaccount-token; naming it keeps the requirement visible.
                # One instance, so no leader election: with it, an API server outage longer than the
                # renew deadline (a restart under load) makes the component exit for good.
                "extraArgs": [
                    {"key": "controllers", "value": "*"},
                    {"key": "leader-elect", "value": "false"},
                ],
            },
            {"name": "kube-scheduler", "extraArgs": [{"key": "leader-elect", "value": "false"}]},
        ],
    }
    if real_node_pki is not None:
        realnode = load_hack("realnode")
        config["options"]["kubeApiserverCertSANs"] = realnode.apiserver_cert_sans()
        config["componentsPatches"] += [
            {"name": "kube-apiserver", "extraArgs": realnode.apiserver_args(real_node_pki)},
            # kwokctl runs kwok with --manage-all-nodes; it must not fake the real node's status.
            {
                "name": "kwok-controller",
                "extraArgs": [
                    {"key": "manage-all-nodes", "value": "false"},
                    {"key": "manage-nodes-with-label-selector", "value": "type=kwok"},
                ],
            },
        ]
    return config


# --- processes --------------------------------------------------------------------------------


def _recorded_pids(sdir: Path) -> dict[str, int]:
    pids: dict[str, int] = {}
    for f in sorted((sdir / "pids").glob("*.pid")):
        with contextlib.suppress(ValueError, OSError):
            pids[f.stem] = int(f.read_text().strip())
    with contextlib.suppress(OSError, ValueError, KeyError):
        for k, v in json.loads((sdir / STATE_FILE).read_text())["pids"].items():
            pids.setdefault(k, int(v))
    return pids


def _ours(pid: int, sdir: Path) -> bool:
    """Alive and started for this cluster (run from its bin/ or kwokctl creating it), so a
    recycled pid, or an unrelated process that uses the cluster's kubeconfig, is never ours."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[0].startswith(f"{sdir}/bin/".encode()) or str(sdir / "ftj-input.yaml").encode() in argv


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cluster_processes(sdir: Path) -> list[int]:
    """Recorded pids plus any process run from this cluster's ``bin/`` (a component whose pid file
    is not written yet) or creating it (kwokctl with our input file). Other processes that merely
    mention the state dir, such as an operator using its kubeconfig, are not ours to stop."""
    pids = {pid for pid in _recorded_pids(sdir).values() if _ours(pid, sdir)}
    pids |= {
        int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != os.getpid() and _ours(int(e), sdir)
    }
    return sorted(pids)


def _kill(sdir: Path, timeout: float = 15.0) -> list[int]:
    """SIGKILL every process of this cluster, as kwokctl's own stop does.

    Repeated because a kwokctl that is still creating could start one more component between a
    scan and its own death.
    """
    killed: list[int] = []
    for _ in range(3):
        targets = [p for p in _cluster_processes(sdir) if p not in killed]
        if not targets:
            break
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:  # kwokctl setsid's each component
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_ours(p, sdir) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in targets if _ours(p, sdir)]
        if left:
            raise ClusterError(f"processes {left} of {sdir} survived SIGKILL")
        killed += targets
    return killed


@contextlib.contextmanager
def _lock(name: str, *, wait: bool = True) -> Iterator[bool]:
    """Serialise up/down of one cluster across processes; yields False if busy and not ``wait``."""
    KWOK_WORKDIR.mkdir(parents=True, exist_ok=True)
    with open(KWOK_WORKDIR / f".{name}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- API access without a client library (works before the venv has one) ---------------------


def _ssl_context(sdir: Path) -> ssl.SSLContext:
    pki = sdir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def _server(sdir: Path) -> str:
    with open(sdir / "kubeconfig.yaml") as f:
        kc = yaml.safe_load(f)
    return str(kc["clusters"][0]["cluster"]["server"])


def _get(sdir: Path, path: str, ctx: ssl.SSLContext | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(_server(sdir) + path)
    try:
        with urllib.request.urlopen(req, context=ctx or _ssl_context(sdir), timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        return 0, str(exc).encode()


def _nodes_ready(sdir: Path, ctx: ssl.SSLContext, names: list[str]) -> bool:
    code, body = _get(sdir, "/api/v1/nodes", ctx)
    if code != 200:
        return False
    items = {n["metadata"]["name"]: n for n in json.loads(body)["items"]}
    for name in names:
        node = items.get(name)
        if node is None:
            return False
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        taints = [t["key"] for t in node.get("spec", {}).get("taints", []) or []]
        if conds.get("Ready") != "True" or any(t.startswith("node.kubernetes.io/") for t in taints):
            return False
    return True


def is_ready(sdir: Path, node_names: list[str] | None = None) -> bool:
    """/readyz ok, ``default`` ServiceAccount in ``default``, and (if given) those nodes Ready."""
    try:
        ctx = _ssl_context(sdir)
    except (OSError, ssl.SSLError):
        return False
    if _get(sdir, "/readyz", ctx)[0] != 200:
        return False
    if _get(sdir, "/api/v1/namespaces/default/serviceaccounts/default", ctx)[0] != 200:
        return False
    return node_names is None or _nodes_ready(sdir, ctx, node_names)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _diagnostics(sdir: Path) -> str:
    parts = []
    for comp in COMPONENTS:
        pid = _recorded_pids(sdir).get(comp)
        alive = pid is not None and _ours(pid, sdir)
        parts.append(f"--- {comp} (pid {pid}, {'alive' if alive else 'NOT running'}) ---")
        parts.append(_tail(sdir / "logs" / f"{comp}.log"))
    return "\n".join(parts)


def write_kubeconfig(sdir: Path, name: str, dest: Path) -> None:
    """An admin kubeconfig with the certificates embedded, so it works from anywhere."""
    pki = sdir / "pki"

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    kc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": _server(sdir), "certificate-authority-data": b64(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": f"{name}-admin",
                "user": {
                    "client-certificate-data": b64(pki / "admin.crt"),
                    "client-key-data": b64(pki / "admin.key"),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
        "current-context": name,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(yaml.safe_dump(kc, sort_keys=False))
    tmp.chmod(0o600)
    os.replace(tmp, dest)


def _kubeconfig_path(name: str) -> Path:
    return ADMIN_KUBECONFIG if name == DEFAULT_NAME else state_dir(name) / "kubeconfig"


def _read_state(sdir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((sdir / STATE_FILE).read_text())
        return data
    except (OSError, ValueError):
        return None


def _info(name: str, state: dict[str, Any], *, started: bool, seconds: float | None) -> ClusterInfo:
    sdir = state_dir(name)
    return ClusterInfo(
        name=name,
        kubeconfig=Path(state["kubeconfig"]),
        server=state["server"],
        state_dir=sdir,
        pids=_recorded_pids(sdir),
        versions=state.get("versions", {}),
        started=started,
        start_seconds=seconds,
    )


def _healthy(name: str) -> dict[str, Any] | None:
    sdir = state_dir(name)
    state = _read_state(sdir)
    if state is None or not state.get("ready"):
        return None
    pids = _recorded_pids(sdir)
    if any(not (c in pids and _ours(pids[c], sdir)) for c in COMPONENTS):
        return None
    if not is_ready(sdir) or not Path(state["kubeconfig"]).exists():
        return None
    node = state.get("real_node")
    if node and not all(_pid_alive(int(pid)) for pid in node.get("pids", {}).values()):
        return None
    return state


# --- public API ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealNode:
    """Ask for a real node (hack/realnode.py) with these images imported and this many fake GPUs."""

    images: tuple[str, ...] = ("operator", "trainer")
    gpus: int = 0


def ensure_up(
    name: str = DEFAULT_NAME,
    *,
    owner_pid: int | None = None,
    timeout: float = 180.0,
    real_node: RealNode | None = None,
) -> ClusterInfo:
    """Return a ready cluster, reusing a healthy running one of that name or starting a fresh one.

    With ``owner_pid`` a detached watchdog stops the cluster once that process is gone, so a test
    run that is SIGKILLed still leaves nothing behind. With ``real_node`` the cluster also has one
    real node (kubelet + containerd) running the project's images, built first if needed.
    """
    with _lock(name):
        state = _healthy(name)
        if state is not None and (real_node is None or state.get("real_node")):
            return _info(name, state, started=False, seconds=None)
        if state is not None:
            log(f"{name}: running without a real node; recreating it with one")
        return _create(name, owner_pid=owner_pid, timeout=timeout, real_node=real_node)


def down(name: str = DEFAULT_NAME) -> bool:
    """Stop the processes this cluster started (by recorded pid) and remove its state."""
    with _lock(name):
        return _down_locked(name)


def _down_locked(name: str) -> bool:
    sdir = state_dir(name)
    stopped: list[int] = []
    if sdir.exists():
        node_stopped = False
        if (sdir / "node").exists():  # containers and network first, while containerd still answers
            node_stopped = load_hack("realnode").stop(load_hack("realnode").Paths(sdir, tools.cache_root()))
        stopped = _kill(sdir) + ([-1] if node_stopped else [])
        shutil.rmtree(sdir, ignore_errors=True)
    if name == DEFAULT_NAME:
        ADMIN_KUBECONFIG.unlink(missing_ok=True)
    return bool(stopped)


def list_clusters() -> list[str]:
    root = KWOK_WORKDIR / "clusters"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def reap_stale(prefix: str = TEST_NAME_PREFIX) -> list[str]:
    """Stop test clusters whose owning process is gone (a session killed before its watchdog ran)."""
    reaped = []
    for name in list_clusters():
        if not name.startswith(prefix):
            continue
        # A creator holds the lock until its state is recorded; a busy lock means "in use".
        with _lock(name, wait=False) as acquired:
            if not acquired:
                continue
            owner = (_read_state(state_dir(name)) or {}).get("owner_pid")
            if owner is not None and _pid_alive(int(owner)):
                continue
            _down_locked(name)
            reaped.append(name)
    return reaped


def register_cleanup(name: str, *, unwind: Callable[[int], BaseException] | None = None) -> None:
    """Stop the cluster at interpreter exit, and on SIGTERM/SIGHUP stop it at once and unwind.

    On the signal the handler stops the cluster first, then raises ``unwind(signum)`` (by default
    ``SystemExit(128 + signum)``, the status a shell reports for a death by that signal), so the
    caller's ``finally`` blocks and atexit handlers still run: they stop what the caller started
    itself (an operator, a trainer), which the cluster's stop cannot know about. Not an
    ``Exception``, so an ``except Exception`` on the way does not swallow it. pytest reports a
    SystemExit as one failed test and goes on; tests/conftest.py passes an ``unwind`` that ends the
    session instead. A repeated signal stops the cluster again (nothing left to stop) but raises
    nothing, so it cannot cut that clean-up short; a clean-up that hangs still yields to SIGKILL. A
    callable handler installed before is called after the cluster is stopped, and decides the rest.
    A process forked from this one (a DataLoader worker) inherits the handler but not the cluster:
    there the signal has its previous effect. SIGINT already unwinds (KeyboardInterrupt) and reaches
    the atexit stop.
    """
    atexit.register(down, name)
    raising = unwind or (lambda signum: SystemExit(128 + signum))
    received: list[int] = []
    registered_by = os.getpid()

    def handler(signum: int, frame: FrameType | None, prev: Any = None) -> None:
        if os.getpid() != registered_by:  # a forked child (a DataLoader worker): not its cluster
            if callable(prev):
                prev(signum, frame)
            else:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        # Without the lock: this process may hold it (signal during create), and the exception
        # below unwinds through a create in progress, which then stops nothing more.
        with contextlib.suppress(Exception):
            _down_locked(name)
        if callable(prev):
            prev(signum, frame)
            return
        if received:
            with contextlib.suppress(Exception):  # e.g. a reentrant write to stderr
                log(f"{name}: signal {signum} again; still cleaning up after signal {received[0]}")
            return
        received.append(signum)
        raise raising(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        prev = signal.getsignal(sig)
        if prev != signal.SIG_IGN:  # e.g. nohup: the caller chose to outlive that signal
            signal.signal(sig, lambda s, f, p=prev: handler(s, f, p))


def _create(
    name: str, *, owner_pid: int | None, timeout: float, real_node: RealNode | None = None
) -> ClusterInfo:
    t0 = time.monotonic()
    bins = find_binaries()
    images: dict[str, Any] = {}
    if real_node is not None:
        bins |= node_binaries()
        # Before the control plane starts: a cold trainer image takes minutes, a warm one nothing.
        images = load_hack("images").ensure([*real_node.images, "pause"])
        t0 = time.monotonic()  # the control plane's own start-up timeout starts now
    sdir = state_dir(name)
    if sdir.exists():
        log(f"{name}: removing stale state in {sdir}")
        _kill(sdir)
        shutil.rmtree(sdir)
    sdir.mkdir(parents=True)
    state: dict[str, Any] = {
        "name": name,
        "owner_pid": owner_pid,
        "created_by_pid": os.getpid(),
        "instance": uuid.uuid4().hex,  # which start of this name: a watchdog stops only its own
        "ready": False,
    }
    (sdir / STATE_FILE).write_text(json.dumps(state))
    if owner_pid is not None:
        # Before anything starts, so an owner killed even mid-create leaves nothing behind.
        _spawn_watchdog(name, owner_pid, state["instance"])
    versions = binary_versions(bins)
    kube_version = versions["kube-apiserver"].split()[-1]
    nodes = load_nodes()
    ports = _free_ports(6)
    pki = sdir / "pki" if real_node is not None else None
    docs = [kwokctl_config(bins, kube_version, ports, pki), *build_stages(nodes)]
    config_path = sdir / "ftj-input.yaml"
    config_path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    env = dict(os.environ)
    env["KWOK_WORKDIR"] = str(KWOK_WORKDIR)
    # kwokctl looks kubectl up on PATH before it would consider fetching one.
    env["PATH"] = f"{bins['kubectl'].parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("KUBECONFIG", None)
    cmd = [
        str(bins["kwokctl"]),
        "--name", name,
        "--config", str(config_path),
        "create", "cluster",
        "--runtime", "binary",
        "--kubeconfig=",
        f"--timeout={int(timeout)}s",
    ]  # fmt: skip
    log(f"{name}: starting control plane ({kube_version}) in {sdir}")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 30)
    if res.returncode != 0 or not (sdir / "kubeconfig.yaml").exists():
        diag = _diagnostics(sdir)
        with contextlib.suppress(ClusterError):
            _kill(sdir)
        raise ClusterError(
            f"kwokctl create cluster failed (rc={res.returncode}):\n"
            f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}\n{diag}"
        )
    kubeconfig = _kubeconfig_path(name)
    state |= {
        "state_dir": str(sdir),
        "server": _server(sdir),
        "kubeconfig": str(kubeconfig),
        "created_at": time.time(),
        "binaries": {k: str(v) for k, v in bins.items()},
        "versions": versions,
        "ports": dict(
            zip(["etcd", "etcd-peer", "kube-apiserver", "kwok", "kcm", "scheduler"], ports, strict=True)
        ),
        "pids": _recorded_pids(sdir),
    }
    (sdir / STATE_FILE).write_text(json.dumps(state, indent=2))
    try:
        _wait_ready(sdir, bins, nodes, deadline=t0 + timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            _kill(sdir)
            shutil.rmtree(sdir, ignore_errors=True)
        raise
    write_kubeconfig(sdir, name, kubeconfig)
    if real_node is not None:
        try:
            node = _start_real_node(sdir, bins, state, kubeconfig, images, real_node)
        except BaseException:
            with contextlib.suppress(Exception):
                _kill(sdir)
                shutil.rmtree(sdir, ignore_errors=True)
            raise
        state["real_node"] = {
            "name": node.name,
            "ip": node.ip,
            "pids": node.pids,
            "images": {k: v.ref for k, v in images.items()},
            "import_seconds": node.import_seconds,
            "start_seconds": node.start_seconds,
        }
    state["ready"] = True
    state["start_seconds"] = round(time.monotonic() - t0, 2)
    state["pids"] = _recorded_pids(sdir)
    (sdir / STATE_FILE).write_text(json.dumps(state, indent=2))
    log(f"{name}: ready in {state['start_seconds']}s at {state['server']}")
    return _info(name, state, started=True, seconds=state["start_seconds"])


def _start_real_node(
    sdir: Path,
    bins: dict[str, Path],
    state: dict[str, Any],
    kubeconfig: Path,
    images: dict[str, Any],
    real_node: RealNode,
) -> Any:
    return load_hack("realnode").start(
        sdir,
        tools.cache_root(),
        bins=bins,
        server=state["server"],
        admin_kubeconfig=kubeconfig,
        images={img.ref: img.archive for img in images.values()},
        pause_ref=images["pause"].ref,
        gpus=real_node.gpus,
    )


def _wait_ready(sdir: Path, bins: dict[str, Path], nodes: list[dict[str, Any]], *, deadline: float) -> None:
    ctx = _ssl_context(sdir)

    def wait(pred: Callable[[], bool], what: str) -> None:
        while not pred():
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what}\n{_diagnostics(sdir)}")
            time.sleep(0.1)

    wait(lambda: _get(sdir, "/readyz", ctx)[0] == 200, "/readyz")
    res = subprocess.run(
        [str(bins["kubectl"]), "--kubeconfig", str(sdir / "kubeconfig.yaml"), "apply", "--server-side",
         "--field-manager=ftj-localcluster", "-f", str(KWOK_CONFIG_DIR / "nodes.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if res.returncode != 0:
        raise ClusterError(f"applying nodes failed: {res.stderr}")
    names = [n["metadata"]["name"] for n in nodes]
    wait(lambda: is_ready(sdir, names), "the default ServiceAccount and Ready nodes")


def _spawn_watchdog(name: str, owner_pid: int, instance: str) -> None:
    logf = open(state_dir(name) / "watchdog.log", "ab")  # noqa: SIM115 - handed to the child
    with logf:
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_watch", name, str(owner_pid), instance],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True, close_fds=True, cwd=str(REPO),
        )  # fmt: skip


def _watch(name: str, owner_pid: int, instance: str) -> int:
    """Stop the cluster ``instance`` once ``owner_pid`` is gone; end quietly once that instance is.

    A cluster stopped by its owner and started again under the same name by the next process (benches
    run back to back) is another instance: its state names another one, and this watchdog leaves it.
    """
    sdir = state_dir(name)

    def ours() -> bool:
        """The directory is there and no other start claims it. A state file being rewritten (a
        create in progress truncates it first) reads as nothing and still counts as ours."""
        if not sdir.is_dir():
            return False
        state = _read_state(sdir)
        return state is None or state.get("instance") == instance

    while ours() and _pid_alive(owner_pid):
        time.sleep(1.0)
    with _lock(name):
        if ours():
            log(f"{name}: owner {owner_pid} is gone; stopping the cluster")
            _down_locked(name)
    return 0


def _exited(pid: int) -> bool:
    """Gone, or a zombie whose threads have all exited (so its sockets are closed).

    A killed Go program's leader thread turns zombie before its other threads finish exiting, and
    those still hold the listening socket.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (OSError, IndexError):
        return True
    return state in ("Z", "X") and threads <= 1


def restart_component(
    name: str, component: str, *, while_down: Callable[[], None] | None = None, timeout: float = 60.0
) -> int:
    """Kill one component of a running cluster and start it again with the same command line.

    For chaos tests (an API server restart in the middle of a transition). ``while_down`` runs while
    the component is stopped. Returns the new pid once the cluster answers /readyz again.
    """
    sdir = state_dir(name)
    pid = _recorded_pids(sdir).get(component)
    if pid is None or not _ours(pid, sdir):
        raise ClusterError(f"{component} of {name} is not running")
    proc_dir = Path(f"/proc/{pid}")
    argv = [a.decode() for a in proc_dir.joinpath("cmdline").read_bytes().split(b"\0") if a]
    cwd = os.readlink(proc_dir / "cwd")
    env = dict(
        e.decode().split("=", 1) for e in proc_dir.joinpath("environ").read_bytes().split(b"\0") if b"=" in e
    )
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # until its sockets are closed: gone, or a zombie
    if while_down is not None:
        while_down()
    logf = open(sdir / "logs" / f"{component}.log", "ab")  # noqa: SIM115 - handed to the child
    new = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
    )
    (sdir / "pids" / f"{component}.pid").write_text(str(new.pid))
    while not is_ready(sdir):
        if new.poll() is not None or time.monotonic() > deadline:
            raise ClusterError(f"{component} did not come back:\n{_tail(sdir / 'logs' / f'{component}.log')}")
        time.sleep(0.1)
    return new.pid


def status(name: str = DEFAULT_NAME) -> dict[str, Any]:
    sdir = state_dir(name)
    state = _read_state(sdir)
    pids = _recorded_pids(sdir)
    return {
        "name": name,
        "state_dir": str(sdir),
        "exists": sdir.exists(),
        "processes": {
            c: {"pid": pids.get(c), "running": c in pids and _ours(pids[c], sdir)} for c in COMPONENTS
        },
        "ready": bool(state) and sdir.exists() and is_ready(sdir),
        "kubeconfig": state.get("kubeconfig") if state else None,
        "server": state.get("server") if state else None,
        "versions": state.get("versions") if state else None,
        "start_seconds": state.get("start_seconds") if state else None,
        "real_node": _real_node_status(sdir, state),
    }


def _real_node_status(sdir: Path, state: dict[str, Any] | None) -> dict[str, Any] | None:
    node = (state or {}).get("real_node")
    if not node:
        return None
    return {**node, "rss_mib": load_hack("realnode").rss_mib(sdir, tools.cache_root())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="cmd", required=True)
    up_p = sub.add_parser("up", help="start (or reuse) the cluster and print `export KUBECONFIG=...`")
    up_p.add_argument("--name", default=DEFAULT_NAME)
    up_p.add_argument("--real-node", action="store_true", help="add a real node running the project's images")
    up_p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu the real node advertises")
    down_p = sub.add_parser("down", help="stop what `up` started and remove its state")
    down_p.add_argument("--name", default=DEFAULT_NAME)
    down_p.add_argument("--all", action="store_true", help="every cluster under .local/kwok")
    st_p = sub.add_parser("status", help="print the cluster's state as JSON")
    st_p.add_argument("--name", default=DEFAULT_NAME)
    w = sub.add_parser("_watch")
    w.add_argument("name")
    w.add_argument("owner", type=int)
    w.add_argument("instance")
    args = p.parse_args(argv)
    try:
        if args.cmd == "up":
            node = RealNode(gpus=args.gpus) if args.real_node else None
            info = ensure_up(args.name, real_node=node)
            if not info.started:
                log(f"{info.name}: already running and ready at {info.server}")
            print(f"export KUBECONFIG={info.kubeconfig}")
        elif args.cmd == "down":
            for name in list_clusters() if args.all else [args.name]:
                log(f"{name}: {'stopped' if down(name) else 'nothing running'}; state removed")
        elif args.cmd == "status":
            print(json.dumps(status(args.name), indent=2))
        elif args.cmd == "_watch":
            return _watch(args.name, args.owner, args.instance)
    except MissingBinariesError as exc:
        log(str(exc))
        return 2
    except RuntimeError as exc:  # ClusterError, realnode.NodeError, a failed image build
        log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ClusterError",
    "ClusterInfo",
    "MissingBinariesError",
    "RealNode",
    "down",
    "ensure_up",
    "find_binaries",
    "is_ready",
    "reap_stale",
    "register_cleanup",
    "status",
]
