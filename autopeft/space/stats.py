"""How big a space is on one model, and how much of it fits a budget.

*Points* are distinct configurations: every unit's method and option values, every mask flag, every
training value. A continuous range (``{float: [lo, hi]}``) has infinitely many points; it is reported
apart and counts as a single point in the fraction below (no option that changes the parameter count is
continuous in practice, and the fraction is about parameters).

The *fraction that fits* a budget is the share of points whose plan has at most ``budget`` parameters
(and breaks no forbid rule). It is counted **exactly** when a unit's parameter count depends only on its
own choice (no masks, no forbid rules) and the count stays tractable: a dynamic programme over the
per-unit cost distributions, on the budget divided by the gcd of all costs. Otherwise it is **estimated**
from points drawn uniformly at random (each unit's branch drawn in proportion to its number of points).

Points weigh a branch by its number of settings (a size with 61 values outweighs ``none`` 61 to 1), so
``space check`` also estimates the share of *random draws* that fit without repair: each unit's branch
drawn uniformly, then its options, as Optuna's RandomSampler (and TPE's start-up trials) draw them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import product
from typing import Any

from autopeft.core.arch import ModelArch
from autopeft.core.errors import UserError

from .model import NONE, Decision, Sample, Unit, UnitChoice, training_param
from .nodes import Float, Int, Node, ordered_values
from .search_space import SearchSpace

MAX_COMBINATIONS = 20_000  # per unit, for the exact count
MAX_DP_CELLS = 5_000_000


@dataclass(frozen=True)
class SpaceSize:
    points: int  # distinct discrete configurations (continuous ranges count once)
    continuous: tuple[str, ...]  # parameter names of continuous ranges (each multiplies the size by infinity)
    parameters: int  # most Optuna parameters one trial can hold

    def describe(self) -> str:
        count = f"{self.points:,}" if self.points < 10**9 else f"{self.points:.3e}"
        extra = f" x continuous {', '.join(self.continuous)}" if self.continuous else ""
        return f"{count} points{extra}"


@dataclass(frozen=True)
class Fit:
    fraction: float
    exact: bool
    detail: str  # "exact count" or "estimate from N uniform samples (k fit)"


def _branch_count(decision: Decision, method: str) -> int:
    total = 1
    for node in decision.methods[method].values():
        total *= node.count() or 1
    return total


def size(space: SearchSpace, arch: ModelArch) -> SpaceSize:
    resolved = space.resolve(arch)
    points, continuous, parameters = 1, [], 0
    for layers in resolved.mask_layers.values():
        points *= 2 ** len(layers)
        parameters += len(layers)
    for decision, unit in resolved.units:
        points *= sum(_branch_count(decision, m) for m in decision.methods)
        parameters += int(len(decision.methods) > 1) + max(
            sum(1 for n in nodes.values() if n.count() != 1) for nodes in decision.methods.values())
        for m, nodes in decision.methods.items():
            continuous += [f"{decision.name}.{unit.name}.{m}.{k}" for k, n in nodes.items() if n.count() is None]
    for key, node in space.training.items():
        points *= node.count() or 1
        parameters += int(node.count() != 1)
        if node.count() is None:
            continuous.append(training_param(key))
    return SpaceSize(points, tuple(continuous), parameters)


def fraction_that_fits(space: SearchSpace, arch: ModelArch, budget: int, samples: int = 4000,
                       seed: int = 0) -> Fit:
    """Share of the space's points that fit ``budget`` (exact when tractable, else estimated)."""
    exact = _exact(space, arch, budget)
    if exact is not None:
        return Fit(exact, True, "exact count")
    return _estimate(space, arch, budget, samples, seed, by_points=True)


def fraction_of_draws_that_fit(space: SearchSpace, arch: ModelArch, budget: int, samples: int = 4000,
                               seed: int = 0) -> Fit:
    """Share of random-sampler draws (branch uniform, then options) that fit without repair (estimated)."""
    return _estimate(space, arch, budget, samples, seed, by_points=False)


def _estimate(space: SearchSpace, arch: ModelArch, budget: int, samples: int, seed: int, by_points: bool) -> Fit:
    rng = random.Random(seed)
    fits = sum(space.infeasible_reason(uniform_sample(space, arch, rng, by_points), arch, budget) is None
               for _ in range(samples))
    what = "uniform samples" if by_points else "random draws"
    return Fit(fits / samples, False, f"estimate from {samples} {what} ({fits} fit)")


def uniform_sample(space: SearchSpace, arch: ModelArch, rng: random.Random, by_points: bool = True) -> Sample:
    """A random point: uniform over the space's points, or (``by_points=False``) drawn like Optuna's
    RandomSampler: each unit's branch uniformly, then each option uniformly (log-uniformly for log ranges)."""
    resolved = space.resolve(arch)
    masks = {name: tuple(i for i in layers if rng.random() < 0.5) for name, layers in resolved.mask_layers.items()}
    choices = []
    for decision, unit in resolved.units:
        methods = list(decision.methods)
        weights = [_branch_count(decision, m) if by_points else 1 for m in methods]
        method = rng.choices(methods, weights=weights)[0]
        values = {k: _draw(n, rng, by_points) for k, n in decision.methods[method].items()}
        choices.append(UnitChoice(f"{decision.name}.{unit.name}", decision, unit.layers, unit.sites, method, values))
    training = {k: _draw(n, rng, by_points) for k, n in space.training.items()}
    return Sample(tuple(choices), training, masks, space.fixed_training)


def _draw(node: Node, rng: random.Random, by_points: bool) -> Any:
    if isinstance(node, (Int, Float)) and node.log and not by_points:
        value = math.exp(rng.uniform(math.log(node.low), math.log(node.high)))
        if isinstance(node, Float):
            return value
        return min(node.high, max(node.low, int(round(value))))
    if isinstance(node, Float) and node.step is None:
        return rng.uniform(node.low, node.high)
    if isinstance(node, Int):
        return node.low + node.step * rng.randrange(node.count() or 1)
    return rng.choice(node.values())


def _exact(space: SearchSpace, arch: ModelArch, budget: int) -> float | None:
    """The exact fraction, or ``None`` when it is not tractable (masks, forbid rules, huge domains)."""
    resolved = space.resolve(arch)
    if resolved.mask_layers or space.forbid:
        return None
    histograms: list[dict[int, float]] = []
    cache: dict[tuple, dict[int, float] | None] = {}
    for decision, unit in resolved.units:
        key = (decision.name, unit.sites, len(unit.layers))
        if key not in cache:
            cache[key] = _unit_histogram(space, decision, unit, arch)
        if cache[key] is None:
            return None
        histograms.append(cache[key])  # type: ignore[arg-type]
    costs = {c for h in histograms for c in h if 0 < c <= budget}
    g = math.gcd(*costs) if costs else 1
    cells = budget // g + 1
    if cells > MAX_DP_CELLS:
        return None
    import numpy as np  # only here: checking a space without a budget does not import it

    dp = np.zeros(cells)
    dp[0] = 1.0
    for h in histograms:  # dp[c] = probability that the units so far cost c * g
        nxt = np.zeros(cells)
        for cost, p in h.items():
            if cost <= budget:
                shift = cost // g
                nxt[shift:] += p * dp[: cells - shift]
        dp = nxt
    return float(dp.sum())


def _unit_histogram(space: SearchSpace, decision: Decision, unit: Unit, arch: ModelArch) -> dict[int, float] | None:
    """cost -> share of the unit's points with that cost, or ``None`` if there are too many to list."""
    counts: dict[int, int] = {}
    for method, nodes in decision.methods.items():
        if method == NONE:
            counts[0] = counts.get(0, 0) + 1
            continue
        domains = []
        for node in nodes.values():
            values = ordered_values(node)
            if values is None and isinstance(node, Float):
                values = [node.low]  # continuous: one point; checked below not to change the cost
            if values is None:
                return None
            domains.append(values)
        if math.prod(len(d) for d in domains) > MAX_COMBINATIONS:
            return None
        keys = list(nodes)
        for combo in product(*domains):
            try:
                cost = UnitChoice("", decision, unit.layers, unit.sites, method, dict(zip(keys, combo, strict=True)))
                n = cost.num_params(arch)
            except UserError:
                return None
            counts[n] = counts.get(n, 0) + 1
        for key, node in nodes.items():
            if isinstance(node, Float) and node.step is None:
                low = space.extreme_values(decision, method, unit.sites, arch, cheapest=True)
                high = {**low, key: node.high}
                if (UnitChoice("", decision, (0,), unit.sites, method, low).num_params(arch)
                        != UnitChoice("", decision, (0,), unit.sites, method, high).num_params(arch)):
                    return None
    total = sum(counts.values())
    return {c: n / total for c, n in counts.items()}
