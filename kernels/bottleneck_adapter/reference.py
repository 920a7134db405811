"""Pure-torch bottleneck adapter: the definition the kernel is tested against, and the CPU path.

    serial:   out = h + s * (W_up act(W_down h + b_down) + b_up)
    parallel: out = y + s * (W_up act(W_down h + b_down) + b_up)     (y: the projection's output)

The adapter runs in its weights' dtype (fp32 master weights; bf16 under autocast) and its update is
cast to the residual's dtype before the add, exactly as ``BottleneckAdapter.forward`` always did.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def bottleneck_adapter(
    h: torch.Tensor, down_weight: torch.Tensor, down_bias: torch.Tensor | None, up_weight: torch.Tensor,
    up_bias: torch.Tensor | None, act: Callable[[torch.Tensor], torch.Tensor], scaling: float,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    base = h if residual is None else residual
    x = h.to(down_weight.dtype)  # (..., d)
    update = F.linear(act(F.linear(x, down_weight, down_bias)), up_weight, up_bias)  # (..., m) -> (..., d)
    return base + (update * scaling).to(base.dtype)
