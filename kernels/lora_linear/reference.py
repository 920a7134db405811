"""Pure-torch LoRA: the definition the kernels are tested against, and the CPU path.

    delta:  out = y + s * (dropout(x) Aᵀ) Bᵀ          A: (r, d_in)  B: (d_out, r)
    linear: out = base(x) + s * (dropout(x) Aᵀ) Bᵀ    (base: the frozen projection, dense or NF4)

The update runs in A's dtype (fp32 master weights; bf16 under autocast) and is cast to y's dtype
before the add, exactly as ``LoRADelta.forward`` always did. ``dequantize_nf4`` is bitsandbytes' own
dequantisation of a ``Linear4bit`` weight, the reference for the kernel's tile-by-tile NF4 decoding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


def lora_delta(x: torch.Tensor, y: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float,
               dropout: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    # x: (..., d_in)  y: (..., d_out)
    x = dropout(x) if dropout is not None else x
    update = x.to(lora_A.dtype) @ lora_A.T @ lora_B.T
    return y + (update * scaling).to(y.dtype)


def lora_linear(x: torch.Tensor, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float,
                dropout: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    return lora_delta(x, base(x), lora_A, lora_B, scaling, dropout)


def dequantize_nf4(base: nn.Module) -> torch.Tensor:
    """The (d_out, d_in) weight of a bitsandbytes ``Linear4bit``, dequantised by bitsandbytes."""
    import bitsandbytes.functional as bnbf

    return bnbf.dequantize_4bit(base.weight.data, base.weight.quant_state)
