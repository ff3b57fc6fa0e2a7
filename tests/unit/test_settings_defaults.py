"""Defaults that work on common clusters."""

from __future__ import annotations

import pytest

from finetune_operator.settings import OperatorSettings


def test_gpu_check_warns_by_default_so_scale_from_zero_pools_work():
    """Karpenter and cluster-autoscaler add a GPU node only once a pod asks for one: failing a job
    because no node advertises the GPU *yet* would fail every job on such a pool."""
    assert OperatorSettings().gpu_resource_check == "warn"
    assert OperatorSettings.from_env({}).gpu_resource_check == "warn"
    assert OperatorSettings.from_env({"FTJ_GPU_RESOURCE_CHECK": "fail"}).gpu_resource_check == "fail"


def test_a_bad_gpu_check_value_names_the_variable():
    with pytest.raises(ValueError, match="FTJ_GPU_RESOURCE_CHECK"):
        OperatorSettings.from_env({"FTJ_GPU_RESOURCE_CHECK": "strict"})
