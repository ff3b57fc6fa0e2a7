#!/usr/bin/env python3
"""CI wall time: `.ci/run` (or another command) on a fresh clone, cold or warm; prints one JSON object.

``--cold`` points every cache the run fills at empty directories under ``--workdir`` (XDG_CACHE_HOME,
so ~/.cache/finetune-operator, Go's build cache, pip's cache and DeepSpeed's JIT ops; GOPATH and
GOMODCACHE; XDG_DATA_HOME), so nothing built before is reused; the toolchains' configuration (apt
sources, pip.conf, Go's proxy) is left as the machine has it. Without it the run uses the machine's
caches (a warm run still installs the fresh clone's venv). The goal is the issue's: a cold `.ci/run`
under 60 minutes. The machine's load is sampled every 30 s and reported, because on shared cores it
moves the wall time more than anything in the run; so are the run's CPU seconds (user + system of
every process it waited for), which do not depend on the load: on 2 idle cores a phase that keeps
both busy takes about half its CPU seconds.

Phases come from ``make --trace`` (MAKEFLAGS): the first line of each target's recipe, and pytest's
start. A cold run needs about 30 GB free on the disk holding ``--workdir``.

    bench/ci_wall.py --cold --workdir /tmp/ftj-ci-cold > ci-cold.json   # about an hour on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 60 * 60
# `make --trace` announces a target before its recipe runs.
# What this script writes under --workdir (and deletes there on the next run); nothing else may be there.
OWN = {"repo", "cache", "data", "gopath", "run.log"}
TARGET = re.compile(r"^Makefile:\d+: (?:update target '([^']+)'|target '([^']+)' does not exist)")


def unmount_under(root: Path) -> list[str]:
    """Unmount what a previous run left mounted under ``root`` (a killed or failed buildah build
    keeps its overlay mounted, and then the directory cannot be removed), deepest first."""
    prefix = str(root.resolve()) + "/"
    fields = (line.split() for line in Path("/proc/mounts").read_text().splitlines())
    mounts = [f[1] for f in fields if len(f) > 1]
    left = sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True)
    for mount in left:
        subprocess.run(["umount", mount], check=False, capture_output=True)
    return left


def cold_env(workdir: Path) -> dict[str, str]:
    cache, data, gopath = workdir / "cache", workdir / "data", workdir / "gopath"
    unmount_under(workdir)
    for d in (cache, data, gopath):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("FTJ_CACHE", "HF_HOME", "TORCH_EXTENSIONS_DIR")}
    env.update(
        XDG_CACHE_HOME=str(cache),
        XDG_DATA_HOME=str(data),
        GOPATH=str(gopath),
        GOMODCACHE=str(gopath / "pkg" / "mod"),
        GOCACHE=str(cache / "go-build"),
        PIP_CACHE_DIR=str(cache / "pip"),
    )
    return env


def _load_sampler(samples: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        samples.append(os.getloadavg()[0])
        stop.wait(30)


def run(command: str, repo: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    env = {**env, "MAKEFLAGS": " ".join(filter(None, [env.get("MAKEFLAGS", ""), "--trace"]))}
    phases: dict[str, float] = {}
    loads: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_load_sampler, args=(loads, stop), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=repo,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic() - t0
            out.write(f"{now:8.1f} {line}")
            out.flush()
            m = TARGET.match(line)
            name = (m[1] or m[2]) if m else ("pytest" if " -m pytest " in line else None)
            if name and name not in phases:
                phases[name] = round(now, 1)
        rc = proc.wait()
    wall = time.monotonic() - t0
    stop.set()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "command": command,
        "rc": rc,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "phase_start_seconds": phases,
        "pytest_seconds": round(wall - phases["pytest"], 1) if "pytest" in phases else None,
        "load_average_1m": {
            "min": round(min(loads, default=0.0), 2),
            "max": round(max(loads, default=0.0), 2),
            "mean": round(sum(loads) / len(loads), 2) if loads else 0.0,
        },
        "cpus": os.cpu_count(),
        "log": str(log),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--cold", action="store_true", help="empty caches under --workdir (default: the machine's)"
    )
    p.add_argument("--workdir", type=Path, default=Path("/tmp/ftj-ci-wall"))
    p.add_argument("--source", default=str(REPO), help="what to clone (a path or URL)")
    p.add_argument("--branch", default="", help="branch to check out (default: the source's HEAD)")
    p.add_argument("--command", default=".ci/run", help="run in the clone's root (default: .ci/run)")
    args = p.parse_args(argv)
    repo = args.workdir / "repo"
    if args.workdir.exists() and (other := {p.name for p in args.workdir.iterdir()} - OWN):
        p.error(f"--workdir {args.workdir} holds other things ({', '.join(sorted(other))}); name a new one")
    shutil.rmtree(repo, ignore_errors=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    branch = ["-b", args.branch] if args.branch else []
    subprocess.run(["git", "clone", "-q", *branch, args.source, str(repo)], check=True)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    env = cold_env(args.workdir) if args.cold else dict(os.environ)
    result = run(args.command, repo, env, args.workdir / "run.log")
    result.update(
        commit=commit,
        cold=args.cold,
        goal_seconds=GOAL_SECONDS,
        ratio_to_goal=round(result["wall_seconds"] / GOAL_SECONDS, 3),
    )
    print(json.dumps(result, indent=2))
    return 0 if result["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
