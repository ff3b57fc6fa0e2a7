"""A script that owns a local cluster (a bench, a test session) and is sent SIGTERM, as ``timeout`` or
CI does, stops the cluster AND what it started itself, and still exits with the signal's status.

hack/localcluster.py's ``register_cleanup`` once stopped the cluster and then re-raised the signal with
its default action: the process died at once and the caller's ``finally`` never ran, so an operator a
bench had started stayed alive for hours retrying against a dead API server. Each test here runs a
small script (the same calls the benches make) in its own process, with a real cluster of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import load_hack, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

# WAIT_NOTE: Python runs a signal handler between bytecodes; a signal that lands just before a blocking
# call without a timeout (a bare Popen.wait(), time.sleep(3600)) waits for that call to return. The test
# signals right after a file written just before the wait, so these scripts wait in short polls.
# argv: hack dir, cluster name, owner pid (the test: a watchdog stops the cluster if pytest dies, never
# before), workdir. Starts a child in its own session (as harness.OperatorProcess starts the operator, so
# a signal to the script never reaches it) and stops it only in ``finally``; the test says when the
# ``finally`` may go on (file "go"), so it can send a second signal while the clean-up runs.
OWNER_SCRIPT = """
import subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from hack_loader import load_hack
lc = load_hack("localcluster")
name, owner, work = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
lc.register_cleanup(name)
lc.ensure_up(name, owner_pid=owner)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
try:
    (work / "child.pid").write_text(str(child.pid))
    while child.poll() is None:  # polls, as the benches do (see WAIT_NOTE)
        time.sleep(0.05)
finally:
    (work / "cleaning").touch()
    deadline = time.monotonic() + 60
    while not (work / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    child.kill()
    child.wait()
    (work / "cleaned").touch()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (only its parent's wait is missing).
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _start(tmp_path: Path, script: str, name: str) -> subprocess.Popen[str]:
    path = tmp_path / "owner.py"
    path.write_text(script)
    log = open(tmp_path / "owner.log", "w")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        [
            sys.executable,
            "-X",
            "faulthandler",
            str(path),
            str(REPO / "hack"),
            name,
            str(os.getpid()),
            str(tmp_path),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _log(tmp_path: Path) -> str:
    return (tmp_path / "owner.log").read_text(errors="replace")[-8000:]


def _exit_status(proc: subprocess.Popen[Any], tmp_path: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler (-X faulthandler, pytest's own) dumps each thread
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        raise AssertionError(f"still running {timeout:g}s after the signal:\n{_log(tmp_path)}") from None


def _cluster_gone(lc: Any, name: str) -> bool:
    sdir = lc.state_dir(name)
    return not sdir.exists() and not lc._cluster_processes(sdir)


def _until_running(proc: subprocess.Popen[Any], tmp_path: Path, ready: Any, what: str) -> None:
    try:
        wait_for(lambda: proc.poll() is not None or ready(), timeout=240, what=what)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{_log(tmp_path)}") from exc
    if proc.poll() is not None:
        raise AssertionError(f"the script exited with {proc.returncode} before {what}:\n{_log(tmp_path)}")


def _stop_everything(proc: subprocess.Popen[Any], lc: Any, name: str, *pids: int) -> None:
    """A test's own clean-up, whatever it asserted: the script, the processes it started, its cluster."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in pids:
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
    lc.down(name)


def test_sigterm_runs_the_callers_finally_stops_the_cluster_and_exits_143(tmp_path: Path) -> None:
    lc = load_hack("localcluster")
    name = f"{lc.TEST_NAME_PREFIX}sig-{os.getpid()}"
    proc = _start(tmp_path, OWNER_SCRIPT, name)
    child = 0
    try:
        _until_running(proc, tmp_path, (tmp_path / "child.pid").exists, "the cluster and the child")
        child = int((tmp_path / "child.pid").read_text())
        assert _alive(child)

        proc.send_signal(signal.SIGTERM)
        # The cluster is stopped before the caller's clean-up starts (its finally may need a while).
        wait_for(lambda: _cluster_gone(lc, name), timeout=60, what="the cluster stopped by the handler")
        wait_for(lambda: (tmp_path / "cleaning").exists() or proc.poll() is not None, 30, "the finally")
        assert (tmp_path / "cleaning").exists(), f"the finally never ran:\n{_log(tmp_path)}"
        # A second SIGTERM (an impatient caller) must not cut the clean-up short.
        proc.send_signal(signal.SIGTERM)
        (tmp_path / "go").touch()
        returncode = _exit_status(proc, tmp_path, 60)

        assert (tmp_path / "cleaned").exists(), f"the clean-up was cut short:\n{_log(tmp_path)}"
        assert not _alive(child), "the child the script stopped in its finally is still running"
        # A caller such as `timeout` or CI still sees a death by SIGTERM (128 + 15, as a shell reports it).
        assert returncode == 128 + signal.SIGTERM, (returncode, _log(tmp_path))
    finally:
        _stop_everything(proc, lc, name, child)


CREATE_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from hack_loader import load_hack
lc = load_hack("localcluster")
lc.register_cleanup(sys.argv[2])
lc.ensure_up(sys.argv[2], owner_pid=int(sys.argv[3]))
print("CLUSTER-UP")
"""


def test_sigterm_while_the_cluster_is_being_created_leaves_no_process(tmp_path: Path) -> None:
    """The handler stops the cluster without its lock (the creating process holds it), then unwinds."""
    lc = load_hack("localcluster")
    name = f"{lc.TEST_NAME_PREFIX}sig-create-{os.getpid()}"
    sdir = lc.state_dir(name)
    proc = _start(tmp_path, CREATE_SCRIPT, name)
    try:
        _until_running(
            proc,
            tmp_path,
            lambda: lc._cluster_processes(sdir) and not (lc._read_state(sdir) or {}).get("ready"),
            "a component of the cluster being created",
        )
        proc.send_signal(signal.SIGTERM)
        returncode = _exit_status(proc, tmp_path, 60)

        wait_for(lambda: _cluster_gone(lc, name), timeout=30, what="every process of the cluster gone")
        assert "CLUSTER-UP" not in _log(tmp_path), "the signal came after the cluster was ready; no test"
        assert returncode == 128 + signal.SIGTERM, (returncode, _log(tmp_path))
    finally:
        _stop_everything(proc, lc, name)


def test_sigterm_ends_a_pytest_session_with_every_fixture_torn_down_and_exit_143(tmp_path: Path) -> None:
    """tests/conftest.py's ``cluster``: SIGTERM stops the cluster, then the session ends as after Ctrl-C
    (a SystemExit would fail one test and run the rest against a stopped cluster), tearing down the
    fixture that started a child, and pytest exits with 128 + SIGTERM."""
    lc = load_hack("localcluster")
    case = Path(__file__).with_name("signal_session_case.py")
    log = open(tmp_path / "owner.log", "w")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(case)],
        env={**os.environ, "FTJ_SIGNAL_CASE_DIR": str(tmp_path)},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    name = f"{lc.TEST_NAME_PREFIX}{proc.pid}"
    child = 0
    try:
        _until_running(proc, tmp_path, (tmp_path / "child.pid").exists, "the session's test")
        child = int((tmp_path / "child.pid").read_text())
        proc.send_signal(signal.SIGTERM)
        returncode = _exit_status(proc, tmp_path, 90)

        assert (tmp_path / "torn-down").exists(), f"the fixture was not torn down:\n{_log(tmp_path)}"
        assert not (tmp_path / "not-interrupted").exists()
        assert not _alive(child)
        wait_for(lambda: _cluster_gone(lc, name), timeout=30, what="the session's cluster stopped")
        assert returncode == 128 + signal.SIGTERM, (returncode, _log(tmp_path))
    finally:
        _stop_everything(proc, lc, name, child)


FORK_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from hack_loader import load_hack
lc = load_hack("localcluster")
name = sys.argv[2]
lc.register_cleanup(name)
lc.ensure_up(name, owner_pid=int(sys.argv[3]))
ready_r, ready_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(ready_w, b"1")  # past the fork's own signal set-up, which drops a signal pending then
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # short polls (see WAIT_NOTE)
        time.sleep(0.05)
    os._exit(0)
(Path(sys.argv[4]) / "child.pid").write_text(str(pid))
os.read(ready_r, 1)
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
sdir = lc.state_dir(name)
print("CHILD", os.waitstatus_to_exitcode(status), "UP", sdir.exists() and bool(lc._cluster_processes(sdir)))
"""


def test_sigterm_to_a_forked_child_leaves_the_parents_cluster_alone(tmp_path: Path) -> None:
    """A forked worker (a DataLoader's, in a test session) inherits the handler, not the cluster."""
    lc = load_hack("localcluster")
    name = f"{lc.TEST_NAME_PREFIX}sig-fork-{os.getpid()}"
    proc = _start(tmp_path, FORK_SCRIPT, name)
    try:
        returncode = _exit_status(proc, tmp_path, 120)
        assert f"CHILD {-signal.SIGTERM} UP True" in _log(tmp_path), _log(tmp_path)
        assert returncode == 0, _log(tmp_path)
        wait_for(lambda: _cluster_gone(lc, name), timeout=30, what="the cluster stopped at the parent's exit")
    finally:
        child = tmp_path / "child.pid"
        _stop_everything(proc, lc, name, int(child.read_text()) if child.exists() else 0)


# A bench's start of the operator: the handle exists only once start() returns (the health endpoint
# answered), so a signal before that leaves its ``finally`` nothing to stop; start() stops it itself.
OPERATOR_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
# harness imports helpers from tests/: both on the path, as the benches put them (no PYTHONPATH needed)
sys.path.insert(0, str(Path(sys.argv[1]).parent / "tests"))
sys.path.insert(0, str(Path(sys.argv[1]).parent / "tests" / "e2e"))
from hack_loader import load_hack
import harness
lc = load_hack("localcluster")
name, work = sys.argv[2], Path(sys.argv[4])
lc.register_cleanup(name)
info = lc.ensure_up(name, owner_pid=int(sys.argv[3]))
# A copy: the stop removes the cluster's own, which would end an operator that had not read it yet.
kubeconfig = work / "kubeconfig"
kubeconfig.write_bytes(Path(info.kubeconfig).read_bytes())
(work / "cluster-up").touch()
op = None
try:
    op = harness.OperatorProcess(kubeconfig, ["default"], work / "operator.log").start()
    print("OPERATOR-HEALTHY", flush=True)
finally:
    if op is not None:
        op.kill()
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_sigterm_while_a_bench_starts_the_operator_leaves_no_operator(tmp_path: Path) -> None:
    lc = load_hack("localcluster")
    name = f"{lc.TEST_NAME_PREFIX}sig-op-{os.getpid()}"
    proc = _start(tmp_path, OPERATOR_SCRIPT, name)
    operator = 0
    try:
        _until_running(proc, tmp_path, (tmp_path / "cluster-up").exists, "the cluster")

        def operator_started() -> int:
            # The watchdog is a child too; the operator is the one running finetune_operator.
            for pid in _children(proc.pid):
                with contextlib.suppress(OSError):
                    if b"finetune_operator" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return pid
            return 0

        _until_running(proc, tmp_path, operator_started, "the operator process")
        operator = operator_started()
        proc.send_signal(signal.SIGTERM)
        returncode = _exit_status(proc, tmp_path, 60)

        assert "OPERATOR-HEALTHY" not in _log(tmp_path), "the signal came after the start; nothing tested"
        wait_for(lambda: not _alive(operator), timeout=30, what="the half-started operator stopped")
        assert returncode == 128 + signal.SIGTERM, (returncode, _log(tmp_path))
    finally:
        if operator and _alive(operator):
            os.killpg(operator, signal.SIGKILL)  # its own session: the whole group
        _stop_everything(proc, lc, name)
