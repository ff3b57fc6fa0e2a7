from __future__ import annotations

from datetime import UTC, datetime, timedelta

from finetune_api.metrics import Metric, metric_name
from finetune_api.status import FineTuneJobStatus
from finetune_operator.progress import apply_progress
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
