"""LN tuning (Zhao et al., 2023, "Tuning LayerNorm in attention"): train the norms' scale and shift.

On a norm site (``ln_attn``: the attention's norm; ``ln_mlp``: the MLP's; see ``autopeft.core.arch``) the
norm runs with its weight and bias shifted by trainable deltas,

    LN(x; w + dw, b + db),   dw = db = 0 at init

computed by the norm module itself (``torch.func.functional_call``), so LayerNorm and Llama's RMSNorm
(no bias: only dw) keep their exact semantics. Training dw is training w (same gradient), while the
base weights are never written: removal stays bitwise, and the count is exact. The identity at
initialisation (w + 0 = w). Parameters per site: d for RMSNorm, 2 d for LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.func import functional_call

from autopeft.core.arch import NORM_SITES, ModelArch, NormSite
from autopeft.methods.base import NoConfig, Placement, register


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


@register
class LNTuning:
    name = "ln_tuning"
    summary = "trainable shifts of a block's norm weights/biases (ln_attn, ln_mlp)"
    placement = Placement.NORM
    stage = 0
    config_cls = NoConfig
    sites = NORM_SITES
    identity_at_init = True

    def num_params(self, config: NoConfig, arch: ModelArch, site: NormSite | None) -> int:
        assert site is not None
        return site.num_params

    def build(self, config: NoConfig, arch: ModelArch, site: NormSite | None) -> nn.Module:
        assert site is not None
        return NormDelta(site)
