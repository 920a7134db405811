"""(IA)^3 (Liu et al., 2022): learned rescaling vectors, initialised at 1.

On attention projections (k, v, and any other output site) the output is rescaled, y <- l * y;
on the MLP's down projection the *input* is rescaled, y <- W (l * x) + b, i.e. the intermediate
activation is scaled, as in the paper and in HF peft's ``feedforward_modules``. Identity at
initialisation; merges into W as ``W diag(l)`` (input) or ``diag(l) W`` (output, bias scaled too).
Parameters per site: d_out (output sites) or d_in (down).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from autopeft.core.arch import LinearSite, ModelArch
from autopeft.methods.base import NoConfig, Placement, register

INPUT_SITES = ("down",)


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


@register
class IA3:
    name = "ia3"
    summary = "learned rescaling of keys/values (output) and of the MLP intermediate (input of down)"
    placement = Placement.LINEAR
    stage = 5  # after additive deltas on the same projection
    config_cls = NoConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: NoConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return site.in_features if site.name in INPUT_SITES else site.width

    def build(self, config: NoConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        assert site is not None
        return InputScale(site.in_features) if site.name in INPUT_SITES else OutputScale(site.width)

    def merge(self, module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input scaling: W diag(l); output scaling: diag(l) W and l * b."""
        scale = module.ia3_l.to(weight)
        if isinstance(module, InputScale):
            return weight * scale[None, :], bias
        return weight * scale[:, None], bias * scale
