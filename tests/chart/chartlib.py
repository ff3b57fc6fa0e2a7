"""Helpers for the chart tests (imported by name: a test module must not import ``conftest``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "finetune-operator"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))

sys.path.insert(0, str(REPO / "tests" / "e2e"))  # harness.py: OperatorProcess, Ftj


def tools_dir() -> Path:
    from helpers import load_hack

    return Path(load_hack("tools").ensure_tools())


class Helm:
    """The cached helm binary, optionally bound to a kubeconfig."""

    def __init__(self, binary: Path, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ}
        if args and args[0] in ("install", "upgrade"):
            # Other tests apply the same CRD with kubectl; the chart takes its fields over.
            args = (args[0], "--force-conflicts", *args[1:])
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        res = subprocess.run(
            [str(self.binary), *args], env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res

    def template(
        self, *args: str, release: str = "ftj", namespace: str = "ftj-system", include_crds: bool = False
    ) -> list[dict[str, Any]]:
        extra = ["--include-crds"] if include_crds else []
        out = self("template", release, str(CHART), "--namespace", namespace, *extra, *args).stdout
        return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


class LuaHealth:
    """The chart's Argo CD health script, run the way Argo CD runs it: ``obj`` global, table back."""

    def __init__(self, source: str) -> None:
        import lupa.lua51  # Argo CD runs health scripts in gopher-lua, a Lua 5.1

        self.lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
        self.fn = self.lua.eval(f"function(obj) {source}\nend")

    def __call__(self, obj: dict[str, Any]) -> dict[str, str]:
        result = self.fn(self._table(obj))
        return {k: result[k] for k in ("status", "message")}

    def _table(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.lua.table_from({k: self._table(v) for k, v in value.items()})
        if isinstance(value, list):
            return self.lua.table_from([self._table(v) for v in value])
        return value
