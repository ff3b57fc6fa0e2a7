"""The base model's licence: stated in the spec, else read from its model card's metadata, else from a
``license`` key in its ``config.json`` (some exports carry one there).

A Hub model card (README.md) starts with YAML front matter whose ``license`` key holds the licence
id (``apache-2.0``, ``llama3.1``, ``other`` with ``license_name``). The operator refuses stated
licences it does not allow before any pod starts; the trainer checks the card's licence as soon as the
model files are at hand, before training, and writes the licence into the output's model card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def card_licence(model_dir: str | Path) -> str | None:
    """The ``license`` (or ``license_name`` for ``other``) in the model card's front matter, if any."""
    card = Path(model_dir) / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    try:
        meta = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict):
        return None
    return _licence_of(meta)


def config_licence(model_dir: str | Path) -> str | None:
    """A ``license`` (or ``licence``) key in the model's ``config.json``, if any."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    return _licence_of({"license": config.get("license", config.get("licence")), **config})


def _licence_of(meta: dict[str, Any]) -> str | None:
    licence = meta.get("license")
    if licence == "other" and isinstance(meta.get("license_name"), str):
        licence = meta["license_name"]
    if isinstance(licence, list) and licence:
        licence = licence[0]
    return str(licence).strip().lower()[:64] if isinstance(licence, str) and licence.strip() else None


def model_licence(stated: str | None, model_dir: str | Path) -> str | None:
    """The licence a run records: the spec's when stated, else the model card's, else config.json's."""
    return stated.lower() if stated else card_licence(model_dir) or config_licence(model_dir)


def not_allowed(licence: str | None, allowed: list[str]) -> str | None:
    """Why the licence is refused, or None; an unknown licence is left to the operator's policy."""
    if not allowed or licence is None or licence in allowed:
        return None
    return f"LicenceNotAllowed: the model's licence {licence!r} is not one of {', '.join(allowed)}"
