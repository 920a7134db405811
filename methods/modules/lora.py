"""LoRA's modules (the method, its config and count: :mod:`autopeft.methods.lora`).

``LoRADelta`` adds s * B (A dropout(x)); ``GatedLoRADelta`` scales that update by UniPELT's per-token gate.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from autopeft import kernels


class LoRADelta(nn.Module):
    # One-shot supernet (autopeft.oneshot.supernet): when set, a (r,) tensor in [0, 1] scaling each rank
    # dimension, s B diag(g) A x; None (always outside a supernet) is plain LoRA.
    inner_gate: torch.Tensor | None = None

    def __init__(self, in_features: int, out_features: int, r: int, scaling: float, dropout: float = 0.0,
                 freeze_a: bool = False) -> None:
        super().__init__()
        a = torch.empty(r, in_features)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        if freeze_a:  # LoRA-FA: A stays at its random init; a persistent buffer, so it is saved
            self.register_buffer("lora_A", a)
        else:
            self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(out_features, r))
        self.scaling = scaling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x: (..., d_in)  y: (..., d_out); Triton on CUDA, else the reference (the same expression as before)
        if self.inner_gate is not None:
            h = self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.T * self.inner_gate  # (..., r)
            return y + (h @ self.lora_B.T * self.scaling).to(y.dtype)
        return kernels.lora_delta(x, y, self.lora_A, self.lora_B, self.scaling, self.dropout)

    def fused_linear(self, x: torch.Tensor, base: nn.Module) -> torch.Tensor:
        """base(x) + the update, one fused GEMM where possible (AdaptedLinear's fast path, alone on a site)."""
        if (type(self).forward is not LoRADelta.forward or self._forward_hooks or self._forward_pre_hooks
                or self.inner_gate is not None):
            return self(x, base(x))  # a subclass changes the update (e.g. gated), or hooks expect a call
        return kernels.lora_linear(x, base, self.lora_A, self.lora_B, self.scaling, self.dropout)


class GatedLoRADelta(LoRADelta):
    """UniPELT's gated LoRA (Mao et al., 2022): y + sigmoid(W_g x + b_g) * s B A x, W_g: (1, d_in).

    B = 0 keeps it the identity at init whatever the gate; the gate adds d_in + 1 parameters.
    """

    def __init__(self, in_features: int, out_features: int, r: int, scaling: float, dropout: float = 0.0,
                 freeze_a: bool = False) -> None:
        super().__init__(in_features, out_features, r, scaling, dropout, freeze_a)
        self.gate = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(x.to(self.gate.weight.dtype)))  # (..., 1)
        return y + gate.to(y.dtype) * super().forward(x, torch.zeros_like(y))


def merge_lora(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """W + s B A; a gated update depends on x and does not merge."""
    if isinstance(module, GatedLoRADelta):
        return None
    assert isinstance(module, LoRADelta)
    return weight + module.scaling * (module.lora_B @ module.lora_A).to(weight), bias
