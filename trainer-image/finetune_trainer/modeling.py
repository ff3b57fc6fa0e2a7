"""Tokenizer and model for a task and method: full weights, a LoRA adapter, or LoRA on a 4-bit base.

Every way loading can fail (missing files, a gated hub repo, an architecture this transformers does
not know, a config without a head for the task) surfaces as ``ModelLoadFailed``, which the runner
turns into ``ExitCode.MODEL_LOAD_FAILED``: retrying the same spec would fail the same way. Running
out of memory while loading is left alone so the runner can report it as such.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from finetune_api.training import TrainingSpec
from finetune_trainer import speed

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class ModelLoadFailed(Exception):
    """The base model or its tokenizer could not be loaded for this spec."""


class ModelSourceUnavailable(Exception):
    """The hub or the network failed while loading (a timeout, a 5xx, a refused connection): the
    same spec may well load on the next try, so the runner exits RETRIABLE, not MODEL_LOAD_FAILED."""


_TRANSIENT_NAMES = {
    # httpx (huggingface_hub >= 1.0), requests (older hubs, custom endpoints), urllib3
    "TransportError", "TimeoutException", "ConnectError", "ReadTimeout", "ConnectTimeout", "ReadError",
    "RemoteProtocolError", "WriteError", "PoolTimeout", "ConnectionError", "Timeout", "ChunkedEncodingError",
    "ProtocolError", "NewConnectionError", "MaxRetryError",
}  # fmt: skip


def transient_cause(exc: BaseException) -> BaseException | None:
    """The network-level error behind ``exc`` (walking its causes), or None when it is a real refusal.

    Transient: connection refused/reset, timeouts, HTTP 429 and 5xx. Not transient: 401/403 (gated
    or private), 404 (no such repository or revision), bad files, unknown architectures.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "OfflineModeIsEnabled":  # HF_HUB_OFFLINE: not cached is final
            return None
        if isinstance(current, (ConnectionError, TimeoutError)):
            return current
        if any(kind.__name__ in _TRANSIENT_NAMES for kind in type(current).__mro__):
            return current
        status = getattr(getattr(current, "response", None), "status_code", None)
        if isinstance(status, int) and (status == 429 or status >= 500):
            return current
        current = current.__cause__ or current.__context__
    return None


def _load_error(what: str, exc: Exception) -> Exception:
    cause = transient_cause(exc)
    if cause is not None:
        why = f"{type(cause).__name__}: {cause}"
        return ModelSourceUnavailable(f"{what} could not be fetched, the next try may succeed: {why}")
    return ModelLoadFailed(f"{what} could not be loaded: {type(exc).__name__}: {exc}")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    quantized: bool
    dtype: torch.dtype


def local_device() -> str:
    """The device this process trains on (torchrun sets LOCAL_RANK per GPU)."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def half_dtype() -> torch.dtype:
    """The 16-bit type the hardware runs well: bfloat16 where supported (and on CPU), else float16."""
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def load_tokenizer(spec: TrainingSpec, model_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_path, revision=spec.model.revision, trust_remote_code=spec.model.trust_remote_code
        )
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for the same cause
        raise _load_error(f"tokenizer of {spec.model.name!r}", exc) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadFailed(f"tokenizer of {spec.model.name!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    spec: TrainingSpec, model_path: str, tokenizer: Any, labels: list[str] | None = None
) -> LoadedModel:
    """Load the base for ``spec.task`` and wrap it for ``spec.method``."""
    kwargs: dict[str, Any] = {
        "revision": spec.model.revision,
        "trust_remote_code": spec.model.trust_remote_code,
    }
    quantized = spec.method == "qlora"
    dtype = _weights_dtype(spec)
    kwargs["dtype"] = dtype
    fast = speed.for_spec(spec)
    if fast.attention is not None:
        kwargs["attn_implementation"] = fast.attention
    if quantized:
        kwargs["quantization_config"] = _bnb_config(spec)
        kwargs["device_map"] = {"": local_device()}
    try:
        model = _from_pretrained_with_attention(spec, model_path, labels, kwargs)
    except (torch.OutOfMemoryError, MemoryError):
        raise
    except Exception as exc:  # a SIGTERM (callbacks.Terminated) is no Exception and passes through
        raise _load_error(f"model {spec.model.name!r}", exc) from exc

    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=fast.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if spec.method in ("lora", "qlora"):
        model = _with_adapter(spec, model)
    return LoadedModel(model=model, tokenizer=tokenizer, quantized=quantized, dtype=dtype)


def load_base(
    spec: TrainingSpec, model_path: str, labels: list[str] | None, dtype: torch.dtype, **kwargs: Any
) -> Any:
    """The plain base model (no adapter, no quantization) in ``dtype``: what an adapter merges into."""
    kwargs = {"revision": spec.model.revision, "trust_remote_code": spec.model.trust_remote_code, **kwargs}
    return _from_pretrained(spec, model_path, labels, {"dtype": dtype, **kwargs})


def _from_pretrained_with_attention(
    spec: TrainingSpec, model_path: str, labels: list[str] | None, kwargs: dict[str, Any]
) -> Any:
    """``attentionImplementation: auto`` chose FlashAttention because it is installed; an architecture
    without a FlashAttention path then loads with its default attention (one log line) instead."""
    try:
        return _from_pretrained(spec, model_path, labels, kwargs)
    except (ValueError, ImportError) as exc:
        if spec.hyperparameters.attention_implementation != "auto" or "attn_implementation" not in kwargs:
            raise
        log.warning(
            "hyperparameters.attentionImplementation auto: %s cannot use %s (%s); using sdpa",
            spec.model.name,
            kwargs["attn_implementation"],
            str(exc).splitlines()[0][:200],
        )
        return _from_pretrained(
            spec, model_path, labels, {k: v for k, v in kwargs.items() if k != "attn_implementation"}
        )


def _from_pretrained(
    spec: TrainingSpec, model_path: str, labels: list[str] | None, kwargs: dict[str, Any]
) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if spec.task == "classification":
        if not labels:
            raise ModelLoadFailed("classification needs labels, and the data pipeline found none")
        return AutoModelForSequenceClassification.from_pretrained(
            model_path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            **kwargs,
        )
    return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)


def _weights_dtype(spec: TrainingSpec) -> torch.dtype:
    """float32 master weights for full fine-tuning (mixed precision does the 16-bit math); 16-bit
    frozen bases for adapters on a GPU, where memory is the point; float32 on CPU, where 16-bit
    matmuls are slow and the models are small."""
    if spec.method == "qlora":
        return _DTYPES[spec.quantization_or_default().compute_dtype]
    if spec.method == "full" or not torch.cuda.is_available():
        return torch.float32
    return half_dtype()


def _bnb_config(spec: TrainingSpec) -> Any:
    try:
        from transformers import BitsAndBytesConfig
    except ImportError as exc:  # pragma: no cover - the image always ships it
        raise ModelLoadFailed(f"qlora needs bitsandbytes: {exc}") from exc
    q = spec.quantization_or_default()
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=_DTYPES[q.compute_dtype],
        bnb_4bit_quant_storage=torch.uint8,
    )


def lora_config(spec: TrainingSpec) -> Any:
    from peft import LoraConfig, TaskType

    lora = spec.lora_or_default()
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules or "all-linear",
        task_type=TaskType.SEQ_CLS if spec.task == "classification" else TaskType.CAUSAL_LM,
        bias="none",
    )


def _with_adapter(spec: TrainingSpec, model: Any) -> Any:
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, lora_config(spec))
    except ValueError as exc:  # e.g. target modules that the architecture does not have
        raise ModelLoadFailed(f"LoRA adapter could not be attached: {exc}") from exc
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info(
        "LoRA: %d of %d parameters trainable (%.2f%%)", trainable, total, 100.0 * trainable / max(total, 1)
    )
    return peft_model
