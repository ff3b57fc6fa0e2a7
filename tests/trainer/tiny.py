"""Tiny models and tokenizers built on the spot, so trainer tests never download anything.

A random-init Llama (hidden 32, 2 layers) with a byte-level BPE tokenizer trained on the test
corpus and a chat template, and a tiny BERT with a WordPiece tokenizer for classification. Both are
saved with ``save_pretrained`` so the trainer loads them exactly as it would a hub checkpoint.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"]
THINGS = [
    "apple",
    "sky",
    "grass",
    "banana",
    "plum",
    "carrot",
    "coal",
    "snow",
    "flamingo",
    "bear",
    "lemon",
    "ocean",
    "cherry",
    "forest",
    "tiger",
    "cloud",
    "violet",
    "pumpkin",
    "ink",
    "rose",
]
CATEGORIES = {
    "billing": ["invoice", "charged", "refund", "payment", "card", "price", "bill", "subscription"],
    "bug": ["crash", "error", "broken", "freeze", "fails", "exception", "glitch", "bug"],
    "praise": ["love", "great", "excellent", "thanks", "wonderful", "amazing", "fantastic", "happy"],
}
FILLER = ["the", "app", "my", "today", "again", "please", "really", "this", "account", "when", "after", "it"]


def corpus() -> list[str]:
    words = COLOURS + THINGS + FILLER + [w for ws in CATEGORIES.values() for w in ws]
    lines = [f"What colour is the {t}? It is {c}." for t in THINGS for c in COLOURS]
    lines += [" ".join(random.Random(i).choices(words, k=12)) for i in range(200)]
    return lines


def build_llama(directory: Path, hidden: int = 64, layers: int = 2) -> Path:
    """Save a random-init LlamaForCausalLM and a BPE tokenizer with a chat template into ``directory``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def build_bert(directory: Path, hidden: int = 32, layers: int = 2) -> Path:
    """Save a random-init BertModel (no head: the trainer adds one) and a WordPiece tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        corpus(), trainer=trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tokenizer = BertTokenizerFast(tokenizer_object=tok)
    tokenizer.save_pretrained(directory)

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        # No dropout: a 32-wide random encoder learns its toy task within a few dozen steps only without it.
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(directory)
    return directory


def prompt_completion_records(n: int = 60) -> list[dict[str, str]]:
    rng = random.Random(1)
    pairs = [(t, c) for t in THINGS for c in COLOURS]
    rng.shuffle(pairs)
    return [{"prompt": f"What colour is the {t}?", "completion": f" It is {c}."} for t, c in pairs[:n]]


def messages_records(n: int = 60) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": r["completion"].strip()},
            ]
        }
        for r in prompt_completion_records(n)
    ]


def preference_records(n: int = 60) -> list[dict[str, str]]:
    rng = random.Random(2)
    out = []
    for r in prompt_completion_records(n):
        wrong = rng.choice(COLOURS)
        out.append(
            {"prompt": r["prompt"], "chosen": r["completion"], "rejected": f" I do not know, maybe {wrong}."}
        )
    return out


def text_label_records(n: int = 90) -> list[dict[str, str]]:
    rng = random.Random(3)
    out = []
    names = sorted(CATEGORIES)
    for i in range(n):
        label = names[i % len(names)]
        words = rng.sample(CATEGORIES[label], 4) + rng.sample(FILLER, 1)
        rng.shuffle(words)
        out.append({"text": " ".join(words), "label": label})
    return out


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
