"""BitFit's module (the method and its count: :mod:`autopeft.methods.bitfit`)."""

from __future__ import annotations

import torch
import torch.nn as nn


class BiasDelta(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.delta_bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y + self.delta_bias.to(y.dtype)


def merge_bias(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    assert isinstance(module, BiasDelta)
    return weight, bias + module.delta_bias.to(bias)
