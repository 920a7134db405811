""":class:`SearchSpace`: sampling (define-by-run on an Optuna trial), the cheapest and costliest points,
feasibility under a budget and forbid rules, and budget repair (see :mod:`autopeft.space.repair`)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autopeft.core.arch import LINEAR_SITES, ModelArch
from autopeft.core.errors import UserError
from autopeft.core.units import parse_budget
from autopeft.peft.plan import Plan

from .model import (
    NONE,
    Decision,
    Forbid,
    Mask,
    Sample,
    Unit,
    UnitChoice,
    Violation,
    arch_key,
    training_param,
    violations,
)
from .nodes import Choice, Float, Int, Node, is_number, is_parameter, ordered_values
from .repair import repair
from .to_optuna import suggest, suggest_branch

if TYPE_CHECKING:
    import optuna

MASK_NODE = Choice((True, False))


@dataclass(frozen=True)
class Resolved:
    """A space's units on one model, and the layers that carry each mask's flags."""

    units: tuple[tuple[Decision, Unit], ...]
    mask_layers: dict[str, tuple[int, ...]]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    decisions: tuple[Decision, ...]
    training: dict[str, Node]
    budget: str | None = None  # the file's ``budget:``; a command-line --budget overrides it
    masks: dict[str, Mask] = field(default_factory=dict)
    forbid: tuple[Forbid, ...] = ()
    source: str = ""
    _resolved: dict[int, Resolved] = field(default_factory=dict, init=False, compare=False, repr=False)
    _extremes: dict[tuple, dict[str, Any]] = field(default_factory=dict, init=False, compare=False, repr=False)

    # --- the space on one model -----------------------------------------------------------------
    def resolve(self, arch: ModelArch) -> Resolved:
        """Units of every decision on ``arch``; checks what needs the model (depth, overlaps, masks)."""
        key = arch_key(arch)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(arch)
        return self._resolved[key]

    def _resolve(self, arch: ModelArch) -> Resolved:
        units: list[tuple[Decision, Unit]] = []
        notes: list[str] = []
        owner: dict[tuple[str, int, str], str] = {}
        mask_layers: dict[str, set[int]] = {}
        for decision in self.decisions:
            missing = [s for s in decision.sites if s not in arch.sites and s in LINEAR_SITES]
            if missing and len(missing) == len(decision.sites):  # skipping would leave the decision empty
                present = [s for s in LINEAR_SITES if s in arch.sites]
                raise UserError(f"{decision.origin}: decision '{decision.name}': site(s) {', '.join(missing)} "
                                f"not in {arch.family.name} models; its linear sites are {', '.join(present)}")
            if missing:
                notes.append(f"decision '{decision.name}': site(s) {', '.join(missing)} skipped "
                             f"(not in {arch.family.name} models)")
            decision_units = decision.units(arch)
            if decision.mask is not None and decision_units:
                allowed = set(self.masks[decision.mask].resolve(arch))
                used = {i for u in decision_units for i in u.layers}
                if not used <= allowed:
                    raise UserError(f"{decision.origin}: decision '{decision.name}' uses mask '{decision.mask}' "
                                    f"on layers {sorted(used - allowed)}, which the mask does not cover")
                mask_layers.setdefault(decision.mask, set()).update(used)
            for unit in decision_units:
                for method in decision.methods:
                    if method == NONE:
                        continue
                    for layer in unit.layers:
                        for site in unit.sites:
                            other = owner.setdefault((method, layer, site), decision.name)
                            if other != decision.name:
                                raise UserError(
                                    f"{decision.origin}: decisions '{other}' and '{decision.name}' both offer "
                                    f"'{method}' on layer {layer} site {site}; a plan holds a method once per "
                                    "site: narrow their layers or sites")
                units.append((decision, unit))
        return Resolved(tuple(units), {k: tuple(sorted(v)) for k, v in mask_layers.items()}, tuple(notes))

    @property
    def fixed_training(self) -> tuple[str, ...]:
        return tuple(k for k, node in self.training.items() if not is_parameter(node))

    def units(self, arch: ModelArch) -> tuple[tuple[Decision, Unit], ...]:
        return self.resolve(arch).units

    # --- sampling --------------------------------------------------------------------------------
    def sample_choices(self, trial: optuna.Trial, arch: ModelArch) -> Sample:
        """Sample every mask flag, unit and training override on an Optuna trial (define-by-run)."""
        resolved = self.resolve(arch)
        masks = {name: tuple(i for i in layers if suggest(trial, f"mask.{name}.L{i}", MASK_NODE))
                 for name, layers in resolved.mask_layers.items()}
        choices = []
        for decision, unit in resolved.units:
            prefix = f"{decision.name}.{unit.name}"
            method, values = suggest_branch(trial, prefix, decision.choice)
            choices.append(UnitChoice(prefix, decision, unit.layers, unit.sites, method, values))
        return Sample(tuple(choices), self.sample_training(trial), masks, self.fixed_training)

    def sample_training(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample only the training options the space searches (e.g. the learning rate): what a baseline
        trial, whose plan is fixed, leaves to the sampler."""
        return {k: suggest(trial, training_param(k), node) for k, node in self.training.items()}

    def sample(self, trial: optuna.Trial, arch: ModelArch) -> tuple[Plan, dict[str, Any]]:
        sample = self.sample_choices(trial, arch)
        return sample.plan(), sample.training

    def contains(self, sample: Sample, arch: ModelArch) -> bool:
        """Whether every choice of ``sample`` is a point of this space on ``arch``."""
        units = self.units(arch)
        if len(units) != len(sample.choices):
            return False
        for (decision, unit), choice in zip(units, sample.choices, strict=True):
            if (choice.decision != decision or choice.layers != unit.layers or choice.sites != unit.sites
                    or not decision.choice.contains(choice.method, choice.values)):
                return False
        flagged = self.resolve(arch).mask_layers
        if set(sample.masks) != set(flagged) or any(not set(on) <= set(flagged[k]) for k, on in sample.masks.items()):
            return False
        return set(sample.training) == set(self.training) and all(
            node.contains(sample.training[k]) for k, node in self.training.items())

    # --- feasibility ----------------------------------------------------------------------------
    def violations(self, sample: Sample) -> list[Violation]:
        """The forbid rules ``sample`` breaks (empty when it is allowed)."""
        return violations(self.forbid, sample)

    def infeasible_reason(self, sample: Sample, arch: ModelArch, budget: int | None) -> str | None:
        """Why ``sample`` must not be trained (over budget, or a forbidden combination), or ``None``."""
        params = sample.num_params(arch)
        if budget is not None and params > budget:
            return f"{params} params > budget {budget}"
        found = self.violations(sample)
        return found[0].describe() if found else None

    def budget_params(self, base_params: int) -> int | None:
        """The file's ``budget:`` in parameters, or ``None`` if the file sets none."""
        return None if self.budget is None else parse_budget(self.budget, base_params)

    def ensure_fits(self, arch: ModelArch, budget: int, base_params: int | None = None) -> None:
        """Raise a :class:`UserError` naming the smallest feasible budget if no point fits ``budget``."""
        smallest = self.min_params(arch)
        if smallest > budget:
            pct = f" ({100 * smallest / base_params:.4f}% of the model)" if base_params else ""
            raise UserError(f"no plan of space '{self.name}' fits the budget of {budget} params on this model; "
                            f"the smallest feasible budget is {smallest} params{pct}")

    def repair(self, sample: Sample, arch: ModelArch, budget: int, rng: random.Random) -> Sample | None:
        """A feasible copy of ``sample``, or ``None`` if none exists (see :mod:`autopeft.space.repair`)."""
        return repair(self, sample, arch, budget, rng)

    # --- extremes ---------------------------------------------------------------------------------
    def smallest(self, arch: ModelArch) -> Sample:
        """The cheapest point: per unit the cheapest method at its cheapest option values, masks off.

        Training overrides are left out, so the sampler still chooses them.
        """
        choices = self._extreme_choices(arch, cheapest=True)
        sample = Sample(tuple(choices), {}, {name: () for name in self.resolve(arch).mask_layers})
        if self.violations(sample):
            repaired = self.repair(sample, arch, 10**18, random.Random(0))
            if repaired is None:
                raise UserError(f"space '{self.name}': the forbid rules exclude every plan of the space")
            sample = repaired
        return sample

    def largest(self, arch: ModelArch) -> Sample:
        """The costliest point (forbid rules ignored): per unit the costliest method and options, masks on."""
        return Sample(self._extreme_choices(arch, cheapest=False), {}, dict(self.resolve(arch).mask_layers))

    def _extreme_choices(self, arch: ModelArch, cheapest: bool) -> tuple[UnitChoice, ...]:
        choices = []
        for decision, unit in self.units(arch):
            prefix = f"{decision.name}.{unit.name}"
            candidates = [UnitChoice(prefix, decision, unit.layers, unit.sites, m,
                                     self.extreme_values(decision, m, unit.sites, arch, cheapest))
                          for m in decision.methods]
            # ties: prefer none when cheapest (a plan without a component it does not pay for)
            sign = 1 if cheapest else -1
            choices.append(min(candidates, key=lambda c: (sign * c.num_params(arch), c.method != NONE)))
        return tuple(choices)

    def min_params(self, arch: ModelArch) -> int:
        """Parameters of the smallest plan in the space (for "no plan fits the budget" errors)."""
        return self.smallest(arch).num_params(arch)

    def max_params(self, arch: ModelArch) -> int:
        return self.largest(arch).num_params(arch)

    def extreme_values(self, decision: Decision, method: str, sites: tuple[str, ...], arch: ModelArch,
                       cheapest: bool) -> dict[str, Any]:
        """Option values of ``method`` that make it cheapest (or costliest) on ``sites``, option by option."""
        if method == NONE:
            return {}
        key = (arch_key(arch), decision.name, method, sites, cheapest)
        if key not in self._extremes:
            self._extremes[key] = self._extreme_values(decision, method, sites, arch, cheapest)
        return dict(self._extremes[key])

    def _extreme_values(self, decision: Decision, method: str, sites: tuple[str, ...], arch: ModelArch,
                        cheapest: bool) -> dict[str, Any]:
        nodes = decision.methods[method]
        values = {k: _lowest(node) for k, node in nodes.items()}
        for key, node in nodes.items():
            best_value, best_cost = values[key], None
            for candidate in _candidates(node):
                try:
                    cost = UnitChoice("", decision, (0,), sites, method, {**values, key: candidate}).num_params(arch)
                except UserError:  # an option combination the method refuses
                    continue
                if best_cost is None or (cost < best_cost if cheapest else cost > best_cost):
                    best_value, best_cost = candidate, cost
            values[key] = best_value
        return values


def _lowest(node: Node) -> Any:
    values = ordered_values(node)
    if values:
        return values[0]
    assert isinstance(node, (Int, Float))
    return node.low


def _candidates(node: Node) -> list[Any]:
    """Values worth trying when looking for the cheapest/costliest setting of one option."""
    values = ordered_values(node)
    if values is not None and len(values) <= 64:
        return values
    if values is not None:
        return [values[0], values[-1]]
    assert isinstance(node, Float)
    return [node.low, node.high] if is_number(node.low) else [node.low]
