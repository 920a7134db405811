"""DoRA (Liu et al., 2024): weight-decomposed LoRA, a learned magnitude times a LoRA-updated direction.

    W' = m * (W + s B A) / ||W + s B A||_row,   m: (d_out,) initialised to ||W||_row

so y = (m / ||W + s B A||) * (W x + s B A x) + b. As in the paper (sec. 4.3) and HF peft, the norm is
treated as a constant in backward (detached). At init B = 0, so m / ||W|| = 1: the identity.
``m`` maps onto peft's ``lora_magnitude_vector.default.weight``; A and B as in LoRA.
Parameters per site: r * (d_in + d_out) + d_out.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from autopeft.arch import LinearSite, ModelArch
from autopeft.methods.base import Placement, register
from autopeft.methods.lora import LoRAConfig, LoRADelta


def site_weight(base: nn.Module, site: LinearSite) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The site's (d_out, d_in) weight and bias, whatever the module type (Linear or GPT-2's Conv1D)."""
    weight = base.weight if isinstance(base, nn.Linear) else base.weight.T  # Conv1D stores (d_in, d_out)
    start, stop = site.columns
    bias = base.bias[start:stop] if getattr(base, "bias", None) is not None else None
    return weight[start:stop], bias


class DoRADelta(nn.Module):
    def __init__(self, site: LinearSite, config: LoRAConfig) -> None:
        super().__init__()
        self.lora = LoRADelta(site.in_features, site.width, config)
        self.magnitude = nn.Parameter(torch.ones(site.width))
        self._base: list[nn.Module] = []  # a plain list: the frozen base must not become our submodule
        self._site = site

    def bind(self, base: nn.Module, site: LinearSite) -> None:
        self._base = [base]
        weight, _ = site_weight(base, site)
        with torch.no_grad():
            self.magnitude.copy_(weight.float().norm(dim=1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight, bias = site_weight(self._base[0], self._site)
        lora = self.lora
        merged = weight.float() + lora.scaling * (lora.lora_B @ lora.lora_A)  # (d_out, d_in)
        scale = self.magnitude / merged.norm(dim=1).detach()  # (d_out,)
        without_bias = y.float() - (bias.float() if bias is not None else 0.0)
        out = scale * (without_bias + lora(x, torch.zeros_like(without_bias)))
        return (out + (bias.float() if bias is not None else 0.0)).to(y.dtype)


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
        return config.r * (site.in_features + site.width) + site.width

    def build(self, config: LoRAConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        assert site is not None
        return DoRADelta(site, config)
