"""Evaluation on the held-out test split, for the tuned model and for the untuned base.

The test split is never seen during training or early stopping, so these are the numbers a user can
quote. The base model is measured with the same trainer and data before training starts: at that
point an adapter is still the identity (LoRA's B matrix is zero) and full weights are the base's,
so one code path serves every method, and a resumed run measures the base the same way.

Metrics by objective: loss always; perplexity for SFT; ROUGE-1/2/L and BLEU on greedy generations
for SFT prompt-completion and chat data; accuracy and macro-F1 for classification; the reward
accuracy and margin for DPO.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from finetune_api.training import QualityGate, TrainingSpec

log = logging.getLogger(__name__)

GENERATION_METRICS = ("rouge1", "rouge2", "rougeL", "bleu")


class QualityGateFailed(Exception):
    """A test metric missed the spec's quality gate."""


def metric_names(spec: TrainingSpec, fmt: str | None = None) -> tuple[str, ...]:
    """The test metrics a run of this spec reports (what a quality gate may name)."""
    if spec.task == "classification":
        return ("loss", "accuracy", "macro_f1")
    if spec.objective == "dpo":
        return ("loss", "reward_accuracy", "reward_margin")
    names: tuple[str, ...] = ("loss", "perplexity")
    if spec.evaluation.generation_metrics and fmt in (None, "prompt-completion", "messages"):
        names += GENERATION_METRICS
    return names


def check_gate_metric(spec: TrainingSpec) -> str | None:
    """Why the quality gate cannot be evaluated for this spec, or None when it can."""
    gate = spec.evaluation.quality_gate
    if gate is None:
        return None
    known = metric_names(spec)
    if gate.metric not in known:
        return (
            f"evaluation.qualityGate.metric {gate.metric!r} is not reported for this run; use one of {known}"
        )
    return None


def test_records(spec: TrainingSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cap = spec.evaluation.max_test_samples
    return records[:cap] if cap else records


def evaluate(
    trainer: Any, recipe: Any, ctx: Any, records: list[dict[str, Any]], prefix: str
) -> dict[str, float]:
    """Test metrics of the trainer's current model on ``records`` (empty dict when there are none)."""
    if not records:
        return {}
    spec: TrainingSpec = ctx.spec
    dataset = recipe.dataset(ctx, records)
    if spec.task != "classification" and spec.objective != "dpo":
        # Loss and perplexity per token over the whole split (see token_weighted_loss).
        raw = {f"{prefix}_loss": token_weighted_loss(trainer, dataset)}
    else:
        raw = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=prefix)
    out: dict[str, float] = {}
    loss = raw.get(f"{prefix}_loss")
    if loss is not None:
        out["loss"] = float(loss)
    if spec.task == "classification":
        for key in ("accuracy", "macro_f1"):
            if f"{prefix}_{key}" in raw:
                out[key] = float(raw[f"{prefix}_{key}"])
    elif spec.objective == "dpo":
        # TRL adds its reward statistics to the logged entry (always as eval_*), not to the result.
        logged: dict[str, float] = next(
            (e for e in reversed(trainer.state.log_history) if f"{prefix}_loss" in e), {}
        )
        for key, name in (("rewards/accuracies", "reward_accuracy"), ("rewards/margins", "reward_margin")):
            for candidate in (f"{prefix}_{key}", f"eval_{key}"):
                value = raw[candidate] if candidate in raw else logged.get(candidate)
                if value is not None:
                    out[name] = float(value)
                    break
    else:
        if loss is not None:
            out["perplexity"] = math.exp(min(float(loss), 700.0))
        if spec.evaluation.generation_metrics and ctx.data.format in ("prompt-completion", "messages"):
            out.update(generation_scores(trainer.model, ctx.model.tokenizer, records, ctx.data.format, spec))
    return out


def token_weighted_loss(trainer: Any, dataset: Any) -> float:
    """Mean negative log-likelihood per target token over ``dataset`` (its perplexity is exp of it).

    The Trainer's eval loss averages per-batch means: a batch of short answers weighs as much as a
    batch of long ones, and the perplexity derived from it is not the corpus perplexity. Here every
    target token counts once. Runs on every rank (under ZeRO-3 the forward pass is a collective); the
    sums are added across ranks.
    """
    import torch

    from finetune_trainer.distributed import gather_from_all

    prepare = getattr(trainer, "_prepare_dataset", None)  # TRL tokenises a split as SFTTrainer.evaluate does
    if prepare is not None and not getattr(trainer, "_skip_prepare_dataset", False):
        args = trainer.args
        packing = args.packing if args.eval_packing is None else args.eval_packing
        dataset = prepare(dataset, trainer.processing_class, args, packing, trainer._formatting_func, "test")
    model = trainer.model
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in trainer.get_eval_dataloader(dataset):
            batch = trainer._prepare_inputs(batch)
            labels = batch.pop("labels")
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
            with torch.no_grad(), trainer.autocast_smart_context_manager():
                logits = model(**inputs).logits
            shifted = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.size(-1)),
                shifted.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(nll)
            count += int((shifted != -100).sum())
    finally:
        model.train(was_training)
    sums = gather_from_all((total, count))
    total, count = sum(s[0] for s in sums), sum(s[1] for s in sums)
    return total / count if count else float("nan")


def prompts_and_references(
    records: list[dict[str, Any]], fmt: str, tokenizer: Any
) -> tuple[list[str], list[str]]:
    prompts, references = [], []
    for record in records:
        if fmt == "prompt-completion":
            prompts.append(record["prompt"])
            references.append(record["completion"])
        elif record["messages"] and record["messages"][-1]["role"] == "assistant":
            history = record["messages"][:-1]
            prompts.append(tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True))
            references.append(record["messages"][-1]["content"])
    return prompts, references


def generation_scores(
    model: Any, tokenizer: Any, records: list[dict[str, Any]], fmt: str, spec: TrainingSpec
) -> dict[str, float]:
    prompts, references = prompts_and_references(records, fmt, tokenizer)
    if not prompts:
        return {}
    predictions = generate(
        model,
        tokenizer,
        prompts,
        spec.evaluation.max_new_tokens,
        spec.hyperparameters.batch_size,
        add_special_tokens=fmt == "prompt-completion",
    )
    return text_scores(predictions, references)


def stop_tokens(model: Any, tokenizer: Any) -> Any:
    """The model's own end tokens (its generation config: Llama 3 chats end with <|eot_id|>, not the
    tokenizer's eos), the tokenizer's eos only when the model names none."""
    config = getattr(model, "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    return configured if configured is not None else tokenizer.eos_token_id


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    add_special_tokens: bool = False,
) -> list[str]:
    """Greedy completions, left-padded so that every prompt ends where generation starts.

    ``add_special_tokens`` as in training: plain prompts were tokenised with them (a BOS in front),
    chat prompts come rendered by the template, which writes its own.
    """
    import torch

    was_training = model.training
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    model.eval()
    try:
        device = next(p.device for p in model.parameters())
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(
                prompts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=add_special_tokens,
            ).to(device)
            with torch.no_grad():
                generated = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=stop_tokens(model, tokenizer),
                )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return outputs


def text_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE F-measures (0..1) and corpus BLEU (0..100, sacrebleu's scale)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)
        for key in totals:
            totals[key] += scores[key].fmeasure
    out = {key: value / len(predictions) for key, value in totals.items()}
    out["bleu"] = float(sacrebleu.corpus_bleu(predictions, [references]).score)
    return out


def delta(tuned: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {key: tuned[key] - base[key] for key in tuned if key in base}


def apply_gate(gate: QualityGate | None, tuned: dict[str, float]) -> str | None:
    """Why the gate failed, or None when it passed (or there is none)."""
    if gate is None:
        return None
    value = tuned.get(gate.metric)
    if value is None or not math.isfinite(value):
        return f"quality gate: test metric {gate.metric} was not measured"
    if gate.min is not None and value < gate.min:
        return f"quality gate: test {gate.metric} {value:.4g} is below the minimum {gate.min:g}"
    if gate.max is not None and value > gate.max:
        return f"quality gate: test {gate.metric} {value:.4g} is above the maximum {gate.max:g}"
    return None
