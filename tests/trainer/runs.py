"""Helpers for trainer tests that run the trainer: summaries, outputs, subprocess environment."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_summary(config_path: Path) -> dict[str, Any]:
    from finetune_api.summary import parse_summary

    config = json.loads(config_path.read_text())
    return parse_summary(Path(config["terminationLog"]).read_text())


def output_of(config_path: Path) -> Path:
    return Path(json.loads(config_path.read_text())["paths"]["output"])


def trainer_env() -> dict[str, str]:
    """Environment for a trainer subprocess: the repo's packages importable, no GPU, 2 threads."""
    env = dict(os.environ)
    paths = [
        str(REPO / "api"),
        str(REPO / "trainer-image"),
        str(REPO / "operator"),
        env.get("PYTHONPATH", ""),
    ]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["OMP_NUM_THREADS"] = "2"
    return env
