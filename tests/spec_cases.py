"""Spec patches that name things Kubernetes can never accept, shared by the CRD test (e2e) and the
model test (unit): the API server and ``FineTuneJobSpec`` must refuse the same ones, naming the field.
"""

from __future__ import annotations

import copy
from typing import Any

# (description, spec patch (None removes a key), text the error must contain)
# Names and fields the API server accepted before although no Job could ever be built from them.
NAME_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "secret name with a slash",
        {"secrets": {"hubToken": {"name": "../../kube-system/secrets/x", "key": "t"}}},
        "spec.secrets.hubToken.name",
    ),
    ("storage secret with a slash", {"secrets": {"storage": "a/b"}}, "spec.secrets.storage"),
    (
        "secret key with ..",
        {"secrets": {"hubToken": {"name": "hub", "key": ".."}}},
        "spec.secrets.hubToken.key",
    ),
    (
        "model cache claim with a slash",
        {"model": {"cache": {"claimName": "a/b"}}},
        "spec.model.cache.claimName",
    ),
    ("serviceAccountName with a colon", {"serviceAccountName": "system:admin"}, "spec.serviceAccountName"),
    ("queue name with a space", {"scheduling": {"queueName": "team a"}}, "spec.scheduling.queueName"),
    ("invalid priorityClassName", {"scheduling": {"priorityClassName": "High_Prio"}}, "priorityClassName"),
    (
        "invalid nodeSelector key",
        {"scheduling": {"nodeSelector": {"bad key!": "x"}}},
        "spec.scheduling.nodeSelector",
    ),
    (
        "invalid nodeSelector value",
        {"scheduling": {"nodeSelector": {"zone": "a b"}}},
        "spec.scheduling.nodeSelector",
    ),
    (
        "unqualified GPU resource name",
        {"resources": {"gpuResourceName": "gpu"}},
        "spec.resources.gpuResourceName",
    ),
    (
        "toleration Exists with a value",
        {"scheduling": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
        "spec.scheduling.tolerations[0].value",
    ),
    (
        "tolerationSeconds without NoExecute",
        {"scheduling": {"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]}},
        "spec.scheduling.tolerations[0].tolerationSeconds",
    ),
    (
        "toleration without key or Exists",
        {"scheduling": {"tolerations": [{"value": "v"}]}},
        "spec.scheduling.tolerations[0].operator",
    ),
    (
        "ConfigMap key ..",
        {"dataset": {"source": {"uri": None, "configMap": {"name": "d", "key": ".."}}}},
        "spec.dataset.source.configMap.key",
    ),
    (
        "ConfigMap key with a slash",
        {"dataset": {"source": {"uri": None, "configMap": {"name": "d", "key": "a/b"}}}},
        "spec.dataset.source.configMap.key",
    ),
    (
        "ConfigMap name with an underscore",
        {"dataset": {"source": {"uri": None, "configMap": {"name": "my_data", "key": "k"}}}},
        "spec.dataset.source.configMap.name",
    ),
    (
        "PVC name in capitals",
        {"model": {"source": {"pvc": {"claimName": "Models"}}}},
        "spec.model.source.pvc.claimName",
    ),
    (
        "misspelled affinity key",
        {"scheduling": {"affinity": {"nodeAfinity": {}}}},
        "spec.scheduling.affinity.nodeAfinity",
    ),
    (
        "affinity operator unknown",
        {
            "scheduling": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Is"}]}]
                        }
                    }
                }
            }
        },
        "operator",
    ),
]


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` into a copy of ``base``; a None value removes the key."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict) and v:
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
