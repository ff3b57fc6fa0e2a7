"""The dev runtime's path mapping (pure parts; the whole runtime runs in tests/e2e/test_demo.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from kubernetes import client

REPO = Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("ftj_hack_devruntime", REPO / "hack" / "devruntime.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["ftj_hack_devruntime"] = module
    spec.loader.exec_module(module)
    return module


def test_pod_paths_map_to_the_pod_directory_but_the_interpreter_stays(tmp_path, monkeypatch):
    dr = load()
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
