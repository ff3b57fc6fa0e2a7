"""Job events that wait for the running reconcile of their FineTuneJob (handlers.ParkedJobEvents)."""

from __future__ import annotations

import threading

from finetune_operator.handlers import ParkedJobEvents

KEY = ("ns", "ftj")


def job(name: str, active: int = 0) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": {"active": active}}


def test_an_event_is_parked_only_while_its_finetunejobs_reconcile_runs() -> None:
    parked = ParkedJobEvents()
    assert not parked.park(KEY, job("ftj-r1"), False), "no reconcile running: the caller handles it now"
    parked.open(KEY)
    assert parked.park(KEY, job("ftj-r1"), False)
    assert not parked.park(("ns", "other"), job("other-r1"), False)
    assert parked.close(KEY) == [(job("ftj-r1"), False)]
    assert not parked.park(KEY, job("ftj-r1", active=1), False), "closed: handled by the caller again"
    assert parked.close(KEY) == []


def test_the_newest_event_of_each_job_is_handed_back_in_arrival_order() -> None:
    parked = ParkedJobEvents()
    parked.open(KEY)
    parked.park(KEY, job("ftj-r1"), False)
    parked.park(KEY, job("ftj-r2"), False)
    parked.park(KEY, job("ftj-r1", active=1), True)
    assert parked.close(KEY) == [(job("ftj-r2"), False), (job("ftj-r1", active=1), True)]


def _race(rounds_left: int) -> None:
    parked = ParkedJobEvents()
    parked.open(KEY)
    accepted: list[str] = []
    start = threading.Barrier(9)

    def park(i: int) -> None:
        start.wait()
        if parked.park(KEY, job(f"j{i}"), False):
            accepted.append(f"j{i}")

    threads = [threading.Thread(target=park, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    start.wait()
    handed_back = [j["metadata"]["name"] for j, _ in parked.close(KEY)]  # type: ignore[index]
    for t in threads:
        t.join()
    assert sorted(handed_back) == sorted(accepted), f"round {rounds_left}"


def test_no_event_is_lost_between_a_park_and_the_reconciles_end() -> None:
    """Threads park while the reconcile closes: every event is either handed back or refused."""
    for i in range(50):
        _race(i)
