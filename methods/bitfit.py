"""BitFit (Ben Zaken et al., 2022): train only bias terms.

Implemented as a trainable bias *delta* on a projection's output, y <- y + delta_b with delta_b
starting at 0: the gradient w.r.t. delta_b equals the gradient w.r.t. the original bias, so training it
is exactly bias tuning, while the base weights are never modified (removal stays bitwise) and projections
without a bias (Llama) can still be tuned. Merging is ``b + delta_b``. Parameters per site: d_out.
The module (``BiasDelta``) is in :mod:`autopeft.methods.modules.bitfit`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.methods.base import NoConfig, Placement, register

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch


@register
class BitFit:
    name = "bitfit"
    summary = "trainable bias (delta) of a projection"
    placement = Placement.LINEAR
    stage = 0
    config_cls = NoConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: NoConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return site.width

    def build(self, config: NoConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        from autopeft.methods.modules.bitfit import BiasDelta

        assert site is not None
        return BiasDelta(site.width)

    def merge(self, module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from autopeft.methods.modules.bitfit import merge_bias

        return merge_bias(module, weight, bias)
