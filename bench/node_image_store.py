#!/usr/bin/env python3
"""The real node's image store across rebuilds: its size after importing an image, then after each of
``--rebuilds`` imports of a rebuilt one (what a node start does after each trainer rebuild). Prints one
JSON object; ``ratio_to_one_build`` is the store's size after the last rebuild over its size with one
build (1.0: nothing accumulates). The baseline, in the same run: one more rebuild imported as before
the store pruned (the old tag removed, the build imported), ``unpruned_ratio_to_one_build``.

The node's containerd (hack/realnode.py's configuration) runs with a store of its own under
``--workdir``, so neither the cache's store nor a running node is touched. A rebuild is the archive
with a small file added in front of its top layer (gzip members concatenated are one stream): a new
layer, config and manifest of the image's size, as a real rebuild of the trainer (one new multi-GB
layer) gives, without building it.

    .venv/bin/python bench/node_image_store.py            # the cached trainer archive, 2 rebuilds
    .venv/bin/python bench/node_image_store.py --archive PATH --rebuilds 3
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import itertools
import json
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
from hack_loader import load_hack  # noqa: E402

CHUNK = 8 << 20


def _entry(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % 512)


class _Concat(io.RawIOBase):
    """``prefix`` then the file's bytes, streamed (tarfile copies a member from a file object)."""

    def __init__(self, prefix: bytes, f: IO[bytes]) -> None:
        self._parts: Iterator[bytes] = itertools.chain([prefix], iter(lambda: f.read(CHUNK), b""))
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._parts)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def rebuilt(archive: Path, ref: str, new_ref: str, out: Path, mark: str) -> Path:
    """``archive``'s image as another build named ``new_ref``: a file ``mark`` names added in front of
    its top layer (a tar is its entries in order, so the layer stays valid)."""
    with tarfile.open(archive) as src:

        def read(name: str) -> bytes:
            f = src.extractfile(name)
            assert f is not None, name
            return f.read()

        index = json.loads(read("index.json"))
        (desc,) = [
            d for d in index["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == ref
        ]
        manifest = json.loads(read(f"blobs/{desc['digest'].replace(':', '/')}"))
        config = json.loads(read(f"blobs/{manifest['config']['digest'].replace(':', '/')}"))
        top = manifest["layers"][-1]
        entry = _entry(f"ftj-rebuild-{mark}", mark.encode())
        gz = top["mediaType"].endswith("+gzip")  # gzip members concatenated are one gzip stream
        prefix = gzip.compress(entry, mtime=0) if gz else entry
        h, diff = hashlib.sha256(prefix), hashlib.sha256(entry)
        layer = src.extractfile(f"blobs/{top['digest'].replace(':', '/')}")
        assert layer is not None
        unzip = zlib.decompressobj(wbits=31)
        for chunk in iter(lambda: layer.read(CHUNK), b""):
            h.update(chunk)
            while gz and chunk:
                diff.update(unzip.decompress(chunk))
                chunk = unzip.unused_data if unzip.eof else b""
                if unzip.eof:
                    unzip = zlib.decompressobj(wbits=31)
            if not gz:
                diff.update(chunk)
        new_top = f"sha256:{h.hexdigest()}"
        config["rootfs"]["diff_ids"][-1] = f"sha256:{diff.hexdigest()}"  # the uncompressed layer's digest
        config_blob = json.dumps(config).encode()
        manifest["config"] |= {"digest": f"sha256:{hashlib.sha256(config_blob).hexdigest()}",
                               "size": len(config_blob)}  # fmt: skip
        manifest["layers"][-1] = top | {"digest": new_top, "size": top["size"] + len(prefix)}
        manifest_blob = json.dumps(manifest).encode()
        index["manifests"] = [desc | {
            "digest": f"sha256:{hashlib.sha256(manifest_blob).hexdigest()}", "size": len(manifest_blob),
            "annotations": {"org.opencontainers.image.ref.name": new_ref},
        }]  # fmt: skip
        small = {manifest["config"]["digest"]: config_blob, index["manifests"][0]["digest"]: manifest_blob}
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
            for d in manifest["layers"][:-1]:
                m = src.getmember(f"blobs/{d['digest'].replace(':', '/')}")
                dst.addfile(m, src.extractfile(m))
            info = tarfile.TarInfo(f"blobs/{new_top.replace(':', '/')}")
            info.size = top["size"] + len(prefix)
            layer = src.extractfile(f"blobs/{top['digest'].replace(':', '/')}")
            assert layer is not None
            dst.addfile(info, io.BufferedReader(_Concat(prefix, layer), CHUNK))
            for digest, blob in [*small.items(), ("index.json", json.dumps(index).encode())]:
                name = "index.json" if digest == "index.json" else f"blobs/{digest.replace(':', '/')}"
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                dst.addfile(info, io.BytesIO(blob))
            oci_layout = b'{"imageLayoutVersion": "1.0.0"}'
            info = tarfile.TarInfo("oci-layout")
            info.size = len(oci_layout)
            dst.addfile(info, io.BytesIO(oci_layout))
    return out


def usage(store: Any, root: Path) -> dict[str, Any]:
    u = store.usage(root)
    return {
        "images": u.images,
        "blobs": u.blobs,
        "snapshots": u.snapshots,
        "content_gb": round(u.content_bytes / 1e9, 2),
        "snapshots_gb": round(u.snapshot_bytes / 1e9, 2),
        "store_gb": round((u.content_bytes + u.snapshot_bytes) / 1e9, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--archive", type=Path, help="an OCI archive of hack/images.py (default: the cached trainer)"
    )
    p.add_argument("--rebuilds", type=int, default=2)
    p.add_argument(
        "--workdir", type=Path, help="where the store and the rebuilt archives go (default: a temp dir)"
    )
    p.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the last import done as before the store pruned (the old tag removed only)",
    )
    args = p.parse_args()
    images = load_hack("images")
    if args.archive is None:
        found = sorted(images.archives_dir().glob("trainer-*.tar"))
        if not found:
            p.error("no cached trainer archive; `make images` builds it, or pass --archive")
        args.archive = found[-1]
    ref = json.loads(args.archive.with_suffix(".json").read_text())["ref"]
    rn = load_hack("realnode")
    work = Path(tempfile.mkdtemp(prefix="ftj-bench-", dir=args.workdir))  # short: the socket path
    paths = rn.Paths(work / "c", work / "cache")
    out: dict[str, Any] = {
        "archive": str(args.archive),
        "archive_gb": round(args.archive.stat().st_size / 1e9, 2),
    }
    try:
        rn.start_containerd(paths, images.PAUSE_IMAGE)
        store = rn.image_store(paths)
        took = rn.import_images(paths, {ref: str(args.archive)})
        out["one_build"] = usage(store, paths.containerd_root) | {"import_s": took.get(ref)}
        out["rebuilds"] = []
        for i in range(1, args.rebuilds + 1):
            new_ref = f"{ref}-rebuild{i}"
            t0 = time.monotonic()
            variant = rebuilt(args.archive, ref, new_ref, work / f"rebuild{i}.tar", f"{i}-{time.time_ns()}")
            made = round(time.monotonic() - t0, 1)
            took = rn.import_images(paths, {new_ref: str(variant)})
            variant.unlink()
            out["rebuilds"].append(
                usage(store, paths.containerd_root) | {"make_s": made, "import_s": took.get(new_ref)}
            )
        out["ratio_to_one_build"] = round(out["rebuilds"][-1]["store_gb"] / out["one_build"]["store_gb"], 3)
        if args.baseline:
            # What an import did before the store pruned: the old tag removed, the build imported.
            last, new_ref = out["rebuilds"][-1] if args.rebuilds else out["one_build"], f"{ref}-unpruned"
            variant = rebuilt(args.archive, ref, new_ref, work / "unpruned.tar", f"u-{time.time_ns()}")
            repo = load_hack("nodeimages").repository(ref)
            old = [n for n in store.images() if load_hack("nodeimages").repository(n) == repo]
            rn._ctr(paths, "images", "rm", *old)
            rn._ctr(paths, "images", "import", "--snapshotter", "overlayfs", str(variant), timeout=1800)
            variant.unlink()
            store.collect_garbage()
            out["unpruned"] = usage(store, paths.containerd_root)
            out["unpruned_ratio_to_one_build"] = round(out["unpruned"]["store_gb"] / last["store_gb"], 3)
    finally:
        rn.stop_containerd(paths)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
