"""Prefix tuning (Li & Liang, 2021): learned key/value vectors prepended in chosen layers.

For a layer with prefix length P, attention over a sequence of length S attends over P + S positions:

    softmax(q [P_k ; K]^T / sqrt(d)) [P_v ; V],   P_k, P_v: (H_kv, P, d_head)

Parameters per layer: 2 * P * H_kv * d_head (GQA models store only the key/value heads).
Not the identity at initialisation: the prefix takes some attention mass from the real tokens.
P_k and P_v start as N(0, 0.02^2), so prefix logits start near 0 and values near 0 (a mild dilution).
Layout matches HF peft's past_key_values for prefix tuning (per layer: key, value of
(H_kv, P, d_head)). The reparameterisation MLP of the paper is the methods-library issue's work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from autopeft.arch import LinearSite, ModelArch
from autopeft.methods.base import Placement, positive, register


@dataclass(frozen=True)
class PrefixConfig:
    length: int = 8

    def __post_init__(self) -> None:
        positive("length", self.length)


class PrefixKV(nn.Module):
    def __init__(self, kv_heads: int, head_dim: int, config: PrefixConfig) -> None:
        super().__init__()
        self.key = nn.Parameter(torch.randn(kv_heads, config.length, head_dim) * 0.02)
        self.value = nn.Parameter(torch.randn(kv_heads, config.length, head_dim) * 0.02)


@register
class Prefix:
    name = "prefix"
    summary = "learned key/value prefixes in a layer's attention"
    placement = Placement.ATTENTION
    stage = 0
    config_cls = PrefixConfig
    sites = ("attn",)
    identity_at_init = False

    def num_params(self, config: PrefixConfig, arch: ModelArch, site: LinearSite | None) -> int:
        return 2 * config.length * arch.kv_dim

    def build(self, config: PrefixConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        return PrefixKV(arch.num_kv_heads, arch.head_dim, config)
