"""Frozen-prefix activation cache: never recompute (or backpropagate through) layers a plan leaves alone.

A plan whose first touched layer is ``k`` (every placement at a layer >= k; no soft prompt, which
changes the input embeddings) leaves the embeddings and blocks ``0..k-1`` frozen and unmodified, so the
hidden states entering block ``k`` are a function of the example alone — the same in every epoch and in
every trial with the same ``k``. :class:`FrozenPrefix` serves them from an :class:`ActivationCache`:

    h_k(x) = block_{k-1}( ... block_0(embed(x)) )   computed once, in eval mode, without grad
    forward(x) = head(block_{L-1}( ... block_k(h_k(x)) ))

and the model's forward skips blocks ``0..k-1`` (they are replaced by a pass-through for that one call)
while a pre-hook hands block ``k`` the cached ``h_k``; nothing below block ``k`` requires grad, so the
backward stops there. Masks, rotary and absolute positions are still made by the model's own forward
(they depend on the batch, not on the prefix), so this works for every family whose blocks are called as
``block(hidden_states, ...) -> hidden_states`` — BERT, DistilBERT, GPT-2 and Llama in transformers 5.x
(checked in their ``modeling_*.py``; the equality tests in ``tests/test_fast_activation_cache.py`` run
all four).

Semantics. The cached prefix runs in **eval mode**: no dropout below layer ``k`` (with the cache off the
prefix's dropout stays active). With dropout 0 and an fp32 cache, losses and gradients equal those of
the uncached model (tested); a ``bf16`` cache (the default for training) rounds ``h_k`` to bf16.

Reproducibility. A training example's ``h_k`` is always computed in the same *canonical chunk* (the
split sorted by length, then cut into chunks of :data:`CHUNK` examples, padded to the chunk's longest),
whichever trial or batch first asks for it, and a miss uses the stored (rounded) value just as a hit
does. So a trial's result does not depend on what was cached before it (a resumed run equals an
uninterrupted one bitwise). Evaluation batches are deterministic already (sorted by length), so they are
cached whole, in the dtype the model produced: an evaluation with the cache is bitwise the evaluation
without it (``autopeft eval`` reproduces a search's metrics).

Entries are keyed by ``(k, autocast on/off, attention implementation, split, chunk)`` and evicted least
recently used beyond the byte cap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch
from autopeft.peft.plan import Plan

if TYPE_CHECKING:
    from autopeft.training.data import TokenizedSplit

CHUNK = 64  # examples per canonical chunk of a training split
DEFAULT_MAX_BYTES = 1 << 30


def first_trained_layer(plan: Plan, arch: ModelArch) -> int:
    """The lowest block a plan touches (0 for model-level placements such as soft prompts)."""
    layers = [p.layer for p in plan.placements(arch)]
    if any(layer is None for layer in layers):
        return 0
    return min(layers, default=arch.num_layers)


@dataclass
class _Entry:
    hidden: torch.Tensor  # (n, W, H), stored dtype
    dtype: torch.dtype  # dtype the model produced (restored on read)

    @property
    def nbytes(self) -> int:
        return self.hidden.numel() * self.hidden.element_size()


class ActivationCache:
    """Least-recently-used store of hidden states with a byte cap, shared by all trials of a session."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def get(self, key: tuple, compute: Callable[[], torch.Tensor], store: torch.dtype | None) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry
        self.misses += 1
        value = compute()
        entry = _Entry(value.to(store or value.dtype), value.dtype)
        if entry.nbytes <= self.max_bytes:
            self._entries[key] = entry
            self.nbytes += entry.nbytes
            while self.nbytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self.nbytes -= old.nbytes
        return entry


class _Skip(nn.Module):
    """Stands in for a frozen block below ``k`` during one forward: passes its hidden states through."""

    autopeft_pass_through = True  # autopeft/peft/unpad.py packs at the first block that really runs

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class _Stop(Exception):
    """Raised by the capture hook on block k: the rest of the forward is not needed."""


def _replace_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    current = args[0] if args else kwargs["hidden_states"]
    if current.shape[:-1] != hidden.shape[:-1]:
        raise RuntimeError(f"cached hidden states {tuple(hidden.shape)} do not fit the batch {tuple(current.shape)}")
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


class FrozenPrefix:
    """Serves block ``k``'s input from the cache and skips blocks ``0..k-1`` (``k == 0``: does nothing)."""

    def __init__(self, session: Any, k: int, store: torch.dtype | None) -> None:
        self.session = session
        self.k = min(k, session.arch.num_layers - 1)  # a head-only plan: everything but the last block
        self.store = store  # None: keep the model's dtype (evaluation); bf16/fp32 for training

    @property
    def active(self) -> bool:
        return self.k > 0

    # --- computing h_k ----------------------------------------------------------------------
    def _key(self, *parts: Any) -> tuple:
        model = self.session.model
        implementation = str(getattr(model.config, "_attn_implementation", "")).removeprefix("autopeft_")
        autocast = torch.is_autocast_enabled(self.session.device.type)
        return (self.k, autocast, implementation, *parts)

    @torch.no_grad()
    def _capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden states entering block k for a batch, from the real model in eval mode."""
        model = self.session.model
        captured: list[torch.Tensor] = []

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _Stop

        block = self.session.arch.blocks(model)[self.k]
        handle = block.register_forward_pre_hook(hook, with_kwargs=True)
        was_training = model.training
        model.eval()
        try:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        except _Stop:
            pass
        finally:
            handle.remove()
            model.train(was_training)
        if not captured:
            raise RuntimeError(f"block {self.k} was not called by the model's forward")
        return captured[0].detach()

    def train_hidden(self, split: str, index: list[int], width: int) -> torch.Tensor:
        """(B, width, H) hidden states of examples ``index`` of ``split`` (zeros at padded positions)."""
        layout = self.session.chunk_layout(split, CHUNK)
        data = self.session.splits[split]
        rows: list[torch.Tensor] = []
        for i in index:
            chunk, row = layout.where[i]
            members = layout.chunks[chunk]
            entry = self.session.activations.get(
                self._key(split, "train", CHUNK, chunk),
                lambda members=members: self._capture(self.session._collate(data, members)), self.store)
            rows.append(entry.hidden[row, :len(data.input_ids[i])].to(entry.dtype))
        out = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
        for b, row in enumerate(rows):
            out[b, :row.shape[0]] = row
        return out

    def warm(self, split: str = "train") -> None:
        """Compute every canonical chunk of ``split`` now (what the first epoch would do lazily)."""
        layout = self.session.chunk_layout(split, CHUNK)
        data = self.session.splits[split]
        for members in layout.chunks:
            self.train_hidden(split, members[:1], len(data.input_ids[members[0]]))

    def eval_hidden(self, split: str, batch_size: int, start: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        entry = self.session.activations.get(self._key(split, "eval", batch_size, start),
                                              lambda: self._capture(batch), self.store)
        return entry.hidden.to(entry.dtype)

    # --- the forward with the prefix skipped -----------------------------------------------------
    @contextmanager
    def feeding(self, hidden: torch.Tensor | None) -> Iterator[None]:
        """During the block: blocks 0..k-1 pass through and block k receives ``hidden``."""
        if not self.active or hidden is None:
            yield
            return
        blocks = self.session.arch.blocks(self.session.model)
        originals = [blocks[i] for i in range(self.k)]
        skip = _Skip()
        handle = blocks[self.k].register_forward_pre_hook(
            lambda module, args, kwargs: _replace_hidden(args, kwargs, hidden), with_kwargs=True)
        try:
            for i in range(self.k):
                blocks[i] = skip
            yield
        finally:
            for i, block in enumerate(originals):
                blocks[i] = block
            handle.remove()


@dataclass
class ChunkLayout:
    """A split sorted by (length, index) and cut into chunks; ``where[i] = (chunk, row)``."""

    chunks: list[list[int]]
    where: list[tuple[int, int]]

    @classmethod
    def of(cls, data: TokenizedSplit, size: int) -> ChunkLayout:
        order = sorted(range(len(data.input_ids)), key=lambda i: (len(data.input_ids[i]), i))
        chunks = [order[s:s + size] for s in range(0, len(order), size)]
        where: list[tuple[int, int]] = [(0, 0)] * len(order)
        for c, members in enumerate(chunks):
            for r, i in enumerate(members):
                where[i] = (c, r)
        return cls(chunks, where)
