"""LN tuning's module (the method and its count: :mod:`autopeft.methods.ln_tuning`)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.func import functional_call

from autopeft.core.arch import NormSite


class NormDelta(nn.Module):
    def __init__(self, site: NormSite) -> None:
        super().__init__()
        self.delta_weight = nn.Parameter(torch.zeros(site.width))
        self.delta_bias = nn.Parameter(torch.zeros(site.width)) if site.bias else None
        self._base: list[nn.Module] = []  # a plain list: the frozen norm must not become our submodule

    def bind(self, base: nn.Module, site: NormSite) -> None:
        self._base = [base]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        base = self._base[0]  # y = base(x) is recomputed with shifted parameters
        shifted = {"weight": base.weight + self.delta_weight.to(base.weight.dtype)}
        if self.delta_bias is not None:
            shifted["bias"] = base.bias + self.delta_bias.to(base.bias.dtype)
        return functional_call(base, shifted, (x,))
