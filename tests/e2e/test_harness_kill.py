"""The e2e harness never leaves an operator behind: one that ignores a stop signal is killed, and the
test that asked for the stop fails, naming it. Before, ``OperatorProcess.kill`` raised
``TimeoutExpired`` after 30 s and left the process running (no control plane needed here)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import OperatorProcess

DEAF = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)"
)


def _deaf_operator(tmp_path: Path) -> OperatorProcess:
    op = OperatorProcess(kubeconfig=tmp_path / "kubeconfig", namespaces=[], log_path=tmp_path / "op.log")
    op.proc = subprocess.Popen([sys.executable, "-c", DEAF], stdout=subprocess.PIPE, start_new_session=True)
    assert op.proc.stdout is not None and op.proc.stdout.readline().strip() == b"up"
    return op


def test_an_operator_that_ignores_sigterm_is_killed_and_named(tmp_path: Path) -> None:
    op = _deaf_operator(tmp_path)
    with pytest.raises(AssertionError, match=r"did not exit within 0\.5 s of signal"):
        op.kill(signal.SIGTERM, grace=0.5)
    assert op.proc is not None and op.proc.poll() is not None, "the operator was left running"


def test_an_operator_that_stops_on_sigterm_is_waited_for(tmp_path: Path) -> None:
    op = OperatorProcess(kubeconfig=tmp_path / "kubeconfig", namespaces=[], log_path=tmp_path / "op.log")
    op.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    op.kill(signal.SIGTERM, grace=10)
    assert op.proc.returncode == -signal.SIGTERM
