"""DoRA's module (the method, its config and count: :mod:`autopeft.methods.dora`)."""

from __future__ import annotations

import torch
import torch.nn as nn

from autopeft.core.arch import LinearSite
from autopeft.methods.modules.lora import LoRADelta
from autopeft.peft.quantize import dequantized_weight, is_quantized


def site_weight(base: nn.Module, site: LinearSite) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The site's (d_out, d_in) weight and bias, whatever the module type (Linear, GPT-2's Conv1D, or a
    quantized Linear, dequantized)."""
    if is_quantized(base):
        weight = dequantized_weight(base)
    else:
        weight = base.weight if isinstance(base, nn.Linear) else base.weight.T  # Conv1D stores (d_in, d_out)
    start, stop = site.columns
    bias = base.bias[start:stop] if getattr(base, "bias", None) is not None else None
    return weight[start:stop], bias


class DoRADelta(nn.Module):
    def __init__(self, site: LinearSite, r: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.lora = LoRADelta(site.in_features, site.width, r, scaling, dropout)
        self.magnitude = nn.Parameter(torch.ones(site.width))
        self._base: list[nn.Module] = []  # a plain list: the frozen base must not become our submodule
        self._site = site

    def bind(self, base: nn.Module, site: LinearSite) -> None:
        self._base = [base]
        weight, _ = site_weight(base, site)
        with torch.no_grad():
            self.magnitude.copy_(weight.float().norm(dim=1))

    # One-shot supernet (autopeft.oneshot.supernet): the (r,) openings of the rank dimensions, held by the
    # inner LoRA (whose update then reads s B diag(g) A x); the merged weight below uses the same gated A.
    @property
    def inner_gate(self) -> torch.Tensor | None:
        return self.lora.inner_gate

    @inner_gate.setter
    def inner_gate(self, value: torch.Tensor | None) -> None:
        self.lora.inner_gate = value

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight, bias = site_weight(self._base[0], self._site)
        lora = self.lora
        a = lora.lora_A if lora.inner_gate is None else lora.lora_A * lora.inner_gate[:, None]
        merged = weight.float() + lora.scaling * (lora.lora_B @ a)  # (d_out, d_in)
        scale = self.magnitude / merged.norm(dim=1).detach()  # (d_out,)
        without_bias = y.float() - (bias.float() if bias is not None else 0.0)
        out = scale * (without_bias + lora(x, torch.zeros_like(without_bias)))
        return (out + (bias.float() if bias is not None else 0.0)).to(y.dtype)


def merge_dora(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """out = c ⊙ (W x + b - b0 + s B A x) + b0 with c = m / ||W0 + s B A||: W' = c (W + s B A),
    b' = c (b - b0) + b0, where W0, b0 are the base's own weight and bias (W, b include earlier stages)."""
    assert isinstance(module, DoRADelta)
    weight0, bias0 = site_weight(module._base[0], module._site)
    lora = module.lora
    update = lora.scaling * (lora.lora_B @ lora.lora_A).to(weight)
    scale = (module.magnitude / (weight0.float() + update).norm(dim=1)).to(weight)
    b0 = bias0.to(bias) if bias0 is not None else torch.zeros_like(bias)
    return scale[:, None] * (weight + update), scale * (bias - b0) + b0
