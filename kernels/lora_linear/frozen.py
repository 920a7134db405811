"""The frozen base projection in the form the fused kernel reads, or ``None`` when it cannot stand in.

The fused kernel replaces ``base(x)``, so it only takes bases whose forward it reproduces exactly:
``nn.Linear``, transformers' ``Conv1D`` (GPT-2; weight stored (d_in, d_out)) and bitsandbytes'
``Linear4bit`` with NF4 weights, all frozen and without forward hooks. The compute dtype is what
``base(x)`` would use: the autocast dtype, else x's dtype (``Linear4bit``: its ``compute_dtype``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class FrozenLinear:
    weight: torch.Tensor  # dense: (d_out, d_in) in compute dtype (any strides); NF4: packed uint8 nibbles
    bias: torch.Tensor | None
    out_features: int
    in_features: int
    compute_dtype: torch.dtype
    out_dtype: torch.dtype  # base(x)'s dtype (Linear4bit casts back to x's dtype)
    nf4: tuple[torch.Tensor, torch.Tensor, int] | None = None  # (absmax fp32, code fp32, blocksize)


def frozen_linear(base: nn.Module, x: torch.Tensor) -> FrozenLinear | None:
    if base._forward_hooks or base._forward_pre_hooks:
        return None
    bias = getattr(base, "bias", None)
    if bias is not None and bias.requires_grad:
        return None
    if _is_linear4bit(base):
        return _nf4(base, x)
    if type(base) is nn.Linear:
        weight = base.weight
    elif type(base).__name__ == "Conv1D" and type(base).__module__.startswith("transformers"):
        weight = base.weight.t()  # stored (d_in, d_out)
    else:
        return None
    if weight.requires_grad:
        return None
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    elif weight.dtype == x.dtype:
        dtype = x.dtype
    else:
        return None  # base(x) raises its own dtype error; let it
    return FrozenLinear(weight.to(dtype), bias, weight.shape[0], weight.shape[1], dtype, dtype)


def _is_linear4bit(base: nn.Module) -> bool:
    bnb_nn = sys.modules.get("bitsandbytes.nn")  # a Linear4bit exists only if bitsandbytes is imported
    return bnb_nn is not None and isinstance(base, bnb_nn.Linear4bit)


def _nf4(base: nn.Module, x: torch.Tensor) -> FrozenLinear | None:
    import bitsandbytes.functional as bnbf

    weight = base.weight
    state = weight.quant_state if weight.quant_state is not None else getattr(base, "quant_state", None)
    # packing_format_for_cpu: bitsandbytes' repacked CPU inference layout, not the nibble layout read here
    if state is None or state.quant_type != "nf4" or getattr(state, "packing_format_for_cpu", False):
        return None
    absmax = state.absmax
    if state.nested:
        absmax = bnbf.dequantize_blockwise(state.absmax, state.state2) + state.offset
    out_features, in_features = state.shape
    dtype = base.compute_dtype or x.dtype
    nf4 = (absmax.float().contiguous(), state.code.float().to(x.device).contiguous(), state.blocksize)
    return FrozenLinear(weight.data.reshape(-1), base.bias, out_features, in_features, dtype, x.dtype, nf4)
