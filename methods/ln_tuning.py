"""LN tuning (Zhao et al., 2023, "Tuning LayerNorm in attention"): train the norms' scale and shift.

On a norm site (``ln_attn``: the attention's norm; ``ln_mlp``: the MLP's; see ``autopeft.core.arch``) the
norm runs with its weight and bias shifted by trainable deltas,

    LN(x; w + dw, b + db),   dw = db = 0 at init

computed by the norm module itself (``torch.func.functional_call``), so LayerNorm and Llama's RMSNorm
(no bias: only dw) keep their exact semantics. Training dw is training w (same gradient), while the
base weights are never written: removal stays bitwise, and the count is exact. The identity at
initialisation (w + 0 = w). Parameters per site: d for RMSNorm, 2 d for LayerNorm.
The module (``NormDelta``) is in :mod:`autopeft.methods.modules.ln_tuning`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.core.arch import NORM_SITES
from autopeft.methods.base import NoConfig, Placement, register

if TYPE_CHECKING:
    import torch.nn as nn

    from autopeft.core.arch import ModelArch, NormSite


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
        from autopeft.methods.modules.ln_tuning import NormDelta

        assert site is not None
        return NormDelta(site)
