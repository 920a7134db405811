"""Hard sub-networks of the supernet: random ones to train on (sandwich / single-path training) and
random budget-filling ones, the candidates the readouts are chosen among.

A sub-network keeps, per unit, one method at one of its sizes (slices ``root .. j`` of that method's
nested chain, :mod:`autopeft.oneshot.candidates`) or nothing, within a parameter budget.

:func:`random_subnet` is the training distribution (SPOS, Guo et al. 2020; OFA's sandwich rule,
Cai et al. 2020; LoNAS, Muñoz et al. 2024): a target budget ``b`` drawn log-uniformly between the
cheapest slice and the budget (so small sub-networks are trained as often as large ones), then the units
in random order, each taking a uniformly drawn option (nothing, or a method at a size) when it still fits
``b``. Each optimizer step trains one such sub-network with every other slice closed, so the shared
weights learn to work *standalone* at every size, which the soft supernet never asks of them. The hope
was that a sub-network's validation accuracy inside such a supernet would then predict its accuracy
after real training; measured (``studies/oneshot/proxy.md``, tuning sets), it did not do so better than
the gates supernet or the parameter count (Spearman +0.59 / +0.29), so ``gates`` stays the default.

Randomness comes from the caller's generator (``torch.rand``-like draws), so a run seeded per step draws
the same sub-networks when resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from autopeft.oneshot.gates import SliceSpec

Uniform = Callable[[], float]  # a draw in [0, 1)


def unit_options(slices: Sequence[SliceSpec]) -> dict[str, list[tuple[int, ...]]]:
    """Per unit, every option a sub-network can take there: the chain of slices from a method's first
    slice to each of its sizes (nothing is the empty option, added by the callers)."""
    options: dict[str, list[tuple[int, ...]]] = {}
    chain: list[tuple[int, ...]] = []
    for i, s in enumerate(slices):
        chain.append((i,) if s.parent is None else (*chain[s.parent], i))
        options.setdefault(s.unit, []).append(chain[i])
    return options


def chain_cost(slices: Sequence[SliceSpec], chain: tuple[int, ...]) -> int:
    return sum(slices[i].cost for i in chain)


def random_subnet(slices: Sequence[SliceSpec], budget: float, uniform: Uniform) -> list[int]:
    """One random sub-network within ``budget`` (see the module docstring); sorted slice indices."""
    options = unit_options(slices)
    cheapest = min(s.cost for s in slices if s.parent is None)
    if budget < cheapest:
        return []
    target = cheapest * (budget / cheapest) ** uniform()
    units = _shuffled(list(options), uniform)
    kept: list[int] = []
    spent = 0
    for unit in units:
        choices = options[unit]
        pick = min(len(choices), int(uniform() * (len(choices) + 1)))  # index len(choices) = nothing
        if pick == len(choices):
            continue
        cost = chain_cost(slices, choices[pick])
        if spent + cost <= target:
            kept.extend(choices[pick])
            spent += cost
    return sorted(kept)


def filled_subnet(slices: Sequence[SliceSpec], budget: float, uniform: Uniform) -> list[int]:
    """A random sub-network that fills ``budget``: the units in random order, each taking a uniformly
    drawn method and size when it still fits (the candidates the proxy search compares at one budget)."""
    options = unit_options(slices)
    units = _shuffled(list(options), uniform)
    kept: list[int] = []
    spent = 0
    for unit in units:
        fitting = [c for c in options[unit] if spent + chain_cost(slices, c) <= budget]
        if fitting:
            pick = fitting[min(len(fitting) - 1, int(uniform() * len(fitting)))]
            kept.extend(pick)
            spent += chain_cost(slices, pick)
    return sorted(kept)


def _shuffled(items: list[str], uniform: Uniform) -> list[str]:
    """Fisher-Yates with the caller's draws (so a seeded caller gets the same order)."""
    for i in range(len(items) - 1, 0, -1):
        j = min(i, int(uniform() * (i + 1)))
        items[i], items[j] = items[j], items[i]
    return items
