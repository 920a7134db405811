"""LoRA (Hu et al., 2021): a trainable low-rank update of a frozen projection.

    y = W x + b + s * B (A dropout(x)),   A: (r, d_in), B: (d_out, r),  s = alpha / r
                                          (rsLoRA, Kalajdzievski 2023: s = alpha / sqrt(r))

B starts at zero, so the model is unchanged at initialisation; A is Kaiming-uniform (a = sqrt(5)), the
same initialisation as HF peft's default, so ``lora_A``/``lora_B`` map one-to-one onto peft's
``lora_A.weight``/``lora_B.weight``. Parameters: r * (d_in + d_out), plus d_in + 1 with ``gated``
(UniPELT's gate, :class:`GatedLoRADelta`). Merges into W as W + s B A (not when gated).
On fused projections (GPT-2's c_attn), d_out is the width of the chosen slice (q, k or v).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from autopeft import kernels
from autopeft.core.arch import LinearSite, ModelArch
from autopeft.methods.base import Placement, positive, register


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
        # x: (..., d_in)  y: (..., d_out); Triton on CUDA, else the reference (the same expression as before)
        return kernels.lora_delta(x, y, self.lora_A, self.lora_B, self.scaling, self.dropout)

    def fused_linear(self, x: torch.Tensor, base: nn.Module) -> torch.Tensor:
        """base(x) + the update, one fused GEMM where possible (AdaptedLinear's fast path, alone on a site)."""
        if type(self).forward is not LoRADelta.forward or self._forward_hooks or self._forward_pre_hooks:
            return self(x, base(x))  # a subclass changes the update (e.g. gated), or hooks expect a call
        return kernels.lora_linear(x, base, self.lora_A, self.lora_B, self.scaling, self.dropout)


class GatedLoRADelta(LoRADelta):
    """UniPELT's gated LoRA (Mao et al., 2022): y + sigmoid(W_g x + b_g) * s B A x, W_g: (1, d_in).

    B = 0 keeps it the identity at init whatever the gate; the gate adds d_in + 1 parameters.
    """

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig, freeze_a: bool = False) -> None:
        super().__init__(in_features, out_features, config, freeze_a)
        self.gate = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(x.to(self.gate.weight.dtype)))  # (..., 1)
        return y + gate.to(y.dtype) * super().forward(x, torch.zeros_like(y))


def build_delta(site: LinearSite, config: LoRAConfig, freeze_a: bool = False) -> LoRADelta:
    cls = GatedLoRADelta if config.gated else LoRADelta
    return cls(site.in_features, site.width, config, freeze_a)


def gate_params(config: LoRAConfig, site: LinearSite) -> int:
    return site.in_features + 1 if config.gated else 0


def merge_lora(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """W + s B A; a gated update depends on x and does not merge."""
    if isinstance(module, GatedLoRADelta):
        return None
    assert isinstance(module, LoRADelta)
    return weight + module.scaling * (module.lora_B @ module.lora_A).to(weight), bias


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
