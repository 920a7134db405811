"""Padding-free blocks: a training step computes the per-token work of a block only on real tokens.

A right-padded batch (B, T) with n real tokens runs every projection, LayerNorm, MLP, adapter and LoRA
of a block on B·T positions, although only n of them matter: the rest are padding, masked out of
attention and out of the loss. In a MiniLM block these per-token ops are ~97% of the FLOPs at
T = 64 (attention itself is 4·B·T²·H of 2·B·T·(4H² + 2·H·I)). So, as MosaicBERT's and FlashAttention's
"unpadding" does, the blocks run on the real tokens only:

    h (B, T, H)  --pack-->  h[real] (1, n, H)       before the first block that runs
    q, k, v (1, h, n, d) --unpack--> (B, h, T, d)  inside attention (zeros at padding), then
    attention(q, k, v, mask) (B, T, h, d) --pack--> (1, n, h, d)
    h (1, n, H)  --unpack--> (B, T, H)             after the last block (zeros at padding)

Everything outside the blocks (embeddings, masks, positions, pooler, heads, loss) sees the usual
(B, T) tensors, and attention sees the usual padded (B, h, T, S) problem with the model's own mask
(padding, causality, prefixes), so the result is the padded model's: the real tokens' outputs are the
same function of the same inputs (tested: losses and gradients equal within float rounding, every
method on every family). Only the padding positions differ: they leave the last block as zeros
instead of the values the padded model computed for them, which nothing reads (heads read real
tokens, the loss masks padding). The exception are a few "filler" padding positions packed along
with the real tokens so that n is a multiple of the step recipe's ``pack_multiple``
(:mod:`autopeft.training.step`; a fixed set of matmul shapes
for oneDNN's kernel cache): they are computed like any row and, like all padding, ignored.

A batch with less than :data:`MIN_PADDING` padding stays padded. Rotary position embeddings (Llama)
that the model passes into each block as ``(B or 1, T, d)`` tensors are packed the same way. A block
whose input is not (B, T) — a soft prompt lengthened the sequence — is left padded for the whole
forward.

Used only where autopeft's attention runs (``autopeft_*`` implementations, see
:mod:`autopeft.peft.attention`): the packed q, k, v must be unpacked before attention.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch


@dataclass(frozen=True)
class Packing:
    """Where the n real tokens of a (B, T) batch are: flat positions ``index`` (n,) of B·T."""

    index: torch.Tensor
    batch: int
    length: int

    @classmethod
    def of(cls, attention_mask: torch.Tensor, min_padding: float = 0.0, multiple: int = 1) -> Packing | None:
        """The packing of a (B, T) 0/1 mask; None when less than ``min_padding`` of it is padding.

        With ``multiple`` > 1 the row count is rounded up to a multiple of it by also taking the first
        padding positions (computed and ignored, as in the padded model), as long as the rows stay within
        :data:`MAX_FILLED_SHARE` of the positions (else the exact count).
        """
        batch, length = attention_mask.shape
        flat = attention_mask.reshape(-1)
        index = flat.nonzero().squeeze(1)
        real, total = index.numel(), batch * length
        if real == 0 or real == total or real > (1 - min_padding) * total:
            return None
        rows = -(-real // multiple) * multiple
        if rows > MAX_FILLED_SHARE * total:
            rows = real
        if rows > real:
            filler = (flat == 0).nonzero().squeeze(1)[:rows - real]
            index = torch.cat([index, filler]).sort().values
        return cls(index, batch, length)

    @property
    def tokens(self) -> int:
        """Rows of the packed layout: the real tokens and any filler padding positions."""
        return self.index.numel()

    def is_padded(self, x: torch.Tensor) -> bool:
        return x.dim() >= 2 and x.shape[0] in (1, self.batch) and x.shape[1] == self.length

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B or 1, T, ...) -> (1, n, ...)."""
        x = x.expand(self.batch, *x.shape[1:])
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index).unsqueeze(0)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(1, n, ...) -> (B, T, ...), zeros at padding (differentiable in ``x``)."""
        rest = x.shape[2:]
        flat = x.new_zeros(self.batch * self.length, *rest).index_copy(0, self.index, x[0])
        return flat.view(self.batch, self.length, *rest)


# Below this share of padding a batch stays padded: the gathers would cost about what they save, and the
# memory estimator's (B, T) activations stay exact for (nearly) full batches (autopeft/memory/model.py).
MIN_PADDING = 0.1

# Filler stops where the packed rows would pass this share of the positions: the packing's own temporaries
# (gathers and their gradients) then bring a step's peak memory to the padded step's, which is what the
# memory estimate bounds (tests/test_memory.py's padding-free step: uncapped, its 89% of the rows measured
# 4% above the estimate; capped at 75%, it stays below).
MAX_FILLED_SHARE = 0.75


_ACTIVE: ContextVar[Packing | None] = ContextVar("autopeft_packing", default=None)


def active_packing() -> Packing | None:
    """The packing of the blocks now running (None: hidden states are padded as usual)."""
    return _ACTIVE.get()


def unpack_heads(packing: Packing, x: torch.Tensor) -> torch.Tensor:
    """(1, heads, n, d) -> (B, heads, T, d)."""
    return packing.unpack(x.transpose(1, 2)).transpose(1, 2)


@contextmanager
def unpadded(model: nn.Module, arch: ModelArch, attention_mask: torch.Tensor, multiple: int,
             enabled: bool = True) -> Iterator[None]:
    """During one forward: the blocks run on the real tokens of ``attention_mask`` (B, T) only, packed rows
    rounded up to ``multiple`` (the step recipe's ``pack_multiple``)."""
    ours = str(getattr(model.config, "_attn_implementation", "")).startswith("autopeft_")
    packing = (Packing.of(attention_mask, MIN_PADDING, multiple)
               if enabled and ours and attention_mask.dim() == 2 else None)
    if packing is None:
        yield
        return
    blocks = list(arch.blocks(model))
    packed_rotary: dict[int, torch.Tensor] = {}  # the model passes every block the same (cos, sin)

    def before(module: nn.Module, args: tuple, kwargs: dict):
        hidden = args[0] if args else kwargs.get("hidden_states")
        changed = False
        # padded states enter the first block that runs (or, with the activation cache, the cached ones)
        if isinstance(hidden, torch.Tensor) and hidden.shape[:2] == (packing.batch, packing.length):
            hidden = packing.pack(hidden)
            args, kwargs = ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})
            _ACTIVE.set(packing)
            changed = True
        if _ACTIVE.get() is None:
            return None
        rotary = kwargs.get("position_embeddings")
        if isinstance(rotary, tuple) and rotary and all(
                isinstance(t, torch.Tensor) and packing.is_padded(t) for t in rotary):
            for t in rotary:
                if id(t) not in packed_rotary:
                    packed_rotary[id(t)] = packing.pack(t)
            kwargs = {**kwargs, "position_embeddings": tuple(packed_rotary[id(t)] for t in rotary)}
            changed = True
        return (args, kwargs) if changed else None

    def after(module: nn.Module, args: tuple, kwargs: dict, output):
        if _ACTIVE.get() is None:
            return None
        _ACTIVE.set(None)
        if isinstance(output, tuple):
            return (packing.unpack(output[0]), *output[1:])
        return packing.unpack(output)

    running = [block for block in blocks if not getattr(block, "autopeft_pass_through", False)]  # cache's skips
    handles = [block.register_forward_pre_hook(before, with_kwargs=True) for block in running]
    handles.append(blocks[-1].register_forward_hook(after, with_kwargs=True))
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        _ACTIVE.reset(token)
