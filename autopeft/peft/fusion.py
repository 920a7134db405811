"""AdapterFusion (Pfeiffer et al., 2021): combine several trained adapters of one base with learned attention.

Every source adapter (an adapter directory trained on some task) keeps its weights, frozen. At each
projection output where at least one source has a module, the sources' outputs are fused::

    δ_n = chain_n(x, h) - h                    each source's change of the sublayer output h (all of its
                                               modules on that projection, in stage order)
    a_n = softmax_n( (W_Q h + b_Q) · (W_K δ_n + b_K) )
    h  <- h + Σ_n a_n W_V δ_n                   W_Q, W_K: (d, d) + bias, W_V: (d, d)

Query from the sublayer output, keys and values from each adapter's output, as in the paper (and in
AdapterHub's default "dynamic" fusion, whose adapters' outputs are also taken before the residual).
W_V starts at the identity and W_Q, W_K at N(0, 0.02²), so the first step averages the adapters; the
regulariser 0.01 ||W_V - I||² (AdapterHub's) keeps W_V near the identity. Only the fusion layers and a
new task head train: 3 d² + 2 d parameters per fused projection.

Sources can use any output-transform method on linear sites (LoRA, DoRA, adapters, (IA)^3 on k/v, ...);
they must share the base model (and its quantization). Prefixes and prompts (attention/embedding
methods) and input transforms ((IA)^3 on ``down``) change what the base computes rather than adding to
its output, so they cannot be fused and are refused. A fused directory is self-contained: the
sources' plans are recorded in ``autopeft_config.json`` (``fusion``) and their weights are stored in
``adapter.safetensors`` as ``sources.<n>.<key>``, next to the fusion layers and the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from autopeft.core.arch import LinearSite, ModelArch
from autopeft.core.errors import UserError
from autopeft.methods import Placement as MethodPlacement
from autopeft.methods import get_method
from autopeft.peft.artifacts import load_adapter
from autopeft.peft.inject import HEAD_PREFIX, AdaptedLinear, InjectionHandle, inject
from autopeft.peft.plan import Plan

SOURCE_PREFIX = "sources."
FUSION_STAGE = 100  # after anything else on the projection (there is nothing else in a fused model)
VALUE_REG_WEIGHT = 0.01


@dataclass
class Source:
    name: str
    plan: Plan
    state: dict[str, torch.Tensor]  # the source's adapter tensors (its task head dropped)

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "plan": self.plan.to_dict()}


def _base_of(config: dict[str, Any]) -> tuple[str, str]:
    data = config.get("data", {})
    return str(data.get("model", config.get("base_model"))), str(data.get("quantize", "none"))


def load_sources(directories: list[str]) -> tuple[list[Source], dict[str, Any]]:
    """The adapters to fuse and the config of the first one; refuses sets that cannot be fused."""
    if len(directories) < 2:
        raise UserError("autopeft fuse needs at least two adapter directories")
    sources, configs = [], []
    for directory in directories:
        plan, state, config = load_adapter(directory)
        if "fusion" in config:
            raise UserError(f"{directory} is itself a fusion; fuse the adapters it was made from instead")
        for entry in plan.entries:
            if get_method(entry.method).placement is not MethodPlacement.LINEAR:
                raise UserError(f"{directory}: method '{entry.method}' is not an output of a projection "
                                "(prefixes and prompts cannot be fused); fuse adapters of linear-site methods")
        sources.append(Source(str(directory), plan, {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}))
        configs.append(config)
    first = _base_of(configs[0])
    for directory, config in zip(directories[1:], configs[1:], strict=True):
        if _base_of(config) != first:
            raise UserError(f"{directory} was trained on base {_base_of(config)[0]!r} "
                            f"(quantize {_base_of(config)[1]}), {directories[0]} on {first[0]!r} "
                            f"(quantize {first[1]}): only adapters of the same base model can be fused")
    return sources, configs[0]


class FusionLayer(nn.Module):
    """Attention over the sources' changes of one projection's output (see the module docstring)."""

    def __init__(self, width: int, chains: list[list[nn.Module]]) -> None:
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width, bias=False)
        for layer in (self.query, self.key):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.value.weight.copy_(torch.eye(width))
        self._chains = chains  # a plain list: the frozen sources are not this module's parameters

    def bind(self, base: nn.Module, site: LinearSite) -> None:
        """Nothing to bind; defining it tells autopeft.peft.precision to leave this projection's weight in fp32,
        which sources that read it (DoRA's norms) need in order to compute as they were trained."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = y.to(self.query.weight.dtype)
        deltas = []
        for chain in self._chains:
            out = y
            for module in chain:
                out = module(x, out)
            deltas.append(out.to(h.dtype) - h)
        delta = torch.stack(deltas, dim=-2)  # (..., N, d)
        scores = (self.key(delta) @ self.query(h).unsqueeze(-1)).squeeze(-1)  # (..., N)
        weights = torch.softmax(scores.float(), dim=-1).to(h.dtype)
        fused = (weights.unsqueeze(-1) * self.value(delta)).sum(dim=-2)  # (..., d)
        return (h + fused).to(y.dtype)

    def regularization(self) -> torch.Tensor:
        eye = torch.eye(self.value.weight.shape[0], device=self.value.weight.device)
        return VALUE_REG_WEIGHT * (self.value.weight.float() - eye).pow(2).sum()


def _site_base(model: nn.Module, arch: ModelArch, layer: int, linear: LinearSite) -> tuple[nn.Module, str, nn.Module]:
    block = arch.blocks(model)[layer]
    parent_path, _, child = linear.path.rpartition(".")
    parent = block.get_submodule(parent_path) if parent_path else block
    module = getattr(parent, child)
    return parent, child, module.base if isinstance(module, AdaptedLinear) else module


def _source_chains(sources: list[Source], model: nn.Module, arch: ModelArch,
                   device: torch.device) -> dict[tuple[int, str], list[list[nn.Module]]]:
    """Frozen modules of every source, grouped by (layer, site): one chain per source present there."""
    chains: dict[tuple[int, str], list[list[nn.Module]]] = {}
    for source in sources:
        per_site: dict[tuple[int, str], list[tuple[int, nn.Module]]] = {}
        for p in source.plan.placements(arch):
            assert p.linear is not None
            method = get_method(p.method)
            module = method.build(p.config, arch, p.linear).float().to(device)
            if hasattr(module, "transform_input"):
                raise UserError(f"{source.name}: '{p.method}' on '{p.site}' rescales the projection's input, "
                                "which cannot be fused; fuse adapters whose methods act on outputs")
            if hasattr(module, "bind"):
                module.bind(_site_base(model, arch, p.layer, p.linear)[2], p.linear)
            own = module.state_dict()
            missing = [k for k in own if f"{p.key}.{k}" not in source.state]
            if missing:
                raise UserError(f"{source.name}: adapter weights lack {p.key}.{missing[0]}; the directory is incomplete")
            module.load_state_dict({k: source.state[f"{p.key}.{k}"] for k in own})
            module.requires_grad_(False)
            module.eval()
            per_site.setdefault((p.layer, p.site), []).append((method.stage, module))
        for key, items in per_site.items():
            chains.setdefault(key, []).append([m for _, m in sorted(items, key=lambda item: item[0])])
    return chains


def fuse(model: nn.Module, arch: ModelArch, sources: list[Source], train_head: bool = True) -> InjectionHandle:
    """Freeze ``model``, add the frozen sources and a trainable fusion layer at every fused projection.

    The returned handle behaves like :func:`autopeft.peft.inject.inject`'s: its trainable parameters are the
    fusion layers (``layers.<i>.<site>.fusion.*``) and the head, and ``remove()`` restores the base bitwise.
    """
    handle = inject(model, Plan(()), arch, train_head=train_head)  # freezing, head, undo bookkeeping
    try:
        device = next(model.parameters()).device
        for (layer, site), site_chains in sorted(_source_chains(sources, model, arch, device).items()):
            linear = arch.site(site)
            parent, child, _ = _site_base(model, arch, layer, linear)
            wrapper = getattr(parent, child)
            if not isinstance(wrapper, AdaptedLinear):
                original = wrapper
                wrapper = AdaptedLinear(original)
                setattr(parent, child, wrapper)
                handle._undo.append(lambda parent=parent, child=child, original=original:
                                    setattr(parent, child, original))
            fusion = FusionLayer(linear.width, site_chains).to(device)
            fused_slice = linear.out_slice[1] > 1
            wrapper.add(f"{site}_fusion", fusion, linear.columns if fused_slice else None, FUSION_STAGE)
            handle.modules[f"layers.{layer}.{site}.fusion"] = fusion
    except BaseException:
        handle.remove()
        raise
    return handle


def source_state(sources: list[Source]) -> dict[str, torch.Tensor]:
    """The sources' weights under ``sources.<n>.``, for a self-contained fused directory."""
    return {f"{SOURCE_PREFIX}{i}.{k}": v for i, s in enumerate(sources) for k, v in s.state.items()}


def sources_from_saved(config: dict[str, Any], state: dict[str, torch.Tensor]) -> list[Source]:
    """The sources recorded in a fused directory (``autopeft_config.json`` + ``adapter.safetensors``)."""
    records = config["fusion"]["sources"]
    sources = []
    for i, record in enumerate(records):
        prefix = f"{SOURCE_PREFIX}{i}."
        own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        sources.append(Source(record["name"], Plan.from_dict(record["plan"], f"fusion source {i}"), own))
    return sources


def fusion_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A fused directory's own weights (fusion layers and head), without the sources'."""
    return {k: v for k, v in state.items() if not k.startswith(SOURCE_PREFIX)}
