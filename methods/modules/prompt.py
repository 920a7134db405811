"""The soft prompt's module (the method, its config and count: :mod:`autopeft.methods.prompt`)."""

from __future__ import annotations

import torch
import torch.nn as nn


class SoftPrompt(nn.Module):
    def __init__(self, hidden: int, length: int, init: str = "vocab", seed: int = 0) -> None:
        super().__init__()
        self.prompt = nn.Parameter(torch.zeros(length, hidden))
        self.init, self.seed = init, seed

    def bind(self, embeddings: nn.Module, site: None) -> None:
        """Initialise from the model's input embeddings (V, d); see :mod:`autopeft.methods.prompt`."""
        weight = embeddings.weight.detach()
        generator = torch.Generator().manual_seed(self.seed)
        length = self.prompt.shape[0]
        with torch.no_grad():
            if self.init == "vocab":
                ids = torch.randint(0, weight.shape[0], (length,), generator=generator)
                self.prompt.copy_(weight[ids.to(weight.device)].float())
            else:
                noise = torch.randn(self.prompt.shape, generator=generator)
                self.prompt.copy_(noise * weight.float().std().cpu())

    def forward(self) -> torch.Tensor:
        return self.prompt  # (P, d)
