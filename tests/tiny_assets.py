"""Tiny on-disk assets for tests of inspect/export/API: a model folder with a word-level tokenizer, a CSV
dataset, a real tiny study, and saved adapters. Everything is offline and takes seconds."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from autopeft.testing import tiny_model

WORDS = [f"w{i}" for i in range(90)]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer whose 95 tokens fit the tiny models' vocabulary of 97."""
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def tiny_model_dir(path: Path, family: str = "bert", task: str = "classification", num_labels: int = 2) -> Path:
    if (path / "config.json").is_file():
        return path
    model = tiny_model(family, task, num_labels=num_labels)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def tiny_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Label 1 iff the text contains w7 (learnable from the tokens)."""
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


def randomize(handle, seed: int = 0) -> None:
    """Give every adapter tensor random values, so a wrong mapping cannot go unnoticed (B = 0 hides A)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in handle._stored_tensors().items():
            if "magnitude" in name or name.endswith("ia3_l") or name.endswith("lambda_d"):
                tensor.mul_(1 + 0.3 * torch.randn(tensor.shape, generator=g))
            else:
                tensor.copy_(0.3 * torch.randn(tensor.shape, generator=g))


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
