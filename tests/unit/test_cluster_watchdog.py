"""hack/localcluster.py's watchdog stops the cluster its owner started, and only that one.

Found by running the scale bench twice in a row: the first bench stopped its cluster ``ftj-bench``
and exited, the second started ``ftj-bench`` again within the first one's watchdog poll, and that
watchdog (its owner gone, a state directory of that name present) stopped the second bench's
cluster a second after it was ready; its CRD apply then failed. The state now names which start of
the cluster it is, and a watchdog stops only its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from helpers import load_hack


@pytest.fixture
def lc() -> ModuleType:
    return load_hack("localcluster")


@pytest.fixture
def cluster(lc: ModuleType) -> Iterator[str]:
    """A cluster's state directory with no processes (stopping it removes only the directory)."""
    name = f"ftj-test-watchdog-{os.getpid()}"
    sdir = lc.state_dir(name)
    sdir.mkdir(parents=True)
    yield name
    lc.down(name)


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_state(lc: ModuleType, name: str, instance: str, owner: int) -> Path:
    sdir: Path = lc.state_dir(name)
    (sdir / lc.STATE_FILE).write_text(json.dumps({"name": name, "owner_pid": owner, "instance": instance}))
    return sdir


def test_a_watchdog_leaves_a_later_start_of_the_same_name_alone(lc: ModuleType, cluster: str) -> None:
    owner = _gone_pid()
    sdir = _write_state(lc, cluster, "second-start", os.getpid())
    assert lc._watch(cluster, owner, "first-start") == 0
    assert sdir.is_dir(), "the first start's watchdog stopped the second start's cluster"


def test_a_watchdog_stops_its_own_start_once_its_owner_is_gone(lc: ModuleType, cluster: str) -> None:
    owner = _gone_pid()
    sdir = _write_state(lc, cluster, "this-start", owner)
    assert lc._watch(cluster, owner, "this-start") == 0
    assert not sdir.exists()


def test_a_state_being_rewritten_still_counts_as_the_watchdogs_own(lc: ModuleType, cluster: str) -> None:
    """A create in progress truncates the state file before it writes it again: read at that moment it
    is empty, and the watchdog must neither give up on its cluster nor leave it running."""
    owner = _gone_pid()
    sdir: Path = lc.state_dir(cluster)
    (sdir / lc.STATE_FILE).write_text("")
    assert lc._watch(cluster, owner, "this-start") == 0
    assert not sdir.exists()
