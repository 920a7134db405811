"""DoRA (Liu et al., 2024): weight-decomposed LoRA, a learned magnitude times a LoRA-updated direction.

    W' = m * (W + s B A) / ||W + s B A||_row,   m: (d_out,) initialised to ||W||_row

so y = (m / ||W + s B A||) * (W x + s B A x) + b. As in the paper (sec. 4.3) and HF peft, the norm is
treated as a constant in backward (detached). At init B = 0, so m / ||W|| = 1: the identity.
``m`` maps onto peft's ``lora_magnitude_vector.default.weight``; A and B as in LoRA.
Parameters per site: r * (d_in + d_out) + d_out. The module (``DoRADelta``) and ``site_weight`` are in
:mod:`autopeft.methods.modules.dora`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autopeft.core.errors import UserError
from autopeft.methods.base import Placement, register
from autopeft.methods.lora import LoRAConfig

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch


@register
class DoRA:
    name = "dora"
    summary = "LoRA on the direction of W plus a learned per-output magnitude"
    placement = Placement.LINEAR
    stage = 1  # after plain additive deltas: it rescales the base projection's output
    config_cls = LoRAConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: LoRAConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        if config.gated:
            raise UserError("method 'dora' has no gated variant; use gated=true with 'lora' or 'lora_fa'")
        return config.r * (site.in_features + site.width) + site.width

    def build(self, config: LoRAConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        from autopeft.methods.modules.dora import DoRADelta

        assert site is not None
        return DoRADelta(site, config.r, config.scaling, config.dropout)

    def merge(self, module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from autopeft.methods.modules.dora import merge_dora

        return merge_dora(module, weight, bias)


def __getattr__(name: str) -> Any:
    """``site_weight`` (torch) for callers that import it from here; it lives in the modules file."""
    if name == "site_weight":
        from autopeft.methods.modules.dora import site_weight

        return site_weight
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
