"""Presets: well-known PEFT configurations expressed as plans, scaled to a model's shapes (d = hidden size).

- ``houlsby`` (Houlsby et al., 2019): serial adapters after attention (``o``) and after the MLP
  (``down``) of every layer; bottleneck d/16 (the adapters library's reduction factor 16), swish (silu).
- ``pfeiffer`` (Pfeiffer et al., 2021): one serial adapter after the MLP (``down``); bottleneck d/16, relu.
- ``mam`` (He et al., 2022, mix-and-match adapter): a 30-token prefix at attention plus a scaled parallel
  adapter (s = 4) beside the MLP with bottleneck d/2 (their r = 512 at d = 1024), relu. The prefix is
  plain; He et al. train it through Li & Liang's MLP (add ``reparam_hidden`` to the entry for that).
- ``unipelt`` (Mao et al., 2022): gated LoRA (r = 8, alpha = 16) on q and v, a gated 10-token prefix and
  a gated serial adapter after the MLP (bottleneck d/16, relu), in every layer.

``autopeft plan --preset NAME [--model M] [--layers ...]`` writes them; the result is an ordinary plan.
"""

from __future__ import annotations

from collections.abc import Callable

from autopeft.core.arch import ModelArch
from autopeft.core.errors import UserError
from autopeft.peft.plan import Plan, PlanEntry

Builder = Callable[[ModelArch, tuple[int, ...]], tuple[PlanEntry, ...]]


def _bottleneck(arch: ModelArch, reduction: int) -> int:
    return max(1, arch.hidden // reduction)


def houlsby(arch: ModelArch, layers: tuple[int, ...]) -> tuple[PlanEntry, ...]:
    return (PlanEntry("adapter", layers, ("o", "down"), {"size": _bottleneck(arch, 16), "activation": "silu"}),)


def pfeiffer(arch: ModelArch, layers: tuple[int, ...]) -> tuple[PlanEntry, ...]:
    return (PlanEntry("adapter", layers, ("down",), {"size": _bottleneck(arch, 16), "activation": "relu"}),)


def mam(arch: ModelArch, layers: tuple[int, ...]) -> tuple[PlanEntry, ...]:
    return (PlanEntry("prefix", layers, ("attn",), {"length": 30}),
            PlanEntry("parallel_adapter", layers, ("down",),
                      {"size": _bottleneck(arch, 2), "activation": "relu", "scaling": 4.0}))


def unipelt(arch: ModelArch, layers: tuple[int, ...]) -> tuple[PlanEntry, ...]:
    return (PlanEntry("lora", layers, ("q", "v"), {"r": 8, "alpha": 16, "gated": True}),
            PlanEntry("prefix", layers, ("attn",), {"length": 10, "gated": True}),
            PlanEntry("adapter", layers, ("down",), {"size": _bottleneck(arch, 16), "activation": "relu",
                                                     "gated": True}))


PRESETS: dict[str, Builder] = {"houlsby": houlsby, "pfeiffer": pfeiffer, "mam": mam, "unipelt": unipelt}


def preset_plan(name: str, arch: ModelArch, layers: tuple[int, ...] | None = None) -> Plan:
    """The preset ``name`` for a model of shapes ``arch``, on ``layers`` (default: all), validated."""
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'; available: {', '.join(PRESETS)}")
    layers = arch.resolve_layers(layers) if layers is not None else tuple(range(arch.num_layers))
    plan = Plan(PRESETS[name](arch, layers))
    plan.num_params(arch)  # validates every entry (methods, options, sites) now
    return plan
