"""Every derived name is a valid Kubernetes name, and distinct sources get distinct names."""

from __future__ import annotations

import re

import pytest

from finetune_operator import constants as c
from finetune_operator.builders import Owner, build_children, build_job
from finetune_operator.naming import dns_label, label_value, run_name, volume_name

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# FineTuneJob names the API server accepts (DNS subdomains, up to 253 characters).
AWKWARD = [
    "plain",
    "a.b.c",
    "1starts-with-a-digit",
    "x" * 62 + "-" + "y" * 10,  # the 63rd character is "-": name[:63] is no valid label value
    "z" * 253,
    "a" * 40 + "." + "b" * 40,
]


def valid_dns_label(name: str, limit: int = 63) -> bool:
    return len(name) <= limit and bool(DNS_LABEL.match(name))


def valid_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.match(value))


@pytest.mark.parametrize("name", AWKWARD)
def test_run_names_are_dns_labels_leaving_room_for_the_pod_index(name):
    for run in (1, 12, 12345):
        derived = run_name(name, run)
        assert derived.endswith(f"-r{run}")
        assert valid_dns_label(derived, 63 - len("-255")), derived


@pytest.mark.parametrize("name", AWKWARD)
def test_label_values_are_valid(name):
    assert valid_label_value(label_value(name)), label_value(name)


def test_valid_names_are_kept_as_they_are():
    assert run_name("support-classifier", 3) == "support-classifier-r3"
    assert label_value("Team_A.v1") == "Team_A.v1"
    assert volume_name("pvc", "data") == "pvc-data"


def test_distinct_sources_never_share_a_name():
    assert run_name("a.b", 1) != run_name("a-b", 1)
    long_a, long_b = "claim-" + "p" * 70 + "-model", "claim-" + "p" * 70 + "-dataset"
    assert volume_name("pvc", long_a) != volume_name("pvc", long_b)
    assert label_value("x" * 70 + "1") != label_value("x" * 70 + "2")
    assert dns_label("A") != dns_label("a")


@pytest.mark.parametrize("name", AWKWARD)
def test_every_child_name_and_label_is_valid(name, settings, make_spec):
    owner = Owner(name=name, namespace="ns", uid="u")
    spec = make_spec(
        method="full",
        distributed={"nodes": 2, "gpusPerNode": 1},
        model={"name": "m", "source": {"pvc": {"claimName": "models.v2"}}},
        dataset={"source": {"configMap": {"name": "data.small", "key": "train.jsonl"}}},
    )
    for child in build_children(owner, spec, 7, "h", settings):
        meta = child["metadata"]
        assert valid_dns_label(meta["name"]), meta["name"]
        assert all(valid_label_value(v) for v in meta["labels"].values()), meta["labels"]
    job = build_job(owner, spec, 7, "h", settings)
    pod = job["spec"]["template"]["spec"]
    assert valid_dns_label(pod["subdomain"])
    assert all(valid_dns_label(v["name"]) for v in pod["volumes"]), pod["volumes"]
    assert all(valid_label_value(v) for v in job["spec"]["template"]["metadata"]["labels"].values())


def test_two_long_claims_sharing_a_prefix_get_their_own_volumes(owner, settings, make_spec):
    model, data = "shared-prefix-" + "q" * 60 + "-model", "shared-prefix-" + "q" * 60 + "-data"
    spec = make_spec(
        model={"name": "m", "source": {"pvc": {"claimName": model}}},
        dataset={"source": {"pvc": {"claimName": data}}},
    )
    pod = build_job(owner, spec, 1, "h", settings)["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert sorted(claims.values()) == sorted([model, data])
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert claims[mounts[f"/mnt/pvc/{data}"]] == data
    assert claims[mounts[f"/mnt/pvc/{model}"]] == model


def test_label_selector_value_is_the_label_the_builders_write(owner, settings, make_spec):
    job = build_job(Owner(name="n" * 70, namespace="ns", uid="u"), make_spec(), 1, "h", settings)
    assert job["metadata"]["labels"][c.LABEL_JOB] == label_value("n" * 70)
