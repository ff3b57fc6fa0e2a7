"""Peak GPU memory of one training process, term by term, before a GPU is spent.

Model states follow the ZeRO paper (Rajbhandari et al. 2020, §3: mixed-precision Adam keeps
2Ψ 16-bit weights, 2Ψ 16-bit gradients and 12Ψ fp32 master weights, momentum and variance;
ZeRO-1/2/3 divide the optimizer states, then the gradients, then the weights by the data-parallel
degree). Without DeepSpeed the trainer keeps fp32 weights and gradients and autocasts, which is the
same 16 bytes per parameter, none of it divided. 4-bit weights follow the QLoRA paper (Dettmers et
al. 2023, §3: NF4 is 4 bits per weight plus 32-bit constants per 64-weight block, which double
quantization brings to 8 bits per block plus 32 bits per 256 blocks). Activations follow Korthikanti
et al. 2022 (“Reducing Activation Recomputation”, §4: 34·s·b·h bytes per layer plus 5·a·s²·b for
the attention scores, which SDPA/FlashAttention never store); with gradient checkpointing a layer
keeps only its 16-bit input (2·s·b·h) and one layer is recomputed at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finetune_api.planning.architecture import Architecture
from finetune_api.training import TrainingSpec

Device = Literal["gpu", "cpu"]
GIB = 1024**3
RUNTIME_BYTES = int(1.5 * GIB)  # CUDA context, cuBLAS workspaces, allocator slack
NF4_BITS = 4.0
NF4_CONSTANT_BITS = {True: 8 / 64 + 32 / (64 * 256), False: 32 / 64}  # by double quantization


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU by term; ``total`` is their sum."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    runtime: int
    trainable_parameters: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.runtime

    def terms(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "logits": self.logits,
            "runtime": self.runtime,
        }

    def dominant(self) -> str:
        terms = self.terms()
        return max(terms, key=lambda k: terms[k])


# Other families' names for the Llama-named layers of ``Architecture.named_linears``.
_ALIASES: dict[str, set[str]] = {
    "c_attn": {"qkv_proj"}, "query_key_value": {"qkv_proj"}, "Wqkv": {"qkv_proj"},
    "query": {"q_proj"}, "key": {"k_proj"}, "value": {"v_proj"},
    "c_fc": {"up_proj"}, "fc1": {"up_proj"}, "fc2": {"down_proj"}, "c_proj": {"o_proj", "down_proj"},
    "w1": {"gate_proj"}, "w3": {"up_proj"}, "w2": {"down_proj"},
}  # fmt: skip
# BERT's pooler (a hidden x hidden linear after the blocks) is one more linear for ``all-linear``.
_POOLER = {"bert"}


def lora_parameters(arch: Architecture, rank: int, target_modules: list[str] | None) -> int:
    """Trainable LoRA parameters: r·(in + out) for each adapted linear layer (``all-linear`` when the
    spec names none, or none this estimator knows)."""
    linears = arch.named_linears()
    if target_modules:
        wanted = set().union(*({name} | _ALIASES.get(name, set()) for name in target_modules))
        chosen = [(n, i, o) for n, i, o in linears if n in wanted]
        if chosen:
            return arch.layers * sum(rank * (i + o) for _, i, o in chosen)
    pooler = 2 * arch.hidden * rank if arch.model_type in _POOLER else 0
    return arch.layers * sum(rank * (i + o) for _, i, o in linears) + pooler


def estimate(spec: TrainingSpec, arch: Architecture, device: Device = "gpu") -> MemoryEstimate:
    """Peak bytes on one GPU for ``spec`` on a model shaped like ``arch``.

    ``device="cpu"`` estimates what the trainer holds when it runs on a CPU instead: the same terms,
    except that an adapter's frozen base stays in float32 there (``modeling._weights_dtype``).
    """
    dist = spec.distributed_or_default()
    gpus = max(dist.nodes * max(dist.gpus_per_node, 1), 1)
    n = arch.parameters
    if spec.method == "full":
        weights, gradients, optimizer, trainable = _full_states(spec, n, gpus)
    else:
        trainable = lora_parameters(arch, spec.lora_or_default().r, spec.lora_or_default().target_modules)
        # peft keeps adapters in float32; TRL's trainers cast a quantized model's adapters to bfloat16
        # (as the QLoRA paper trains them). Weight, gradient and AdamW's two moments share that type.
        adapter = 4
        if spec.method == "qlora":
            q = spec.quantization_or_default()
            bits = NF4_BITS + NF4_CONSTANT_BITS[q.double_quant]
            embeddings = arch.embedding_parameters()
            # prepare_model_for_kbit_training casts what stays unquantized (embeddings, head) to float32.
            weights = int((n - embeddings) * bits / 8) + 4 * embeddings
            adapter = 2
        else:
            weights = (4 if device == "cpu" else 2) * n
        weights += adapter * trainable
        gradients = adapter * trainable
        optimizer = 2 * adapter * trainable
    if spec.objective == "dpo" and spec.method == "full":
        weights += 2 * n // (gpus if _zero_stage(spec) >= 3 else 1)  # the frozen 16-bit reference copy
    activations, logits = _activations(spec, arch, device)
    return MemoryEstimate(
        weights=weights,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations,
        logits=logits,
        runtime=RUNTIME_BYTES,
        trainable_parameters=trainable,
    )


def _zero_stage(spec: TrainingSpec) -> int:
    ds = spec.distributed_or_default().deepspeed
    return -1 if ds is None else ds.zero_stage


def _full_states(spec: TrainingSpec, n: int, gpus: int) -> tuple[int, int, int, int]:
    ds = spec.distributed_or_default().deepspeed
    if ds is None:
        return 4 * n, 4 * n, 8 * n, n
    stage = ds.zero_stage
    weights = 2 * n // (gpus if stage >= 3 else 1)
    gradients = 2 * n // (gpus if stage >= 2 else 1)
    optimizer = 12 * n // (gpus if stage >= 1 else 1)
    if ds.offload_optimizer:
        optimizer = 0
    if ds.offload_parameters:
        weights = 0
    return weights, gradients, optimizer, n


def _activations(spec: TrainingSpec, arch: Architecture, device: Device) -> tuple[int, int]:
    hp = spec.hyperparameters
    s, b, h = hp.max_sequence_length, hp.batch_size, arch.hidden
    # The 34·s·b·h of the paper assumes a 4h MLP: 11 of it is attention, 19 the MLP.
    mlp_scale = arch.intermediate / (4 * h) * (1.5 if arch.gated_mlp else 1.0)
    per_layer = int(s * b * h * (11 + 19 * mlp_scale))
    if spec.gradient_checkpointing(device):
        activations = arch.layers * 2 * s * b * h + per_layer
    else:
        activations = arch.layers * per_layer
    if spec.task == "classification":
        return activations, 0
    # fp32 logits for the loss and their gradient.
    return activations, 8 * s * b * arch.vocab
