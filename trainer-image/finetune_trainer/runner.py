"""One training run, stage by stage, ending in an exit code and a termination summary.

The stages themselves are in ``stages``; whatever goes wrong is mapped to an ``ExitCode`` of the
contract (``failures``), so the operator can tell a bad spec (fail the Job at once) from a broken node
(retry and resume). The summary (``run_record``) is written to ``config.termination_log`` on every
path out, success or not, because it is the only thing the operator reads after the pod is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from finetune_api import wellknown
from finetune_api.exitcodes import ExitCode, meaning_of
from finetune_api.spec import TrainerConfig
from finetune_api.validation import format_errors
from finetune_trainer.failures import Failure, classify
from finetune_trainer.run_record import RunRecord, note_checkpoint, write_summary

log = logging.getLogger(__name__)


def load_config(path: str | Path) -> TrainerConfig:
    """Parse the trainer config; raises Failure(INVALID_CONFIG) naming the bad fields."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise Failure(ExitCode.INVALID_CONFIG, f"cannot read the trainer config {path}: {exc}") from exc
    try:
        return TrainerConfig.model_validate_json(text)
    except ValidationError as exc:
        problems = format_errors(exc, limit=10)
        raise Failure(ExitCode.INVALID_CONFIG, f"invalid trainer config {path}: {problems}") from exc


def termination_log_of(path: str | Path) -> str:
    """The termination-log path named in a config that may not parse; the default otherwise."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        value = raw.get("terminationLog") or raw.get("termination_log")
        return str(value) if value else wellknown.TERMINATION_LOG
    except (OSError, ValueError, AttributeError):
        return wellknown.TERMINATION_LOG


def run_config_file(path: str | Path) -> int:
    """``run`` for a config file; a config that does not load still ends with a summary and its code."""
    try:
        config = load_config(path)
    except Failure as failure:
        record = RunRecord()
        write_summary(termination_log_of(path), failure.code, failure.message, record)
        log.error("%s", failure.message)
        return int(failure.code)
    return run(config)


def run(config: TrainerConfig) -> int:
    """Train, evaluate and save as the config says; returns the exit code (the summary is written)."""
    from finetune_trainer.callbacks import GracefulStop
    from finetune_trainer.distributed import world_info
    from finetune_trainer.metrics_server import MetricsServer, TrainerMetrics, stage_of
    from finetune_trainer.stages import train_and_evaluate

    world = world_info()
    metrics = TrainerMetrics()
    record = RunRecord(on_stage=lambda stage: metrics.set_stage(stage_of(stage)))
    server = None
    if world.local_rank == 0 and config.metrics_port:
        try:
            server = MetricsServer(metrics, config.metrics_port)
        except OSError as exc:
            log.warning("metrics endpoint on port %d not started: %s", config.metrics_port, exc)
    stop = GracefulStop()
    stop.install()
    code, message = ExitCode.SUCCEEDED, "training and evaluation finished"
    try:
        message = train_and_evaluate(config, record, metrics, stop) or message
    except BaseException as exc:  # every way out gets an exit code and a summary
        code, message = classify(exc, record.stage)
    finally:
        stop.uninstall()
        note_checkpoint(config, record)
    if world.local_rank == 0:
        write_summary(config.termination_log, code, message, record)
    if server is not None:
        server.close()
    log.info("exit %d (%s): %s", int(code), meaning_of(code).reason, message)
    _leave_process_group(int(code))
    return int(code)


def _leave_process_group(code: int) -> None:
    """Every rank destroys its group before the interpreter exits (see ``leave_process_group``); one that
    hangs there ends the process with the run's own code, skipping the teardown that would hang too."""
    from finetune_trainer.distributed import LEAVE_TIMEOUT_S, leave_process_group

    try:
        left = leave_process_group(LEAVE_TIMEOUT_S)
    except Exception as exc:
        log.warning("the process group could not be torn down: %s", exc)
        return
    if left is None:
        return
    if left:
        log.info("left the process group")
        return
    log.error("the process group was not torn down in %.0f s; exiting %d without it", LEAVE_TIMEOUT_S, code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
