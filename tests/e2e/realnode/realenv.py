"""Shared by the real-node tier's fixtures and tests (a module, since conftest is not importable)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
TRAINER_UID = 65532  # the trainer image's USER, and the operator's pods' runAsUser
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@dataclass(frozen=True)
class RealCluster:
    info: Any
    node: str
    node_ip: str
    images: dict[str, str]  # operator / trainer / pause -> reference
    volumes: Path


@dataclass(frozen=True)
class ChartOperator:
    namespace: str
    release: str
    ready_seconds: float
    pod: dict[str, Any]


@dataclass(frozen=True)
class Volume:
    claim: str
    host: Path


def tiny_inputs(dest: Path) -> Path:
    """A tiny BERT classifier and a text-label dataset, written where pods can read them."""
    sys.path.insert(0, str(REPO / "tests" / "trainer"))
    import tiny

    model = dest / "model"
    model.mkdir(parents=True, exist_ok=True)
    tiny.build_bert(model)
    with open(dest / "train.jsonl", "w") as f:
        for rec in tiny.text_label_records(90):
            f.write(json.dumps(rec) + "\n")
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def tiny_causal_inputs(dest: Path) -> Path:
    """A tiny Llama, prompt-completion data, review prompts and a regression set, for pods to read."""
    sys.path.insert(0, str(REPO / "tests" / "trainer"))
    import tiny

    model = dest / "llama"
    model.mkdir(parents=True, exist_ok=True)
    tiny.build_llama(model)
    records = tiny.prompt_completion_records(80)
    tiny.write_jsonl(dest / "train.jsonl", records)
    tiny.write_jsonl(dest / "general.jsonl", tiny.prompt_completion_records(40))
    tiny.write_jsonl(dest / "prompts.jsonl", [{"prompt": "What colour is the snow?"}])
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest
