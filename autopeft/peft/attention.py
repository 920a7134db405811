"""Attention with learned prefixes, through transformers' own ``AttentionInterface``.

BERT, GPT-2 and Llama attention in transformers 5.x all call
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, ...)(module, q, k, v, mask, ...)``,
so registering one more implementation lets autopeft extend keys and values layer by layer without
patching any model class. For a module carrying a prefix (attribute :data:`PREFIX_ATTR`, whose
``key_value(attention_mask)`` gives (H_kv, P, D) or per-example (B, H_kv, P, D) tensors), with prefix
length P, queries (B, H, T, D) and keys/values (B, H_kv, S, D):

    K' = [P_k ; K]   V' = [P_v ; V]      (B, H_kv, P + S, D)
    mask' = [visible (B, 1, T, P) ; mask]

Every query may attend to every prefix position; the original mask (padding, causality) is kept for
the rest. A mask of ``None`` on a causal module means "causal": it is made explicit, since the prefix
shifts the diagonal (SDPA's ``is_causal`` aligns top-left). Modules without a prefix are untouched.

The wrapped implementation is the model's own (``sdpa`` by default). Masks are built by the same
mask function the wrapped implementation uses, registered under our name in ``AttentionMaskInterface``.

``autopeft_train_eager`` (what CPU training steps run, see :mod:`autopeft.training.fastpath.step_kernels`) is the model
file's own eager attention with the additive mask cast to the scores' dtype under bf16 autocast. The
mask is built in the model's dtype (fp32), and ``bf16 scores + fp32 mask`` would promote the
(B, H, T, S) scores to fp32: softmax, dropout and their backward would then run in fp32, and the
probabilities would be cast back to bf16 for the value matmul, ~6 casts of the largest tensor of the
block per layer and step (a fifth of a MiniLM step's time was spent so). With a bf16 mask (its fp32
minimum clamped to bf16's, still a zero after softmax) the scores stay bf16; CPU softmax accumulates
in fp32 internally and rounds its output to bf16, the precision the value matmul reads anyway.
Families whose eager attention upcasts softmax itself (Llama) keep doing so.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import torch
import torch.nn as nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from autopeft.peft.unpad import active_packing, unpack_heads

PREFIX_ATTR = "autopeft_prefix"
_WRAPPABLE = ("sdpa", "eager")
TRAIN_EAGER = "autopeft_train_eager"


def implementation_name(inner: str) -> str:
    return f"autopeft_{inner}"


def _eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Plain attention for models configured as 'eager' (transformers keeps eager per model file)."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = query @ key.transpose(-1, -2) * scaling  # (B, H, T, S)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return (weights @ value).transpose(1, 2).contiguous(), weights


def low_precision_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """An fp32 additive mask as bf16 when the scores are bf16 (module docstring); otherwise unchanged."""
    if attention_mask is None or dtype != torch.bfloat16 or attention_mask.dtype != torch.float32:
        return attention_mask
    return attention_mask.clamp(min=torch.finfo(dtype).min).to(dtype)


def _family_eager(module: nn.Module) -> Callable:
    """The eager attention of the module's own model file (transformers 5.x keeps one per file)."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", _eager)


def _scores_dtype(query: torch.Tensor) -> torch.dtype:
    """The dtype of ``query @ key^T``: autocast's when it is on (a quantized projection may hand over
    fp32 queries, yet the matmul still runs in bf16), else the query's."""
    device = query.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype


def _train_eager(module, query, key, value, attention_mask, **kwargs):
    mask = low_precision_mask(attention_mask, _scores_dtype(query))
    return _family_eager(module)(module, query, key, value, mask, **kwargs)


_BASES: dict[str, Callable] = {"eager": _eager, "train_eager": _train_eager}


def _with_prefix(inner: str) -> Callable:
    base = ALL_ATTENTION_FUNCTIONS["sdpa"] if inner == "sdpa" else _BASES[inner]

    def attention(module, query, key, value, attention_mask, **kwargs):
        packing = active_packing()
        if packing is not None:  # padding-free blocks (autopeft/peft/unpad.py): attend in the padded layout
            query, key, value = (unpack_heads(packing, t) for t in (query, key, value))
        prefix = getattr(module, PREFIX_ATTR, None)
        gate = getattr(prefix, "inner_gate", None)
        # a supernet's prefix whose every position is closed is skipped, not masked with -inf: the masked
        # attention equals the base only up to rounding (longer reductions; kernels differ by CPU)
        if prefix is not None and (gate is None or bool((gate > 0).any())):
            prefix_key, prefix_value = prefix.key_value(attention_mask)
            key, value, attention_mask = extend_with_prefix(
                prefix_key, prefix_value, query, key, value, attention_mask,
                causal=bool(getattr(module, "is_causal", False)), prefix_gate=gate,
            )
            kwargs.pop("is_causal", None)
        output, weights = base(module, query, key, value, attention_mask, **kwargs)  # output (B, T, h, d)
        return (output if packing is None else packing.pack(output)), weights

    return attention


def extend_with_prefix(prefix_key, prefix_value, query, key, value, attention_mask, causal: bool,
                       prefix_gate: torch.Tensor | None = None):
    """Prepend prefix keys/values (H_kv, P, D) or (B, H_kv, P, D) and extend the mask; see the module docstring.

    ``prefix_gate`` (P,) in [0, 1] (a one-shot supernet's openings, :mod:`autopeft.oneshot.supernet`) weighs
    each prefix position's attention by its opening: ``log g_j`` is added to its scores, so position ``j``
    gets ``g_j exp(s_j) / (sum_k g_k exp(s_k) + ...)``: 1 is the plain prefix, 0 removes the position."""
    batch, _, q_len, _ = query.shape
    length = prefix_key.shape[-2]
    pk = prefix_key.to(key.dtype).expand(batch, -1, -1, -1)  # (B, H_kv, P, D)
    pv = prefix_value.to(value.dtype).expand(batch, -1, -1, -1)
    key = torch.cat([pk, key], dim=2)
    value = torch.cat([pv, value], dim=2)
    kv_len = key.shape[2] - length
    if attention_mask is None:
        if not (causal and q_len > 1):
            return key, value, None if prefix_gate is None else _gated_mask(prefix_gate, None, query, kv_len)
        # query i (of the last q_len positions) sees key j iff j <= i + (kv_len - q_len)
        rows = torch.arange(q_len, device=query.device).unsqueeze(1) + (kv_len - q_len)
        cols = torch.arange(kv_len, device=query.device).unsqueeze(0)
        attention_mask = (cols <= rows)[None, None]  # (1, 1, T, S)
    if prefix_gate is not None:
        return key, value, _gated_mask(prefix_gate, attention_mask, query, kv_len)
    visible_value = True if attention_mask.dtype == torch.bool else 0.0
    visible = torch.full(
        (*attention_mask.shape[:-1], length), visible_value, dtype=attention_mask.dtype, device=attention_mask.device
    )
    return key, value, torch.cat([visible, attention_mask], dim=-1)


def _gated_mask(gate: torch.Tensor, attention_mask: torch.Tensor | None, query: torch.Tensor,
                kv_len: int) -> torch.Tensor:
    """An additive mask: ``log gate`` over the prefix positions, the original mask over the rest."""
    dtype = attention_mask.dtype if attention_mask is not None and attention_mask.is_floating_point() \
        else query.dtype
    if attention_mask is None:
        rest = torch.zeros((1, 1, 1, kv_len), dtype=dtype, device=query.device)
    elif attention_mask.dtype == torch.bool:
        rest = torch.zeros(attention_mask.shape, dtype=dtype, device=query.device)
        rest = rest.masked_fill(~attention_mask, torch.finfo(dtype).min)
    else:
        rest = attention_mask
    # exactly -inf where closed (no gradient flows there), log g elsewhere
    log_gate = torch.where(gate > 0, gate.clamp(min=1e-30).log(), torch.full_like(gate, -math.inf))
    prefix = log_gate.to(dtype=dtype, device=query.device).expand(*rest.shape[:-1], -1)
    return torch.cat([prefix, rest], dim=-1)


def real_tokens(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B or 1, S) bool: which key positions are real tokens (not padding); None = all of them.

    Read from the mask the attention function receives: its last query row sees every real key, with
    or without causality (a right-padded row still sees all earlier real tokens).
    """
    if attention_mask is None:
        return None
    row = attention_mask[:, 0, -1, :] if attention_mask.dim() == 4 else attention_mask
    if row.dtype == torch.bool:
        return row
    return row > torch.finfo(row.dtype).min / 2 if row.is_floating_point() else row != 0


def register_prefix_attention() -> None:
    """Idempotently register ``autopeft_sdpa`` / ``autopeft_eager`` / ``autopeft_train_eager`` with transformers."""
    for inner in (*_WRAPPABLE, "train_eager"):
        name = implementation_name(inner)
        if name not in ALL_ATTENTION_FUNCTIONS:
            AttentionInterface.register(name, _with_prefix(inner))
        if name not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
            mask_kind = "eager" if inner == "train_eager" else inner
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[mask_kind])


def switch_to_prefix_attention(model: nn.Module) -> Callable[[], None]:
    """Point the model's config at autopeft's attention; return a function that restores it."""
    register_prefix_attention()
    config = model.config
    original = config._attn_implementation
    if original and original.startswith("autopeft_"):
        return lambda: None
    inner = original if original in _WRAPPABLE else "sdpa"
    config._attn_implementation = implementation_name(inner)

    def restore() -> None:
        config._attn_implementation = original

    return restore
