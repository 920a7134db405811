"""(IA)^3 (Liu et al., 2022): learned rescaling vectors, initialised at 1.

On attention projections (k, v, and any other output site) the output is rescaled, y <- l * y;
on the MLP's down projection the *input* is rescaled, y <- W (l * x) + b, i.e. the intermediate
activation is scaled, as in the paper and in HF peft's ``feedforward_modules``. Identity at
initialisation; merges into W as ``W diag(l)`` (input) or ``diag(l) W`` (output, bias scaled too).
Parameters per site: d_out (output sites) or d_in (down).
The modules (``OutputScale``, ``InputScale``) are in :mod:`autopeft.methods.modules.ia3`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.methods.base import NoConfig, Placement, register

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch

INPUT_SITES = ("down",)


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
        from autopeft.methods.modules.ia3 import InputScale, OutputScale

        assert site is not None
        return InputScale(site.in_features) if site.name in INPUT_SITES else OutputScale(site.width)

    def merge(self, module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from autopeft.methods.modules.ia3 import merge_scale

        return merge_scale(module, weight, bias)
