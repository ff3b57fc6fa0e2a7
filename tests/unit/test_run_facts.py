"""RunFacts: what following a run needs from its spec, also from a spec this version refuses."""

from __future__ import annotations

from finetune_api.spec import FineTuneJobSpec
from finetune_operator.preflight_wait import DEFAULT_TIMEOUT_SECONDS
from finetune_operator.run_facts import RunFacts

VALID = {
    "model": {"name": "org/model"},
    "dataset": {"source": {"uri": "s3://b/train.jsonl"}},
    "method": "full",
    "suspend": True,
    "scheduling": {"queueName": "team-a"},
    "secrets": {"storage": "s3-creds"},
    "distributed": {"gpusPerNode": 4, "nodes": 2},
    "preflightTimeoutSeconds": 30,
}


def test_a_refused_spec_gives_the_facts_the_parsed_one_would():
    parsed = RunFacts.of(FineTuneJobSpec.model_validate(VALID))
    refused = {**VALID, "resources": {"gpuResourceName": "not a resource name"}, "method": "bogus"}
    assert RunFacts.lenient(refused) == parsed == RunFacts(True, True, True, 8, 30)


def test_each_part_that_does_not_fit_reads_as_unset():
    hostile = {
        "suspend": "yes",
        "scheduling": ["not", "a", "mapping"],
        "secrets": {"storage": "Not_A_DNS_Name", "hubToken": {"name": 3}},
        "distributed": {"gpusPerNode": -1, "nodes": 2},
        "preflightTimeoutSeconds": True,
    }
    facts = RunFacts.lenient(hostile)
    assert facts == RunFacts(False, False, False, 2, DEFAULT_TIMEOUT_SECONDS)
    assert RunFacts.lenient(None) == RunFacts(False, False, False, 1, DEFAULT_TIMEOUT_SECONDS)
