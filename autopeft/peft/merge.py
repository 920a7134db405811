"""Merging a plan's linear-site modules into the base weights, and taking them out again.

For one projection (an :class:`~autopeft.peft.inject.AdaptedLinear`) with weight W (d_out, d_in) and bias b,
every transform on it is folded in turn (:func:`autopeft.methods.base.merge_into`): input transforms
first (y = W (l ⊙ x) + b ⇒ W diag(l)), then output transforms in stage order on their site's columns
(LoRA: W + s B A; (IA)^3: diag(l) W, l ⊙ b; BitFit: b + δ; DoRA: m / ||W0 + s B A|| ⊙ (W + s B A), ...).
The merged projection is put back on its parent *in place of the wrapper*, so a merged model runs at
the base model's speed. A projection with any non-mergeable transform (an adapter, a gated LoRA) keeps
its wrapper and is left as it is; attention-level methods (prefixes) stay active. Merged outputs equal
unmerged ones up to float rounding (1e-5 in fp32).

Unmerging puts the original weight tensors back (they are kept, not recomputed by subtraction), so
unmerge and removal after a merge are bitwise. Quantized bases cannot be merged into.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from autopeft.core.errors import UserError
from autopeft.methods import get_method
from autopeft.methods.base import merge_into
from autopeft.peft.adapted_linear import AdaptedLinear


@dataclass
class MergedSite:
    parent: nn.Module
    child: str
    wrapper: nn.Module
    base: nn.Module
    weight: torch.Tensor  # the original ``base.weight.data``
    bias: torch.Tensor | None  # the original ``base.bias.data`` (None: the base had no bias)
    keys: list[str]


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers' GPT-2 projection: weight is (d_in, d_out)


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The (d_out, d_in) weight of an unquantized projection."""
    from autopeft.peft.quantize import is_quantized

    if is_quantized(module):
        raise UserError(f"cannot merge into a quantized base projection ({type(module).__name__}); "
                        "merging needs a full-precision base (load the model with --quantize none)")
    if _is_conv1d(module):
        return module.weight.T
    if isinstance(module, nn.Linear):
        return module.weight
    raise UserError(f"cannot merge into a {type(module).__name__} projection; mergeable: Linear, Conv1D")


@torch.no_grad()
def _fold(wrapper: nn.Module, method_of: dict[int, str]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The merged (W, b) of one wrapped projection, or None if one of its transforms does not merge."""
    weight = dense_weight(wrapper.base).float().clone()
    base_bias = getattr(wrapper.base, "bias", None)
    bias = base_bias.float().clone() if base_bias is not None else weight.new_zeros(weight.shape[0])
    transforms = list(wrapper.transforms.items())
    for _, t in transforms:  # input transforms act on the base's input, whatever the output transforms do
        if hasattr(t, "transform_input"):
            folded = merge_into(get_method(method_of[id(t)]), t, weight, bias)
            if folded is None:
                return None
            weight, bias = folded
    for name, t in transforms:
        if hasattr(t, "transform_input"):
            continue
        start, stop = wrapper._columns[name] or (0, weight.shape[0])
        folded = merge_into(get_method(method_of[id(t)]), t, weight[start:stop], bias[start:stop])
        if folded is None:
            return None
        weight = torch.cat([weight[:start], folded[0], weight[stop:]])
        bias = torch.cat([bias[:start], folded[1], bias[stop:]])
    return weight, bias


def merge_sites(handle) -> list[MergedSite]:
    """Merge every projection of ``handle`` whose transforms all merge; see the module docstring."""
    placements = [p for p in handle.plan.placements(handle.arch) if p.linear is not None]
    method_of = {id(handle.modules[p.key]): p.method for p in placements}
    wrappers: dict[int, tuple[nn.Module, str, nn.Module, list[str]]] = {}
    for p in placements:
        block = handle.arch.blocks(handle.model)[p.layer]
        parent_path, _, child = p.linear.path.rpartition(".")
        parent = block.get_submodule(parent_path) if parent_path else block
        wrapper = getattr(parent, child)
        assert isinstance(wrapper, AdaptedLinear), type(wrapper)
        wrappers.setdefault(id(wrapper), (parent, child, wrapper, []))[3].append(p.key)
    folded = {key: _fold(wrapper, method_of) for key, (_, _, wrapper, _) in wrappers.items()}
    merged: list[MergedSite] = []
    with torch.no_grad():
        for key, (parent, child, wrapper, keys) in wrappers.items():
            if folded[key] is None:
                continue
            weight, bias = folded[key]
            base = wrapper.base
            site = MergedSite(parent, child, wrapper, base, base.weight.data,
                              base.bias.data if getattr(base, "bias", None) is not None else None, keys)
            dtype = base.weight.dtype
            base.weight.data = (weight.T if _is_conv1d(base) else weight).to(dtype).contiguous()
            if site.bias is not None:
                base.bias.data = bias.to(dtype)
            elif bias.any():  # e.g. BitFit on a projection without a bias (Llama): give it one while merged
                base.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
            setattr(parent, child, base)
            merged.append(site)
    return merged


def unmerge_sites(merged: list[MergedSite]) -> None:
    """Put the original weights and the wrappers back (bitwise the state before :func:`merge_sites`)."""
    for site in reversed(merged):
        site.base.weight.data = site.weight
        if site.bias is not None:
            site.base.bias.data = site.bias
        elif getattr(site.base, "bias", None) is not None:
            site.base.bias = None
        setattr(site.parent, site.child, site.wrapper)
