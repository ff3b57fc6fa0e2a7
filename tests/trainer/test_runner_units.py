"""Pure parts of the runner: exit-code mapping, checkpoint discovery, metrics registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_api.exitcodes import ExitCode
from finetune_api.metrics import Metric, metric_name
from finetune_trainer.failures import Failure, classify
from finetune_trainer.metrics_server import TrainerMetrics
from finetune_trainer.outputs import latest_checkpoint


def test_exceptions_map_to_contract_exit_codes() -> None:
    import torch

    from finetune_trainer.callbacks import LossNotFinite, Terminated
    from finetune_trainer.data.pipeline import DataError
    from finetune_trainer.modeling import ModelLoadFailed

    assert classify(DataError(["line 2: bad"]), "data")[0] == ExitCode.INVALID_DATA
    assert classify(ModelLoadFailed("gone"), "model")[0] == ExitCode.MODEL_LOAD_FAILED
    assert classify(LossNotFinite("nan"), "train")[0] == ExitCode.LOSS_NOT_FINITE
    assert classify(Terminated("bye"), "train")[0] == ExitCode.RETRIABLE
    assert classify(torch.OutOfMemoryError("cuda"), "train")[0] == ExitCode.OOM_KILLED
    assert classify(ValueError("bad combination"), "setup")[0] == ExitCode.INVALID_CONFIG
    assert classify(ConnectionError("s3 unreachable"), "save")[0] == ExitCode.RETRIABLE
    assert classify(Failure(ExitCode.QUALITY_GATE_FAILED, "low"), "evaluate") == (
        ExitCode.QUALITY_GATE_FAILED,
        "low",
    )


def test_latest_checkpoint_skips_a_partial_save(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step, state in ((4, "{}"), (8, "{}"), (12, None), (16, '{"trunc')):
        (root / f"checkpoint-{step}").mkdir(parents=True)
        if state is not None:
            (root / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert latest_checkpoint(tmp_path) == root / "checkpoint-8"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_metrics_registry_has_every_contract_name_before_training() -> None:
    metrics = TrainerMetrics()
    names = {family.name for family in metrics.registry.collect()}
    for short in Metric.ALL:
        # prometheus_client reports counter families without their _total suffix
        assert metric_name(short).removesuffix("_total") in names, short


def test_eta_from_the_step_rate() -> None:
    metrics = TrainerMetrics()
    for step in range(1, 11):
        metrics.on_step(step, 100, step / 10, when=1000.0 + step * 2.0)
    assert metrics.value(Metric.ETA_SECONDS) == pytest.approx(180.0)
    metrics.on_eval_loss(2.0)
    metrics.on_eval_loss(3.0)
    assert metrics.value(Metric.BEST_EVAL_LOSS) == 2.0
    assert metrics.value(Metric.EVAL_LOSS) == 3.0
