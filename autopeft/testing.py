"""Tiny randomly initialised models of every supported family, for fast offline tests, and tiny on-disk
assets (a model folder with a word-level tokenizer, a learnable CSV, a LoRA space) for the tests and
the reliability soak (``studies/reliability``).

Shapes are deliberately odd-ish (hidden 40, 5 heads; GQA on Llama) so that shape bugs show.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
)

TINY_FAMILIES = ("bert", "distilbert", "gpt2", "llama")
WORDS = [f"w{i}" for i in range(90)]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# LoRA on q and v, decided per layer and site; 6 units of 160 or 320 params on the tiny model, so a
# budget of 1.2k makes some sampled plans infeasible. A learning rate that learns in tens of steps.
TINY_SPACE = """
training:
  lr: {float: [5.0e-3, 3.0e-2], log: true}
decisions:
  - name: lora
    layers: all
    sites: [q, v]
    per: layer-site
    methods:
      none: {}
      lora: {r: {choice: [2, 4]}, alpha: 8}
"""


def tiny_config(family: str, num_labels: int = 3) -> PretrainedConfig:
    common = {"vocab_size": 97, "num_labels": num_labels, "pad_token_id": 0}
    if family == "bert":
        return BertConfig(hidden_size=40, num_hidden_layers=3, num_attention_heads=5, intermediate_size=56,
                          max_position_embeddings=64, **common)
    if family == "distilbert":
        return DistilBertConfig(dim=40, n_layers=3, n_heads=5, hidden_dim=56, max_position_embeddings=64,
                                **common)
    if family == "gpt2":
        return GPT2Config(n_embd=40, n_layer=3, n_head=5, n_positions=64, n_inner=56, **common)
    if family == "llama":
        return LlamaConfig(hidden_size=40, num_hidden_layers=3, num_attention_heads=5, num_key_value_heads=1,
                           intermediate_size=56, max_position_embeddings=64, **common)
    raise ValueError(family)


def tiny_model(family: str, task: str = "classification", seed: int = 0, num_labels: int = 3):
    torch.manual_seed(seed)
    config = tiny_config(family, num_labels)
    cls = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    model = cls.from_config(config)
    model.eval()
    return model


def tiny_batch(batch: int = 3, length: int = 11, seed: int = 0, vocab: int = 97) -> dict[str, torch.Tensor]:
    """Token ids with right padding in all but the first row (so masks matter)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        mask[row, length - row * 2:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask}


def save_tiny_bert(folder) -> str:
    """A tiny random BERT classifier with MiniLM's tokenizer, saved as a local model folder (for CLI tests)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from autopeft.training.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=48)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def write_toy_csv(path, words: tuple[str, str] = ("good", "bad"), n: int = 40) -> str:
    """A learnable two-class CSV: the label is the first word of the sentence."""
    import pandas as pd

    rows = [{"sentence": f"{w} movie number {i}", "label": w} for i in range(n) for w in words]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def tiny_tokenizer():
    """A whitespace word-level tokenizer whose 95 tokens fit the tiny models' vocabulary of 97."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tiny_model_dir(path: Path, family: str = "bert", task: str = "classification", num_labels: int = 2) -> Path:
    """A saved tiny model with :func:`tiny_tokenizer` (reused if ``path`` already holds one)."""
    if (path / "config.json").is_file():
        return path
    tiny_model(family, task, num_labels=num_labels).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def tiny_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Label 1 iff the text contains w7 (learnable from the tokens)."""
    import pandas as pd

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS[10:]) for _ in range(rng.randint(3, 9))]
        label = i % 2
        if label:
            words[rng.randrange(len(words))] = "w7"
        rows.append({"text": " ".join(words), "label": ["neg", "pos"][label]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
