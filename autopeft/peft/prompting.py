"""Soft prompts: virtual tokens prepended to a model's input embeddings, through two forward hooks.

For a prompt module producing P virtual-token embeddings (P, d) and a call with T tokens:

- a pre-hook on the base model (``model.base_model``: BertModel, GPT2Model, LlamaModel, ...) embeds
  ``input_ids`` with the model's own input embeddings and calls it with ``inputs_embeds = [prompt ; E(ids)]``
  (B, P + T, d) instead, ``attention_mask`` extended with P ones, ``token_type_ids`` with P zeros and
  explicit ``position_ids`` (if any) with 0..P-1 before the real positions shifted by P. The model then
  adds its own position embeddings (the real tokens sit at positions P..P+T-1), as HF peft does;
- a hook on the base model's output drops the P virtual positions, (B, P + T, d) -> (B, T, d), from
  ``last_hidden_state`` (and ``hidden_states``), and a pre-hook on a pooler inside the base model
  (BERT's) drops them from the pooler's input. So everything after the base model (the LM head, a
  classifier) sees the caller's T positions: causal-LM logits stay aligned with ``input_ids``,
  BERT/DistilBERT heads read the real first token ([CLS]) and GPT-2/Llama classifiers find the last
  real token from the caller's ``input_ids``. The trainer knows nothing about prompts.

Several prompt modules compose: each prepends its tokens in front of what is there and drops as many.
Removing the hooks restores the model exactly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn as nn

from autopeft.core.arch import ModelArch
from autopeft.core.errors import UserError


def attach_prompt(model: nn.Module, arch: ModelArch, prompt: nn.Module, name: str) -> Callable[[], None]:
    """Register ``prompt`` on the base model as ``name`` and install its hooks; return the undo."""
    base = getattr(model, "base_model", model)
    embeddings = model.get_input_embeddings()
    parameters = inspect.signature(base.forward).parameters
    if embeddings is None or "inputs_embeds" not in parameters:
        raise UserError(f"{type(base).__name__} takes no input embeddings; prompt methods cannot be used on it")
    names = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    pending = [0]  # virtual tokens prepended by the current call, to drop after the last block

    def prepend(module, args, kwargs):
        kwargs = {**dict(zip(names, args, strict=False)), **kwargs}  # positional arguments by name
        ids, embeds = kwargs.pop("input_ids", None), kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = embeddings(ids)
        batch, length = embeds.shape[:2]
        virtual = prompt()  # (P, d)
        count = virtual.shape[0]
        if arch.max_positions is not None and count + length > arch.max_positions:
            raise UserError(
                f"{count} virtual tokens + {length} input tokens exceed the model's {arch.max_positions} "
                "positions; use a shorter prompt or a smaller --max-length"
            )
        virtual = virtual.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        kwargs["inputs_embeds"] = torch.cat([virtual, embeds], dim=1)  # (B, P + T, d)
        mask = kwargs.get("attention_mask")
        if mask is not None:
            kwargs["attention_mask"] = torch.cat([mask.new_ones(batch, count), mask], dim=1)
        types = kwargs.get("token_type_ids")
        if types is not None:
            kwargs["token_type_ids"] = torch.cat([types.new_zeros(batch, count), types], dim=1)
        positions = kwargs.get("position_ids")
        if positions is not None:
            virtual_positions = torch.arange(count, device=positions.device, dtype=positions.dtype)
            kwargs["position_ids"] = torch.cat(
                [virtual_positions.expand(positions.shape[0], -1), positions + count], dim=1)
        pending[0] = count
        return (), kwargs

    def drop_from_pooler_input(module, args):
        return (args[0][:, pending[0]:], *args[1:])

    def drop(module, args, output):
        count, pending[0] = pending[0], 0
        if not count:
            return output
        if isinstance(output, tuple):
            return (output[0][:, count:], *output[1:])
        output.last_hidden_state = output.last_hidden_state[:, count:]
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(h[:, count:] for h in output.hidden_states)
        return output

    base.add_module(name, prompt)  # a submodule, so that model.parameters() / .to() see it
    handles = [base.register_forward_pre_hook(prepend, with_kwargs=True), base.register_forward_hook(drop)]
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, nn.Module):
        handles.append(pooler.register_forward_pre_hook(drop_from_pooler_input))

    def remove() -> None:
        for handle in handles:
            handle.remove()
        delattr(base, name)

    return remove
