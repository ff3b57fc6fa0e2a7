"""Preemption and network trouble are retriable (exit 75), never a permanent failure (3 or 6).

A SIGTERM can land anywhere: inside ``from_pretrained`` or a Parquet read, whose ``except Exception``
blocks turn errors into ModelLoadFailed / InvalidData. The signal here is real (sent to this process,
handled by the trainer's own handler); the patched loader only decides *when* it arrives.
Hub errors come from a real HTTP server standing in for the Hub: a 503 is transient (exit 75, even
though the hub client reports it as a LocalEntryNotFoundError), a 404 is not.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runs import read_summary, trainer_env

from finetune_api.exitcodes import NON_RETRIABLE_EXIT_CODES, ExitCode
from finetune_trainer.runner import run_config_file

pytestmark = pytest.mark.trainer


def _sigterm_then(real: Any) -> Any:
    def load(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode, inside this call
        return real(*args, **kwargs)

    return load


def test_sigterm_during_model_load_is_retriable(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    path = make_config(name="term-load")
    monkeypatch.setattr(
        AutoModelForCausalLM, "from_pretrained", _sigterm_then(AutoModelForCausalLM.from_pretrained)
    )
    assert run_config_file(path) == ExitCode.RETRIABLE
    assert read_summary(path)["reason"] == "InfrastructureError"


def test_sigterm_during_parquet_read_is_retriable(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = make_config(name="term-parquet")
    config = json.loads(path.read_text())
    rows = [json.loads(line) for line in Path(config["paths"]["dataset"]).read_text().splitlines()]
    parquet = path.parent / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    config["paths"]["dataset"] = str(parquet)
    config["spec"]["dataset"]["source"]["uri"] = parquet.as_uri()
    path.write_text(json.dumps(config))

    monkeypatch.setattr(pq, "read_table", _sigterm_then(pq.read_table))
    assert run_config_file(path) == ExitCode.RETRIABLE
    assert read_summary(path)["reason"] == "InfrastructureError"


class _Hub(http.server.BaseHTTPRequestHandler):
    status = 503

    def _answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        body = json.dumps({"error": "unavailable" if self.status >= 500 else "Repository not found"}).encode()
        self.send_header("Content-Length", str(len(body)))
        if self.status >= 500:
            self.send_header("Retry-After", "0")  # the hub client retries after 1 s instead of 1+2+4+8+8
        if self.status == 404:
            self.send_header("X-Error-Code", "RepoNotFound")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hub() -> Iterator[tuple[str, type[_Hub]]]:
    handler = type("Hub", (_Hub,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _run_against(
    hub_url: str, make_config: Any, name: str, tmp_path: Path
) -> tuple[int, str, dict[str, Any]]:
    path = make_config(name=name, model={"name": "example-org/tiny-model"})
    config = json.loads(path.read_text())
    config["paths"]["model"] = "example-org/tiny-model"  # a hub id, not a directory
    path.write_text(json.dumps(config))
    env = trainer_env()
    env.update(HF_ENDPOINT=hub_url, HF_HOME=str(tmp_path / f"hf-{name}"), HF_HUB_ETAG_TIMEOUT="5")
    env.update(HF_HUB_DOWNLOAD_TIMEOUT="5", FTJ_STORAGE_ATTEMPTS="2", FTJ_STORAGE_BACKOFF_SECONDS="0.1")
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "finetune_trainer", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr, read_summary(path)


def test_hub_outage_is_retriable_but_a_missing_repo_is_not(
    hub: tuple[str, type[_Hub]], make_config: Any, tmp_path: Path
) -> None:
    url, handler = hub
    handler.status = 503
    code, out, summary = _run_against(url, make_config, "hub-503", tmp_path)
    assert code == ExitCode.RETRIABLE, out[-4000:]
    assert summary["reason"] == "InfrastructureError"
    assert "example-org/tiny-model" in summary["message"], summary

    handler.status = 404
    code, out, summary = _run_against(url, make_config, "hub-404", tmp_path)
    assert code in NON_RETRIABLE_EXIT_CODES, out[-4000:]
    assert summary["reason"] == "ModelNotFound"
