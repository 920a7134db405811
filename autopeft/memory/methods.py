"""What a PEFT method's modules keep alive for backward, counted from the method itself.

A linear-site (or norm-site) method is an output transform ``y <- module(x, y)`` (plus optionally an
input transform). Instead of a formula per method, :func:`site_method_cost` runs the method's real
module once under ``FakeTensorMode`` (shapes only: no memory, no FLOPs, ~10 ms) with the same
autocast and ``requires_grad`` state as in training, and records every tensor autograd saves
(``saved_tensors_hooks``). Saved bytes are affine in the number of tokens N, so two runs
(N = 4 and N = 8) give

    saved(N) = per_token * N + constant

``constant`` holds parameter-sized tensors (autocast's bf16 copies of trainable weights, DoRA's merged
weight). Bytes of tensors that *are* the input ``x`` are reported apart (``shared_per_token``): several
methods on sites that read the same input (q, k, v) keep one ``x`` alive, not one each.
The frozen base projection is traced with and without the method and subtracted, so what an input
transform ((IA)^3 on ``down``) costs the base (its weight copy for a newly grad-requiring input) is the
method's. Results are cached per (method, config, shapes, precision, grad state).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from autopeft.core.arch import LinearSite, ModelArch

log = logging.getLogger("autopeft")
_TOKENS = (4, 8)


@dataclass(frozen=True)
class MethodCost:
    per_token: float  # bytes saved per token, excluding ``x`` itself
    shared_per_token: float  # bytes per token of ``x`` itself (deduplicated across methods on one input)
    constant: float  # token-independent bytes (casts of trainable weights, merged weights)
    traced: bool = True  # False: the trace failed and this is the fallback guess


def site_method_cost(method: Any, config: Any, arch: ModelArch, site: LinearSite, *, autocast: bool,
                     x_dtype: torch.dtype, x_requires_grad: bool) -> MethodCost:
    """Saved-for-backward bytes of ``method`` on ``site``; see the module docstring."""
    arch_key = (arch.family.name, arch.num_layers, arch.hidden, arch.num_heads, arch.num_kv_heads, arch.head_dim)
    key = (method.name, repr(config), arch_key, site, autocast, x_dtype, x_requires_grad)
    if key not in _CACHE:
        _CACHE[key] = _cost(method.name, method, config, arch, site, autocast, x_dtype, x_requires_grad)
    return _CACHE[key]


_CACHE: dict[tuple, MethodCost] = {}


def _cost(name: str, method: Any, config: Any, arch: ModelArch, site: LinearSite, autocast: bool,
          x_dtype: torch.dtype, x_requires_grad: bool) -> MethodCost:
    try:
        runs = _trace(method, config, arch, site, autocast, x_dtype, x_requires_grad)
    except Exception as exc:  # a method the fake trace cannot run: assume it keeps x and y once
        log.debug("memory: cannot trace method %s (%s); assuming it saves its input and output", name, exc)
        act = 2 if autocast else 4
        return MethodCost(act * (site.in_features + site.width), 0.0, 0.0, traced=False)
    (n0, (own0, shared0)), (n1, (own1, shared1)) = zip(_TOKENS, runs, strict=True)
    per_token = (own1 - own0) / (n1 - n0)
    shared = (shared1 - shared0) / (n1 - n0)
    constant = own0 - per_token * n0 + shared0 - shared * n0
    return MethodCost(per_token, shared, max(0.0, constant))


def _trace(method: Any, config: Any, arch: ModelArch, site: LinearSite, autocast: bool,
           x_dtype: torch.dtype, x_requires_grad: bool) -> list[tuple[int, int]]:
    """Per token count in ``_TOKENS``: (bytes saved by the method excluding x, bytes of x saved)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    out = []
    with FakeTensorMode(allow_non_fake_inputs=False):
        base = nn.Linear(site.in_features, site.width, bias=site.bias)
        base.requires_grad_(False)
        module = method.build(config, arch, site)
        for p in module.parameters():  # trainable weights are fp32 in training (inject's master weights)
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()
        if hasattr(module, "bind"):
            module.bind(base, site)
        frozen = {_key(t) for t in [*module.parameters(), *module.buffers(), *base.parameters()]}
        for tokens in _TOKENS:
            x = torch.randn(tokens, site.in_features, dtype=x_dtype).requires_grad_(x_requires_grad)
            sublayer_input = torch.randn(tokens, arch.hidden)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                alone = _saved(lambda x=x: base(x), frozen)
                with_method = _saved(lambda x=x, h=sublayer_input: _apply(module, base, x, h), frozen)
            x_key = _key(x)
            own = (sum(b for k, b in with_method.items() if k != x_key)
                   - sum(b for k, b in alone.items() if k != x_key))
            shared = with_method.get(x_key, 0) - alone.get(x_key, 0)
            out.append((max(0, own), max(0, shared)))
    return out


def _apply(module: nn.Module, base: nn.Module, x: torch.Tensor, sublayer_input: torch.Tensor) -> torch.Tensor:
    if hasattr(module, "capture"):  # parallel modules that read the sublayer's input (frozen there)
        module.capture(sublayer_input)
    base_input = module.transform_input(x) if hasattr(module, "transform_input") else x
    return module(x, base(base_input))


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _saved(fn, exclude: set[int]) -> dict[int, int]:
    """Unique storages (and their bytes) that autograd saves while ``fn`` runs, minus ``exclude``."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _key(t)
        if key not in exclude:
            saved[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return saved
