"""An existing child is reused only when this FineTuneJob (uid) made it from this spec (hash)."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from finetune_operator.builders import Owner, build_children
from finetune_operator.children import belongs_to_run, controller_uid, server_message


def test_only_our_own_child_from_this_spec_is_reused(settings, make_spec):
    owner = Owner(name="x", namespace="ns", uid="uid-now")
    [job] = build_children(owner, make_spec(), 1, "hash-b", settings)
    assert belongs_to_run(job, owner, "hash-b")
    assert not belongs_to_run(job, owner, "hash-a"), "made from another spec before a crash"
    previous = Owner(name="x", namespace="ns", uid="uid-before")
    [old_job] = build_children(previous, make_spec(), 1, "hash-b", settings)
    assert controller_uid(old_job) == "uid-before"
    assert not belongs_to_run(old_job, owner, "hash-b"), "left by a deleted FineTuneJob of the same name"
    unowned = {"metadata": {"name": "x-r1", "annotations": {"finetuning.io/spec-hash": "hash-b"}}}
    assert not belongs_to_run(unowned, owner, "hash-b")


def test_the_api_servers_message_is_what_the_user_reads():
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = '{"kind":"Status","message":"jobs.batch \\"x-r2\\" is forbidden: exceeded quota: q"}'
    assert server_message(exc) == 'jobs.batch "x-r2" is forbidden: exceeded quota: q'
    exc.body = "not json"
    assert server_message(exc) == "Forbidden"
