"""The adapter merge comes after the results are written, is checked, and cannot fail a good run."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from runs import output_of, read_summary

from finetune_api.exitcodes import ExitCode
from finetune_trainer.runner import load_config, run

pytestmark = pytest.mark.trainer

SPEC: dict[str, Any] = {
    "hyperparameters": {"maxSteps": 4},
    "evaluation": {"compareBase": False, "generationMetrics": False},
    "output": {"mergeAdapter": True},
}


def test_merged_model_reproduces_the_adapter_model(make_config: Any) -> None:
    config = make_config(name="merge-ok", **SPEC)
    assert run(load_config(config)) == ExitCode.SUCCEEDED
    out = output_of(config)
    assert (out / "merged" / "config.json").is_file()
    assert read_summary(config)["message"] == "training and evaluation finished"


def _kill_the_merge(stop: threading.Event) -> None:
    """SIGKILL the merge child as soon as it appears, as the kernel's out-of-memory killer would."""
    me = os.getpid()
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == me and b"finetune_trainer.merge" in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)
                return
        stop.wait(0.05)


def test_out_of_memory_in_the_merge_keeps_the_run_good(make_config: Any) -> None:
    config = make_config(name="merge-oom", **SPEC)
    stop = threading.Event()
    killer = threading.Thread(target=_kill_the_merge, args=(stop,), daemon=True)
    killer.start()
    try:
        assert run(load_config(config)) == ExitCode.SUCCEEDED
    finally:
        stop.set()
        killer.join()
    out = output_of(config)
    summary = read_summary(config)
    assert summary["phase"] == "Succeeded"
    assert "ran out of memory" in summary["message"], summary["message"]
    assert not (out / "merged").exists()
    # the results were written before the merge was tried
    assert json.loads((out / "evaluation.json").read_text())["test"]["loss"] > 0
    assert (out / "README.md").is_file() and (out / "adapter" / "adapter_config.json").is_file()
