"""What a GPU product offers, keyed by the ``nvidia.com/gpu.product`` node label (GPU feature discovery).

Memory is the usable HBM in bytes; ``bf16_tflops`` the dense peak the datasheet gives, used with an
assumed model-FLOPs utilisation to turn tokens into GPU-hours. The operator's settings can extend or
replace this table (chart value ``plan.gpuProducts``); prices are never built in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class GpuProduct:
    name: str
    memory_bytes: int
    bf16_tflops: float


_TABLE = [
    GpuProduct("NVIDIA-H200", 141 * GIB, 989.0),
    GpuProduct("NVIDIA-H100-80GB-HBM3", 80 * GIB, 989.0),
    GpuProduct("NVIDIA-H100-PCIe", 80 * GIB, 756.0),
    GpuProduct("NVIDIA-A100-SXM4-80GB", 80 * GIB, 312.0),
    GpuProduct("NVIDIA-A100-SXM4-40GB", 40 * GIB, 312.0),
    GpuProduct("NVIDIA-A100-PCIE-40GB", 40 * GIB, 312.0),
    GpuProduct("NVIDIA-L40S", 48 * GIB, 362.0),
    GpuProduct("NVIDIA-L4", 24 * GIB, 121.0),
    GpuProduct("NVIDIA-A10G", 24 * GIB, 125.0),
    GpuProduct("NVIDIA-RTX-A6000", 48 * GIB, 155.0),
    GpuProduct("Tesla-V100-SXM2-32GB", 32 * GIB, 125.0),
    GpuProduct("Tesla-T4", 16 * GIB, 65.0),
]
PRODUCTS: dict[str, GpuProduct] = {p.name: p for p in _TABLE}

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([EPTGMK]i?)?$")
_UNITS = {
    None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def parse_quantity(value: str) -> int:
    """Bytes of a Kubernetes quantity such as ``80Gi`` or ``24G``."""
    m = _QUANTITY.match(value.strip())
    if not m:
        raise ValueError(f"not a memory quantity: {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def lookup(product: str | None, table: dict[str, GpuProduct] | None = None) -> GpuProduct | None:
    """The product for a node label value; also matches a label that only starts with a known name."""
    if not product:
        return None
    table = PRODUCTS if table is None else table
    if product in table:
        return table[product]
    matches = [p for name, p in table.items() if product.startswith(name) or name.startswith(product)]
    return max(matches, key=lambda p: len(p.name)) if len(matches) >= 1 else None
