"""LoRA (Hu et al., 2021): a trainable low-rank update of a frozen projection.

    y = W x + b + s * B (A dropout(x)),   A: (r, d_in), B: (d_out, r),  s = alpha / r
                                          (rsLoRA, Kalajdzievski 2023: s = alpha / sqrt(r))

B starts at zero, so the model is unchanged at initialisation; A is Kaiming-uniform (a = sqrt(5)), the
same initialisation as HF peft's default, so ``lora_A``/``lora_B`` map one-to-one onto peft's
``lora_A.weight``/``lora_B.weight``. Parameters: r * (d_in + d_out).
On fused projections (GPT-2's c_attn), d_out is the width of the chosen slice (q, k or v).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from autopeft.arch import LinearSite, ModelArch
from autopeft.methods.base import Placement, positive, register


@dataclass(frozen=True)
class LoRAConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    rslora: bool = False

    def __post_init__(self) -> None:
        positive("r", self.r)
        positive("alpha", self.alpha)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


class LoRADelta(nn.Module):
    def __init__(self, in_features: int, out_features: int, config: LoRAConfig, freeze_a: bool = False) -> None:
        super().__init__()
        a = torch.empty(config.r, in_features)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        if freeze_a:  # LoRA-FA: A stays at its random init; a persistent buffer, so it is saved
            self.register_buffer("lora_A", a)
        else:
            self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(out_features, config.r))
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x: (..., d_in)  y: (..., d_out)
        update = self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.T @ self.lora_B.T
        return y + (update * self.scaling).to(y.dtype)


@register
class LoRA:
    name = "lora"
    summary = "low-rank update s*B*A of a frozen projection"
    placement = Placement.LINEAR
    stage = 0
    config_cls = LoRAConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: LoRAConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return config.r * (site.in_features + site.width)

    def build(self, config: LoRAConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        assert site is not None
        return LoRADelta(site.in_features, site.width, config)


@register
class LoRAFA:
    """LoRA-FA (Zhang et al., 2023): A frozen at its random init, only B trains (r * d_out parameters).

    A is kept as a buffer and saved with the adapter (it is not trainable, so it is not counted).
    """

    name = "lora_fa"
    summary = "LoRA with A frozen at its random initialisation; only B trains"
    placement = Placement.LINEAR
    stage = 0
    config_cls = LoRAConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: LoRAConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return config.r * site.width

    def build(self, config: LoRAConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        assert site is not None
        return LoRADelta(site.in_features, site.width, config, freeze_a=True)
