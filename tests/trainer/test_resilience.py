"""Runs that are killed, preempted, diverge or stop early end the way the operator expects."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from runs import output_of, read_summary, trainer_env
from safetensors.torch import load_file

from finetune_api.exitcodes import ExitCode
from finetune_trainer.outputs import checkpoint_step, latest_checkpoint
from finetune_trainer.runner import load_config, run

pytestmark = pytest.mark.trainer

# Long enough (3 epochs) that a kill after the second checkpoint lands mid-run.
RESUME_SPEC: dict[str, Any] = {
    "hyperparameters": {"maxSteps": 24},
    "checkpointing": {"everySteps": 4, "keep": 3},
    "evaluation": {"compareBase": False, "generationMetrics": False},
}


def start_trainer(config: Path, log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "finetune_trainer", "--config", str(config)],
        env=trainer_env(),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def wait_until(condition: Any, proc: subprocess.Popen[bytes], log: Path, deadline_s: float = 180.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"trainer exited {proc.returncode} too early:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for the trainer:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def out_checkpoint(out: Path, step: int) -> Path:
    """checkpoint-<step> of the run's own checkpoint directory (checkpoints/run-<n>-<spec hash>/)."""
    [path] = out.glob(f"checkpoints/run-*/checkpoint-{step}")
    return path


def adapter(out: Path) -> dict[str, Any]:
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_resume_after_kill_matches_an_uninterrupted_run(make_config, tmp_path: Path) -> None:
    reference = make_config(name="uninterrupted", **RESUME_SPEC)
    assert run(load_config(reference)) == ExitCode.SUCCEEDED

    killed = make_config(name="killed", **RESUME_SPEC)
    out = output_of(killed)
    proc = start_trainer(killed, tmp_path / "killed.log")
    wait_until(lambda: (checkpoint_step(latest_checkpoint(out)) or 0) >= 8, proc, tmp_path / "killed.log")
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stopped_at = checkpoint_step(latest_checkpoint(out))
    assert stopped_at is not None and stopped_at < 24

    assert run(load_config(killed)) == ExitCode.SUCCEEDED  # the restart resumes on its own
    resumed_state = json.loads((out_checkpoint(out, 24) / "trainer_state.json").read_text())
    reference_state = json.loads(
        (out_checkpoint(output_of(reference), 24) / "trainer_state.json").read_text()
    )
    assert resumed_state["global_step"] == reference_state["global_step"] == 24
    assert read_summary(killed)["metrics"]["step"] == 24

    want, got = adapter(output_of(reference)), adapter(out)
    assert want.keys() == got.keys()
    for name, tensor in want.items():
        assert (tensor - got[name]).abs().max().item() < 1e-5, name


def test_sigterm_saves_a_checkpoint_and_exits_retriable(make_config, tmp_path: Path) -> None:
    config = make_config(
        name="preempted",
        hyperparameters={"maxSteps": 400},
        checkpointing={"everySteps": 1000},
        evaluation={"compareBase": False},
    )
    log = tmp_path / "preempted.log"
    proc = start_trainer(config, log)
    wait_until(lambda: log.exists() and " step 3/400" in log.read_text(), proc, log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == ExitCode.RETRIABLE, log.read_text()[-3000:]

    summary = read_summary(config)
    assert summary["reason"] == "InfrastructureError"
    assert "SIGTERM" in summary["message"]
    step = summary["checkpoint"]["step"]
    assert 3 <= step < 400
    assert re.search(rf"/checkpoints/run-1-[0-9a-f]{{10}}/checkpoint-{step}$", summary["checkpoint"]["uri"])
    assert (out_checkpoint(output_of(config), step) / "trainer_state.json").is_file()


def test_infinite_loss_stops_with_exit_code_5(make_config, monkeypatch: pytest.MonkeyPatch) -> None:
    from trl import SFTTrainer

    compute_loss = SFTTrainer.compute_loss
    calls = {"train": 0}

    def poisoned(self: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        result = compute_loss(self, model, *args, **kwargs)
        if model.training:
            calls["train"] += 1
            if calls["train"] >= 3:
                loss = result[0] if isinstance(result, tuple) else result
                loss = loss * float("inf")
                return (loss, *result[1:]) if isinstance(result, tuple) else loss
        return result

    monkeypatch.setattr(SFTTrainer, "compute_loss", poisoned)
    config = make_config(name="diverges", checkpointing={"everySteps": 1})
    assert run(load_config(config)) == ExitCode.LOSS_NOT_FINITE

    summary = read_summary(config)
    assert summary["phase"] == "Failed"
    assert summary["reason"] == "LossNotFinite"
    assert "step 3" in summary["message"]
    # The poisoned step never became a checkpoint a restart could resume from.
    assert checkpoint_step(latest_checkpoint(output_of(config))) == 2


def test_early_stopping_stops_and_keeps_the_best_checkpoint(make_config) -> None:
    config = make_config(
        name="early",
        hyperparameters={"maxSteps": 40, "learningRate": 1e-9},
        earlyStopping={"enabled": True, "patience": 2, "minDelta": 0.5},
        evaluation={"evalSteps": 2, "compareBase": False, "generationMetrics": False},
        checkpointing={"everySteps": 2, "keep": 1},
    )
    assert run(load_config(config)) == ExitCode.SUCCEEDED
    metrics = read_summary(config)["metrics"]
    # First evaluation (step 2) sets the best; two without a 0.5 improvement end the run at step 6.
    assert metrics["step"] == 6
    assert metrics["best_step"] == 2
    assert out_checkpoint(output_of(config), 2).is_dir()


def test_non_finite_gradient_norm_stops_before_the_loss_shows_it(make_config, monkeypatch) -> None:
    """A NaN gradient poisons the weights at the optimizer step; the loss shows it only a step later.
    The guard stops at the step whose gradient norm is NaN, and that step is never checkpointed."""
    from finetune_trainer import modeling

    real = modeling.load_model
    hooked: dict[str, int] = {"calls": 0}

    def load_with_nan_gradients(*args: Any, **kwargs: Any) -> Any:
        loaded = real(*args, **kwargs)
        trainable = next(p for p in loaded.model.parameters() if p.requires_grad)

        def poison(grad: Any) -> Any:
            hooked["calls"] += 1
            return grad * float("nan") if hooked["calls"] >= 3 else grad

        trainable.register_hook(poison)
        return loaded

    monkeypatch.setattr(modeling, "load_model", load_with_nan_gradients)
    config = make_config(
        name="nan-grad",
        hyperparameters={"maxSteps": 8},
        checkpointing={"everySteps": 1, "keep": 10},
        evaluation={"compareBase": False, "generationMetrics": False},
    )
    assert run(load_config(config)) == ExitCode.LOSS_NOT_FINITE
    summary = read_summary(config)
    assert "gradient norm became nan at step 3" in summary["message"], summary["message"]
    assert checkpoint_step(latest_checkpoint(output_of(config))) == 2
