"""Head rows only: the last block of a first-token classifier computes, after attention, only that token.

A BERT-family sequence classifier reads one position of the last block's output: token 0 ([CLS]),
through the pooler (BERT) or the classification head (RoBERTa). Yet the last block runs its output
projection, LayerNorms, MLP, their dropouts and every method on them for all N tokens of the batch,
and backward runs them again. Attention is the only part of the block that mixes positions, and its
keys and values need every token; everything after it is per-token. So, in the last block only, the
per-token rest runs on the B head rows:

    a = attention(h) (N rows)                          as usual: every query, every key and value
    a, h  --select rows 0 of each example-->  (B rows)  a pre-hook on the block's ``attention.output``
    out = rest of the block(a, h)  (B rows)            output projection, LayerNorms, MLP, adapters
    out --scatter--> (N rows, zeros elsewhere)         a forward hook on the block

In MiniLM-L6 that is ~3/4 of the last block's FLOPs (the output projection and MLP, 9 of the 12 H^2
per token), ~1/8 of the model's, forward and backward, in training and in evaluation. The head's input
is the same function of the same inputs (tested: losses, logits and gradients equal within float
rounding, every method); only the rows nothing reads differ (zeros).

Works in both layouts the blocks run in: padded (B, T, H), where the head rows are ``[:, 0]``, and
packed (1, n, H) (:mod:`autopeft.peft.unpad`), where they are the packed positions of each example's token 0.
Skipped when the block's input is not (B, T) or a packed batch lacks some token 0 (a soft prompt
lengthened the sequence; a left-padded row), and for families whose residual connections live inside
the block's own forward (DistilBERT, GPT-2, Llama) or that read another position (decoders read
the last token): :attr:`autopeft.core.arch.FamilySpec.head_rows_path` is None there.

A parallel adapter beside attention (site ``o``) holds the attention's input, captured with N rows
before the selection: the pre-hook narrows every such captured input (``select_captured``) too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch
from autopeft.peft.unpad import active_packing


def head_rows_supported(arch: ModelArch, task: str) -> bool:
    """Whether the last block can run on the head rows for this family and task."""
    return task == "classification" and arch.family.head_rows_path is not None


@contextmanager
def head_rows_only(model: nn.Module, arch: ModelArch, attention_mask: torch.Tensor, task: str,
                   enabled: bool = True) -> Iterator[None]:
    """During one forward: the last block's post-attention work runs on each example's token 0 only."""
    if not enabled or attention_mask.dim() != 2 or not head_rows_supported(arch, task):
        yield
        return
    batch, length = attention_mask.shape
    block = arch.blocks(model)[-1]
    assert arch.family.head_rows_path is not None
    rest = block.get_submodule(arch.family.head_rows_path)
    # how the current forward selected its rows: (select, restore) or None when it was skipped
    selected: list[tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] | None] = [None]

    def select_rows(module: nn.Module, args: tuple, kwargs: dict):
        selected[0] = None
        hidden, residual = _two_inputs(args, kwargs)
        layout = _layout(residual, batch, length)
        if layout is None:
            return None
        select, restore = layout
        selected[0] = layout
        for sub in block.modules():
            narrow = getattr(sub, "select_captured", None)
            if narrow is not None:
                narrow(select)
        return _replace_inputs(args, kwargs, select(hidden), select(residual))

    def restore_rows(module: nn.Module, args: tuple, output):
        layout, selected[0] = selected[0], None
        if layout is None:
            return None
        if isinstance(output, tuple):
            return (layout[1](output[0]), *output[1:])
        return layout[1](output)

    handles = [rest.register_forward_pre_hook(select_rows, with_kwargs=True),
               # before autopeft.peft.unpad's hook on the same block, which unpacks the restored rows
               block.register_forward_hook(restore_rows, prepend=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _layout(residual: torch.Tensor, batch: int, length: int):
    """(select, restore) for the head rows of ``residual`` in the current layout, or None to skip."""
    packing = active_packing()
    if packing is not None and residual.dim() == 3 and residual.shape[:2] == (1, packing.tokens):
        starts = (packing.index % packing.length == 0).nonzero().squeeze(1)  # packed rows of token 0
        if starts.numel() != packing.batch:
            return None
        tokens = packing.tokens

        def select_packed(x: torch.Tensor) -> torch.Tensor:
            return x.index_select(1, starts)

        def restore_packed(x: torch.Tensor) -> torch.Tensor:
            return x.new_zeros(1, tokens, *x.shape[2:]).index_copy(1, starts, x)

        return select_packed, restore_packed
    if packing is None and residual.dim() == 3 and residual.shape[:2] == (batch, length):

        def select_padded(x: torch.Tensor) -> torch.Tensor:
            return x[:, :1]

        def restore_padded(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x.new_zeros(batch, length - 1, *x.shape[2:])], dim=1)

        return select_padded, restore_padded
    return None


def _two_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """BertSelfOutput.forward(hidden_states, input_tensor): the attention output and the residual."""
    values = list(args) + [kwargs[k] for k in ("hidden_states", "input_tensor") if k in kwargs]
    return values[0], values[1]


def _replace_inputs(args: tuple, kwargs: dict, hidden: torch.Tensor, residual: torch.Tensor):
    if len(args) >= 2:
        return (hidden, residual, *args[2:]), kwargs
    if len(args) == 1:
        return (hidden,), {**kwargs, "input_tensor": residual}
    return (), {**kwargs, "hidden_states": hidden, "input_tensor": residual}
