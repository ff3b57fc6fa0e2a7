#!/usr/bin/env python3
"""Measure the local control plane and print JSON: warm start-to-ready, RSS, versions, cache disk.

"Warm" means the binaries are already cached (the state a developer and CI live in); the cold build
is a one-off measured from hack/build-binaries.sh's log. Start-to-ready is what a test session
waits for: from ``ensure_up`` to /readyz ok, the ``default`` ServiceAccount present and every fake
node Ready. RSS is summed over all control-plane processes once ready, then again after an idle
settle, because Go heaps keep growing for a while after start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent / "hack"))
from hack_loader import load_hack  # hack/ scripts by path, one loader (hack/hack_loader.py)

REPO = Path(__file__).resolve().parent.parent


def rss_bytes(pids: dict[str, int]) -> dict[str, int]:
    """VmRSS per component, from /proc (no psutil needed)."""
    out: dict[str, int] = {}
    for comp, pid in pids.items():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[comp] = int(line.split()[1]) * 1024
        except OSError:
            continue
    return out


def du(path: Path) -> int:
    """Bytes used under ``path``, not following symlinks (the bin/ dir is links into the rest)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=3, help="start/stop cycles to time")
    p.add_argument("--settle", type=float, default=10.0, help="seconds idle before the second RSS reading")
    args = p.parse_args()

    lc = load_hack("localcluster")
    tools = load_hack("tools")
    name = f"ftj-bench-{os.getpid()}"
    lc.register_cleanup(name)
    starts: list[float] = []
    downs: list[float] = []
    rss_ready: dict[str, int] = {}
    rss_settled: dict[str, int] = {}
    info: Any = None
    for i in range(args.runs):
        t0 = time.monotonic()
        info = lc.ensure_up(name, owner_pid=os.getpid())
        starts.append(round(time.monotonic() - t0, 2))
        if i == args.runs - 1:
            rss_ready = rss_bytes(info.pids)
            time.sleep(args.settle)  # deliberate: this measures idle memory, it waits on nothing
            rss_settled = rss_bytes(info.pids)
        t1 = time.monotonic()
        lc.down(name)
        downs.append(round(time.monotonic() - t1, 2))

    cache = tools.cache_root()
    mib = 1024 * 1024
    parts = [d for d in sorted(cache.iterdir()) if d.is_dir() and d.name != "bin"]
    report = {
        "warm_start_to_ready_seconds": {
            "runs": starts,
            "min": min(starts),
            "median": statistics.median(starts),
            "goal": 15,
        },
        "down_seconds": downs,
        "rss_mib": {
            "at_ready": {k: round(v / mib, 1) for k, v in rss_ready.items()},
            "at_ready_total": round(sum(rss_ready.values()) / mib, 1),
            f"after_{args.settle:g}s_idle": {k: round(v / mib, 1) for k, v in rss_settled.items()},
            f"after_{args.settle:g}s_idle_total": round(sum(rss_settled.values()) / mib, 1),
        },
        "versions": info.versions if info else {},
        "disk_mib": {
            "cache_total": round(du(cache) / mib, 1),
            **{d.name: round(du(d) / mib, 1) for d in parts},
        },
        "cache_dir": str(cache),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
