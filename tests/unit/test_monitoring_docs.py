"""The monitoring install the docs show is one kube-prometheus-stack actually scrapes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("page", ["README.md", "docs/monitoring.md"])
def test_shown_install_carries_the_release_label_and_the_podmonitor(page: str):
    text = (REPO / page).read_text()
    installs = [
        block.replace("\\\n", " ")
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        if "helm install" in block and "serviceMonitor.enabled=true" in block
    ]
    assert installs, f"{page} shows no monitoring install"
    for install in installs:
        for needed in (
            "serviceMonitor.labels.release=",
            "podMonitor.enabled=true",
            "podMonitor.labels.release=",
            "prometheusRule.labels.release=",
        ):
            assert needed in install, f"{page}: the install lacks --set {needed}"
