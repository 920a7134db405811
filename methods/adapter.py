"""Bottleneck adapter (Houlsby et al., 2019; Pfeiffer et al., 2020), serial form.

Applied to the output ``h`` of a projection (``o`` = after attention, ``down`` = after the MLP):

    h <- h + s * W_up act(W_down h + b_down) + s * b_up,   W_down: (m, d), W_up: (d, m)

Houlsby places one after attention and one after the MLP of every block; Pfeiffer only after the MLP.
W_up and b_up start at zero, so the adapter is the identity at initialisation.
Parameters: m * d + m (down) + d * m + d (up) = 2 m d + m + d.

Gate (``gated``; UniPELT, Mao et al., 2022): the adapter's update is scaled per token by
g_t = sigmoid(w_g . h_t + b_g), w_g: (d,) ~ N(0, 0.02^2), b_g = 0; +d + 1 parameters. UniPELT's code
averages g over the sequence (padding included); a per-token gate, like part B's gated LoRA, keeps an
example's output independent of its batch's padding. Still the identity at init (W_up = 0).
The module (``BottleneckAdapter``) is in :mod:`autopeft.methods.modules.adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from autopeft.methods.base import Placement, positive, register

if TYPE_CHECKING:
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch

Activation = Literal["relu", "gelu", "silu", "tanh"]  # the keys of modules.adapter.ACTIVATIONS


@dataclass(frozen=True)
class AdapterConfig:
    size: int = 16
    activation: Activation = "relu"
    scaling: float = 1.0
    gated: bool = False  # UniPELT's learned per-token gate on the update

    def __post_init__(self) -> None:
        positive("size", self.size)


@register
class Adapter:
    name = "adapter"
    summary = "serial bottleneck adapter on a projection's output (o: after attention, down: after MLP)"
    placement = Placement.LINEAR
    stage = 10
    config_cls = AdapterConfig
    sites = None
    identity_at_init = True

    def num_params(self, config: AdapterConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return 2 * config.size * site.width + config.size + site.width + (site.width + 1 if config.gated else 0)

    def build(self, config: AdapterConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        from autopeft.methods.modules.adapter import BottleneckAdapter

        assert site is not None
        return BottleneckAdapter(site.width, config.size, config.activation, config.scaling, config.gated)
