"""The parsed search space: decisions, their units for one model, samples, and what a sample costs.

A *decision* offers a :class:`~autopeft.space.nodes.Conditional` choice of methods at some layers and
sites; its ``per`` granularity cuts those into *units*, each of which chooses independently:

    per: layer-site   one unit per (layer, site)      L0.q, L0.v, L1.q, ...
    per: layer        one per layer, all sites tied   L0, L1, ...
    per: site         one per site, tied over layers  q, v
    per: group        one per group of layers         G0, G1, ...   (with ``groups:``)
    per: group-site   one per (group, site)           G0.q, G0.v, ...
    per: global       a single unit                   all

A *mask* is one on/off flag per layer shared by several decisions (AutoPEFT's SAPPA space: a layer
either has all of serial adapter, parallel adapter and prefix, or none of them). A *forbid* rule names
methods that must not occur together in one site, one layer or the whole model.

Optuna parameter names read ``<decision>.<unit>.method``, ``<decision>.<unit>.<method>.<option>``,
``mask.<mask>.L<i>`` and ``training.<key>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from autopeft.core.arch import LINEAR_SITES, ModelArch
from autopeft.core.errors import UserError
from autopeft.peft.plan import Plan, PlanEntry

from .layers import MODEL_SITES, Groups, LayerSelection, SelectionError
from .nodes import Conditional, Node, is_parameter

Granularity = Literal["layer", "site", "layer-site", "group", "group-site", "global"]
Scope = Literal["site", "layer", "model"]
NONE = "none"


def training_param(key: str) -> str:
    """The trial parameter (Optuna, Ray) of the space's training key ``key``, e.g. ``training.lr``."""
    return f"training.{key}"


@dataclass(frozen=True)
class Unit:
    name: str
    layers: tuple[int, ...]
    sites: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    name: str
    layers: LayerSelection
    sites: tuple[str, ...]  # canonical site names
    per: Granularity
    choice: Conditional
    groups: Groups | None = None
    mask: str | None = None
    origin: str = field(default="", compare=False)  # "file:line:col: decisions[i]", for resolution errors

    @property
    def methods(self) -> dict[str, dict[str, Node]]:
        return self.choice.branches

    def units(self, arch: ModelArch) -> list[Unit]:
        """The independent choices of this decision on ``arch``; sites the family lacks are skipped."""
        sites = tuple(s for s in self.sites if s not in LINEAR_SITES or s in arch.sites)
        if not sites:
            return []
        if all(s in MODEL_SITES for s in sites):
            return [Unit("model", (0,), sites)]
        try:
            layers = self.layers.resolve(arch.num_layers)
        except SelectionError as exc:
            raise UserError(f"{self.origin}: {exc}") from None
        if self.per == "global":
            return [Unit("all", layers, sites)]
        if self.per == "layer":
            return [Unit(f"L{i}", (i,), sites) for i in layers]
        if self.per == "site":
            return [Unit(s, layers, (s,)) for s in sites]
        if self.per == "layer-site":
            return [Unit(f"L{i}.{s}", (i,), (s,)) for i in layers for s in sites]
        assert self.groups is not None
        groups = self.groups.split(layers)
        if self.per == "group":
            return [Unit(f"G{k}", g, sites) for k, g in enumerate(groups)]
        return [Unit(f"G{k}.{s}", g, (s,)) for k, g in enumerate(groups) for s in sites]


@dataclass(frozen=True)
class Mask:
    name: str
    layers: LayerSelection
    origin: str = field(default="", compare=False)

    def resolve(self, arch: ModelArch) -> tuple[int, ...]:
        try:
            return self.layers.resolve(arch.num_layers)
        except SelectionError as exc:
            raise UserError(f"{self.origin}: {exc}") from None


@dataclass(frozen=True)
class Forbid:
    methods: tuple[str, ...]
    scope: Scope
    implicit: bool = False  # added by autopeft (e.g. one prefix-like method per layer), not written in the file

    def describe(self) -> str:
        why = " (implicit: a layer's attention takes one prefix-like method)" if self.implicit else ""
        return f"{' + '.join(self.methods)} in one {self.scope}{why}"


@dataclass(frozen=True)
class UnitChoice:
    """What one independent unit of a decision chose: a method (or none) and its option values."""

    prefix: str  # "<decision>.<unit>": the Optuna parameter names start with it
    decision: Decision
    layers: tuple[int, ...]
    sites: tuple[str, ...]
    method: str
    values: dict[str, Any]

    def entry(self, layers: tuple[int, ...] | None = None) -> PlanEntry | None:
        layers = self.layers if layers is None else layers
        if self.method == NONE or not layers:
            return None
        return PlanEntry(self.method, layers, self.sites, self.options)

    @property
    def options(self) -> dict[str, Any]:
        """The plan entry's options: the sampled values and the space's tied ones (``alpha: 2r``)."""
        return self.decision.choice.completed(self.method, self.values)

    def num_params(self, arch: ModelArch, layers: tuple[int, ...] | None = None) -> int:
        layers = self.layers if layers is None else layers
        if self.method == NONE or not layers:
            return 0
        return len(layers) * per_layer_cost(arch_key(arch), arch, self.method, _freeze(self.options), self.sites)

    def trial_params(self) -> dict[str, Any]:
        """The Optuna parameters that reproduce this choice (fixed values are not parameters)."""
        params: dict[str, Any] = {}
        if len(self.decision.methods) > 1:
            params[f"{self.prefix}.method"] = self.method
        if self.method != NONE:
            for key, node in self.decision.methods[self.method].items():
                if is_parameter(node):
                    params[f"{self.prefix}.{self.method}.{key}"] = self.values[key]
        return params


@dataclass(frozen=True)
class Sample:
    """One point of a space for one model: every unit's choice, the mask flags, the training overrides."""

    choices: tuple[UnitChoice, ...]
    training: dict[str, Any]
    masks: dict[str, tuple[int, ...]] = field(default_factory=dict)  # mask name -> layers switched on
    fixed_training: tuple[str, ...] = ()  # training values that are fixed in the space (not Optuna parameters)

    def active_layers(self, choice: UnitChoice) -> tuple[int, ...]:
        if choice.decision.mask is None:
            return choice.layers
        on = set(self.masks.get(choice.decision.mask, ()))
        return tuple(i for i in choice.layers if i in on)

    def plan(self) -> Plan:
        grouped: dict[tuple[str, tuple[str, ...], str], list[int]] = {}
        for choice in self.choices:
            layers = self.active_layers(choice)
            if choice.method == NONE or not layers:
                continue
            key = (choice.method, choice.sites, json.dumps(choice.options, sort_keys=True))
            grouped.setdefault(key, []).extend(layers)
        return Plan(tuple(
            PlanEntry(method, tuple(sorted(set(layers))), sites, json.loads(values))
            for (method, sites, values), layers in grouped.items()
        ))

    def num_params(self, arch: ModelArch) -> int:
        """Exact trainable parameters of :meth:`plan` (equal to ``plan().num_params(arch)``), cached."""
        return sum(c.num_params(arch, self.active_layers(c)) for c in self.choices)

    def trial_params(self) -> dict[str, Any]:
        params = {f"mask.{name}.L{i}": i in set(on) for name, (on, layers) in self._mask_flags().items()
                  for i in layers}
        for choice in self.choices:
            params.update(choice.trial_params())
        params.update({training_param(k): v for k, v in self.training.items() if k not in self.fixed_training})
        return params

    def _mask_flags(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """mask name -> (layers on, layers with a flag); the flagged layers are those of the masked units."""
        flagged: dict[str, set[int]] = {}
        for choice in self.choices:
            if choice.decision.mask is not None:
                flagged.setdefault(choice.decision.mask, set()).update(choice.layers)
        return {name: (self.masks.get(name, ()), tuple(sorted(layers))) for name, layers in flagged.items()}

    def presence(self) -> dict[tuple[int, str], list[tuple[str, int]]]:
        """(layer, site) -> [(method, index of the choice that put it there)], for forbid rules."""
        present: dict[tuple[int, str], list[tuple[str, int]]] = {}
        for index, choice in enumerate(self.choices):
            if choice.method == NONE:
                continue
            for layer in self.active_layers(choice):
                for site in choice.sites:
                    present.setdefault((layer, site), []).append((choice.method, index))
        return present


@dataclass(frozen=True)
class Violation:
    rule: Forbid
    where: str  # "layer 3", "layer 3 site o", "the model"
    choices: tuple[int, ...]  # indices of the sample's choices involved
    layers: tuple[int, ...]

    def describe(self) -> str:
        return f"forbidden: {' + '.join(self.rule.methods)} in {self.where}"


def violations(rules: tuple[Forbid, ...], sample: Sample) -> list[Violation]:
    if not rules:
        return []
    present = sample.presence()
    found = []
    for rule in rules:
        buckets: dict[Any, list[tuple[str, int, int]]] = {}
        for (layer, site), items in present.items():
            key = {"site": (layer, site), "layer": layer, "model": None}[rule.scope]
            buckets.setdefault(key, []).extend((m, i, layer) for m, i in items)
        for key, items in sorted(buckets.items(), key=lambda kv: str(kv[0])):
            if set(rule.methods) <= {m for m, _, _ in items}:
                where = ("the model" if key is None else f"layer {key}" if isinstance(key, int)
                         else f"layer {key[0]} site {key[1]}")
                involved = [(i, layer) for m, i, layer in items if m in rule.methods]
                found.append(Violation(rule, where, tuple(sorted({i for i, _ in involved})),
                                       tuple(sorted({layer for _, layer in involved}))))
    return found


# --- exact costs ------------------------------------------------------------------------------

_KEYS: dict[int, tuple[ModelArch, int]] = {}
_TOKENS: dict[tuple, int] = {}
_ARCHS: dict[int, ModelArch] = {}


def arch_key(arch: ModelArch) -> int:
    """A small hashable token for a model's shapes (ModelArch holds dicts, so it is not hashable itself);
    models with the same shapes share a token."""
    known = _KEYS.get(id(arch))
    if known is not None and known[0] is arch:
        return known[1]
    token = _TOKENS.setdefault(_arch_key(arch), len(_TOKENS))
    _ARCHS.setdefault(token, arch)
    _KEYS[id(arch)] = (arch, token)
    return token


def _arch_key(arch: ModelArch) -> tuple:
    return (arch.family.name, arch.num_layers, arch.hidden, arch.num_heads, arch.num_kv_heads, arch.head_dim,
            arch.vocab_size, tuple(sorted(arch.sites.items())), tuple(sorted(getattr(arch, "norms", {}).items())),
            getattr(arch, "max_positions", None))


def _freeze(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(values.items()))


@lru_cache(maxsize=65_536)
def _per_layer_cost(key: int, method: str, values: tuple[tuple[str, Any], ...], sites: tuple[str, ...]) -> int:
    return Plan((PlanEntry(method, (0,), sites, dict(values)),)).num_params(_ARCHS[key])


def per_layer_cost(key: int, arch: ModelArch, method: str, values: tuple[tuple[str, Any], ...],
                   sites: tuple[str, ...]) -> int:
    """Parameters of ``method`` with ``values`` on ``sites`` of one block (every block has the same shapes)."""
    return _per_layer_cost(key, method, values, sites)
