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


def test_downward_api_volume_gets_the_pods_annotation_as_a_file(tmp_path):
    """The operator hands the trainer its config in a pod annotation, projected by the downward API."""
    dr = load_hack("devruntime")
    config = '{"paths":{"output":"/output"}}'
    item = client.V1DownwardAPIVolumeFile(
        path="config.json",
        field_ref=client.V1ObjectFieldSelector(field_path="metadata.annotations['finetuning.io/config']"),
    )
    name_item = client.V1DownwardAPIVolumeFile(
        path="meta/name", field_ref=client.V1ObjectFieldSelector(field_path="metadata.name")
    )
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="x-r1-abc", namespace="ns", annotations={"finetuning.io/config": config}
        ),
        spec=client.V1PodSpec(
            containers=[],
            volumes=[
                client.V1Volume(
                    name="config", downward_api=client.V1DownwardAPIVolumeSource(items=[item, name_item])
                )
            ],
        ),
    )
    container = client.V1Container(
        name="trainer", volume_mounts=[client.V1VolumeMount(name="config", mount_path="/etc/finetune")]
    )
    runtime = dr.DevRuntime.__new__(dr.DevRuntime)
    paths = runtime._volumes(pod, container, tmp_path)
    assert Path(paths.map("/etc/finetune/config.json")).read_text() == config
    assert Path(paths.map("/etc/finetune/meta/name")).read_text() == "x-r1-abc"

    item.field_ref.field_path = "metadata.annotations['missing']"
    assert runtime._volumes(pod, container, tmp_path / "again").map("/etc/finetune/config.json")
    assert (tmp_path / "again" / "mounts" / "etc" / "finetune" / "config.json").read_text() == "", (
        "a missing annotation is an empty file, as the kubelet writes it"
    )
