"""The speed options in ``spec.hyperparameters``, resolved against what this machine has.

Each option is a typed spec field with a measured default (docs/hyperparameters.md). Here it meets
the machine: a kernel that is asked for but not installed, or that needs a GPU the pod does not have,
falls back to what runs everywhere, with one log line saying so. A speed option never fails a run.

- attention: ``auto`` is FlashAttention 2 on a GPU with ``flash-attn`` installed, else the model's
  default (PyTorch SDPA where the architecture has it);
- padding-free batches (sequences laid end to end with position ids, no pad tokens): on with packing
  (TRL's best-fit packing is padding-free) and, for unpacked batches, with FlashAttention, whose
  variable-length kernel makes it pure gain; with SDPA a block-diagonal mask keeps sequences apart,
  correct but not faster, so ``auto`` leaves it off there;
- length-grouped batches for unpacked data: less padding per batch;
- the optimizer (``auto``: fused AdamW; 8-bit and paged AdamW need a GPU and bitsandbytes);
- Liger kernels (fused RMSNorm, RoPE, SwiGLU and linear+cross-entropy; CUDA and ``liger-kernel``);
- gradient checkpointing (unset: on for full and qlora on a GPU, where accelerator memory is the limit;
  off for lora, and off on a CPU, where it only costs compute);
- the logging interval (each log is a host sync of the loss).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

FLASH = ("flash_attention_2", "flash_attention_3")
NEEDS_BITSANDBYTES = ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")


@dataclass(frozen=True)
class Available:
    """What this process can use."""

    cuda: bool = False
    flash_attention_2: bool = False
    flash_attention_3: bool = False
    liger: bool = False
    bitsandbytes: bool = False


@functools.cache
def available() -> Available:
    import torch

    cuda = torch.cuda.is_available()
    try:
        from transformers.utils.import_utils import is_flash_attn_2_available, is_flash_attn_3_available

        fa2, fa3 = is_flash_attn_2_available(), is_flash_attn_3_available()
    except ImportError:  # pragma: no cover - older transformers
        fa2 = fa3 = False
    return Available(
        cuda=cuda,
        flash_attention_2=cuda and fa2,
        flash_attention_3=cuda and fa3,
        liger=cuda and importlib.util.find_spec("liger_kernel") is not None,
        bitsandbytes=cuda and importlib.util.find_spec("bitsandbytes") is not None,
    )


@dataclass(frozen=True)
class Resolved:
    """The settings a run really uses."""

    attention: str | None  # attn_implementation for from_pretrained; None: the model's default
    padding_free: bool
    group_by_length: bool
    optimizer: str
    liger: bool
    gradient_checkpointing: bool
    logging_steps: int
    fallbacks: tuple[str, ...] = field(default=())

    def summary(self) -> dict[str, Any]:
        return {
            "attention": self.attention or "default (sdpa)",
            "padding_free": self.padding_free,
            "group_by_length": self.group_by_length,
            "optimizer": self.optimizer,
            "liger_kernels": self.liger,
            "gradient_checkpointing": self.gradient_checkpointing,
            "logging_steps": self.logging_steps,
        }


def resolve(spec: Any, have: Available) -> Resolved:
    """Pure: the spec's speed options on a machine that has ``have``."""
    hp = spec.hyperparameters
    fallbacks: list[str] = []
    causal_sft = spec.task == "causal-lm" and spec.objective == "sft"

    attention: str | None
    asked = hp.attention_implementation
    if asked == "auto":
        attention = "flash_attention_2" if have.flash_attention_2 and spec.task == "causal-lm" else None
    elif asked in FLASH and not getattr(have, asked):
        attention = None
        why = "no GPU" if not have.cuda else "flash-attn is not installed"
        fallbacks.append(f"hyperparameters.attentionImplementation {asked}: {why}; using sdpa")
    else:
        attention = asked
    flash = attention in FLASH

    if hp.packing and causal_sft:
        padding_free = True  # TRL's best-fit packing is padding-free: its rows must not be padded
        if hp.padding_free is False:
            fallbacks.append("hyperparameters.paddingFree false: packed batches are always padding-free")
    elif hp.padding_free is None:
        padding_free = causal_sft and flash
    else:
        padding_free = hp.padding_free and causal_sft
        if hp.padding_free and not causal_sft:
            fallbacks.append("hyperparameters.paddingFree: only causal-lm SFT batches can be padding-free")

    optimizer = "adamw_torch_fused" if hp.optimizer == "auto" else hp.optimizer
    if optimizer in NEEDS_BITSANDBYTES and not have.bitsandbytes:
        why = "no GPU" if not have.cuda else "bitsandbytes is not installed"
        fallbacks.append(f"hyperparameters.optimizer {optimizer}: {why}; using adamw_torch_fused")
        optimizer = "adamw_torch_fused"

    liger = hp.liger_kernels and have.liger
    if hp.liger_kernels and not liger:
        why = "no GPU" if not have.cuda else "liger-kernel is not installed"
        fallbacks.append(f"hyperparameters.ligerKernels: {why}; using the model's own layers")

    return Resolved(
        attention=attention,
        padding_free=padding_free,
        group_by_length=hp.group_by_length and not hp.packing,
        optimizer=optimizer,
        liger=liger,
        gradient_checkpointing=spec.gradient_checkpointing("gpu" if have.cuda else "cpu"),
        logging_steps=hp.logging_steps,
        fallbacks=tuple(fallbacks),
    )


_logged: set[str] = set()


def for_spec(spec: Any) -> Resolved:
    """``resolve`` on this machine; each fallback is logged once per process."""
    resolved = resolve(spec, available())
    for line in resolved.fallbacks:
        if line not in _logged:
            _logged.add(line)
            log.warning("%s", line)
    return resolved
