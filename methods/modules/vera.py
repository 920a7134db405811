"""VeRA's module and shared projections (the method, its config and count: :mod:`autopeft.methods.vera`)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def shared_projections(r: int, d_in: int, d_out: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + d_in * 1_009 + d_out)
    a, b = torch.empty(r, d_in), torch.empty(d_out, r)
    for t in (a, b):
        bound = 1 / math.sqrt(t.shape[1])  # kaiming_uniform_(a=sqrt(5)) bound, drawn from our generator
        t.uniform_(-bound, bound, generator=generator)
    return a, b


class VeRADelta(nn.Module):
    def __init__(self, in_features: int, out_features: int, r: int, d_init: float, seed: int) -> None:
        super().__init__()
        a, b = shared_projections(r, in_features, out_features, seed)
        self.register_buffer("vera_A", a, persistent=False)
        self.register_buffer("vera_B", b, persistent=False)
        self.lambda_d = nn.Parameter(torch.full((r,), d_init))
        self.lambda_b = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x: (..., d_in) -> (..., r) -> (..., d_out)
        hidden = (x.to(self.vera_A.dtype) @ self.vera_A.T) * self.lambda_d
        return y + ((hidden @ self.vera_B.T) * self.lambda_b).to(y.dtype)


def merge_vera(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W + diag(lambda_b) B diag(lambda_d) A."""
    assert isinstance(module, VeRADelta)
    delta = module.lambda_b[:, None] * (module.vera_B @ (module.lambda_d[:, None] * module.vera_A))
    return weight + delta.to(weight), bias
