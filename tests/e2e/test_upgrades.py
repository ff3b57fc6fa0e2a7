"""Upgrades and GitOps edits never retrain: a CRD with new defaults, a restart, a suspend toggle."""

from __future__ import annotations

import copy
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Ftj, create_ftj
from helpers import wait_for
from summaries import trainer_summary

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "finetuning.io_finetunejobs.yaml"


def create(kube_api: Any, namespace: str, name: str, **over: Any) -> Ftj:
    return create_ftj(kube_api, namespace, name, over)


def succeed(ftj: Ftj) -> dict[str, Any]:
    ftj.wait_phase("Running", timeout=120)
    ftj.finish_pods(f"{ftj.name}-r1", 0, trainer_summary(0, "done"))
    return ftj.wait_phase("Succeeded", timeout=120)


def wait_defaulted(ftj: Ftj, gpu_resource_name: str) -> None:
    """Until the API server defaults spec.resources.gpuResourceName on read, as the new CRD says."""
    wait_for(
        lambda: ftj.get()["spec"]["resources"].get("gpuResourceName") == gpu_resource_name,
        60,
        "the API server to default the new field on read",
    )


def resumed(op: Any, name: str) -> bool:
    """The operator has reconciled ``name`` (it logs each reconcile once it is done)."""
    return any(
        '"msg": "reconciled"' in line and f'/{name}"' in line
        for line in op.log_path.read_text(errors="replace").splitlines()
    )


@pytest.fixture
def crd_with_new_defaults(kubectl: Any, crd_installed: None) -> Any:
    """Apply a later CRD version that defaults a field the current one leaves unset; restore after."""
    original = CRD.read_text()

    def apply() -> None:
        crd = yaml.safe_load(original)
        version = crd["spec"]["versions"][0]
        resources = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["resources"]
        resources["properties"]["gpuResourceName"]["default"] = "nvidia.com/gpu"
        resources["default"] = {}
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(crd))

    yield apply
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))


def test_crd_upgrade_that_adds_a_default_starts_no_run(isolated_operator, kube_api, crd_with_new_defaults):
    ns = isolated_operator.namespace
    op = isolated_operator()
    ftj = create(kube_api, ns, "upgraded")
    before = succeed(ftj)
    jobs = [j["metadata"]["name"] for j in ftj.jobs()]
    op.kill(signal.SIGTERM)

    crd_with_new_defaults()
    wait_defaulted(ftj, "nvidia.com/gpu")
    op2 = isolated_operator()
    wait_for(lambda: resumed(op2, "upgraded"), 60, "the restarted operator to resume the FineTuneJob")
    after = ftj.status()
    assert [j["metadata"]["name"] for j in ftj.jobs()] == jobs
    assert after["run"]["number"] == 1
    assert after == before, "a CRD upgrade must not touch a finished job's status"


def test_suspend_toggle_on_a_finished_job_is_observed_and_starts_no_run(make_finetunejob):
    ftj = make_finetunejob()
    done = succeed(ftj)
    ftj.patch({"spec": {"suspend": True}})
    generation = ftj.get()["metadata"]["generation"]
    st = wait_for(
        lambda: (s := ftj.status()).get("observedGeneration") == generation and s,
        60,
        "observedGeneration to follow the suspend toggle",
    )
    assert st["phase"] == "Succeeded" and st["run"]["number"] == done["run"]["number"]
    assert len(ftj.jobs()) == 1


def test_rerun_token_restored_by_git_starts_nothing(make_finetunejob):
    ftj = make_finetunejob()
    succeed(ftj)
    ftj.patch({"metadata": {"annotations": {"finetuning.io/rerun": "2026-11-01"}}})
    wait_for(lambda: ftj.status()["run"]["number"] == 2, 60, "the rerun to start")
    ftj.wait_phase("Running", timeout=120)
    ftj.finish_pods(f"{ftj.name}-r2", 0, trainer_summary(0))
    ftj.wait_phase("Succeeded", timeout=120)
    # Argo CD selfHeal removes a manual annotation, or Git brings back an older one: neither is a request.
    ftj.patch({"metadata": {"annotations": {"finetuning.io/rerun": None}}})
    ftj.patch({"metadata": {"annotations": {"finetuning.io/rerun": "2026-11-01"}}})
    ftj.patch({"metadata": {"annotations": {"finetuning.io/rerun": None}}})
    marker = copy.deepcopy(ftj.status())
    # A generation-moving edit afterwards proves the operator has handled everything before it.
    ftj.patch({"spec": {"suspend": True}})
    generation = ftj.get()["metadata"]["generation"]
    wait_for(lambda: ftj.status().get("observedGeneration") == generation, 60, "the suspend edit to be seen")
    assert ftj.status()["run"]["number"] == marker["run"]["number"] == 2
    assert len(ftj.jobs()) <= 2


# What an operator before the typed status (it kept unknown fields) could have stored: keys the status no
# longer has, a shape it no longer has (evaluation.tuned), and a value of a type it no longer accepts.
OLD_STATUS = {
    "legacyField": {"kept": "by the open schema"},
    "metrics": {"evalLoss": 0.9, "customMetric": 3},
    "evaluation": {"tuned": {"loss": 0.5}},
    "dataset": {"read": "ten", "train": 8},
    "progress": {"step": 3, "oldKey": 1},
    "gpuSeconds": 120.0,
}


@pytest.fixture
def crd_with_open_status(kubectl: Any, crd_installed: None) -> Any:
    """The CRD as earlier versions shipped it (status preserves unknown fields); restores the current one."""
    original = CRD.read_text()

    def apply(crd_text: str) -> None:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crd_text)

    crd = yaml.safe_load(original)
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    yield lambda: apply(yaml.safe_dump(crd)), lambda: apply(original)
    apply(original)


def test_status_stored_by_an_older_operator_is_read_and_rewritten(
    isolated_operator, kube_api, crd_with_open_status
):
    """An upgraded operator meets status written under the open schema: it keeps what fits, drops the
    rest, and its status writes succeed (a ValidationError or a 422 would leave the run unfinished)."""
    open_crd, current_crd = crd_with_open_status
    ns = isolated_operator.namespace
    open_crd()
    ftj = create(kube_api, ns, "legacy")
    wait_for(
        lambda: ftj.custom.patch_namespaced_custom_object_status(
            "finetuning.io", "v1alpha1", ns, "finetunejobs", "legacy", {"status": OLD_STATUS}
        ),
        30,
        "the old-style status to be written",
    )
    assert ftj.status()["legacyField"] == OLD_STATUS["legacyField"], "precondition: the old fields are stored"
    current_crd()

    op = isolated_operator()
    ftj.wait_phase("Running", timeout=120)
    metrics = {"train_loss": 0.4, "eval_loss": 0.5, "best_step": 3}
    evaluation = {"test": {"loss": 0.5}, "base": {"loss": 2.5}}
    ftj.finish_pods("legacy-r1", 0, trainer_summary(0, "done", metrics=metrics, evaluation=evaluation))
    st = ftj.wait_phase("Succeeded", timeout=120)

    assert "legacyField" not in st
    assert st["evaluation"] == {"test": {"loss": 0.5}, "base": {"loss": 2.5}}
    assert st["metrics"]["evalLoss"] == 0.5 and "customMetric" not in st["metrics"]
    assert st["gpuSeconds"] >= 120.0, "what fits is kept (a new run clears only the previous run's results)"
    assert "dataset" not in st
    assert "oldKey" not in st.get("progress", {})
    assert "ValidationError" not in op.log_path.read_text(errors="replace")


@pytest.fixture
def crd_whose_default_the_operator_refuses(kubectl: Any, crd_installed: None) -> Any:
    """A CRD that defaults a field to a value the operator's models refuse: what a stored spec looks like
    to an operator whose rules are stricter than those of the version that started its run."""
    original = CRD.read_text()

    def apply() -> None:
        crd = yaml.safe_load(original)
        version = crd["spec"]["versions"][0]
        resources = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["resources"]
        name = resources["properties"]["gpuResourceName"]
        name.pop("pattern")
        name["default"] = "not a resource name"
        resources["default"] = {}
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(crd))

    yield apply
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))


def test_a_run_whose_spec_a_new_version_refuses_still_gets_its_verdict(
    isolated_operator, kube_api, crd_whose_default_the_operator_refuses
):
    """The run an earlier version started goes on being followed after an upgrade that refuses its spec:
    its Job's verdict is recorded (it stayed Running for good), and no run is started or refused."""
    ns = isolated_operator.namespace
    op = isolated_operator()
    ftj = create(kube_api, ns, "stricter")
    ftj.wait_phase("Running", timeout=120)
    op.kill(signal.SIGTERM)

    crd_whose_default_the_operator_refuses()
    wait_defaulted(ftj, "not a resource name")
    isolated_operator()
    ftj.finish_pods("stricter-r1", 0, trainer_summary(0, "done"))
    st = ftj.wait_phase("Succeeded", timeout=120)
    assert st["run"]["number"] == 1
    assert [j["metadata"]["name"] for j in ftj.jobs()] == ["stricter-r1"]
