"""P-tuning's prompt encoder (the method, its config and count: :mod:`autopeft.methods.ptuning`)."""

from __future__ import annotations

import torch
import torch.nn as nn


class _LSTMEncoder(nn.Module):
    def __init__(self, d: int, m: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(d, m, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Sequential(nn.Linear(2 * m, 2 * m), nn.ReLU(), nn.Linear(2 * m, d))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(e.unsqueeze(0))[0].squeeze(0))  # (P, d) -> (1, P, 2m) -> (P, d)


class PromptEncoder(nn.Module):
    def __init__(self, d: int, length: int, encoder: str = "mlp", hidden: int = 128) -> None:
        super().__init__()
        m = hidden
        self.embedding = nn.Parameter(torch.randn(length, d))  # N(0, 1), as peft's nn.Embedding
        self.encoder: nn.Module | None
        if encoder == "mlp":
            self.encoder = nn.Sequential(nn.Linear(d, m), nn.ReLU(), nn.Linear(m, m), nn.ReLU(), nn.Linear(m, d))
        else:
            self.encoder = _LSTMEncoder(d, m)

    def forward(self) -> torch.Tensor:
        if self.encoder is None:  # folded
            return self.prompt
        return self.encoder(self.embedding)  # (P, d)

    def folded_tensors(self) -> dict[str, torch.Tensor]:
        if self.encoder is None:
            return {"prompt": self.prompt}
        with torch.no_grad():  # as in fold(): CPU LSTM kernels differ in the last bits with autograd on
            return {"prompt": self()}

    def fold(self) -> None:
        if self.encoder is None:
            return
        with torch.no_grad():
            prompt = self()
        del self.embedding, self.encoder
        self.encoder = None
        self.prompt = nn.Parameter(prompt.detach().clone())
