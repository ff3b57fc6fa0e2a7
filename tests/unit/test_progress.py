from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from finetune_api.conditions import Reason
from finetune_api.metrics import Metric, Stage, metric_name
from finetune_api.status import FineTuneJobStatus
from finetune_operator.progress import apply_progress, stage_name
from finetune_operator.scrape import parse_metrics
from finetune_operator.status import condition

TEXT = "\n".join(
    [
        f"{metric_name(Metric.STEP)} 50",
        f"{metric_name(Metric.TOTAL_STEPS)} 200",
        f"{metric_name(Metric.EPOCH)} 0.75",
        f"{metric_name(Metric.TRAIN_LOSS)} 1.25",
        f"{metric_name(Metric.EVAL_LOSS)} NaN",
        f"{metric_name(Metric.TOKENS_PER_SECOND)} 1234.5",
        f'{metric_name(Metric.MEMORY_BYTES)}{{device="cuda:0"}} 100',
        f'{metric_name(Metric.MEMORY_BYTES)}{{device="cuda:1"}} 300',
        f"{metric_name(Metric.ETA_SECONDS)} 600",
        "unrelated_metric 7",
        "",
    ]
)


def test_parse_contract_metrics():
    values = parse_metrics(TEXT)
    assert values[Metric.STEP] == 50 and values[Metric.MEMORY_BYTES] == 300
    assert "unrelated_metric" not in values


def test_progress_and_stall():
    st = FineTuneJobStatus()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    apply_progress(st, parse_metrics(TEXT), now, 900, 1)
    assert st.progress.summary == "50/200" and st.progress.percent == 25
    assert st.metrics.train_loss == 1.25 and st.metrics.eval_loss is None
    assert condition(st, "Stalled") is None
    apply_progress(st, parse_metrics(TEXT), now + timedelta(seconds=901), 900, 1)
    assert condition(st, "Stalled").status == "True"
    moved = TEXT.replace(f"{metric_name(Metric.STEP)} 50", f"{metric_name(Metric.STEP)} 51")
    apply_progress(st, parse_metrics(moved), now + timedelta(seconds=950), 900, 1)
    assert condition(st, "Stalled").status == "False"


def test_a_failed_scrape_keeps_the_last_good_progress_and_still_stalls():
    """One failed scrape used to blank status.progress, so the PROGRESS column flapped."""
    st = FineTuneJobStatus()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    apply_progress(st, parse_metrics(TEXT), now, 900, 1)
    good = st.progress.model_copy()
    apply_progress(st, {}, now + timedelta(seconds=30), 900, 1)
    assert st.progress == good and st.progress.summary == "50/200"
    assert condition(st, "Stalled") is None
    apply_progress(st, {}, now + timedelta(seconds=901), 900, 1)
    assert st.progress.summary == "50/200" and condition(st, "Stalled").status == "True"


def page(stage: str | None, step: int = 100, last_step: datetime | None = None) -> dict[str, float]:
    """A scrape of the trainer's own exporter in ``stage`` (None: a trainer that exports no stage)."""
    from prometheus_client import generate_latest

    from finetune_trainer.metrics_server import TrainerMetrics

    metrics = TrainerMetrics()
    metrics.on_step(step, 100, 1.0, when=(last_step or T0).timestamp())
    text = generate_latest(metrics.registry).decode()
    if stage is None:
        text = "\n".join(line for line in text.splitlines() if metric_name(Metric.STAGE) not in line)
    else:
        metrics.set_stage(stage)
        text = generate_latest(metrics.registry).decode()
    return parse_metrics(text)


T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATE = T0 + timedelta(hours=1)  # an hour after the last step: far past the 900 s stall timeout


@pytest.mark.parametrize(
    ("stage", "stalled", "reason"),
    [
        (None, "True", Reason.NO_PROGRESS),  # a trainer without the stage metric: steps alone, as before
        (Stage.TRAINING, "True", Reason.NO_PROGRESS),  # first seen in training an hour after its last step
        (Stage.LOADING, None, None),
        (Stage.DATA, None, None),
        (Stage.EVALUATING, None, None),
        (Stage.SAVING, None, None),
        (Stage.MERGING, None, None),
        (Stage.UPLOADING, None, None),
    ],
)
def test_stalled_only_while_training_steps_are_expected(stage, stalled, reason):
    st = FineTuneJobStatus()
    apply_progress(st, page(stage), LATE, 900, 1)
    found = condition(st, "Stalled")
    assert (found.status if found else None) == stalled and (found.reason if found else None) == reason
    assert st.progress.stage == stage and st.progress.summary == "100/100"


def test_a_stall_clears_when_the_trainer_leaves_training_and_the_clock_restarts_when_it_returns():
    st = FineTuneJobStatus()
    apply_progress(st, page(Stage.TRAINING, 50), LATE, 900, 1)
    assert condition(st, "Stalled").status == "True"
    apply_progress(st, page(Stage.EVALUATING, 50), LATE + timedelta(seconds=30), 900, 1)
    assert (condition(st, "Stalled").status, condition(st, "Stalled").reason) == (
        "False",
        Reason.NOT_TRAINING,
    )
    assert condition(st, "Stalled").message == "The trainer is evaluating; no training step is expected."
    back = LATE + timedelta(hours=1)  # a long evaluation round, then training again
    apply_progress(st, page(Stage.TRAINING, 50), back, 900, 1)
    assert (
        condition(st, "Stalled").status == "False" and st.progress.stage_since == f"{back:%Y-%m-%dT%H:%M:%SZ}"
    )
    apply_progress(st, page(Stage.TRAINING, 50), back + timedelta(seconds=899), 900, 1)
    assert condition(st, "Stalled").status == "False"
    apply_progress(st, {}, back + timedelta(seconds=901), 900, 1)  # a failed scrape keeps the stage
    assert condition(st, "Stalled").status == "True" and st.progress.stage == Stage.TRAINING
    assert condition(st, "Stalled").message == f"No step completed since {back:%Y-%m-%dT%H:%M:%SZ}."


@pytest.mark.parametrize(
    "line",
    [
        f'{metric_name(Metric.STAGE)}{{stage="sleeping"}} 1',  # not a stage of the contract
        f'{metric_name(Metric.STAGE)}{{stage="training"}} 0.5',
        f"{metric_name(Metric.STAGE)} 1",
    ],
)
def test_a_stage_outside_the_contract_is_ignored(line):
    assert stage_name(parse_metrics(f"{metric_name(Metric.STEP)} 5\n{line}\n")) is None
