"""P-tuning v2 (Liu et al., 2022): deep prompts, i.e. trainable key/value prefixes at every selected layer.

The same module as :mod:`autopeft.methods.prefix` without its options: no reparameterisation (the
paper finds it unnecessary at this depth) and no gate, so ``ptuning_v2(length=P)`` equals
``prefix(length=P)`` and their adapter files are interchangeable. Per layer:

    softmax(q [P_k ; K]^T / sqrt(d)) [P_v ; V],   P_k, P_v: (H_kv, P, d_head) ~ N(0, 0.02^2)

Parameters per layer: 2 * P * H_kv * d_head. Not the identity at initialisation (the prefix takes
attention mass from the real tokens). HF peft's PREFIX_TUNING without projection is the same method;
see :mod:`autopeft.methods.prefix` for the mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from autopeft.methods.base import Placement, positive, register
from autopeft.methods.prefix import prefix_params

if TYPE_CHECKING:
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch


@dataclass(frozen=True)
class PTuningV2Config:
    length: int = 8

    def __post_init__(self) -> None:
        positive("length", self.length)


@register
class PTuningV2:
    name = "ptuning_v2"
    summary = "deep prompts: key/value prefixes at every selected layer, no reparameterisation"
    placement = Placement.ATTENTION
    stage = 0
    config_cls = PTuningV2Config
    sites = ("attn",)
    identity_at_init = False

    def num_params(self, config: PTuningV2Config, arch: ModelArch, site: LinearSite | None) -> int:
        return prefix_params(config.length, arch)

    def build(self, config: PTuningV2Config, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        from autopeft.methods.modules.prefix import PrefixKV

        return PrefixKV(arch, config.length)
