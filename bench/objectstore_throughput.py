#!/usr/bin/env python3
"""Transfer throughput of the trainer's storage layer against the local S3 server (versitygw).

Uploads and downloads one file of ``--size-mb`` MB (default 500) of random bytes with the same calls
the trainer makes (``storage.objects.upload_file``: multipart, read back and hash-checked;
``storage.objects.download``: ranged reads into a ``.part``, size and ETag checked), and, as the
baseline measured in the same run on the same disk, a plain local file copy of the same bytes.
Prints JSON: MB/s up and down, each also as a ratio of the local copy's MB/s, and the server's
version. The server's data directory and the trainer's cache are on the same disk as the copy, so
the ratios show the cost of HTTP, signing, multipart and verification rather than of the disk.

Usage: python bench/objectstore_throughput.py [--size-mb 500] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent / "hack"))
from hack_loader import load_hack  # hack/ scripts by path, one loader (hack/hack_loader.py)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "trainer-image"))
sys.path.insert(0, str(REPO / "api"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    store_mod: Any = load_hack("objectstore")
    name = f"bench-{os.getpid()}"
    store = store_mod.up(name)
    os.environ.update(store.env())
    from finetune_trainer.storage import objects

    size = args.size_mb * 1_000_000
    up, down, copy = [], [], []
    try:
        with tempfile.TemporaryDirectory(dir=REPO / ".local") as tmp:
            src = Path(tmp) / "weights.bin"
            with src.open("wb") as handle:
                for _ in range(args.size_mb):
                    handle.write(os.urandom(1_000_000))
            fs, _ = objects.filesystem("s3://bench")
            fs.mkdir("bench")
            for i in range(args.repeats):
                start = time.perf_counter()
                shutil.copyfile(src, Path(tmp) / f"copy-{i}.bin")
                os.sync()
                copy.append(size / (time.perf_counter() - start) / 1e6)
                uri = f"s3://bench/run-{i}/weights.bin"
                start = time.perf_counter()
                objects.upload_file(fs, src, f"bench/run-{i}/weights.bin", uri, "bench")
                up.append(size / (time.perf_counter() - start) / 1e6)
                start = time.perf_counter()
                local = objects.download(uri, Path(tmp) / f"cache-{i}", "bench")
                down.append(size / (time.perf_counter() - start) / 1e6)
                assert local.stat().st_size == size
                (Path(tmp) / f"copy-{i}.bin").unlink()
                shutil.rmtree(Path(tmp) / f"cache-{i}")
                fs.rm(f"bench/run-{i}", recursive=True)
    finally:
        store_mod.down(name)
    base = statistics.median(copy)
    result = {
        "server": f"versitygw {os.path.basename(os.path.dirname(os.path.dirname(store_mod.find_binary())))}",
        "size_mb": args.size_mb,
        "repeats": args.repeats,
        "multipart_chunk_mb": objects.MULTIPART_CHUNK / 2**20,
        "upload_mb_per_s": round(statistics.median(up), 1),
        "download_mb_per_s": round(statistics.median(down), 1),
        "local_copy_mb_per_s": round(base, 1),
        "upload_vs_local_copy": round(statistics.median(up) / base, 3),
        "download_vs_local_copy": round(statistics.median(down) / base, 3),
        "note": "upload includes the read-back and multipart-ETag check; download the size and ETag check",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
