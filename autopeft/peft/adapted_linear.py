"""The wrapper that replaces a projection (or a block's norm) receiving linear-site methods.

``AdaptedLinear(base)`` keeps the original module as ``base`` and applies each method's transform to
its output columns (a slice of a fused projection such as GPT-2's ``c_attn``, or all of them), in stage
order; input transforms ((IA)^3 on a down projection) rescale what ``base`` sees. See
:mod:`autopeft.peft.inject` (which places it) and :mod:`autopeft.peft.merge` (which folds it into weights).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class AdaptedLinear(nn.Module):
    """A projection (or a block's norm) plus the transforms of the methods placed on it (per site column range)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.transforms = nn.ModuleDict()
        self._columns: dict[str, tuple[int, int] | None] = {}
        self._stages: dict[str, int] = {}

    def add(self, name: str, module: nn.Module, columns: tuple[int, int] | None, stage: int) -> None:
        self.transforms[name] = module
        self._columns[name] = columns
        self._stages[name] = stage
        order = sorted(self._stages, key=lambda n: self._stages[n])
        self.transforms = nn.ModuleDict({n: self.transforms[n] for n in order})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.transforms) == 1:  # fast path: a lone transform on the whole output may fuse with base
            (name, transform), = self.transforms.items()
            if self._columns[name] is None and hasattr(transform, "fused_linear"):
                return transform.fused_linear(x, self.base)  # == transform(x, base(x)) (LoRA: autopeft.kernels)
        base_input = x
        for transform in self.transforms.values():
            # input transforms (e.g. (IA)^3 on the MLP's down projection) rescale what the base sees;
            # output transforms below still receive the original x
            if hasattr(transform, "transform_input"):
                base_input = transform.transform_input(base_input)
        y = self.base(base_input)
        for name, transform in self.transforms.items():
            columns = self._columns[name]
            if columns is None:
                y = transform(x, y)
            else:  # a slice of a fused projection, e.g. q of GPT-2's c_attn
                start, stop = columns
                part = transform(x, y[..., start:stop])
                y = torch.cat([y[..., :start], part, y[..., stop:]], dim=-1)
        return y
