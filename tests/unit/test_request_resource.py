"""The resource label of finetune_operator_api_requests_total, from a request URL."""

from __future__ import annotations

import pytest

from finetune_operator.kube import request_labels, resource_of


@pytest.mark.parametrize(
    ("url", "resource"),
    [
        ("https://h:6443/api/v1/namespaces/a/pods/b/status", "pods/status"),
        ("https://h/api/v1/namespaces/a/pods?labelSelector=x%3Dy", "pods"),
        ("https://h/apis/finetuning.io/v1alpha1/namespaces/a/finetunejobs/b", "finetunejobs"),
        ("https://h/apis/finetuning.io/v1alpha1/namespaces/a/finetunejobs/b/status", "finetunejobs/status"),
        ("https://h/apis/batch/v1/namespaces/a/jobs", "jobs"),
        ("https://h/api/v1/namespaces/a", "namespaces"),
        ("https://h/api/v1/nodes/n/status", "nodes/status"),
        ("https://h/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x", "customresourcedefinitions"),
        ("https://h/version", "version"),
        ("https://h/", "other"),
    ],
)
def test_a_request_is_counted_under_its_resource_and_subresource(url: str, resource: str) -> None:
    assert resource_of(url) == resource


@pytest.mark.parametrize(
    ("method", "url", "verb"),
    [
        ("GET", "https://h/api/v1/namespaces/a/pods?labelSelector=x%3Dy", "LIST"),
        ("GET", "https://h/apis/batch/v1/namespaces/a/jobs?limit=100&continue=abc", "LIST"),
        ("GET", "https://h/apis/batch/v1/namespaces/a/jobs/j", "GET"),
        ("GET", "https://h/apis/finetuning.io/v1alpha1/namespaces/a/finetunejobs/b/status", "GET"),
        ("GET", "https://h/apis/batch/v1/namespaces/a/jobs?watch=true", "WATCH"),
        ("GET", "https://h/api/v1/namespaces", "LIST"),
        ("GET", "https://h/api/v1/namespaces/a", "GET"),
        ("GET", "https://h/version", "GET"),
        ("post", "https://h/apis/batch/v1/namespaces/a/jobs", "POST"),
        ("PUT", "https://h/apis/finetuning.io/v1alpha1/namespaces/a/finetunejobs/b/status", "PUT"),
    ],
)
def test_a_collection_read_is_counted_as_a_list_not_a_get(method: str, url: str, verb: str) -> None:
    assert request_labels(method, url)[0] == verb
