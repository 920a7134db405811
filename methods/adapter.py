"""Bottleneck adapter (Houlsby et al., 2019; Pfeiffer et al., 2020), serial form.

Applied to the output ``h`` of a projection (``o`` = after attention, ``down`` = after the MLP):

    h <- h + s * W_up act(W_down h + b_down) + s * b_up,   W_down: (m, d), W_up: (d, m)

Houlsby places one after attention and one after the MLP of every block; Pfeiffer only after the MLP.
W_up and b_up start at zero, so the adapter is the identity at initialisation.
Parameters: m * d + m (down) + d * m + d (up) = 2 m d + m + d.

Gate (``gated``; UniPELT, Mao et al., 2022): the adapter's update is scaled per token by
g_t = sigmoid(w_g . h_t + b_g), w_g: (d,) ~ N(0, 0.02^2), b_g = 0; +d + 1 parameters. UniPELT's code
averages g over the sequence (padding included); a per-token gate, like part B's gated LoRA, keeps an
example's output independent of its batch's padding. Still the identity at init (W_up = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from autopeft import kernels
from autopeft.core.arch import LinearSite, ModelArch
from autopeft.methods.base import Placement, positive, register

Activation = Literal["relu", "gelu", "silu", "tanh"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class AdapterConfig:
    size: int = 16
    activation: Activation = "relu"
    scaling: float = 1.0
    gated: bool = False  # UniPELT's learned per-token gate on the update

    def __post_init__(self) -> None:
        positive("size", self.size)


class BottleneckAdapter(nn.Module):
    def __init__(self, width: int, config: AdapterConfig) -> None:
        super().__init__()
        self.down = nn.Linear(width, config.size)
        self.up = nn.Linear(config.size, width)
        self.act = _ACTIVATIONS[config.activation]()
        self.scaling = config.scaling
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.gate: nn.Linear | None = None
        if getattr(config, "gated", False):
            self.gate = nn.Linear(width, 1)
            nn.init.normal_(self.gate.weight, std=0.02)
            nn.init.zeros_(self.gate.bias)

    def update(self, h: torch.Tensor) -> torch.Tensor:
        """s * up(act(down(h))), fp32: (..., d) -> (..., m) -> (..., d)."""
        h = h.to(self.down.weight.dtype)
        return self.up(self.act(self.down(h))) * self.scaling

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.gate is None:  # y + update in one kernel on CUDA, else the reference (the same expression)
            return kernels.bottleneck_adapter(y, self.down.weight, self.down.bias, self.up.weight, self.up.bias,
                                              self.act, self.scaling)
        update = self.update(y) * torch.sigmoid(self.gate(y.to(self.gate.weight.dtype)))  # (..., d) * (..., 1)
        return y + update.to(y.dtype)


@register
class Adapter:
    name = "adapter"
    summary = "serial bottleneck adapter on a projection's output (o: after attention, down: after MLP)"
    placement = Placement.LINEAR
    stage = 10
    config_cls = AdapterConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: AdapterConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return 2 * config.size * site.width + config.size + site.width + (site.width + 1 if config.gated else 0)

    def build(self, config: AdapterConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        assert site is not None
        return BottleneckAdapter(site.width, config)
