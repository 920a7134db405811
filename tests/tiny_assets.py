"""Tiny on-disk assets for tests of inspect/export/API: a model folder with a word-level tokenizer, a CSV
dataset, a real tiny study, and saved adapters. Everything is offline and takes seconds."""

from __future__ import annotations

import torch

# the assets live in autopeft.testing (the reliability soak uses them too); re-exported for the tests
from autopeft.testing import TINY_SPACE, WORDS, tiny_csv, tiny_model_dir, tiny_tokenizer

__all__ = ["TINY_SPACE", "WORDS", "randomize", "tiny_csv", "tiny_model_dir", "tiny_tokenizer"]


def randomize(handle, seed: int = 0) -> None:
    """Give every adapter tensor random values, so a wrong mapping cannot go unnoticed (B = 0 hides A)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in handle._stored_tensors().items():
            if "magnitude" in name or name.endswith("ia3_l") or name.endswith("lambda_d"):
                tensor.mul_(1 + 0.3 * torch.randn(tensor.shape, generator=g))
            else:
                tensor.copy_(0.3 * torch.randn(tensor.shape, generator=g))

