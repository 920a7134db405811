"""The parallel adapter's module (the method, its config and count: :mod:`autopeft.methods.parallel_adapter`)."""

from __future__ import annotations

import torch

from autopeft.methods.modules.adapter import BottleneckAdapter


class ParallelAdapter(BottleneckAdapter):
    def __init__(self, width: int, size: int, activation: str, scaling: float, captures: str) -> None:
        super().__init__(width, size, activation, scaling)  # no gate
        self.captures = captures  # "attention" (site o) or "mlp" (site down)
        self._input: torch.Tensor | None = None

    def capture(self, x: torch.Tensor) -> None:
        self._input = x

    def select_captured(self, select) -> None:
        """Narrow a captured input to the rows the sublayer's output keeps (autopeft/training/fastpath/head_rows.py)."""
        if self._input is not None:
            self._input = select(self._input)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sublayer_input, self._input = self._input, None
        assert sublayer_input is not None, "parallel adapter: the sublayer's input was not captured"
        return y + self.update(sublayer_input).to(y.dtype)
