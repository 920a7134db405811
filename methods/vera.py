"""VeRA (Kopiczko et al., 2024): frozen random low-rank matrices shared across layers, trainable scalings.

    y = W x + b + lambda_b * (B (lambda_d * (A x))),   A: (r, d_in), B: (d_out, r) frozen
                                                         lambda_d: (r,), lambda_b: (d_out,) trainable

A and B are drawn from a generator seeded by ``seed`` and the site's shape, so every layer with the same
projection shape shares them, and they are regenerated rather than stored (non-persistent buffers).
Both use Kaiming-uniform init as in HF peft. lambda_b starts at 0 (identity at init), lambda_d at
``d_init``. Parameters per site: r + d_out. The module (``VeRADelta``) and ``shared_projections`` are in
:mod:`autopeft.methods.modules.vera`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft.methods.base import Placement, positive, register

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch


@dataclass(frozen=True)
class VeRAConfig:
    r: int = 256
    d_init: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        positive("r", self.r)


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
        from autopeft.methods.modules.vera import VeRADelta

        assert site is not None
        return VeRADelta(site.in_features, site.width, config.r, config.d_init, config.seed)

    def merge(self, module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from autopeft.methods.modules.vera import merge_vera

        return merge_vera(module, weight, bias)


def __getattr__(name: str) -> Any:
    """``shared_projections`` (torch) for callers that import it from here; it lives in the modules file."""
    if name == "shared_projections":
        from autopeft.methods.modules.vera import shared_projections

        return shared_projections
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
