"""The pods the operator builds must match the images they run: the user, the caches, the identity.

A mismatch only shows on a real node (a uid without a passwd entry crashes kopf's peering identity;
a pod uid unlike the image's cannot write what the image prepared), so these pin the contract here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from finetune_operator import constants as c
from finetune_operator.builders import build_job

REPO = Path(__file__).resolve().parents[2]
NO_PASSWD_UID = 65532


def _dockerfile_final_stage(path: Path) -> str:
    text = path.read_text()
    return text[text.rindex("\nFROM ") :]


def _user(stage: str) -> tuple[int, int]:
    m = re.search(r"^USER (\d+):(\d+)\s*$", stage, re.M)
    assert m, "the final stage must set a numeric USER uid:gid"
    return int(m[1]), int(m[2])


def _env(stage: str, name: str) -> str:
    m = re.search(rf"\b{name}=(\S+)", stage)
    assert m, f"the final stage must set {name}"
    return m[1]


def test_trainer_pod_runs_as_the_trainer_image_user(owner, settings, make_spec):
    uid, gid = _user(_dockerfile_final_stage(REPO / "trainer-image" / "Dockerfile"))
    pod = build_job(owner, make_spec(), 1, "h", settings)["spec"]["template"]["spec"]
    sc = pod["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (uid, gid, gid)
    assert (uid, gid) == (c.TRAINER_UID, c.TRAINER_UID)


def test_trainer_pod_hf_home_is_the_images(owner, settings, make_spec):
    hf_home = _env(_dockerfile_final_stage(REPO / "trainer-image" / "Dockerfile"), "HF_HOME")
    env = build_job(owner, make_spec(), 1, "h", settings)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_HOME", "value": hf_home} in env
    assert hf_home.startswith("/tmp/"), "the root filesystem is read-only; caches live on the /tmp emptyDir"


def test_operator_image_user_matches_the_chart():
    uid, gid = _user(_dockerfile_final_stage(REPO / "Dockerfile"))
    chart = (REPO / "charts" / "finetune-operator" / "templates" / "deployment.yaml").read_text()
    assert f"runAsUser: {uid}" in chart and f"runAsGroup: {gid}" in chart


def test_operator_identity_without_a_passwd_entry(monkeypatch):
    """kopf's own identity calls getpass.getuser(), which raises for a uid /etc/passwd lacks
    (the image's 65532 on a plain Debian base). Here the process only claims that uid."""
    import pwd

    from kopf._core.engines.peering import detect_own_id

    from finetune_operator.__main__ import operator_identity

    with pytest.raises(KeyError):
        pwd.getpwuid(NO_PASSWD_UID)  # the premise: this machine has no entry for it either
    for var in ("USER", "LOGNAME", "LNAME", "USERNAME", "POD_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "getuid", lambda: NO_PASSWD_UID)
    with pytest.raises(KeyError):
        detect_own_id(manual=False)  # what crash-looped the chart's pod
    assert operator_identity().startswith(f"{NO_PASSWD_UID}@")


def test_operator_identity_prefers_the_pod_name(monkeypatch):
    from finetune_operator.__main__ import operator_identity

    monkeypatch.setenv("POD_ID", "finetune-operator-7d9c-abcde")
    assert operator_identity() == "finetune-operator-7d9c-abcde"
