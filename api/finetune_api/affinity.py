"""A typed core/v1 Affinity, so a misspelt key is refused at the door instead of silently dropped.

Field names, enums and bounds follow the upstream API (k8s.io/api/core/v1); only what a training
pod's placement needs is missing (nothing, today).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from finetune_api.specbase import LABEL_VALUE, QUALIFIED_NAME, Model

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


class NodeSelectorRequirement(Model):
    key: str = Field(min_length=1, max_length=317, pattern=QUALIFIED_NAME, description="Node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: list[str] | None = Field(
        default=None, max_length=256, description="Values for In/NotIn; one integer for Gt/Lt."
    )


class NodeSelectorTerm(Model):
    match_expressions: list[NodeSelectorRequirement] | None = Field(
        default=None, max_length=64, description="Requirements on node labels (all must hold)."
    )
    match_fields: list[NodeSelectorRequirement] | None = Field(
        default=None, max_length=64, description="Requirements on node fields (metadata.name)."
    )


class NodeSelector(Model):
    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=64, description="Terms, any of which may match."
    )


class PreferredSchedulingTerm(Model):
    weight: int = Field(ge=1, le=100, description="Weight of this preference, 1-100.")
    preference: NodeSelectorTerm = Field(description="The node selector term.")


class NodeAffinity(Model):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Nodes a pod must land on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = Field(
        default=None, max_length=64, description="Nodes a pod prefers."
    )


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1, max_length=317, pattern=QUALIFIED_NAME, description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] | None = Field(default=None, max_length=256, description="Values for In/NotIn.")


class LabelSelector(Model):
    match_labels: dict[str, LabelValue] | None = Field(
        default=None, max_length=64, description="Labels that must match exactly."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=64, description="Label requirements (all must hold)."
    )


class PodAffinityTerm(Model):
    label_selector: LabelSelector | None = Field(default=None, description="Pods this term is about.")
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods count; unset means the pod's own namespace."
    )
    namespaces: list[str] | None = Field(default=None, max_length=64, description="Namespace names.")
    topology_key: str = Field(
        min_length=1,
        max_length=317,
        pattern=QUALIFIED_NAME,
        description="Node label defining co-location, e.g. kubernetes.io/hostname.",
    )
    match_label_keys: list[str] | None = Field(
        default=None, max_length=64, description="Pod label keys whose values are added to labelSelector."
    )
    mismatch_label_keys: list[str] | None = Field(
        default=None, max_length=64, description="Pod label keys whose values must differ."
    )


class WeightedPodAffinityTerm(Model):
    weight: int = Field(ge=1, le=100, description="Weight of this preference, 1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The pod affinity term.")


class PodAffinity(Model):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        default=None, max_length=64, description="Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = Field(
        default=None, max_length=64, description="Terms preferred, by weight."
    )


class Affinity(Model):
    """core/v1 Affinity: node affinity, pod affinity and pod anti-affinity."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Node affinity rules.")
    pod_affinity: PodAffinity | None = Field(
        default=None, description="Co-locate with pods matching these terms."
    )
    pod_anti_affinity: PodAffinity | None = Field(
        default=None, description="Keep away from pods matching these terms."
    )
