#!/usr/bin/env python3
"""The project's container images, built without Docker: ``build [NAME...] | list``.

buildah builds them from the same Dockerfiles ``docker build`` uses, passing only ``FROM`` build
arguments: a Debian bookworm base made by debootstrap from the Debian mirror (no image registry is
needed), uv from its PyPI wheel, and a static pause image for the real node's pod sandboxes
(hack/node/pause.c). Each image is exported to an OCI archive under
``~/.cache/finetune-operator/images/archives``, named by a hash of everything that goes into it
(Dockerfile, pyproject.toml, the sources, the build arguments and the base; not README.md, which
only fills package metadata), so a warm run
finds the archive and builds nothing. hack/realnode.py imports the archives into the node's containerd.

Images (``NAME``): ``operator`` (Dockerfile), ``trainer`` (trainer-image/Dockerfile, CPU variant: the
Debian base; ``FTJ_TORCH_INDEX_URL`` may name a PyTorch CPU wheel index), ``pause``.
Prints one JSON object: for each image its reference, archive, size and build time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from hack_loader import load_hack

REPO = Path(__file__).resolve().parent.parent
# What the Dockerfiles COPY, minus README.md: it only fills the package's metadata, and a docs edit must
# not rebuild a multi-GB trainer image.
SOURCES = (
    "pyproject.toml",
    "api",
    "operator",
    "trainer-image/finetune_trainer",
    "trainer-image/requirements-s3.txt",
)
BASE_IMAGE = "localhost/bookworm-python:3.11"
PAUSE_IMAGE = "localhost/pause:3.10"
DEBIAN_SUITE = "bookworm"
# Only what the Dockerfiles' stages need: python3 with venv (and `python` for the operator's build).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def images_dir() -> Path:
    return Path(load_hack("tools").cache_root()) / "images"


def archives_dir() -> Path:
    return images_dir() / "archives"


@dataclass(frozen=True)
class Image:
    """A built image: what pods name it and the OCI archive the node imports."""

    name: str
    ref: str
    archive: str
    size_bytes: int = 0
    build_seconds: float = 0.0
    export_seconds: float = 0.0
    cached: bool = False


def buildah_cmd() -> list[str]:
    """buildah with its own storage in the cache (never the system's), overlay driver."""
    root = images_dir() / "buildah"
    storage = ["--root", str(root / "root"), "--runroot", str(root / "run"), "--storage-driver", "overlay"]
    return ["buildah", *storage]


def _env() -> dict[str, str]:
    tmp = images_dir() / "tmp"  # blobs otherwise go to /var/tmp
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp)}


def buildah(*args: str, capture: bool = True, timeout: float = 3600) -> str:
    if not shutil.which("buildah"):
        raise SystemExit("images: buildah is missing; `make system-packages` installs it")
    res = subprocess.run(
        [*buildah_cmd(), *args],
        env=_env(),
        text=True,
        stdout=subprocess.PIPE if capture else sys.stderr,
        stderr=subprocess.PIPE if capture else sys.stderr,
        timeout=timeout,
    )
    if res.returncode != 0:
        detail = (res.stderr or "")[-4000:] if capture else "(see the output above)"
        raise RuntimeError(f"buildah {' '.join(args[:2])} failed (rc={res.returncode}): {detail}")
    return (res.stdout or "").strip()


def _exists(ref: str) -> bool:
    res = subprocess.run([*buildah_cmd(), "inspect", "--type", "image", ref], env=_env(), capture_output=True)
    return res.returncode == 0


def _files(rel: str) -> Iterator[Path]:
    path = REPO / rel
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            yield p


def content_hash(parts: Iterable[str], extra: dict[str, str]) -> str:
    """sha256 over the named files' paths and bytes plus the build arguments."""
    h = hashlib.sha256()
    for rel in parts:
        for p in _files(rel):
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _record(path: Path) -> Image | None:
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        return None
    with contextlib.suppress(ValueError, TypeError, OSError):
        return Image(**{**json.loads(meta.read_text()), "cached": True})
    return None


def _export(name: str, ref: str, archive: Path, t0: float) -> Image:
    """Write the image to an OCI archive (atomically) with a metadata file, then drop it from
    buildah's storage: the archive is the cache, and a multi-GB copy in storage would double it."""
    built = time.monotonic() - t0
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f".{archive.name}.tmp")
    tmp.unlink(missing_ok=True)
    t1 = time.monotonic()
    # Uncompressed layers: gzip of a multi-GB torch layer costs minutes on both export and import.
    buildah("push", "--disable-compression", ref, f"oci-archive:{tmp}:{ref}")
    os.replace(tmp, archive)
    image = Image(
        name=name,
        ref=ref,
        archive=str(archive),
        size_bytes=archive.stat().st_size,  # uncompressed layers: the image's size
        build_seconds=round(built, 1),
        export_seconds=round(time.monotonic() - t1, 1),
    )
    archive.with_suffix(".json").write_text(json.dumps(asdict(image), indent=2))
    for old in archive.parent.glob(f"{name}-*.tar"):
        if old != archive:  # an older build of the same image
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    if name not in ("pause",):
        with contextlib.suppress(RuntimeError):
            buildah("rmi", ref)
    return image


# --- bases ---------------------------------------------------------------------------------------


def debian_mirror() -> str | None:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else None: debootstrap's
    own default (the repo names no mirror of its own)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in sources:
        with contextlib.suppress(OSError):
            text = f.read_text()
            m = re.search(r"^URIs:\s*(\S+)", text, re.M)
            m = m or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
            if m and "security" not in m[1]:
                return m[1]
    return None


def ensure_base() -> str:
    """``localhost/bookworm-python:3.11``: Debian's own python3 on a minbase debootstrap."""
    if _exists(BASE_IMAGE):
        return BASE_IMAGE
    if not shutil.which("debootstrap"):
        raise SystemExit("images: debootstrap is missing; `make system-packages` installs it")
    t0 = time.monotonic()
    rootfs = images_dir() / "base-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    mirror = debian_mirror()
    log(f"debootstrap {DEBIAN_SUITE} (minbase + {', '.join(BASE_PACKAGES)}) from {mirror or 'its default'}")
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE,
         str(rootfs), *([mirror] if mirror else [])],
        check=True, stdout=subprocess.DEVNULL, timeout=1800,
    )  # fmt: skip
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives", "usr/share/doc", "usr/share/man"):
        for p in (rootfs / junk).glob("*"):
            if p.is_file() or p.is_symlink():
                p.unlink()
            elif p.is_dir() and p.name != "partial":
                shutil.rmtree(p, ignore_errors=True)
    (rootfs / "etc/resolv.conf").write_text("")
    ctr = buildah("from", "scratch")
    try:
        mnt = buildah("mount", ctr)
        subprocess.run(["cp", "-a", f"{rootfs}/.", mnt], check=True)
        buildah("umount", ctr)
        buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env", "LANG=C.UTF-8", "--cmd", '["python3"]', ctr)  # fmt: skip
        buildah("commit", "--rm", ctr, BASE_IMAGE)
    except BaseException:
        with contextlib.suppress(RuntimeError):
            buildah("rm", ctr)
        raise
    shutil.rmtree(rootfs, ignore_errors=True)
    log(f"base {BASE_IMAGE} in {time.monotonic() - t0:.0f}s")
    return BASE_IMAGE


def uv_version() -> str:
    text = (REPO / "trainer-image" / "Dockerfile").read_text()
    m = re.search(r"^ARG UV_IMAGE=\S+:(\S+)$", text, re.M)
    if not m:
        raise SystemExit("images: trainer-image/Dockerfile has no `ARG UV_IMAGE=...:<version>`")
    return m[1]


def _pip(scratch: Path) -> list[str]:
    """A pip for this Python: its own, else one in a throwaway venv under ``scratch``. `make images` runs
    with the system's python3 (so the images build while the project's venv installs), and Debian's has
    no pip module unless python3-pip is installed; python3-venv, which the venv needs anyway, brings one."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    venv = scratch / "pip-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    return [str(venv / "bin" / "python"), "-m", "pip"]


def ensure_uv() -> str:
    """``localhost/uv:<version>``: the uv binary from its PyPI wheel (the Dockerfile's UV_IMAGE)."""
    version = uv_version()
    ref = f"localhost/uv:{version}"
    if _exists(ref):
        return ref
    with tempfile.TemporaryDirectory(dir=_env()["TMPDIR"]) as tmp:
        subprocess.run(
            [*_pip(Path(tmp)), "download", "-q", "--no-deps", "--only-binary=:all:", "--dest", tmp,
             f"uv=={version}"],
            check=True, timeout=600,
        )  # fmt: skip
        wheel = next(Path(tmp).glob("uv-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith(".data/scripts/uv"))
            binary = Path(tmp) / "uv"
            binary.write_bytes(z.read(member))
        binary.chmod(0o755)
        ctr = buildah("from", "scratch")
        buildah("copy", ctr, str(binary), "/uv")
        buildah("commit", "--rm", ctr, ref)
    return ref


def build_pause() -> Image:
    source = REPO / "hack" / "node" / "pause.c"
    digest = content_hash(["hack/node/pause.c"], {})
    archive = archives_dir() / f"pause-{digest}.tar"
    if (hit := _record(archive)) is not None:
        return hit
    if not shutil.which("gcc"):
        raise SystemExit("images: gcc is missing; `make system-packages` installs it")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=_env()["TMPDIR"]) as tmp:
        binary = Path(tmp) / "pause"
        subprocess.run(["gcc", "-Os", "-static", "-o", str(binary), str(source)], check=True)
        subprocess.run(["strip", str(binary)], check=True)
        ctr = buildah("from", "scratch")
        buildah("copy", ctr, str(binary), "/pause")
        buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr)
        buildah("commit", "--rm", ctr, PAUSE_IMAGE)
    return _export("pause", PAUSE_IMAGE, archive, t0)


# --- project images ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    name: str
    repository: str
    tag_prefix: str
    dockerfile: str
    build_args: dict[str, str]


def recipes() -> dict[str, Recipe]:
    trainer_args = {
        "BASE_IMAGE": BASE_IMAGE,
        "UV_IMAGE": f"localhost/uv:{uv_version()}",
        # Compiling DeepSpeed's CPU Adam costs minutes on 2 cores and only offloadOptimizer needs it.
        "DS_BUILD_CPU_ADAM": os.environ.get("FTJ_DS_BUILD_CPU_ADAM", "0"),
        # The CPU variant: no GPU kernels (liger-kernel's Triton needs a GPU).
        "CUDA_KERNELS": "0",
    }
    if os.environ.get("FTJ_TORCH_INDEX_URL"):
        trainer_args["TORCH_INDEX_URL"] = os.environ["FTJ_TORCH_INDEX_URL"]
    operator_args = {"PYTHON_IMAGE": BASE_IMAGE}
    return {
        "operator": Recipe("operator", "localhost/finetune-operator", "", "Dockerfile", operator_args),
        "trainer": Recipe(
            "trainer", "localhost/finetune-trainer", "cpu-", "trainer-image/Dockerfile", trainer_args
        ),
    }


def build(recipe: Recipe) -> Image:
    digest = content_hash([recipe.dockerfile, *SOURCES], {**recipe.build_args, "base": BASE_PACKAGES})
    ref = f"{recipe.repository}:{recipe.tag_prefix}{digest}"
    archive = archives_dir() / f"{recipe.name}-{digest}.tar"
    if (hit := _record(archive)) is not None:
        log(f"{recipe.name}: cached {ref}")
        return hit
    ensure_base()
    if "UV_IMAGE" in recipe.build_args:
        ensure_uv()
    # What a failed or interrupted build left in our own storage (never the system's).
    with contextlib.suppress(RuntimeError):
        buildah("rm", "--all")
        buildah("rmi", "--prune")
    log(f"{recipe.name}: building {ref} from {recipe.dockerfile}")
    t0 = time.monotonic()
    # No layer cache: it would keep another multi-GB copy of the trainer's dependencies on disk.
    args = ["bud", "--layers=false", "--network", "host", "-f", str(REPO / recipe.dockerfile), "-t", ref]
    if HOST_CA_BUNDLE.exists():  # where outgoing TLS is intercepted, the package index needs the host's CAs
        args += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    for k, v in recipe.build_args.items():
        args += ["--build-arg", f"{k}={v}"]
    buildah(*args, str(REPO), capture=False)
    image = _export(recipe.name, ref, archive, t0)
    log(f"{recipe.name}: {image.size_bytes / 1e6:.0f} MB, built in {image.build_seconds:.0f}s")
    return image


def ensure(names: Iterable[str] = ("operator", "trainer", "pause")) -> dict[str, Image]:
    """Every named image, from the cache when its inputs are unchanged."""
    out: dict[str, Image] = {}
    with _lock():
        for name in names:
            out[name] = build_pause() if name == "pause" else build(recipes()[name])
    return out


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time per cache: buildah storage is shared, and so is the disk they fill."""
    import fcntl

    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or find cached) images and print them as JSON")
    b.add_argument("names", nargs="*", default=["operator", "trainer", "pause"])
    sub.add_parser("list", help="the cached archives as JSON")
    args = p.parse_args(argv)
    if args.cmd == "build":
        unknown = set(args.names) - {"operator", "trainer", "pause"}
        if unknown:
            p.error(f"unknown image(s): {', '.join(sorted(unknown))}")
        images = ensure(args.names)
    else:
        images = {
            img.name: img for a in sorted(archives_dir().glob("*.tar")) if (img := _record(a)) is not None
        }
    print(json.dumps({k: asdict(v) for k, v in images.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
