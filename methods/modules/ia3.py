"""(IA)^3's modules (the method and its count: :mod:`autopeft.methods.ia3`)."""

from __future__ import annotations

import torch
import torch.nn as nn


class OutputScale(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ia3_l = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y * self.ia3_l.to(y.dtype)


class InputScale(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ia3_l = nn.Parameter(torch.ones(width))

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.ia3_l.to(x.dtype)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y


def merge_scale(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input scaling: W diag(l); output scaling: diag(l) W and l * b."""
    scale = module.ia3_l.to(weight)
    if isinstance(module, InputScale):
        return weight * scale[None, :], bias
    return weight * scale[:, None], bias * scale
