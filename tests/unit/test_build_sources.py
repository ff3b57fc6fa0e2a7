"""The build names no package registry or proxy of its own: each toolchain (pip, go, apt, debootstrap)
uses what the machine configures, so a machine behind a mirror builds as one on the open internet.
A hard-coded default overrides that configuration whenever the variable it reads is unset."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import load_hack

REPO = Path(__file__).resolve().parents[2]
REGISTRY_HOSTS = re.compile(
    r"proxy\.golang\.org|pypi\.org|pythonhosted\.org|registry\.npmjs\.org|registry\.yarnpkg\.com"
    r"|deb\.debian\.org|security\.debian\.org|archive\.ubuntu\.com|crates\.io|repo1?\.maven"
)
BUILD_FILES = ("hack/", ".ci/", "Makefile", "pyproject.toml", "bench/", "trainer-image/", "operator/")


def test_no_build_script_names_a_package_registry() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--", *BUILD_FILES], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    found = []
    for name in filter(None, tracked.split("\0")):
        path = REPO / name
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if REGISTRY_HOSTS.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n",
            "http://mirror.example/debian",
        ),
        ("deb [arch=amd64] http://mirror.example/debian bookworm main\n", "http://mirror.example/debian"),
        ("deb http://mirror.example/debian-security bookworm-security main\n", None),
        ("", None),
    ],
)
def test_debootstrap_uses_the_machines_apt_mirror_or_its_own_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: str, expected: str | None
) -> None:
    images = load_hack("images")
    (tmp_path / "sources.list").write_text(sources)
    real_path = images.Path

    def redirected(p: str | Path) -> Path:
        text = str(p)
        if text == "/etc/apt/sources.list":
            return tmp_path / "sources.list"
        if text == "/etc/apt/sources.list.d":
            return tmp_path / "none.d"
        return real_path(p)

    monkeypatch.setattr(images, "Path", redirected)
    assert images.debian_mirror() == expected
