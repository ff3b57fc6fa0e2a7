"""The operator's copy of FineTuneJobs: the newest version wins, whichever path brings it
(operator/finetune_operator/ftj_index.py)."""

from __future__ import annotations

from typing import Any

from finetune_operator.ftj_index import FtjIndex


def body(rv: str, uid: str = "u1", phase: str | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "finetuning.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "a", "namespace": "ns", "uid": uid, "resourceVersion": rv, **meta},
        "spec": {"method": "lora"},
        "status": {"phase": phase} if phase else {},
    }


def test_a_late_watch_event_never_replaces_what_our_own_write_returned() -> None:
    index = FtjIndex()
    assert index.offer(body("10", phase="Pending"))
    written = index.offer(body("12", phase="Running"))  # our status write's response
    assert written is not None
    assert index.offer(body("11", phase="Pending")) is None  # the watch catching up
    assert index[("ns", "a")][0]["status"] == {"phase": "Running"}
    assert index.offer(body("13", phase="Succeeded"))
    assert index[("ns", "a")][0]["status"] == {"phase": "Succeeded"}


def test_a_recreated_object_replaces_the_copy_and_late_events_of_the_old_one_do_not() -> None:
    index = FtjIndex()
    index.offer(body("50", uid="old"))
    assert index.offer(body("60", uid="new")) is not None  # deleted and created again: a newer revision
    assert index.offer(body("55", uid="old")) is None  # the old object's late event
    assert index[("ns", "a")][0]["metadata"]["uid"] == "new"
    # The old object's late DELETED leaves the new one alone; its own DELETED removes it.
    assert index.drop(("ns", "a"), "old") is False
    assert ("ns", "a") in index
    assert index.drop(("ns", "a"), "new") is True
    assert ("ns", "a") not in index
    assert index.offer(body("not-a-number")) is not None


def test_what_the_operator_wrote_never_brings_back_a_deleted_object() -> None:
    """A status write that returns after the DELETED event (the progress loop, a running reconcile)."""
    index = FtjIndex()
    index.offer(body("10", phase="Running"))
    index.drop(("ns", "a"), "u1")
    assert index.offer(body("11", phase="Running"), insert=False) is None
    assert ("ns", "a") not in index
    index.offer(body("20", uid="u2"))  # recreated
    assert index.offer(body("21", uid="u1"), insert=False) is None, "another object's write"
    assert index[("ns", "a")][0]["metadata"]["uid"] == "u2"
    assert index.offer(body("22", uid="u2", phase="Pending"), insert=False) is not None


def test_the_copy_is_slim() -> None:
    index = FtjIndex()
    kept = index.offer(
        body(
            "1",
            managedFields=[{"manager": "kubectl"}],
            annotations={
                "kopf.finetuning.io/last-handled-configuration": "{}",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "finetuning.io/rerun": "x",
            },
        )
    )
    assert kept is not None
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"finetuning.io/rerun": "x"}


def test_a_kept_body_shares_nothing_with_the_event_and_is_copied_without_deepcopy(monkeypatch: Any) -> None:
    """Every FineTuneJob event and every status write's answer is kept: copy.deepcopy's memo and
    type dispatch took three times as long as copying the decoded JSON's dicts and lists."""
    import copy

    deepcopies: list[Any] = []
    real = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda x, *a: deepcopies.append(x) or real(x, *a))
    event = body("10", phase="Running", labels={"team": "nlp"})
    event["spec"]["hyperparameters"] = {"epochs": 1}
    event["status"]["conditions"] = [{"type": "Running", "status": "True"}]

    index = FtjIndex()
    kept = index.offer(event)

    assert kept is not None
    assert deepcopies == []
    event["metadata"]["labels"]["team"] = "changed"
    event["spec"]["hyperparameters"]["epochs"] = 9
    event["status"]["conditions"][0]["status"] = "False"
    assert kept["metadata"]["labels"] == {"team": "nlp"}
    assert kept["spec"]["hyperparameters"] == {"epochs": 1}
    assert kept["status"]["conditions"] == [{"type": "Running", "status": "True"}]
