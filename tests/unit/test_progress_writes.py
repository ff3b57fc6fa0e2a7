"""When the progress loop writes what it scraped: at once for what someone acts on, otherwise at most
every ``progress_write_interval``.

The loop scrapes every Running trainer each ``progress_interval`` (15 s); writing every moved step
made one status PUT per training job per sweep, the operator's largest steady write load at fleet
size. ``due`` decides, from the status as stored (``old``) and as it would be written (``new``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from finetune_api.conditions import ConditionType, Phase, Reason
from finetune_api.metrics import Metric, Stage
from finetune_api.results import CheckpointRef, TrainingMetrics
from finetune_api.status import FineTuneJobStatus, Progress, RunStatus
from finetune_operator.progress import apply_progress, due
from finetune_operator.progress_book import ProgressBook
from finetune_operator.settings import OperatorSettings
from finetune_operator.status import (
    JobView,
    ScrapedProgress,
    apply_phase,
    condition,
    observe_job,
    outcome,
)
from finetune_operator.transitions import Facts, JobGone, JobSeen, next_phase

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INTERVAL = 60.0
WRITTEN = 1000.0  # monotonic seconds of the last progress write


def running() -> FineTuneJobStatus:
    st = FineTuneJobStatus(
        run=RunStatus(number=1, job_name="demo-r1", spec_hash="h", generation=1, start_time="x")
    )
    apply_phase(st, Phase.RUNNING, Reason.PODS_RUNNING, "Trainer pods are running.", 1, "x")
    return st


def scraped(step: int, **extra: float) -> dict[str, float]:
    return {Metric.STEP: float(step), Metric.TOTAL_STEPS: 1000.0, Metric.TRAIN_LOSS: 1.0, **extra}


def after(old: FineTuneJobStatus, values: dict[str, float], seconds: float = 15) -> FineTuneJobStatus:
    new = old.model_copy(deep=True)
    apply_progress(new, values, T0 + timedelta(seconds=seconds), 900, 1)
    return new


def written(step: int, **extra: float) -> FineTuneJobStatus:
    return after(running(), scraped(step, **extra), 0)


def test_the_first_progress_of_a_run_is_written_at_once():
    old = running()
    new = after(old, scraped(1))
    assert due(WRITTEN, WRITTEN + 1, old, new, INTERVAL)


def test_a_moved_step_waits_for_the_write_interval():
    old = written(10)
    new = after(old, scraped(20, **{Metric.TRAIN_LOSS: 0.9, Metric.ETA_SECONDS: 500}))
    assert not due(WRITTEN, WRITTEN + 15, old, new, INTERVAL)
    assert not due(WRITTEN, WRITTEN + 59.9, old, new, INTERVAL)
    assert due(WRITTEN, WRITTEN + 60, old, new, INTERVAL)


def test_nothing_changed_is_never_written():
    old = written(10)
    assert not due(WRITTEN, WRITTEN + 3600, old, old.model_copy(deep=True), INTERVAL)
    assert not due(None, WRITTEN, old, old.model_copy(deep=True), INTERVAL)


def test_an_unknown_last_write_is_due():
    """After an operator restart nothing says when the stored progress was written: write it once."""
    old = written(10)
    assert due(None, WRITTEN, old, after(old, scraped(11)), INTERVAL)


def test_a_zero_interval_writes_every_change():
    old = written(10)
    assert due(WRITTEN, WRITTEN, old, after(old, scraped(11)), 0)


@pytest.mark.parametrize("stalled_first", [False, True])
def test_a_stall_and_its_end_are_written_at_once(stalled_first: bool):
    old = written(10)
    stalled = old.model_copy(deep=True)
    apply_progress(stalled, {}, T0 + timedelta(seconds=901), 900, 1)
    assert condition(stalled, ConditionType.STALLED).status == "True"
    if not stalled_first:
        assert due(WRITTEN, WRITTEN + 1, old, stalled, INTERVAL)
        return
    moving = stalled.model_copy(deep=True)
    apply_progress(moving, scraped(11), T0 + timedelta(seconds=950), 900, 1)
    assert condition(moving, ConditionType.STALLED).status == "False"
    assert due(WRITTEN, WRITTEN + 1, stalled, moving, INTERVAL)


def test_a_new_stage_is_written_at_once():
    old = written(10, **{Metric.STAGE: float(Stage.ALL.index(Stage.TRAINING))})
    new = after(old, scraped(10, **{Metric.STAGE: float(Stage.ALL.index(Stage.EVALUATING))}))
    assert new.progress is not None and new.progress.stage == Stage.EVALUATING
    assert due(WRITTEN, WRITTEN + 1, old, new, INTERVAL)


@pytest.mark.parametrize("metric", [Metric.EVAL_LOSS, Metric.BEST_EVAL_LOSS])
def test_a_new_evaluation_result_is_written_at_once(metric: str):
    old = written(10, **{metric: 2.0})
    assert due(WRITTEN, WRITTEN + 1, old, after(old, scraped(20, **{metric: 1.5})), INTERVAL)
    first = written(10)
    assert due(WRITTEN, WRITTEN + 1, first, after(first, scraped(10, **{metric: 1.5})), INTERVAL)


def test_a_new_plan_of_steps_is_written_at_once():
    old = written(10)
    assert due(WRITTEN, WRITTEN + 1, old, after(old, {**scraped(10), Metric.TOTAL_STEPS: 500.0}), INTERVAL)


def test_a_phase_or_checkpoint_change_is_written_at_once():
    old = written(10)
    failed = old.model_copy(deep=True)
    apply_phase(failed, Phase.FAILED, "x", "y", 1, "x")
    assert due(WRITTEN, WRITTEN + 1, old, failed, INTERVAL)
    saved = old.model_copy(deep=True)
    saved.last_checkpoint = CheckpointRef(step=10, uri="s3://b/c")
    assert due(WRITTEN, WRITTEN + 1, old, saved, INTERVAL)


def test_the_write_interval_setting():
    assert OperatorSettings().progress_write_interval_seconds == 60.0
    assert OperatorSettings.from_env({}).progress_write_interval_seconds == 60.0
    env = {"FTJ_PROGRESS_WRITE_INTERVAL": "30"}
    assert OperatorSettings.from_env(env).progress_write_interval_seconds == 30.0
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(ValueError, match="FTJ_PROGRESS_WRITE_INTERVAL"):
            OperatorSettings.from_env({"FTJ_PROGRESS_WRITE_INTERVAL": bad})


def test_the_book_keeps_the_newest_progress_per_run_and_forgets_ended_runs():
    book = ProgressBook()
    key = ("uid-1", "demo-r1")
    latest = ScrapedProgress(Progress(step=20), TrainingMetrics(train_loss=0.5))
    assert book.latest(key) is None and book.written_at(key) is None
    book.record(key, latest, written_at=None)
    assert book.latest(key) == latest and book.written_at(key) is None
    book.record(key, latest, written_at=WRITTEN)
    book.record(key, ScrapedProgress(Progress(step=21), None), written_at=None)
    assert book.written_at(key) == WRITTEN and book.latest(key).progress.step == 21
    book.keep_only({("uid-2", "other-r1")})
    assert book.latest(key) is None and book.written_at(key) is None


def _finish(st: FineTuneJobStatus, summary: str | None, latest: ScrapedProgress | None) -> None:
    job = {"status": {"startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:10:00Z"}}
    if summary is None:
        job["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
    else:
        job["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    view = JobView.from_job(job)
    observed = observe_job(view, False, False)
    result = outcome(observed, 0 if summary else 137, summary)
    obj = {"metadata": {"name": "demo", "namespace": "ml", "generation": 1}, "spec": {}}
    event = JobSeen("demo-r1", view, observed, result, gpus=1, latest=latest)
    assert next_phase(st, event, Facts(obj, 1, "2026-01-01T00:10:00Z", 5)).finished


def test_the_final_write_carries_the_newest_progress_scraped_after_the_last_write():
    """A run killed between two progress writes (OOM, no summary) keeps the step it really reached."""
    st = written(100)
    newest = after(st, scraped(140, **{Metric.TRAIN_LOSS: 0.7}))
    _finish(st, None, ScrapedProgress(newest.progress, newest.metrics))
    assert st.phase == Phase.FAILED
    assert st.progress is not None and st.progress.step == 140 and st.progress.summary == "140/1000"
    assert st.metrics is not None and st.metrics.train_loss == 0.7


def test_the_trainer_summary_still_has_the_last_word():
    st = written(100)
    newest = after(st, scraped(140, **{Metric.TRAIN_LOSS: 0.7}))
    summary = '{"version":1,"phase":"Succeeded","metrics":{"step":150,"total_steps":150,"train_loss":0.6}}'
    _finish(st, summary, ScrapedProgress(newest.progress, newest.metrics))
    assert st.phase == Phase.SUCCEEDED
    assert st.progress is not None and st.progress.summary == "150/150"
    assert st.metrics is not None and st.metrics.train_loss == 0.6


def test_an_older_scrape_never_replaces_newer_stored_progress():
    st = written(100)
    _finish(st, None, ScrapedProgress(Progress(step=90, total_steps=1000), None))
    assert st.progress is not None and st.progress.step == 100


def test_a_job_deleted_while_it_ran_keeps_the_newest_progress():
    st = written(100)
    newest = after(st, scraped(140))
    obj = {"metadata": {"name": "demo", "namespace": "ml", "generation": 1}, "spec": {}}
    gone = JobGone("demo-r1", ScrapedProgress(newest.progress, newest.metrics))
    assert next_phase(st, gone, Facts(obj, 1, "2026-01-01T00:10:00Z", 5)).counted == "failed"
    assert st.phase == Phase.FAILED and st.progress is not None and st.progress.step == 140
