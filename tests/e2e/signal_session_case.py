"""Not collected on its own (no ``test_`` prefix): test_signal_cleanup.py runs it as a pytest session of
its own, with the real ``cluster`` fixture, and sends that session SIGTERM while the test below waits.
The fixture's child stands for an operator that a fixture starts and stops in its teardown."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

WORK = Path(os.environ.get("FTJ_SIGNAL_CASE_DIR", "/nonexistent"))


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        (WORK / "torn-down").touch()


def test_waits_for_the_signal(cluster: Any, child: subprocess.Popen[bytes]) -> None:
    (WORK / "child.pid").write_text(str(child.pid))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the signal ends this wait; the deadline ends a run without one
        time.sleep(0.05)
    (WORK / "not-interrupted").touch()
