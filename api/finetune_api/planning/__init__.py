"""Before a GPU is spent: the model's shape, peak GPU memory, time and cost of a FineTuneJob."""

from finetune_api.planning.architecture import Architecture, from_config, from_name
from finetune_api.planning.gpus import GpuProduct, lookup, parse_quantity
from finetune_api.planning.memory import MemoryEstimate, estimate
from finetune_api.planning.plan import DataSize, Plan, make_plan

__all__ = [
    "Architecture",
    "DataSize",
    "GpuProduct",
    "MemoryEstimate",
    "Plan",
    "estimate",
    "from_config",
    "from_name",
    "lookup",
    "make_plan",
    "parse_quantity",
]
