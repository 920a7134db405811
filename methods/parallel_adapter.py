"""Parallel adapter (He et al., 2022, "Towards a unified view of parameter-efficient transfer learning").

A bottleneck adapter *beside* a sublayer rather than after it: it reads the sublayer's input x and adds
to the sublayer's output h (before the residual connection),

    h <- h + s * W_up act(W_down x + b_down) + s * b_up,   W_down: (m, d), W_up: (d, m)

On site ``down`` the sublayer is the MLP (x = the MLP's input, h = the down projection's output); on
site ``o`` it is attention (x = the attention's input, h = the output projection's output). The input
is handed over by a forward pre-hook on the block's attention / MLP module (``captures``). He et al.'s
"scaled parallel adapter" uses s = 4 (see the ``mam`` preset). W_up and b_up start at zero, so it is the
identity at initialisation. Parameters per site: 2 m d + m + d.
The module (``ParallelAdapter``) is in :mod:`autopeft.methods.modules.parallel_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from autopeft.methods.adapter import Activation
from autopeft.methods.base import Placement, positive, register

if TYPE_CHECKING:
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch


@dataclass(frozen=True)
class ParallelAdapterConfig:
    size: int = 16
    activation: Activation = "relu"
    scaling: float = 1.0

    def __post_init__(self) -> None:
        positive("size", self.size)


@register
class ParallelAdapterMethod:
    name = "parallel_adapter"
    summary = "bottleneck adapter beside attention (o) or the MLP (down): reads its input, adds to its output"
    placement = Placement.LINEAR
    stage = 10  # with the serial adapters, after additive deltas on the same projection
    config_cls = ParallelAdapterConfig
    sites = ("o", "down")
    identity_at_init = True

    def num_params(self, config: ParallelAdapterConfig, arch: ModelArch, site: LinearSite | None) -> int:
        assert site is not None
        return 2 * config.size * site.width + config.size + site.width

    def build(self, config: ParallelAdapterConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        from autopeft.methods.modules.parallel_adapter import ParallelAdapter

        assert site is not None and site.width == arch.hidden
        return ParallelAdapter(site.width, config.size, config.activation, config.scaling,
                               "attention" if site.name == "o" else "mlp")
