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
    # One-shot supernet (autopeft.oneshot.supernet): when set, a (1,) opening g in [0, 1]: the input is
    # scaled by 1 + g (l - 1), so a closed gate leaves it as it was. None (outside a supernet): plain (IA)^3.
    inner_gate: torch.Tensor | None = None

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ia3_l = nn.Parameter(torch.ones(width))

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.inner_gate is not None:
            return x * (1 + self.inner_gate * (self.ia3_l - 1)).to(x.dtype)
        return x * self.ia3_l.to(x.dtype)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y


def merge_scale(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input scaling: W diag(l); output scaling: diag(l) W and l * b."""
    scale = module.ia3_l.to(weight)
    if isinstance(module, InputScale):
        return weight * scale[None, :], bias
    return weight * scale[:, None], bias * scale
