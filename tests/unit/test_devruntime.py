"""The dev runtime's path mapping (pure parts; the whole runtime runs in tests/e2e/test_demo.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kubernetes import client

from helpers import load_hack

REPO = Path(__file__).resolve().parents[2]


def test_pod_paths_map_to_the_pod_directory_but_the_interpreter_stays(tmp_path, monkeypatch):
    dr = load_hack("devruntime")
    monkeypatch.setattr(sys, "executable", "/tmp/clone/.venv/bin/python")
    root = tmp_path / "pod"
    paths = dr.PathMap()
    paths.add("/tmp", root / "mounts" / "tmp")
    paths.add("/etc/finetune", root / "mounts" / "etc" / "finetune")
    paths.add("/dev/termination-log", root / "termination-log")
    (root / "mounts" / "etc" / "finetune").mkdir(parents=True)
    cfg = {
        "paths": {"output": "/tmp/out", "dataset": "/data/x.jsonl"},
        "terminationLog": "/dev/termination-log",
    }
    (root / "mounts" / "etc" / "finetune" / "config.json").write_text(json.dumps(cfg))
    container = client.V1Container(
        name="trainer", command=["python", "-m", "finetune_trainer", "--config", "/etc/finetune/config.json"]
    )
    runtime = dr.DevRuntime.__new__(dr.DevRuntime)
    argv, port = runtime._command(container, paths, root)
    # The interpreter may itself live under /tmp (a clone there): it must not be remapped.
    assert argv[0] == "/tmp/clone/.venv/bin/python"
    rewritten = json.loads(Path(argv[-1]).read_text())
    assert rewritten["paths"]["output"] == str(root / "mounts" / "tmp" / "out")
    assert rewritten["paths"]["dataset"] == "/data/x.jsonl"
    assert rewritten["terminationLog"] == str(root / "termination-log")
    assert rewritten["metricsPort"] == port
    assert paths.map("/tmpfoo") == "/tmpfoo"
