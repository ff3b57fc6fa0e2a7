"""The pod's command, ``python -m finetune_trainer.launch``: exit codes and SIGTERM through torchrun.

The real runs start two gloo processes on CPU under the launcher, as a pod with two GPUs would, and
check what the operator relies on: the pod's exit code is the trainer's (torchrun alone exits 1), and a
SIGTERM ends every rank at the same step with one checkpoint and exit 75, even when only one rank got
the signal (a multi-node run where only one pod is preempted).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from runs import REPO, output_of, read_summary, trainer_env

from finetune_api.exitcodes import ExitCode
from finetune_api.launch import launch_command
from finetune_trainer.launch import exit_code_of, parse_command, torchrun_args, torchrun_command

# Two ranks on two shared cores: a run takes 20-60 s; the deadline only catches a hang.
RUN_TIMEOUT_S = 300


# ---------------------------------------------------------------------------------------------------
# pure


def test_exit_code_prefers_the_contract_code_over_its_consequences() -> None:
    assert exit_code_of({}) == 0
    # rank 0 found bad data; rank 1 was then killed by torchrun (SIGTERM) or lost its peer (75)
    assert exit_code_of({0: 3, 1: -15}) == 3
    assert exit_code_of({0: 75, 1: 3}, first=0) == 3
    assert exit_code_of({0: 5, 1: 3}, first=1) == 3  # the first to fail is the root cause
    assert exit_code_of({1: 137}) == 137  # the trainer's own out-of-memory code
    assert exit_code_of({0: 75, 1: 75}) == 75
    assert exit_code_of({1: -9}) == 137  # SIGKILL, the kernel's OOM killer: 128 + 9
    assert exit_code_of({0: 1}) == 75  # a crash: retriable


def test_launch_command_is_one_command_for_every_pod() -> None:
    config = "/etc/finetune/config.json"
    assert launch_command(nodes=1, procs_per_node=1, config=config) == [
        "python", "-m", "finetune_trainer.launch", "--config", config,
    ]  # fmt: skip
    assert launch_command(nodes=2, procs_per_node=8, config=config, rdzv_host="j-0.j", rdzv_port=29400) == [
        "python", "-m", "finetune_trainer.launch", "--nnodes=2", "--nproc-per-node=8",
        "--master-addr=j-0.j", "--master-port=29400", "--config", config,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="nodes"):
        launch_command(nodes=0, procs_per_node=1, config=config)


def test_the_command_the_operator_renders_starts_the_world_it_names() -> None:
    """One command line, two ends: finetune_api renders it (the operator's Job builder), the launcher in
    the pod parses it into torchrun's command, and torchrun's own parser reads back the same world."""
    from torch.distributed.run import parse_args

    config = "/etc/finetune/config.json"
    pod = launch_command(nodes=2, procs_per_node=8, config=config, rdzv_host="j-0.j", rdzv_port=29400)
    assert pod[1:3] == ["-m", "finetune_trainer.launch"]
    for index in (0, 1):  # every pod runs the same command; its node rank is its completion index
        command = torchrun_command(parse_command(pod[3:]), {"JOB_COMPLETION_INDEX": str(index)})
        assert command is not None
        world = parse_args(command)
        assert (world.nnodes, world.nproc_per_node, world.node_rank) == ("2", "8", index)
        assert (world.master_addr, world.master_port, world.standalone) == ("j-0.j", 29400, False)
        assert (world.module, world.training_script, world.training_script_args) == (
            True, "finetune_trainer", ["--config", config],
        )  # fmt: skip

    def on_one_pod(procs: int) -> list[str] | None:
        pod = launch_command(nodes=1, procs_per_node=procs, config=config)
        return torchrun_command(parse_command(pod[3:]), {})

    one_pod = on_one_pod(4)
    assert one_pod is not None
    assert parse_args(one_pod).standalone and parse_args(one_pod).nproc_per_node == "4"
    assert on_one_pod(1) is None  # one process: no torchrun, the trainer runs in the launcher's process


def test_torchrun_args_single_node_is_standalone_and_waits_for_the_grace_period() -> None:
    args = torchrun_args(1, 4, "ignored", shutdown_timeout_s=600)
    assert args == [
        "--standalone", "--nnodes", "1", "--nproc-per-node", "4", "--max-restarts", "0",
        "--shutdown-timeout", "600",
    ]  # fmt: skip
    # torchrun's own parser accepts them, with the shutdown timeout it would otherwise set to 30 s
    from torch.distributed.run import parse_args

    parsed = parse_args([*args, "-m", "finetune_trainer", "--config", "c.json"])
    assert parsed.shutdown_timeout == 600 and parsed.max_restarts == 0 and parsed.standalone


def test_torchrun_args_multi_node_rendezvous_on_index0_pod() -> None:
    args = torchrun_args(3, 8, "job-r1-0.job-r1", 29500, node_rank=2, shutdown_timeout_s=60)
    assert args == [
        "--nnodes", "3", "--nproc-per-node", "8", "--max-restarts", "0", "--shutdown-timeout", "60",
        "--node-rank", "2", "--master-addr", "job-r1-0.job-r1", "--master-port", "29500",
    ]  # fmt: skip
    for bad in ({"nodes": 0}, {"procs_per_node": 0}, {"node_rank": 3}, {"rdzv_port": 0}, {"rdzv_host": ""}):
        kwargs: dict[str, Any] = {
            "nodes": 3,
            "procs_per_node": 1,
            "rdzv_host": "h",
            "rdzv_port": 1,
            "node_rank": 0,
        }
        kwargs.update(bad)
        with pytest.raises(ValueError):
            torchrun_args(**kwargs)


# ---------------------------------------------------------------------------------------------------
# real runs: two gloo processes under the launcher


def _env() -> dict[str, str]:
    env = trainer_env()
    env["OMP_NUM_THREADS"] = "1"
    env.pop("ACCELERATE_USE_CPU", None)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _launcher(config: Path, nproc: int = 2) -> list[str]:
    launcher = [sys.executable, "-m", "finetune_trainer.launch"]
    return [*launcher, f"--nproc-per-node={nproc}", "--config", str(config)]


def _finish(proc: subprocess.Popen[str]) -> str:
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the launcher did not finish in {RUN_TIMEOUT_S}s; output:\n{out[-8000:]}")
    return out


@pytest.mark.trainer
def test_bad_dataset_under_torchrun_ends_the_pod_with_exit_3(make_config: Any) -> None:
    records = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(10)] + [{"wrong": 1}] * 30
    path = make_config("prompt-completion", records=records, name="bad-data", distributed={"gpusPerNode": 0})
    proc = subprocess.Popen(
        _launcher(path), env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = _finish(proc)
    assert proc.returncode == ExitCode.INVALID_DATA, out[-6000:]
    summary = read_summary(path)
    assert summary["reason"] == "InvalidData", summary
    # the data stage ran once, on rank 0, and rank 1 ended with its verdict
    assert re.findall(r"\[rank (\d)\] .*preparing the data", out) == ["0"], out[-6000:]
    assert sorted(re.findall(r"\[rank (\d)\] .*exit 3 \(InvalidData\)", out)) == ["0", "1"], out[-6000:]
    assert _ranks_that_left_the_group(out) == ["0", "1"], out[-6000:]


def _ranks_that_left_the_group(out: str) -> list[str]:
    return sorted(re.findall(r"\[rank (\d)\] .*left the process group", out))


@pytest.mark.trainer
def test_a_finished_run_leaves_its_process_group_before_the_interpreter_exits(
    make_config: Any, tmp_path: Path
) -> None:
    """Each rank destroys its group on the way out. Left to the interpreter's teardown, a rank could abort
    after a finished run (SIGABRT, "terminate called without an active exception"), torchrun then exits
    non-zero, and the Job fails or retrains a run whose summary says Succeeded."""
    path = make_config(
        "prompt-completion",
        name="leaves-group",
        hyperparameters={"maxSteps": 2, "batchSize": 2},
        evaluation={"compareBase": False},
        distributed={"gpusPerNode": 0},
    )
    reports = tmp_path / "reports"
    worker = Path(__file__).parent / "trainer_then_report.py"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.Popen(
        [*torchrun, str(worker), str(path), str(reports)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = _finish(proc)
    assert read_summary(path)["phase"] == "Succeeded", out[-6000:]
    ranks = {p.name: json.loads(p.read_text()) for p in sorted(reports.glob("rank*.json"))}
    assert ranks == {
        "rank0.json": {"code": 0, "group_up": False},
        "rank1.json": {"code": 0, "group_up": False},
    }, out[-6000:]
    assert proc.returncode == 0, out[-6000:]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(t) for t in text]
    return out


def _worker_pid(launcher: int, rank: int) -> int | None:
    for child in _children(launcher):
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"LOCAL_RANK=" + str(rank).encode() in environ:
            return child
    return None


def _wait_for_step(proc: subprocess.Popen[str], lines: list[str], step: int) -> None:
    """Read output until rank 0 logs training step ``step``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    pattern = re.compile(r"step (\d+)/")
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail("the launcher ended before training reached step {step}:\n" + "".join(lines[-80:]))
        lines.append(line)
        found = pattern.search(line)
        if found and int(found.group(1)) >= step:
            return
    pytest.fail(f"training did not reach step {step} in {RUN_TIMEOUT_S}s")


@pytest.mark.trainer
@pytest.mark.parametrize("target", ["one-rank", "launcher"])
def test_sigterm_stops_every_rank_at_one_step_with_one_checkpoint(make_config: Any, target: str) -> None:
    """``one-rank``: only rank 1 is signalled (the preempted pod of a multi-node run); ``launcher``: the
    kubelet's SIGTERM to the container's PID 1."""
    path = make_config(
        "prompt-completion",
        name=f"sigterm-{target}",
        hyperparameters={"maxSteps": 5000, "batchSize": 2},
        checkpointing={"everySteps": 100000},
        evaluation={"evalSteps": 100000, "compareBase": False},
        distributed={"gpusPerNode": 0},
    )
    proc = subprocess.Popen(
        _launcher(path), env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        _wait_for_step(proc, lines, 3)
        if target == "launcher":
            proc.send_signal(signal.SIGTERM)
        else:
            worker = _worker_pid(proc.pid, 1)
            assert worker is not None, "no rank-1 worker found under the launcher"
            os.kill(worker, signal.SIGTERM)
    finally:
        out = "".join(lines) + _finish(proc)
    assert proc.returncode == ExitCode.RETRIABLE, out[-6000:]
    stops = dict(re.findall(r"\[rank (\d)\] .*SIGTERM at step (\d+)", out))
    assert set(stops) == {"0", "1"}, out[-6000:]
    assert stops["0"] == stops["1"], f"ranks stopped at different steps: {stops}"
    checkpoints = sorted(p.name for p in (output_of(path) / "checkpoints").rglob("checkpoint-*"))
    assert checkpoints == [f"checkpoint-{stops['0']}"], checkpoints
    summary = read_summary(path)
    assert summary["reason"] == "InfrastructureError" and summary["checkpoint"]["step"] == int(stops["0"])
    assert _ranks_that_left_the_group(out) == ["0", "1"], out[-6000:]
