"""The bottleneck adapter's module (the method, its config and count: :mod:`autopeft.methods.adapter`);
the parallel adapter (:mod:`autopeft.methods.modules.parallel_adapter`) subclasses it."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from autopeft import kernels

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class BottleneckAdapter(nn.Module):
    # One-shot supernet (autopeft.oneshot.supernet): when set, a (size,) tensor in [0, 1] scaling each
    # bottleneck unit after the activation; its first value (the method's first slice) also scales the
    # output bias, so a closed gate removes the whole adapter. None (outside a supernet): the plain adapter.
    inner_gate: torch.Tensor | None = None

    def __init__(self, width: int, size: int, activation: str, scaling: float, gated: bool = False) -> None:
        super().__init__()
        self.down = nn.Linear(width, size)
        self.up = nn.Linear(size, width)
        self.act = ACTIVATIONS[activation]()
        self.scaling = scaling
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.gate: nn.Linear | None = None
        if gated:
            self.gate = nn.Linear(width, 1)
            nn.init.normal_(self.gate.weight, std=0.02)
            nn.init.zeros_(self.gate.bias)

    def update(self, h: torch.Tensor) -> torch.Tensor:
        """s * up(act(down(h))), fp32: (..., d) -> (..., m) -> (..., d)."""
        h = h.to(self.down.weight.dtype)
        if self.inner_gate is not None:
            hidden = self.act(self.down(h)) * self.inner_gate
            return (F.linear(hidden, self.up.weight) + self.inner_gate[0] * self.up.bias) * self.scaling
        return self.up(self.act(self.down(h))) * self.scaling

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.inner_gate is not None and self.gate is None:
            return y + self.update(y).to(y.dtype)
        if self.gate is None:  # y + update in one kernel on CUDA, else the reference (the same expression)
            return kernels.bottleneck_adapter(y, self.down.weight, self.down.bias, self.up.weight, self.up.bias,
                                              self.act, self.scaling)
        update = self.update(y) * torch.sigmoid(self.gate(y.to(self.gate.weight.dtype)))  # (..., d) * (..., 1)
        return y + update.to(y.dtype)
