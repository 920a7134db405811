"""Tiny randomly initialised models of every supported family, for fast offline tests.

Shapes are deliberately odd-ish (hidden 40, 5 heads; GQA on Llama) so that shape bugs show.
"""

from __future__ import annotations

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

    from autopeft.models import resolve_model

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
