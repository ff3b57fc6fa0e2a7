"""Bad FineTuneJobs are refused at the door by the API server, with a message naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from spec_cases import NAME_CASES, merge

pytestmark = pytest.mark.e2e

GOOD: dict[str, Any] = {
    "apiVersion": "finetuning.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "bad"},
    "spec": {"model": {"name": "org/m"}, "dataset": {"source": {"uri": "s3://b/train.jsonl"}}},
}

# (description, spec patch, text the API server's message must contain)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("missing model", {"model": None}, "spec.model"),
    ("missing dataset", {"dataset": None}, "spec.dataset"),
    ("unknown method", {"method": "adapter"}, "spec.method"),
    ("unknown task", {"task": "translation"}, "spec.task"),
    ("unknown objective", {"objective": "ppo"}, "spec.objective"),
    (
        "negative learning rate",
        {"hyperparameters": {"learningRate": -0.1}},
        "spec.hyperparameters.learningRate",
    ),
    ("zero learning rate", {"hyperparameters": {"learningRate": 0}}, "spec.hyperparameters.learningRate"),
    ("zero epochs", {"hyperparameters": {"epochs": 0}}, "spec.hyperparameters.epochs"),
    ("batch size 0", {"hyperparameters": {"batchSize": 0}}, "spec.hyperparameters.batchSize"),
    ("unknown scheduler", {"hyperparameters": {"scheduler": "step"}}, "spec.hyperparameters.scheduler"),
    (
        "splits sum to 1",
        {"dataset": {"splits": {"validation": 0.5, "test": 0.5}}},
        "splits.validation + splits.test",
    ),
    ("split fraction 1", {"dataset": {"splits": {"test": 1.0}}}, "spec.dataset.splits.test"),
    (
        "two sources",
        {"dataset": {"source": {"uri": "s3://b/x", "pvc": {"claimName": "d"}}}},
        "exactly one of",
    ),
    ("no source", {"dataset": {"source": {}}}, "exactly one of"),
    ("bad uri scheme", {"dataset": {"source": {"uri": "ftp://x/y"}}}, "spec.dataset.source.uri"),
    (
        "quantization without qlora",
        {"quantization": {"quantType": "nf4"}},
        "quantization is only valid with method qlora",
    ),
    (
        "deepspeed with lora",
        {"distributed": {"deepspeed": {"zeroStage": 2}}},
        "deepspeed is only valid with method full",
    ),
    ("multi-node lora", {"distributed": {"nodes": 2}}, "nodes > 1 needs method full"),
    ("qlora on 4 gpus", {"method": "qlora", "distributed": {"gpusPerNode": 4}}, "qlora runs on a single GPU"),
    (
        "dpo classification",
        {"task": "classification", "objective": "dpo"},
        "objective dpo needs task causal-lm",
    ),
    (
        "lora settings with full",
        {"method": "full", "lora": {"r": 8}},
        "lora settings are not used with method full",
    ),
    (
        "offload params on zero 2",
        {"method": "full", "distributed": {"deepspeed": {"zeroStage": 2, "offloadParameters": True}}},
        "offloadParameters needs zeroStage 3",
    ),
    ("zero stage 4", {"method": "full", "distributed": {"deepspeed": {"zeroStage": 4}}}, "zeroStage"),
    ("unknown field", {"learningrate": 0.1}, "learningrate"),
    (
        "quality gate without bound",
        {"evaluation": {"qualityGate": {"metric": "accuracy"}}},
        "needs min or max",
    ),
    (
        "unknown pii kind",
        {"dataset": {"cleaning": {"pii": {"kinds": ["passport-number"]}}}},
        "spec.dataset.cleaning.pii.kinds",
    ),
    ("bad memory quantity", {"resources": {"memory": "lots"}}, "spec.resources.memory"),
    ("negative backoff", {"backoffLimit": -1}, "spec.backoffLimit"),
    ("lora rank 0", {"lora": {"r": 0}}, "spec.lora.r"),
    ("bad leakage policy", {"dataset": {"leakage": "ignore"}}, "spec.dataset.leakage"),
    (
        "offload optimizer on zero 0",
        {"method": "full", "distributed": {"deepspeed": {"zeroStage": 0, "offloadOptimizer": True}}},
        "offloadOptimizer needs zeroStage 1 or higher",
    ),
    ("output to a configMap", {"output": {"source": {"configMap": {"name": "c", "key": "k"}}}}, "or a uri"),
    (
        "unserved scheme",
        {"dataset": {"source": {"uri": "https://example.com/train.jsonl"}}},
        "spec.dataset.source.uri",
    ),
    ("unserved output scheme", {"output": {"source": {"uri": "ftp://host/out"}}}, "spec.output.source.uri"),
]


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_good_manifest_is_accepted(crd_installed, kubectl, namespace):
    res = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(GOOD))
    assert "created" in res.stdout


@pytest.mark.parametrize("what, patch, expected", CASES + NAME_CASES, ids=[c[0] for c in CASES + NAME_CASES])
def test_bad_manifest_is_refused_naming_the_field(what, patch, expected, crd_installed, kubectl, namespace):
    doc = copy.deepcopy(GOOD)
    doc["spec"] = merge(GOOD["spec"], patch)
    res = kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert res.returncode != 0, f"{what}: accepted but should be refused"
    assert expected in res.stderr, f"{what}: {res.stderr}"


def test_valid_names_and_scheduling_are_accepted(crd_installed, kubectl, namespace):
    """The new rules refuse only what Kubernetes refuses: realistic names and placement pass."""
    doc = copy.deepcopy(GOOD)
    doc["spec"] = merge(
        GOOD["spec"],
        {
            "secrets": {"hubToken": {"name": "hf.token-1", "key": "HF_TOKEN"}, "storage": "s3-creds"},
            "model": {"source": {"pvc": {"claimName": "models.v2"}}},
            "resources": {"gpuResourceName": "amd.com/gpu"},
            "scheduling": {
                "queueName": "team-a",
                "priorityClassName": "high.priority",
                "nodeSelector": {"topology.kubernetes.io/zone": "eu-1a", "gpu": "H100_80GB"},
                "tolerations": [
                    {"operator": "Exists"},
                    {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "tolerationSeconds": 60},
                ],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a", "b"]}]}
                            ]
                        }
                    },
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 50,
                                "podAffinityTerm": {
                                    "topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": {"app": "x"}},
                                },
                            }
                        ]
                    },
                },
            },
        },
    )
    res = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    assert "created" in res.stdout
