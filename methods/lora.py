"""LoRA (Hu et al., 2021): a trainable low-rank update of a frozen projection.

    y = W x + b + s * B (A dropout(x)),   A: (r, d_in), B: (d_out, r),  s = alpha / r
                                          (rsLoRA, Kalajdzievski 2023: s = alpha / sqrt(r))

B starts at zero, so the model is unchanged at initialisation; A is Kaiming-uniform (a = sqrt(5)), the
same initialisation as HF peft's default, so ``lora_A``/``lora_B`` map one-to-one onto peft's
``lora_A.weight``/``lora_B.weight``. Parameters: r * (d_in + d_out), plus d_in + 1 with ``gated``
(UniPELT's gate). Merges into W as W + s B A (not when gated).
On fused projections (GPT-2's c_attn), d_out is the width of the chosen slice (q, k or v).
The modules (``LoRADelta``, ``GatedLoRADelta``) are in :mod:`autopeft.methods.modules.lora`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autopeft.methods.base import Placement, positive, register

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch


@dataclass(frozen=True)
class LoRAConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    rslora: bool = False
    gated: bool = False  # UniPELT: the update is scaled by a learned per-token gate sigmoid(W_g x + b_g)

    def __post_init__(self) -> None:
        positive("r", self.r)
        positive("alpha", self.alpha)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


def build_delta(site: LinearSite, config: LoRAConfig, freeze_a: bool = False) -> nn.Module:
    """The LoRA module of one site (gated or not); shared with LoRA-FA."""
    from autopeft.methods.modules.lora import GatedLoRADelta, LoRADelta

    cls = GatedLoRADelta if config.gated else LoRADelta
    return cls(site.in_features, site.width, config.r, config.scaling, config.dropout, freeze_a)


def merge_lora(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """W + s B A; a gated update depends on x and does not merge."""
    from autopeft.methods.modules import lora

    return lora.merge_lora(module, weight, bias)


def gate_params(config: LoRAConfig, site: LinearSite) -> int:
    return site.in_features + 1 if config.gated else 0


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
        return config.r * (site.in_features + site.width) + gate_params(config, site)

    def build(self, config: LoRAConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        assert site is not None
        return build_delta(site, config)

    merge = staticmethod(merge_lora)


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
        return config.r * site.width + gate_params(config, site)

    def build(self, config: LoRAConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        assert site is not None
        return build_delta(site, config, freeze_a=True)

    merge = staticmethod(merge_lora)
