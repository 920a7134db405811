"""Budget-aware repair: turn an infeasible sample into a feasible one that keeps as much of it as possible.

A plan over the budget is never trained. Instead of rejection sampling (hopeless at tight budgets such
as 0.05%: almost every sample is over), the search trains a *repaired* copy, in three phases:

1. **Forbidden combinations**: for each broken forbid rule, one of the units involved is switched off
   (or, for a masked decision, that layer's mask flag).
2. **Switch off what cannot fit**: while even the cheapest sizes of the units still on exceed the
   budget, a unit is switched off (a decision without ``none`` moves to its cheapest method instead),
   or a mask flag is cleared. The victim is drawn at random with probability proportional to the
   parameters it frees, so big components are the likeliest to go, yet repairs stay diverse.
3. **Shrink sizes**: while the plan is over budget, a unit (drawn in proportion to how much it could
   still shrink) halves one of its size-like options (a rank, a bottleneck size, a prefix length:
   any option whose lower values cost fewer parameters), within its range: ``r 8 -> 4``, ``size 32 -> 16``.

So units are only switched off when shrinking everything cannot make the plan fit, and then shrinking
keeps sizes as large as the budget allows. Every repaired value lies in its node's range, so the
repaired sample is a point of the space and its ``trial_params()`` reproduce it when enqueued.
The draws use the caller's seeded ``rng``: repairs are reproducible.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Protocol

from autopeft.core.arch import ModelArch

from .model import NONE, Decision, Sample, UnitChoice, Violation
from .nodes import step_down


class RepairableSpace(Protocol):
    """What repair asks of :class:`~autopeft.space.search_space.SearchSpace` (which calls repair)."""

    def extreme_values(self, decision: Decision, method: str, sites: tuple[str, ...], arch: ModelArch,
                       cheapest: bool) -> dict[str, Any]: ...

    def violations(self, sample: Sample) -> list[Violation]: ...


MAX_STEPS = 100_000  # a guard against bugs: every step strictly lowers the cost or removes a component


class _State:
    """The sample being repaired, with every choice's cost and floor (cheapest sizes) kept up to date."""

    def __init__(self, space: RepairableSpace, sample: Sample, arch: ModelArch) -> None:
        self.space, self.arch = space, arch
        self.choices = list(sample.choices)
        self.training = sample.training
        self.fixed_training = sample.fixed_training
        self.masks = {name: set(on) for name, on in sample.masks.items()}
        # costs scale with the number of layers (every block has the same shapes): cache them per layer
        self._floor_values: dict[tuple, dict[str, Any]] = {}
        self._floor_per_layer: dict[tuple, int] = {}
        self._cheapest: dict[tuple, tuple[str, dict[str, Any], int]] = {}
        self.costs = [0] * len(self.choices)
        self.floors = [0] * len(self.choices)
        self.refresh(range(len(self.choices)))

    def sample(self) -> Sample:
        masks = {k: tuple(sorted(v)) for k, v in self.masks.items()}
        return Sample(tuple(self.choices), self.training, masks, self.fixed_training)

    def layers(self, choice: UnitChoice) -> tuple[int, ...]:
        if choice.decision.mask is None:
            return choice.layers
        on = self.masks.get(choice.decision.mask, set())
        return tuple(i for i in choice.layers if i in on)

    def per_layer(self, choice: UnitChoice) -> int:
        return choice.num_params(self.arch, (0,))

    def floor_values(self, choice: UnitChoice) -> dict[str, Any]:
        """Option values that make the choice's method cheapest."""
        key = (choice.decision.name, choice.method, choice.sites)
        if key not in self._floor_values:
            self._floor_values[key] = ({} if choice.method == NONE else self.space.extreme_values(
                choice.decision, choice.method, choice.sites, self.arch, cheapest=True))
            self._floor_per_layer[key] = self.per_layer(replace(choice, values=self._floor_values[key]))
        return self._floor_values[key]

    def floor_per_layer(self, choice: UnitChoice) -> int:
        self.floor_values(choice)
        return self._floor_per_layer[(choice.decision.name, choice.method, choice.sites)]

    def cheapest(self, choice: UnitChoice) -> tuple[str, dict[str, Any], int]:
        """(method, values, cost per layer) of the unit's cheapest option (``none`` if offered)."""
        key = (choice.decision.name, choice.sites)
        if key not in self._cheapest:
            options = [replace(choice, method=m, values={}) for m in choice.decision.methods]
            best = min(options, key=lambda c: (self.floor_per_layer(c), c.method != NONE))
            self._cheapest[key] = (best.method, self.floor_values(best), self.floor_per_layer(best))
        return self._cheapest[key]

    def refresh(self, indices) -> None:
        for i in indices:
            choice = self.choices[i]
            n = len(self.layers(choice))
            self.costs[i] = self.per_layer(choice) * n
            self.floors[i] = self.floor_per_layer(choice) * n

    def mask_cost(self, name: str, layer: int) -> int:
        return sum(self.per_layer(c) for c in self.choices
                   if c.decision.mask == name and layer in c.layers and c.method != NONE)

    def removals(self, indices: list[int] | None = None, layers: set[int] | None = None) -> list[tuple[int, tuple]]:
        """(parameters freed, move) for each way to remove a component (restricted to some choices/layers)."""
        moves: dict[tuple, int] = {}
        for i in indices if indices is not None else range(len(self.choices)):
            choice = self.choices[i]
            active = self.layers(choice)
            if choice.method == NONE or not active:
                continue
            method, _, per_layer = self.cheapest(choice)
            if method != choice.method:
                moves[("unit", i)] = self.costs[i] - per_layer * len(active)
            masked = choice.decision.mask
            if masked is not None:
                for layer in active:
                    if layers is None or layer in layers:
                        moves[("mask", masked, layer)] = self.mask_cost(masked, layer)
        return [(freed, move) for move, freed in moves.items()]

    def apply(self, move: tuple) -> None:
        if move[0] == "unit":
            i = move[1]
            method, values, _ = self.cheapest(self.choices[i])
            self.choices[i] = replace(self.choices[i], method=method, values=dict(values))
            self.refresh([i])
        else:
            self.masks[move[1]].discard(move[2])
            self.refresh([i for i, c in enumerate(self.choices) if c.decision.mask == move[1]])


def _draw(moves: list[tuple[int, tuple]], rng: random.Random) -> tuple:
    return rng.choices([m for _, m in moves], weights=[freed + 1 for freed, _ in moves])[0]


def repair(space: RepairableSpace, sample: Sample, arch: ModelArch, budget: int, rng: random.Random) -> Sample | None:
    state = _State(space, sample, arch)
    for _ in range(MAX_STEPS):  # phase 1: forbidden combinations
        found = space.violations(state.sample())
        if not found:
            break
        moves = state.removals(list(found[0].choices), set(found[0].layers))
        if not moves:
            return None
        state.apply(_draw(moves, rng))
    for _ in range(MAX_STEPS):  # phase 2: switch off until the cheapest sizes of what is left fit
        if sum(state.floors) <= budget:
            break
        moves = [m for m in state.removals() if m[0] > 0]
        if not moves:
            return None
        state.apply(_draw(moves, rng))
    for _ in range(MAX_STEPS):  # phase 3: shrink sizes until the plan fits
        if sum(state.costs) <= budget:
            return state.sample()
        slack = [(cost - floor, i) for i, (cost, floor) in enumerate(zip(state.costs, state.floors, strict=True))
                 if cost > floor]
        if not slack:
            return None  # unreachable: phase 2 made the floors fit
        i = rng.choices([i for _, i in slack], weights=[s for s, _ in slack])[0]
        _shrink_one(state, i, rng)
    raise AssertionError("budget repair did not converge")


def _shrink_one(state: _State, i: int, rng: random.Random) -> None:
    """Move one cost-relevant option of choice ``i`` a step towards its cheapest value."""
    choice = state.choices[i]
    floor = state.floor_values(choice)
    cost = state.per_layer(choice)

    def with_value(key: str, value: Any) -> UnitChoice:
        return replace(choice, values={**choice.values, key: value})

    keys = [k for k in choice.values if choice.values[k] != floor[k] and state.per_layer(with_value(k, floor[k])) < cost]
    if not keys:  # options only pay off together: take them all to the floor
        state.choices[i] = replace(choice, values=dict(floor))
    else:
        key = rng.choice(keys)
        node = choice.decision.methods[choice.method][key]
        smaller = with_value(key, step_down(node, choice.values[key], floor[key]))
        state.choices[i] = smaller if state.per_layer(smaller) < cost else with_value(key, floor[key])
    state.refresh([i])
