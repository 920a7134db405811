"""Prefix tuning (Li & Liang, 2021): learned key/value vectors prepended in chosen layers.

For a layer with prefix length P, attention over a sequence of length S attends over P + S positions:

    softmax(q [P_k ; K]^T / sqrt(d)) [P_v ; V],   P_k, P_v: (H_kv, P, d_head)

Parameters per layer: 2 * P * H_kv * d_head (GQA models store only the key/value heads).
Not the identity at initialisation: the prefix takes some attention mass from the real tokens.
P_k and P_v start as N(0, 0.02^2), so prefix logits start near 0 and values near 0 (a mild dilution).

Reparameterisation (``reparam_hidden`` = m > 0), as in the paper and HF peft's ``prefix_projection``:
during training the key/values are an MLP of P trainable embeddings E (P, d), E ~ N(0, 1),

    [P_k | P_v] = W_2 tanh(W_1 E^T + b_1) + b_2,   W_1: (m, d), W_2: (2 H_kv d_head, m)

Each layer has its own E and MLP, so layers (and their lengths) stay independent; Li & Liang share one
MLP across layers. The MLP only eases optimisation: an adapter file stores the resulting plain
key/values (``folded_tensors``), and loading first folds the module into a plain prefix (``fold``), so a
saved adapter loads without the MLP, in the same format as ``reparam_hidden = 0``.
Parameters while training: P d + (d + 1) m + (m + 1) 2 H_kv d_head instead of 2 P H_kv d_head; this
training-time count is the plan's count and what the budget caps (the folded adapter is smaller).

Gate (``gated``; UniPELT, Mao et al., 2022): P_k and P_v are scaled per example by

    g = mean_t sigmoid(w_g . x_t + b_g) in (0, 1),   w_g: (d,), b_g = 0 at init, w_g ~ N(0, 0.02^2)

over the real (non-padding) tokens t of the attention's input x. UniPELT's code averages over padding
positions too; excluding them keeps an example's output independent of how its batch is padded.
The gate adds d + 1 parameters and is saved as ``gate.weight``/``gate.bias``.

HF peft mapping (PREFIX_TUNING, no projection): peft's ``prompt_encoder.embedding.weight`` (P, L*2*H_kv*d_head)
viewed as (P, L, 2, H_kv, d_head) holds layer l's key at [:, l, 0] and value at [:, l, 1] (each
transposed to (H_kv, P, d_head) here). peft puts the prefix in the KV cache, which shifts the real
tokens' positions to P..P+T-1; autopeft keeps them at 0..T-1 (pass peft ``position_ids`` = 0..T-1 to compare).

The module (``PrefixKV``, shared with :mod:`autopeft.methods.ptuning_v2`) is in :mod:`autopeft.methods.modules.prefix`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from autopeft.methods.base import Placement, positive, register

if TYPE_CHECKING:
    import torch.nn as nn

    from autopeft.core.arch import LinearSite, ModelArch


@dataclass(frozen=True)
class PrefixConfig:
    length: int = 8
    reparam_hidden: int = 0  # 0 = plain prefix; m > 0 = MLP reparameterisation while training
    gated: bool = False  # UniPELT's learned gate on the prefix

    def __post_init__(self) -> None:
        positive("length", self.length)
        if self.reparam_hidden < 0:
            raise ValueError(f"reparam_hidden must be >= 0 (0 = none), got {self.reparam_hidden}")


def prefix_params(length: int, arch: ModelArch, reparam_hidden: int = 0, gated: bool = False) -> int:
    kv = 2 * arch.kv_dim
    if reparam_hidden:
        count = length * arch.hidden + (arch.hidden + 1) * reparam_hidden + (reparam_hidden + 1) * kv
    else:
        count = length * kv
    return count + (arch.hidden + 1 if gated else 0)


@register
class Prefix:
    name = "prefix"
    summary = "learned key/value prefixes in a layer's attention (optional MLP reparameterisation, gate)"
    placement = Placement.ATTENTION
    stage = 0
    config_cls = PrefixConfig
    sites = ("attn",)
    identity_at_init = False

    def num_params(self, config: PrefixConfig, arch: ModelArch, site: LinearSite | None) -> int:
        return prefix_params(config.length, arch, config.reparam_hidden, config.gated)

    def build(self, config: PrefixConfig, arch: ModelArch, site: LinearSite | None) -> nn.Module:
        from autopeft.methods.modules.prefix import PrefixKV

        return PrefixKV(arch, config.length, config.reparam_hidden, config.gated)
