#!/usr/bin/env python3
"""One real Kubernetes node next to the local control plane: containerd + runc + bridge CNI + kubelet
+ kube-proxy, started and stopped by hack/localcluster.py (``up --real-node``), each by pid.

What makes it work on a machine without Docker, registries or systemd (see docs/development.md):
- containerd (Debian's) with its own socket, state and config; ``restrict_oom_score_adj`` because
  root may lack CAP_SYS_RESOURCE; the sandbox image is the locally built pause image; its image store
  lives in the cache, so images imported once survive the cluster (a warm start imports nothing), and
  holds one build per image (hack/nodeimages.py: an import removes the build it replaces);
- the node's address is a TEST-NET-1 address on the loopback interface, pods get 10.244.0.0/24 on a bridge
  (CNI bridge + host-local), and kube-proxy (iptables) routes the ``kubernetes`` Service to the
  apiserver, which the control plane then advertises on that address (``apiserver_args``);
- the kubelet authenticates as ``system:node:<name>`` with a client certificate signed by the
  cluster's CA (the Node authorizer and NodeRestriction apply), kube-proxy as ``system:kube-proxy``;
- the node can advertise ``nvidia.com/gpu`` (patched capacity), so the operator's GPU pod spec runs on
  a CPU machine.

The addresses and interface names are host-wide, so one real node runs per machine at a time; a
second cluster asking for one waits for it (``FTJ_REAL_NODE_WAIT`` seconds, default 20 minutes), then
fails with a message naming the one in use.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hack_loader import load_hack

NODE_NAME = "real-node-0"
NODE_IP = "192.0.2.2"  # TEST-NET-1: never routed, so it cannot clash with a real network
NODE_LINK = "lo"  # a /32 on loopback: kernels without the dummy link type have it too
BRIDGE = "ftjbr0"
POD_CIDR = "10.244.0.0/24"
NODE_LABEL = "finetuning.io/real-node"
CNI_BIN_DIR = Path("/usr/lib/cni")
OWNER_FILE = Path("/run/ftj-real-node.json")
PROCESSES = ("containerd", "kubelet", "kube-proxy")  # start order; stopped in reverse
HOST_PACKAGES_HINT = "`make system-packages` (hack/system-packages.sh) installs them"


class NodeError(RuntimeError):
    """The real node could not start (the message says why and what to do)."""


def log(msg: str) -> None:
    print(f"realnode: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Paths:
    """Everything of one node: per-cluster state under the cluster's dir, the image store in the cache."""

    cluster: Path
    cache: Path

    @property
    def root(self) -> Path:
        return self.cluster / "node"

    @property
    def containerd_root(self) -> Path:
        return self.cache / "node" / "containerd-root"

    @property
    def socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.root / "containerd" / "runc"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def apiserver_args(pki: Path) -> list[dict[str, str]]:
    """kube-apiserver flags a kubelet needs: a client certificate to call it (logs, exec), its
    InternalIP rather than an unresolvable name, and an address that pods reach via the Service."""
    return [
        {"key": "kubelet-client-certificate", "value": str(pki / "admin.crt")},
        {"key": "kubelet-client-key", "value": str(pki / "admin.key")},
        {"key": "kubelet-preferred-address-types", "value": "InternalIP"},
        {"key": "advertise-address", "value": NODE_IP},
        {"key": "bind-address", "value": "0.0.0.0"},
    ]


def apiserver_cert_sans() -> list[str]:
    """The ``kubernetes`` Service's ClusterIP (kwokctl's first service address) and the node address."""
    return ["10.0.0.1", NODE_IP]


# --- small helpers ---------------------------------------------------------------------------


def _run(*args: str, check: bool = True, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise NodeError(f"{' '.join(args[:4])} failed (rc={res.returncode}): {res.stderr.strip()[-2000:]}")
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _wait(pred: Callable[[], Any], timeout: float, what: str, diag: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = pred()
            if value:
                return value
        if time.monotonic() > deadline:
            raise NodeError(f"timed out after {timeout:g}s waiting for {what}\n{diag()}")
        time.sleep(0.2)


def _tail(path: Path, n: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return "(no log)"


def check_host(bins: dict[str, Path]) -> None:
    """Root, the Debian packages and the node binaries; fail with what is missing and how to get it."""
    if os.geteuid() != 0:
        raise NodeError("a real node needs root (containerd, runc, network setup)")
    missing = [t for t in ("containerd", "runc", "ctr", "iptables", "ip", "openssl") if not shutil.which(t)]
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append(f"CNI plugins in {CNI_BIN_DIR}")
    if missing:
        raise NodeError(f"missing on this host: {', '.join(missing)}; {HOST_PACKAGES_HINT}")
    for name in ("kubelet", "kube-proxy"):
        if name not in bins or not os.access(bins[name], os.X_OK):
            raise NodeError(f"{name} is not built; `make binaries` (hack/build-binaries.sh) builds it")


# --- ownership: one real node per machine -----------------------------------------------------


def _owner() -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data: dict[str, Any] = json.loads(OWNER_FILE.read_text())
        return data
    return None


def _claim(paths: Paths, wait: float) -> None:
    """Take the machine's one real node, waiting up to ``wait`` seconds for another cluster to free it
    (parallel test sessions queue instead of failing); a dead owner's leftovers are cleaned first."""
    deadline = time.monotonic() + wait
    while not _try_claim(paths):
        if time.monotonic() > deadline:
            other = (_owner() or {}).get("cluster", "?")
            raise NodeError(
                f"the real node is in use by the cluster in {other}; stop it first "
                f"(hack/localcluster.py down --name {Path(other).name})"
            )
        time.sleep(2)


def _try_claim(paths: Paths) -> bool:
    """Check-and-take under a host-wide lock, so two clusters never both take the node."""
    with open(OWNER_FILE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        owner = _owner()
        if owner and owner.get("cluster") != str(paths.cluster):
            other = Path(owner["cluster"])
            if other.exists() and any(_alive(p) for p in _pids(Paths(other, paths.cache)).values()):
                return False
            log(f"taking over the real node from a stale cluster ({other})")
            stop(Paths(other, paths.cache))
        OWNER_FILE.write_text(json.dumps({"cluster": str(paths.cluster), "pid": os.getpid()}))
        return True


def _pids(paths: Paths) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in PROCESSES:
        with contextlib.suppress(OSError, ValueError):
            out[name] = int((paths.pids / f"{name}.pid").read_text())
    return out


# --- network ---------------------------------------------------------------------------------


def _setup_network() -> None:
    addrs = _run("ip", "-o", "addr", "show", "dev", NODE_LINK).stdout
    if f" {NODE_IP}/" not in addrs:
        _run("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK)


def _teardown_network() -> None:
    pods = ipaddress.ip_network(POD_CIDR)
    netns = Path("/run/netns")
    for ns in sorted(netns.glob("cni-*")) if netns.is_dir() else []:
        out = _run("ip", "-n", ns.name, "-o", "-4", "addr", "show", check=False).stdout
        addrs = [w.split("/")[0] for w in out.split() if "/" in w and w[0].isdigit()]
        if any(ipaddress.ip_address(a) in pods for a in addrs):
            _run("ip", "netns", "delete", ns.name, check=False)
    _run("ip", "link", "delete", BRIDGE, check=False)
    _run("ip", "addr", "del", f"{NODE_IP}/32", "dev", NODE_LINK, check=False)


# --- configuration files ---------------------------------------------------------------------


def containerd_config(paths: Paths, pause_ref: str) -> str:
    c = paths.root / "containerd"
    return f"""version = 2
root = "{paths.containerd_root}"
state = "{c / "state"}"

[grpc]
  address = "{paths.socket}"

[ttrpc]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_ref}"
  # root may lack CAP_SYS_RESOURCE (VMs, nested containers): sandboxes' oom_score_adj -998 fails in runc.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which("runc")}"
        Root = "{paths.runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{c / "cni-conf"}"
    max_conf_num = 1
"""


def cni_config(paths: Paths) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "ftj-real-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(paths.root / "cni-ipam"),
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(paths: Paths, pki: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # 1.35 refuses cgroup v1 hosts unless told
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{paths.socket}",
        "address": NODE_IP,
        "port": _free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": _free_port(),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(paths.root / "pod-logs"),
        "volumePluginDir": str(paths.root / "volume-plugins"),
        # A shared development machine: evict only when nearly out of memory or disk.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "resolvConf": "/etc/resolv.conf",
        "registerNode": True,
        "serializeImagePulls": False,
        "maxPods": 50,
    }


def kube_proxy_config(paths: Paths, kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": "0.0.0.0",
        "clusterCIDR": POD_CIDR,
        # NodePorts only on the node's own address: nothing else on this machine changes.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "healthzBindAddress": f"127.0.0.1:{_free_port()}",
        "metricsBindAddress": f"127.0.0.1:{_free_port()}",
        "conntrack": {"maxPerCore": 0, "min": 0},
    }


def client_kubeconfig(paths: Paths, pki: Path, server: str, user: str, groups: Iterable[str]) -> Path:
    """A kubeconfig with a client certificate for ``user`` signed by the cluster's CA."""
    d = paths.root / "pki"
    d.mkdir(parents=True, exist_ok=True)
    stem = user.replace(":", "-")
    key, csr, crt = d / f"{stem}.key", d / f"{stem}.csr", d / f"{stem}.crt"
    subject = "".join(f"/O={g}" for g in groups) + f"/CN={user}"
    _run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-subj", subject, "-out", str(csr))  # fmt: skip
    ca = [
        "-CA",
        str(pki / "ca.crt"),
        "-CAkey",
        str(pki / "ca.key"),
        "-CAcreateserial",
        "-CAserial",
        str(d / "ca.srl"),
    ]
    _run("openssl", "x509", "-req", "-in", str(csr), *ca, "-days", "30", "-out", str(crt))
    key.chmod(0o600)
    kc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}
        ],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    out = d / f"{stem}.kubeconfig"
    out.write_text(yaml.safe_dump(kc, sort_keys=False))
    out.chmod(0o600)
    return out


# --- processes -------------------------------------------------------------------------------


def _spawn(paths: Paths, name: str, argv: list[str]) -> int:
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.pids.mkdir(parents=True, exist_ok=True)
    with open(paths.logs / f"{name}.log", "ab") as logf:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True, close_fds=True
        )
    (paths.pids / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _ctr(
    paths: Paths, *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return _run("ctr", "--address", str(paths.socket), "-n", "k8s.io", *args, timeout=timeout, check=check)


def start_containerd(paths: Paths, pause_ref: str) -> int:
    """Write the node's containerd and CNI configuration, start containerd and wait until it answers;
    returns its pid (recorded with the node's other processes, so ``stop`` ends it)."""
    for d in (paths.root / "containerd" / "cni-conf", paths.runc_root, paths.containerd_root):
        d.mkdir(parents=True, exist_ok=True)
    conf = paths.root / "containerd" / "config.toml"
    conf.write_text(containerd_config(paths, pause_ref))
    (paths.root / "containerd" / "cni-conf" / "10-ftj.conflist").write_text(json.dumps(cni_config(paths)))
    pid = _spawn(paths, "containerd", [shutil.which("containerd") or "containerd", "--config", str(conf)])
    _wait(lambda: _ctr(paths, "version", timeout=5).returncode == 0, 30, "containerd",
          lambda: _tail(paths.logs / "containerd.log"))  # fmt: skip
    return pid


def image_store(paths: Paths) -> Any:
    """The node's image store (hack/nodeimages.py) through this node's containerd."""
    return load_hack("nodeimages").ImageStore(lambda *args, **kw: _ctr(paths, *args, **kw), log)


def import_images(paths: Paths, archives: dict[str, str]) -> dict[str, float]:
    """Import the OCI archives (ref -> path) whose image the node lacks or holds another build of, and
    prune what they replace; returns seconds per imported ref."""
    # Containers a previous node left (its pods' exited containers; no kubelet runs yet): each holds a
    # snapshot of the image it ran, so removing an old image freed nothing (29 GB of snapshots seen).
    leftovers = _ctr(paths, "containers", "ls", "-q", check=False).stdout.split()
    for cid in leftovers:
        _ctr(paths, "tasks", "kill", "-s", "SIGKILL", cid, check=False)
        _ctr(paths, "tasks", "rm", "-f", cid, check=False)
    if leftovers:
        _ctr(paths, "containers", "rm", *leftovers, check=False)
    # Leases an interrupted import left (ctr's expire after 24 h): each holds what it had written.
    if leases := _ctr(paths, "leases", "ls", "-q", check=False).stdout.split():
        _ctr(paths, "leases", "rm", *leases, check=False)
    took: dict[str, float] = image_store(paths).import_archives(archives)
    return took


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    pids: dict[str, int]
    import_seconds: dict[str, float]
    start_seconds: float


def start(
    cluster_dir: Path,
    cache: Path,
    *,
    bins: dict[str, Path],
    server: str,
    admin_kubeconfig: Path,
    images: dict[str, str],
    pause_ref: str,
    gpus: int = 0,
    timeout: float = 180,
    wait: float = float(os.environ.get("FTJ_REAL_NODE_WAIT", "1200")),
) -> Node:
    """Start the node for the cluster in ``cluster_dir`` and wait until it is Ready.

    ``images`` maps image references to OCI archives to import (pause included); ``gpus`` > 0
    patches ``nvidia.com/gpu`` into the node's capacity. Another cluster's node is waited for up to
    ``wait`` seconds (``FTJ_REAL_NODE_WAIT``).
    """
    t0 = time.monotonic()
    check_host(bins)
    paths = Paths(cluster_dir, cache)
    pki = cluster_dir / "pki"
    _claim(paths, wait)
    try:
        (paths.root / "kubelet").mkdir(parents=True, exist_ok=True)
        _setup_network()
        (paths.root / "binaries.json").write_text(json.dumps({k: str(v) for k, v in bins.items()}))
        start_containerd(paths, pause_ref)
        took = import_images(paths, images)

        kubelet_kc = client_kubeconfig(paths, pki, server, f"system:node:{NODE_NAME}", ["system:nodes"])
        proxy_kc = client_kubeconfig(paths, pki, server, "system:kube-proxy", [])
        kcfg = paths.root / "kubelet-config.yaml"
        kcfg.write_text(yaml.safe_dump(kubelet_config(paths, pki), sort_keys=False))
        _spawn(paths, "kubelet", [
            str(bins["kubelet"]), f"--config={kcfg}", f"--kubeconfig={kubelet_kc}",
            f"--root-dir={paths.root / 'kubelet'}", f"--cert-dir={paths.root / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
            f"--node-labels={NODE_LABEL}=true", "--v=1",
        ])  # fmt: skip
        pcfg = paths.root / "kube-proxy-config.yaml"
        pcfg.write_text(yaml.safe_dump(kube_proxy_config(paths, proxy_kc), sort_keys=False))
        _spawn(paths, "kube-proxy", [str(bins["kube-proxy"]), f"--config={pcfg}", "--v=1"])

        kubectl = [str(bins["kubectl"]), "--kubeconfig", str(admin_kubeconfig)]

        def ready() -> bool:
            for name, pid in _pids(paths).items():
                if not _alive(pid):
                    raise NodeError(f"{name} exited:\n{_tail(paths.logs / f'{name}.log')}")
            out = _run(*kubectl, "get", "node", NODE_NAME, "-o", "json", check=False).stdout
            conds = {c["type"]: c["status"] for c in json.loads(out)["status"].get("conditions", [])}
            return conds.get("Ready") == "True"

        def diag() -> str:
            return "\n".join(f"--- {n} ---\n{_tail(paths.logs / f'{n}.log')}" for n in PROCESSES)

        _wait(ready, timeout, f"node {NODE_NAME} Ready", diag)
        if gpus > 0:
            advertise_gpus(kubectl, gpus)
        return Node(NODE_NAME, NODE_IP, _pids(paths), took, round(time.monotonic() - t0, 1))
    except BaseException:
        with contextlib.suppress(Exception):
            stop(paths)
        raise


def advertise_gpus(kubectl: list[str], count: int, resource: str = "nvidia.com/gpu") -> None:
    """Extended resources the kubelet does not manage are kept as patched (no device plugin here)."""
    key = resource.replace("/", "~1")
    patch = [{"op": "add", "path": f"/status/capacity/{key}", "value": str(count)}]
    _run(*kubectl, "patch", "node", NODE_NAME, "--subresource=status", "--type=json", "-p", json.dumps(patch))


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _stop_pid(pid: int, grace: float) -> None:
    if not _alive(pid):
        return
    _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        _kill(pid, signal.SIGKILL)


def _shims(paths: Paths) -> list[int]:
    """containerd-shim processes serving our containerd (its socket is in their command line)."""
    found = []
    needle = str(paths.socket).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{entry}/cmdline").read_bytes()
            if b"containerd-shim" in argv.split(b"\0")[0] and needle in argv:
                found.append(int(entry))
    return found


def _umount_under(root: Path) -> None:
    """Unmount everything below ``root`` (pod volumes, container root filesystems), deepest first."""
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point == str(root) or point.startswith(f"{root}/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        _run("umount", "-l", point, check=False)


def stop_containerd(paths: Paths) -> None:
    """Forget the node's containers (the image store in the cache outlives them), stop the shims and
    containerd, by pid."""
    pid = _pids(paths).get("containerd")
    if pid is not None and _alive(pid) and paths.socket.exists():
        for kind in ("tasks", "containers"):
            ids = _ctr(paths, kind, "ls", "-q", check=False, timeout=30).stdout.split()
            for cid in ids:
                if kind == "tasks":
                    _ctr(paths, "tasks", "delete", "--force", cid, check=False, timeout=30)
                else:
                    _ctr(paths, "containers", "delete", cid, check=False, timeout=30)
    for shim in _shims(paths):
        _stop_pid(shim, 5)
    if pid is not None:
        _stop_pid(pid, 10)


def stop(paths: Paths) -> bool:
    """Stop the node's processes and containers, by pid and by our runc root; remove its state."""
    pids = _pids(paths)
    if not pids and not paths.root.exists():
        return False
    for name in ("kube-proxy", "kubelet"):
        if name in pids:
            _stop_pid(pids[name], 10)
    runc = shutil.which("runc")
    if runc and paths.runc_root.is_dir():
        listing = _run(runc, "--root", str(paths.runc_root), "list", "-q", check=False).stdout.split()
        for cid in listing:
            _run(runc, "--root", str(paths.runc_root), "kill", cid, "KILL", check=False)
        for cid in listing:
            _run(runc, "--root", str(paths.runc_root), "delete", "--force", cid, check=False)
    stop_containerd(paths)
    if "kube-proxy" in pids and (cfg := paths.root / "kube-proxy-config.yaml").exists():
        proxy = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            proxy = Path(json.loads((paths.root / "binaries.json").read_text())["kube-proxy"])
        if proxy is not None:  # removes the KUBE-* chains kube-proxy installed
            _run(str(proxy), f"--config={cfg}", "--cleanup", check=False, timeout=60)
    _umount_under(paths.root)
    _teardown_network()
    shutil.rmtree(paths.root, ignore_errors=True)
    owner = _owner()
    if owner and owner.get("cluster") == str(paths.cluster):
        OWNER_FILE.unlink(missing_ok=True)
    return True


def rss_mib(cluster_dir: Path, cache: Path) -> dict[str, float]:
    """Resident memory of the node's processes and of all its containerd shims together."""
    paths = Paths(cluster_dir, cache)
    out: dict[str, float] = {}

    def rss(pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    for name, pid in _pids(paths).items():
        with contextlib.suppress(OSError):
            out[name] = round(rss(pid), 1)
    shims = _shims(paths)
    with contextlib.suppress(OSError):
        out["shims"] = round(sum(rss(p) for p in shims), 1)
    out["shim_count"] = len(shims)
    return out


__all__ = ["NODE_IP", "NODE_LABEL", "NODE_NAME", "Node", "NodeError", "Paths", "apiserver_args",
           "image_store", "import_images", "rss_mib", "start", "start_containerd", "stop",
           "stop_containerd"]  # fmt: skip
