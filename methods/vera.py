"""VeRA (Kopiczko et al., 2024): frozen random low-rank matrices shared across layers, trainable scalings.

    y = W x + b + lambda_b * (B (lambda_d * (A x))),   A: (r, d_in), B: (d_out, r) frozen
                                                         lambda_d: (r,), lambda_b: (d_out,) trainable

A and B are drawn from a generator seeded by ``seed`` and the site's shape, so every layer with the same
projection shape shares them, and they are regenerated rather than stored (non-persistent buffers).
Both use Kaiming-uniform init as in HF peft. lambda_b starts at 0 (identity at init), lambda_d at
``d_init``. Parameters per site: r + d_out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from autopeft.core.arch import LinearSite, ModelArch
from autopeft.methods.base import Placement, positive, register


@dataclass(frozen=True)
class VeRAConfig:
    r: int = 256
    d_init: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        positive("r", self.r)


def shared_projections(r: int, d_in: int, d_out: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + d_in * 1_009 + d_out)
    a, b = torch.empty(r, d_in), torch.empty(d_out, r)
    for t in (a, b):
        bound = 1 / math.sqrt(t.shape[1])  # kaiming_uniform_(a=sqrt(5)) bound, drawn from our generator
        t.uniform_(-bound, bound, generator=generator)
    return a, b


class VeRADelta(nn.Module):
    def __init__(self, in_features: int, out_features: int, config: VeRAConfig) -> None:
        super().__init__()
        a, b = shared_projections(config.r, in_features, out_features, config.seed)
        self.register_buffer("vera_A", a, persistent=False)
        self.register_buffer("vera_B", b, persistent=False)
        self.lambda_d = nn.Parameter(torch.full((config.r,), config.d_init))
        self.lambda_b = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x: (..., d_in) -> (..., r) -> (..., d_out)
        hidden = (x.to(self.vera_A.dtype) @ self.vera_A.T) * self.lambda_d
        return y + ((hidden @ self.vera_B.T) * self.lambda_b).to(y.dtype)


@register
class VeRA:
    name = "vera"
    summary = "frozen random A/B shared across layers, trainable scaling vectors d and b"
    placement = Placement.LINEAR
    stage = 0
    config_cls = VeRAConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: VeRAConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return config.r + site.width

    def build(self, config: VeRAConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        assert site is not None
        return VeRADelta(site.in_features, site.width, config)

    def merge(self, module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W + diag(lambda_b) B diag(lambda_d) A."""
        assert isinstance(module, VeRADelta)
        delta = module.lambda_b[:, None] * (module.vera_B @ (module.lambda_d[:, None] * module.vera_A))
        return weight + delta.to(weight), bias
