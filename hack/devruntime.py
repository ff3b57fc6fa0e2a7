"""Development runtime: runs trainer pods bound to a dev node as local processes.

A DEVELOPMENT AID, not part of the product. kwok's fake nodes run no containers, so for `make demo`
and its test this script plays a very small kubelet for pods scheduled onto nodes labelled
``finetuning.io/dev-runtime=true``: it materialises the pod's ConfigMap, downward API (the trainer's
config, from the pod's ``finetuning.io/config`` annotation) and emptyDir volumes in a local
directory, rewrites the pod paths in the trainer config to that directory, runs the container's
command with this machine's Python, and reports the pod's phase, exit code and termination message
back to the API server, as a kubelet would. It never runs images and never mounts anything: Secrets
referenced by ``env``/``envFrom`` become environment variables and Secret volumes become files (mode
0600) in the pod's directory, and PVCs map only to directories given with ``--pvc``.

    python hack/devruntime.py --kubeconfig .local/kubeconfig --node dev-node-0 \
        --state .local/devruntime --env HF_HUB_OFFLINE=1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from finetune_api import wellknown

log = logging.getLogger("devruntime")
ANNOTATION_METRICS_ENDPOINT = "finetuning.io/metrics-endpoint"
MESSAGE_LIMIT = 4096


def now() -> str:
    return wellknown.timestamp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PodSetupError(RuntimeError):
    """The pod cannot be started here (the kubelet would report CreateContainerConfigError)."""


FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def downward_value(pod: client.V1Pod, item: client.V1DownwardAPIVolumeFile) -> str:
    """What the kubelet writes for one downward API item; a missing label or annotation is empty."""
    path = item.field_ref.field_path if item.field_ref is not None else None
    meta = pod.metadata
    simple = {"metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid}
    if path in simple:
        return str(simple[path] or "")
    match = FIELD_KEY.match(path or "")
    if match is None:
        raise PodSetupError(f"downward API item {item.path!r}: {path or 'resourceFieldRef'} is not supported")
    values = (meta.labels if match.group(1) == "labels" else meta.annotations) or {}
    return str(values.get(match.group(2), ""))


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    root: Path
    started: str
    termination_log: Path
    log_path: Path
    fallback_to_logs: bool


@dataclass
class PathMap:
    """Pod paths (mount points) to local directories, longest first."""

    entries: list[tuple[str, Path]] = field(default_factory=list)

    def add(self, pod_path: str, local: Path) -> None:
        self.entries.append((pod_path.rstrip("/") or "/", local))
        self.entries.sort(key=lambda e: len(e[0]), reverse=True)

    def map(self, value: str) -> str:
        for pod_path, local in self.entries:
            if value == pod_path or value.startswith(pod_path + "/"):
                return str(local) + value[len(pod_path) :]
        return value

    def map_tree(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.map(data)
        if isinstance(data, list):
            return [self.map_tree(v) for v in data]
        if isinstance(data, dict):
            return {k: self.map_tree(v) for k, v in data.items()}
        return data


class DevRuntime:
    def __init__(
        self, api: client.ApiClient, node: str, state: Path, env: dict[str, str], pvcs: dict[str, Path]
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.node = node
        self.state = state
        self.extra_env = env
        self.pvcs = pvcs
        self.running: dict[tuple[str, str], Running] = {}
        self.stopping = False

    # -- main loop ----------------------------------------------------------------------------------
    def loop(self, interval: float = 0.5) -> None:
        while not self.stopping:
            try:
                self.tick()
            except ApiException as exc:
                log.warning("API error: %s %s", exc.status, exc.reason)
            except Exception:
                log.exception("dev runtime tick failed; going on")
            time.sleep(interval)
        for key in list(self.running):
            self._kill(key, grace=5)

    def tick(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}").items
        seen = set()
        for pod in pods:
            key = (pod.metadata.namespace, pod.metadata.name)
            seen.add(key)
            if pod.metadata.deletion_timestamp is not None:
                self._kill(key, grace=min(pod.spec.termination_grace_period_seconds or 30, 30))
                self._force_delete(*key)
                continue
            phase = pod.status.phase if pod.status else None
            if key in self.running:
                self._poll(key)
            elif phase in (None, "Pending"):
                self._start(pod)
            elif phase == "Running":
                self._report_exit(key, 137, "The dev runtime restarted while this pod ran.", now(), None)
        for key in list(self.running):
            if key not in seen:
                self._kill(key, grace=5)

    # -- start ----------------------------------------------------------------------------------------
    def _start(self, pod: client.V1Pod) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        root = self.state / ns / name
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        container = pod.spec.containers[0]
        try:
            paths = self._volumes(pod, container, root)
            argv, port = self._command(container, paths, root)
            env = self._env(ns, container, paths)
        except PodSetupError as exc:
            self._report_exit((ns, name), 1, f"dev runtime could not start the pod: {exc}", now(), None)
            return
        log_path = root / "container.log"
        started = now()
        try:
            with open(log_path, "wb") as out:
                proc = subprocess.Popen(
                    argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
        except OSError as exc:
            self._report_exit((ns, name), 127, f"dev runtime could not run {argv[0]}: {exc}", started, None)
            return
        message_policy = container.termination_message_policy or "File"
        self.running[(ns, name)] = Running(
            proc, root, started, root / "termination-log", log_path, message_policy == "FallbackToLogsOnError"
        )
        log.info("started %s/%s (pid %d): %s", ns, name, proc.pid, " ".join(argv))
        self.core.patch_namespaced_pod(
            name,
            ns,
            {"metadata": {"annotations": {ANNOTATION_METRICS_ENDPOINT: f"http://127.0.0.1:{port}/metrics"}}},
        )
        self.core.patch_namespaced_pod_status(name, ns, self._running_status(container, started))

    def _volumes(self, pod: client.V1Pod, container: client.V1Container, root: Path) -> PathMap:
        volumes = {v.name: v for v in pod.spec.volumes or []}
        paths = PathMap()
        paths.add(wellknown.TERMINATION_LOG, root / "termination-log")
        for mount in container.volume_mounts or []:
            vol = volumes.get(mount.name)
            if vol is None:
                raise PodSetupError(f"volume {mount.name!r} is not defined")
            local = root / "mounts" / mount.mount_path.strip("/")
            if vol.config_map is not None:
                cm = self.core.read_namespaced_config_map(vol.config_map.name, pod.metadata.namespace)
                data = cm.data or {}
                if mount.sub_path:
                    if mount.sub_path not in data:
                        raise PodSetupError(f"ConfigMap {cm.metadata.name} has no key {mount.sub_path!r}")
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_text(data[mount.sub_path])
                else:
                    local.mkdir(parents=True, exist_ok=True)
                    for key, value in data.items():
                        (local / key).write_text(value)
            elif vol.downward_api is not None:
                for item in vol.downward_api.items or []:
                    target = local / item.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(downward_value(pod, item))
            elif vol.empty_dir is not None:
                local.mkdir(parents=True, exist_ok=True)
            elif vol.secret is not None:
                local.mkdir(parents=True, exist_ok=True)
                for key, value in self._secret(pod.metadata.namespace, vol.secret.secret_name).items():
                    (local / key).write_bytes(value)
                    (local / key).chmod(0o600)
            elif vol.persistent_volume_claim is not None:
                claim = vol.persistent_volume_claim.claim_name
                if claim not in self.pvcs:
                    raise PodSetupError(
                        f"PVC {claim!r} is not mapped (start the dev runtime with --pvc {claim}=DIR)"
                    )
                local = self.pvcs[claim] / (mount.sub_path or "")
            else:
                raise PodSetupError(
                    f"volume {mount.name!r}: only configMap, downwardAPI, secret, emptyDir and mapped PVCs"
                    " are supported"
                )
            paths.add(mount.mount_path, local)
        return paths

    def _command(self, container: client.V1Container, paths: PathMap, root: Path) -> tuple[list[str], int]:
        argv = [*(container.command or []), *(container.args or [])]
        if not argv:
            raise PodSetupError("the container has no command (the dev runtime cannot run images)")
        port = free_port()
        # The executable is this machine's Python, never a path inside the pod's volumes.
        out = [sys.executable if argv[0] in ("python", "python3") else paths.map(argv[0])]
        config_next = False
        for arg in argv[1:]:
            if config_next:
                arg = str(self._rewrite_config(Path(paths.map(arg)), paths, root, port))
                config_next = False
            elif arg == "--config":
                config_next = True
            elif arg.startswith("--config="):
                arg = "--config=" + str(self._rewrite_config(Path(paths.map(arg[9:])), paths, root, port))
            else:
                arg = paths.map(arg)
            out.append(arg)
        return out, port

    @staticmethod
    def _rewrite_config(path: Path, paths: PathMap, root: Path, port: int) -> Path:
        data = json.loads(path.read_text())
        data = paths.map_tree(data)
        data["metricsPort"] = port
        target = root / "config.json"
        target.write_text(json.dumps(data, indent=2))
        return target

    def _env(self, ns: str, container: client.V1Container, paths: PathMap) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV")}
        for source in container.env_from or []:
            if source.secret_ref is not None:
                prefix = source.prefix or ""
                for key, value in self._secret(ns, source.secret_ref.name).items():
                    env[prefix + key] = value.decode()
        for item in container.env or []:
            if item.value is not None:
                env[item.name] = paths.map(item.value)
            elif item.value_from is not None and item.value_from.secret_key_ref is not None:
                ref = item.value_from.secret_key_ref
                try:
                    secret = self.core.read_namespaced_secret(ref.name, ns)
                except ApiException as exc:
                    raise PodSetupError(f"secret {ref.name!r} not found") from exc
                import base64

                env[item.name] = base64.b64decode((secret.data or {}).get(ref.key, "")).decode()
        env.update(self.extra_env)
        return env

    def _secret(self, ns: str, name: str) -> dict[str, bytes]:
        import base64

        try:
            secret = self.core.read_namespaced_secret(name, ns)
        except ApiException as exc:
            raise PodSetupError(f"secret {name!r} not found") from exc
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    # -- status ------------------------------------------------------------------------------------------
    @staticmethod
    def _conditions(ready: bool, stamp: str) -> list[dict[str, Any]]:
        flag = "True" if ready else "False"
        return [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
            {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": stamp},
            {"type": "Ready", "status": flag, "lastTransitionTime": stamp},
        ]

    def _running_status(self, container: client.V1Container, started: str) -> dict[str, Any]:
        return {
            "status": {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": started,
                "conditions": self._conditions(True, started),
                "containerStatuses": [
                    {
                        "name": container.name,
                        "image": container.image,
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            }
        }

    def _poll(self, key: tuple[str, str]) -> None:
        run = self.running[key]
        code = run.proc.poll()
        if code is None:
            return
        del self.running[key]
        message = ""
        if run.termination_log.exists():
            message = run.termination_log.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace")
        if not message and code != 0 and run.fallback_to_logs and run.log_path.exists():
            message = run.log_path.read_bytes()[-2048:].decode(errors="replace")
        exit_code = 128 + (-code) if code < 0 else code
        self._report_exit(key, exit_code, message, run.started, run)
        log.info("pod %s/%s exited with %d", key[0], key[1], exit_code)

    def _report_exit(
        self, key: tuple[str, str], exit_code: int, message: str, started: str, run: Running | None
    ) -> None:
        ns, name = key
        finished = now()
        body = {
            "status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": self._conditions(False, finished),
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "image": "",
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "reason": "Completed" if exit_code == 0 else "Error",
                                "message": message,
                                "startedAt": started,
                                "finishedAt": finished,
                            }
                        },
                    }
                ],
            }
        }
        try:
            self.core.patch_namespaced_pod_status(name, ns, body)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- stop ------------------------------------------------------------------------------------------
    def _kill(self, key: tuple[str, str], grace: float) -> None:
        run = self.running.pop(key, None)
        if run is None or run.proc.poll() is not None:
            return
        os.killpg(run.proc.pid, signal.SIGTERM)
        try:
            run.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()

    def _force_delete(self, ns: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node", default="dev-node-0")
    p.add_argument("--state", default=".local/devruntime", help="where pod directories are made")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE added to every process")
    p.add_argument("--pvc", action="append", default=[], help="CLAIM=DIR: a PVC backed by a local directory")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devruntime %(levelname)s %(message)s")
    api = config.new_client_from_config(config_file=args.kubeconfig)
    env = dict(item.split("=", 1) for item in args.env)
    pvcs = {k: Path(v).resolve() for k, v in (item.split("=", 1) for item in args.pvc)}
    runtime = DevRuntime(api, args.node, Path(args.state).resolve(), env, pvcs)

    def stop(signum: int, _frame: Any) -> None:
        runtime.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("running pods bound to %s", args.node)
    runtime.loop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
