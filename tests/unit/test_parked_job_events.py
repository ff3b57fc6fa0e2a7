"""Job events that wait for the running reconcile of their FineTuneJob (handlers.ParkedJobEvents)."""

from __future__ import annotations

import threading

from finetune_operator.handlers import should_queue
from finetune_operator.parked_job_events import ParkedJobEvents

KEY = ("ns", "ftj")


def job(name: str, active: int = 0) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": {"active": active}}


def test_an_event_is_parked_only_while_its_finetunejobs_reconcile_runs() -> None:
    parked = ParkedJobEvents()
    assert not parked.park(KEY, job("ftj-r1"), False), "no reconcile running: the caller handles it now"
    parked.open(KEY)
    assert parked.park(KEY, job("ftj-r1"), False)
    assert not parked.park(("ns", "other"), job("other-r1"), False)
    assert parked.drain(KEY) == [(job("ftj-r1"), False)]
    assert parked.park(KEY, job("ftj-r1", active=1), False), "still open while the drained ones are handled"
    assert parked.drain(KEY) == [(job("ftj-r1", active=1), False)]
    assert parked.drain(KEY) == [], "nothing left: the key closes"
    assert not parked.park(KEY, job("ftj-r1", active=2), False), "closed: handled by the caller again"


def test_the_newest_event_of_each_job_is_handed_back_in_arrival_order() -> None:
    parked = ParkedJobEvents()
    parked.open(KEY)
    parked.park(KEY, job("ftj-r1"), False)
    parked.park(KEY, job("ftj-r2"), False)
    parked.park(KEY, job("ftj-r1", active=1), True)
    assert parked.drain(KEY) == [(job("ftj-r2"), False), (job("ftj-r1", active=1), True)]


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
    handed_back: list[str] = []
    while batch := parked.drain(KEY):
        handed_back += [j["metadata"]["name"] for j, _ in batch]  # type: ignore[index]
    for t in threads:
        t.join()
    assert sorted(handed_back) == sorted(accepted), f"round {rounds_left}"


def test_no_event_is_lost_between_a_park_and_the_reconciles_end() -> None:
    """Threads park while the reconcile closes: every event is either handed back or refused."""
    for i in range(50):
        _race(i)


def test_an_event_newer_than_a_parked_one_is_never_handled_before_it() -> None:
    """Review finding: a parked event replayed after a newer one was handled directly rewrote status
    backwards (Kueue: Queued after Running). While the key is open every event parks, and it stays
    open until a drain finds nothing."""
    parked = ParkedJobEvents()
    parked.open(KEY)
    assert parked.park(KEY, job("ftj-r1"), False)  # E1, while the reconcile runs
    first = parked.drain(KEY)  # the reconcile ended: E1 is being handled ...
    assert parked.park(KEY, job("ftj-r1", active=1), False), "... so E2 waits behind it"
    assert first == [(job("ftj-r1"), False)]
    assert parked.drain(KEY) == [(job("ftj-r1", active=1), False)]
    assert parked.drain(KEY) == []
    parked.open(KEY)
    parked.close(KEY)
    assert not parked.park(KEY, job("ftj-r1"), False), "close drops the key whatever is left"


def test_a_change_undone_while_a_reconcile_runs_is_reconciled_again() -> None:
    """Review finding: with the last handled state compared first, a label added and removed while a
    reconcile of the added one ran left the object unreconciled in its final state."""
    handled, added = 1, 2
    assert not should_queue(added, running=added, handled=handled, retrying=None), "its own status write"
    assert should_queue(handled, running=added, handled=handled, retrying=None)
    assert not should_queue(handled, running=None, handled=handled, retrying=None)
    assert not should_queue(added, running=None, handled=handled, retrying=added), "waits for its backoff"
    assert should_queue(3, running=None, handled=handled, retrying=added)
