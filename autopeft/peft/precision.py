"""Mixed precision for PEFT trials: the frozen base's projections held in bf16, cast once per session.

Under ``torch.autocast(bfloat16)`` every ``linear``/``addmm`` casts its fp32 weight to bf16 on each
call — and a frozen weight does not require grad, so autocast's weight cache does not apply: a MiniLM
step makes ~70 weight copies (forward, and again for the backward's saved tensors). :class:`FrozenWeights`
makes those bf16 copies once and swaps them in (``param.data``) for the duration of a bf16 forward/backward;
autocast leaves a bf16 weight as it is. The rounding is the same round-to-nearest-even autocast applies,
so results are **bitwise identical** to plain autocast (tested), only without the copies.

What is swapped: the weights of plain ``nn.Linear`` and GPT-2 ``Conv1D`` projections inside the blocks
that are frozen and fp32. Not swapped: embeddings (a lookup is not an autocast op: it would change the
numbers), norms (autocast runs them in fp32), the task head (it trains: fp32 master weights), quantised
projections (bitsandbytes), an LM head tied to the input embeddings, and the projections of methods that
read the frozen weight themselves (DoRA).  Trainable parameters, their
gradients and AdamW's state stay fp32 (master weights), as with autocast.

The fp32 tensors are put back when the context exits, so the base model's state dict is unchanged
between trials. The copies assume the base weights are not modified in place while a session lives
(:meth:`FrozenWeights.clear` drops them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch


def _projections(model: nn.Module, arch: ModelArch) -> Iterator[nn.Parameter]:
    from autopeft.peft.inject import AdaptedLinear

    for block in arch.blocks(model):
        # a method that reads the frozen weight itself (DoRA's column norms) must see the fp32 values
        readers = {id(m.base) for m in block.modules() if isinstance(m, AdaptedLinear)
                   and any(hasattr(t, "bind") for t in m.transforms.values())}
        for module in block.modules():
            if id(module) in readers:
                continue
            # exact types: bitsandbytes' Linear4bit/Linear8bitLt subclass nn.Linear but hold packed weights
            if type(module) is nn.Linear or type(module).__name__ == "Conv1D":
                weight = module.weight
                if weight.dtype == torch.float32 and not weight.requires_grad:
                    yield weight


class FrozenWeights:
    """bf16 copies of a model's frozen projection weights, made on first use and kept across trials."""

    def __init__(self, model: nn.Module, arch: ModelArch, dtype: torch.dtype = torch.bfloat16) -> None:
        self.model = model
        self.arch = arch
        self.dtype = dtype
        self._copies: dict[int, tuple[int, torch.Tensor]] = {}  # id(param) -> (fp32 data_ptr, low copy)
        self._active = False

    def clear(self) -> None:
        self._copies.clear()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, t in self._copies.values())

    def _low(self, param: nn.Parameter) -> torch.Tensor:
        key = id(param)
        cached = self._copies.get(key)
        if cached is None or cached[0] != param.data_ptr():
            cached = (param.data_ptr(), param.detach().to(self.dtype))
            self._copies[key] = cached
        return cached[1]

    @contextmanager
    def cast(self, enabled: bool = True) -> Iterator[None]:
        """Swap in the low-precision copies (no-op when disabled or already active)."""
        if not enabled or self._active:
            yield
            return
        swapped: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._active = True
        try:
            for param in list(_projections(self.model, self.arch)):
                low = self._low(param)
                swapped.append((param, param.data))
                param.data = low
            yield
        finally:
            for param, master in reversed(swapped):
                param.data = master
            self._active = False
