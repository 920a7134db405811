"""Search spaces: a YAML description of hybrid PEFT configurations, parsed into typed nodes.

A space is a list of *decisions*. Each decision picks, for some layers and sites, one method among
several (``none`` = nothing) and that method's hyperparameters::

    training:
      lr: {float: [3.0e-4, 3.0e-3], log: true}
    decisions:
      - name: lora
        layers: all            # all | [0, 1, -1] | "0-3"
        sites: [q, v]
        per: layer-site        # layer | site | layer-site | global: what is decided independently
        methods:
          none: {}
          lora: {r: {choice: [2, 4, 8]}, alpha: 16}

A hyperparameter is a fixed value (``alpha: 16``) or a typed range: ``{int: [lo, hi], log?, step?}``,
``{float: [lo, hi], log?}``, ``{choice: [a, b, ...]}``; bounds are inclusive. ``per`` sets the
granularity: with ``per: layer`` one choice per layer covers all the decision's sites, with
``per: site`` one choice per site is tied across layers, ``global`` ties everything.

Sampling is define-by-run on an Optuna trial (conditional parameters are only sampled when their
method is chosen), so any Optuna sampler works; parameter names read
``<decision>.<unit>.method`` and ``<decision>.<unit>.<method>.<option>``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml

from autopeft.arch import ModelArch
from autopeft.errors import UserError
from autopeft.methods import get_method, make_config
from autopeft.plan import Plan, PlanEntry

Granularity = Literal["layer", "site", "layer-site", "global"]
NONE = "none"


@dataclass(frozen=True)
class Fixed:
    value: Any

    def sample(self, trial: optuna.Trial, name: str) -> Any:
        return self.value


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False
    step: int = 1

    def sample(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False

    def sample(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def sample(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))


Node = Fixed | Int | Float | Choice


@dataclass(frozen=True)
class Decision:
    name: str
    layers: Any  # "all" or a list of indices / "a-b" strings, resolved against a model
    sites: tuple[str, ...]
    per: Granularity
    methods: dict[str, dict[str, Node]]

    def units(self, arch: ModelArch) -> list[tuple[str, tuple[int, ...], tuple[str, ...]]]:
        """(unit name, layers, sites) for each independent choice of this decision."""
        layers = resolve_layer_selection(self.layers, arch, self.name)
        if self.per == "global":
            return [("all", layers, self.sites)]
        if self.per == "layer":
            return [(f"L{i}", (i,), self.sites) for i in layers]
        if self.per == "site":
            return [(s, layers, (s,)) for s in self.sites]
        return [(f"L{i}.{s}", (i,), (s,)) for i in layers for s in self.sites]


@dataclass(frozen=True)
class UnitChoice:
    """What one independent unit of a decision chose: a method (or none) and its option values."""

    prefix: str  # "<decision>.<unit>": the Optuna parameter names start with it
    decision: Decision
    layers: tuple[int, ...]
    sites: tuple[str, ...]
    method: str
    values: dict[str, Any]

    def entry(self) -> PlanEntry | None:
        return None if self.method == NONE else PlanEntry(self.method, self.layers, self.sites, dict(self.values))

    def num_params(self, arch: ModelArch) -> int:
        entry = self.entry()
        return 0 if entry is None else Plan((entry,)).num_params(arch)

    def trial_params(self) -> dict[str, Any]:
        """The Optuna parameters that reproduce this choice (fixed values are not parameters)."""
        params: dict[str, Any] = {}
        if len(self.decision.methods) > 1:
            params[f"{self.prefix}.method"] = self.method
        if self.method != NONE:
            for key, node in self.decision.methods[self.method].items():
                if not isinstance(node, Fixed):
                    params[f"{self.prefix}.{self.method}.{key}"] = self.values[key]
        return params


@dataclass(frozen=True)
class Sample:
    choices: tuple[UnitChoice, ...]
    training: dict[str, Any]

    def plan(self) -> Plan:
        grouped: dict[tuple[str, tuple[str, ...], str], list[int]] = {}
        for choice in self.choices:
            if choice.method == NONE:
                continue
            key = (choice.method, choice.sites, json.dumps(choice.values, sort_keys=True))
            grouped.setdefault(key, []).extend(choice.layers)
        return Plan(tuple(
            PlanEntry(method, tuple(sorted(set(layers))), sites, json.loads(values))
            for (method, sites, values), layers in grouped.items()
        ))

    def trial_params(self) -> dict[str, Any]:
        params = {f"training.{k}": v for k, v in self.training.items()}
        for choice in self.choices:
            params.update(choice.trial_params())
        return params


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    decisions: tuple[Decision, ...]
    training: dict[str, Node]

    def sample_choices(self, trial: optuna.Trial, arch: ModelArch) -> Sample:
        """Sample every unit's method and options, and the training overrides, on an Optuna trial."""
        choices = []
        for decision in self.decisions:
            for unit, layers, sites in decision.units(arch):
                prefix = f"{decision.name}.{unit}"
                options = list(decision.methods)
                method = options[0] if len(options) == 1 else trial.suggest_categorical(f"{prefix}.method", options)
                values = {} if method == NONE else {
                    k: node.sample(trial, f"{prefix}.{method}.{k}") for k, node in decision.methods[method].items()
                }
                choices.append(UnitChoice(prefix, decision, layers, sites, method, values))
        training = {k: node.sample(trial, f"training.{k}") for k, node in self.training.items()}
        return Sample(tuple(choices), training)

    def sample(self, trial: optuna.Trial, arch: ModelArch) -> tuple[Plan, dict[str, Any]]:
        sample = self.sample_choices(trial, arch)
        return sample.plan(), sample.training

    def repair(self, sample: Sample, arch: ModelArch, budget: int, rng: random.Random) -> Sample | None:
        """Switch units off until the plan fits ``budget``; ``None`` if switching everything off does not.

        Which unit goes is drawn at random, weighted by its parameter cost (seeded ``rng``): big
        components are the likeliest to go, yet repaired plans stay diverse instead of all shrinking
        the same way. Only units whose decision offers ``none`` can be switched off.
        """
        choices = list(sample.choices)
        costs = [c.num_params(arch) for c in choices]
        while sum(costs) > budget:
            removable = [i for i, c in enumerate(choices) if c.method != NONE and NONE in c.decision.methods]
            if not removable:
                return None
            i = rng.choices(removable, weights=[costs[j] + 1 for j in removable])[0]
            choices[i] = replace(choices[i], method=NONE, values={})
            costs[i] = 0
        return Sample(tuple(choices), sample.training)

    def smallest(self, arch: ModelArch) -> Sample:
        """The cheapest point of the space: per unit, the cheapest method at its lowest option values.

        Training overrides are left out, so the sampler still chooses them.
        """
        choices = []
        for decision in self.decisions:
            for unit, layers, sites in decision.units(arch):
                options = [(m, {} if m == NONE else _lowest(nodes)) for m, nodes in decision.methods.items()]
                candidates = [UnitChoice(f"{decision.name}.{unit}", decision, layers, sites, m, v) for m, v in options]
                choices.append(min(candidates, key=lambda c: c.num_params(arch)))
        return Sample(tuple(choices), {})

    def min_params(self, arch: ModelArch) -> int:
        """Parameters of the smallest plan in the space (for "no plan fits the budget" errors)."""
        return self.smallest(arch).plan().num_params(arch)


def _lowest(nodes: dict[str, Node]) -> dict[str, Any]:
    """Option values at the bottom of every range (the cheapest setting for size-like options)."""
    out = {}
    for key, node in nodes.items():
        if isinstance(node, Fixed):
            out[key] = node.value
        elif isinstance(node, (Int, Float)):
            out[key] = node.low
        else:
            numeric = [o for o in node.options if isinstance(o, (int, float)) and not isinstance(o, bool)]
            out[key] = min(numeric) if len(numeric) == len(node.options) else node.options[0]
    return out


def resolve_layer_selection(selection: Any, arch: ModelArch, where: str) -> tuple[int, ...]:
    if selection == "all":
        return tuple(range(arch.num_layers))
    items = selection if isinstance(selection, list) else [selection]
    layers: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            layers.append(item)
        elif isinstance(item, str) and "-" in item.strip("-"):
            lo, hi = item.split("-", 1) if not item.startswith("-") else (None, None)
            if lo is None or not lo.strip().isdigit() or not hi.strip().isdigit():
                raise UserError(f"decision '{where}': layer range {item!r} must look like '0-3'")
            layers.extend(range(int(lo), int(hi) + 1))
        else:
            raise UserError(f"decision '{where}': layers must be 'all', indices or ranges like '0-3', got {item!r}")
    return arch.resolve_layers(layers)


# --- parsing ----------------------------------------------------------------------------------

PRESETS_PACKAGE = "autopeft.search_spaces"


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(PRESETS_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str) -> SearchSpace:
    """A preset name (see :func:`list_presets`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"search space file not found: {path}")
        return parse_space(path.read_text(), str(path), path.stem)
    if name_or_path in list_presets():
        text = resources.files(PRESETS_PACKAGE).joinpath(f"{name_or_path}.yaml").read_text()
        return parse_space(text, f"preset '{name_or_path}'", name_or_path)
    raise UserError(f"unknown search space '{name_or_path}'; presets: {', '.join(list_presets())}, or a .yaml file")


def parse_space(text: str, source: str, name: str) -> SearchSpace:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise UserError(f"{source}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{source}: a search space is a mapping with 'decisions'")
    _check_keys(doc, {"description", "training", "decisions"}, source)
    decisions = doc.get("decisions")
    if not isinstance(decisions, list) or not decisions:
        raise UserError(f"{source}: 'decisions' must be a non-empty list")
    parsed = tuple(_parse_decision(d, f"{source}: decisions[{i}]", i) for i, d in enumerate(decisions))
    names = [d.name for d in parsed]
    if len(set(names)) != len(names):
        raise UserError(f"{source}: decision names must be unique, got {names}")
    training = doc.get("training") or {}
    if not isinstance(training, dict):
        raise UserError(f"{source}: 'training' must be a mapping")
    _check_keys(training, {"lr"}, f"{source}: training")
    return SearchSpace(name, str(doc.get("description", "")).strip(), parsed,
                       {k: _parse_node(v, f"{source}: training.{k}") for k, v in training.items()})


def _check_keys(doc: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed, key=str)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _parse_decision(doc: Any, where: str, index: int) -> Decision:
    if not isinstance(doc, dict):
        raise UserError(f"{where}: a decision is a mapping with layers, sites, methods")
    _check_keys(doc, {"name", "layers", "sites", "per", "methods"}, where)
    name = str(doc.get("name", f"d{index}"))
    sites = doc.get("sites")
    if isinstance(sites, str):
        sites = [sites]
    if not isinstance(sites, list) or not sites or not all(isinstance(s, str) for s in sites):
        raise UserError(f"{where}: 'sites' must be a site name or a non-empty list of them")
    per = doc.get("per", "layer-site")
    if per not in ("layer", "site", "layer-site", "global"):
        raise UserError(f"{where}: per={per!r}; allowed: layer, site, layer-site, global")
    methods = doc.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise UserError(f"{where}: 'methods' must map method names (or 'none') to their options")
    parsed: dict[str, dict[str, Node]] = {}
    for method, options in methods.items():
        options = options or {}
        if not isinstance(options, dict):
            raise UserError(f"{where}: methods.{method} must map options to values or ranges")
        if method != NONE:
            known = set(make_config(get_method(method), {}).__dataclass_fields__)
            _check_keys(options, known, f"{where}: methods.{method}")
        elif options:
            raise UserError(f"{where}: methods.none takes no options")
        parsed[str(method)] = {k: _parse_node(v, f"{where}: methods.{method}.{k}") for k, v in options.items()}
    return Decision(name, doc.get("layers", "all"), tuple(sites), per, parsed)


def _parse_node(value: Any, where: str) -> Node:
    if not isinstance(value, dict):
        if isinstance(value, list):
            raise UserError(f"{where}: a list is ambiguous; write {{choice: {value}}}")
        return Fixed(value)
    kinds = [k for k in ("int", "float", "choice") if k in value]
    if len(kinds) != 1:
        raise UserError(f"{where}: a range needs exactly one of int, float, choice")
    kind = kinds[0]
    _check_keys(value, {kind, "log", "step"} if kind != "choice" else {"choice"}, where)
    bounds = value[kind]
    if kind == "choice":
        if not isinstance(bounds, list) or not bounds:
            raise UserError(f"{where}: choice needs a non-empty list of options")
        return Choice(tuple(bounds))
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)):
        raise UserError(f"{where}: {kind} needs [low, high]")
    low, high = bounds
    if low > high:
        raise UserError(f"{where}: inverted range [{low}, {high}]; write [{high}, {low}]")
    log = bool(value.get("log", False))
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0, got {low}")
    if kind == "int":
        if not all(float(b).is_integer() for b in bounds):
            raise UserError(f"{where}: int bounds must be whole numbers, got {bounds}")
        return Int(int(low), int(high), log, int(value.get("step", 1)))
    return Float(float(low), float(high), log)
