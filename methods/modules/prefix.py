"""The prefix module (the methods, configs and counts: :mod:`autopeft.methods.prefix`,
:mod:`autopeft.methods.ptuning_v2`)."""

from __future__ import annotations

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch
from autopeft.peft.attention import real_tokens
from autopeft.peft.unpad import active_packing


class PrefixKV(nn.Module):
    # One-shot supernet (autopeft.oneshot.supernet): when set, a (P,) tensor in [0, 1], each prefix
    # position's opening, which the attention adds to its scores as log g (autopeft.peft.attention)
    inner_gate: torch.Tensor | None = None

    def __init__(self, arch: ModelArch, length: int, reparam_hidden: int = 0, gated: bool = False) -> None:
        super().__init__()
        self.shape = (arch.num_kv_heads, length, arch.head_dim)
        self.reparam: nn.Module | None = None
        if reparam_hidden:
            self.embedding = nn.Parameter(torch.randn(length, arch.hidden))
            self.reparam = nn.Sequential(nn.Linear(arch.hidden, reparam_hidden), nn.Tanh(),
                                         nn.Linear(reparam_hidden, 2 * arch.kv_dim))
        else:
            self.key = nn.Parameter(torch.randn(self.shape) * 0.02)
            self.value = nn.Parameter(torch.randn(self.shape) * 0.02)
        self.gate: nn.Linear | None = None
        if gated:
            self.gate = nn.Linear(arch.hidden, 1)
            nn.init.normal_(self.gate.weight, std=0.02)
            nn.init.zeros_(self.gate.bias)
            self.captures = "attention"  # the injector hands us the attention's input (see capture)
            self._input: torch.Tensor | None = None

    def capture(self, x: torch.Tensor) -> None:
        self._input = x

    def _plain(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reparam is None:
            return self.key, self.value
        heads, length, head_dim = self.shape
        kv = self.reparam(self.embedding)  # (P, 2 H_kv d_head)
        kv = kv.view(length, 2, heads, head_dim).permute(1, 2, 0, 3)  # (2, H_kv, P, d_head)
        return kv[0], kv[1]

    def key_value(self, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(H_kv, P, d_head) key/values, or (B, H_kv, P, d_head) when gated; see :mod:`autopeft.methods.prefix`."""
        key, value = self._plain()
        if self.gate is None:
            return key, value
        x, self._input = self._input, None
        assert x is not None, "gated prefix: the attention's input was not captured"
        packing = active_packing()
        if packing is not None:  # padding-free blocks (autopeft/peft/unpad.py): back to (B, T, H) for the mean
            x = packing.unpack(x)
        scores = torch.sigmoid(self.gate(x.to(self.gate.weight.dtype))).squeeze(-1)  # (B, T)
        real = real_tokens(attention_mask)
        if real is None:
            gate = scores.mean(dim=1)
        else:
            real = real.to(scores.dtype).expand_as(scores)
            gate = (scores * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)
        gate = gate.view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        return key * gate, value * gate

    # --- saving: plain key/values, never the MLP --------------------------------------------
    def folded_tensors(self) -> dict[str, torch.Tensor]:
        if self.reparam is None:
            return dict(self.named_parameters())
        with torch.no_grad():  # as in fold(): some kernels (e.g. LSTM) differ with autograd on
            key, value = self._plain()
        gate = {f"gate.{n}": p for n, p in self.gate.named_parameters()} if self.gate is not None else {}
        return {"key": key, "value": value, **gate}

    def fold(self) -> None:
        """Replace the MLP by the key/values it produces (exactly those values: same ops, same order)."""
        if self.reparam is None:
            return
        with torch.no_grad():
            key, value = self._plain()
        del self.embedding, self.reparam
        self.reparam = None
        self.key = nn.Parameter(key.detach().clone())
        self.value = nn.Parameter(value.detach().clone())
