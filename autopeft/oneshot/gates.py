"""Structure gates with an exact expected parameter budget, and the readout of a plan at any budget.

Every slice ``i`` of the supernet (:mod:`autopeft.oneshot.candidates`) has a learned score ``a_i``. Its gate
is S3Delta's *shifted global sigmoid* (Hu et al., NeurIPS 2022)::

    g_i = sigmoid((a_i + b) / tau),        p_i = g_i * p_parent(i)   (p = 1 above a root slice)

so a slice is open only as far as every smaller slice of its method is (nested sizes). The shift ``b`` is
the one number that makes the expected parameter count meet the budget exactly::

    E(b) = sum_i c_i * p_i(b) = B

``E`` increases with ``b``, so bisection finds it; ``b`` is then held fixed for the step (no gradient
through it), and the scores learn which slices are worth their cost under the budget. Lowering the
temperature ``tau`` over the run hardens the gates towards 0/1, closing the gap between the soft
supernet and the discrete plans read out of it.

Readout (:func:`readout`): slices ranked by their effective score ``min`` over the slice and its
parents (so a parent ranks at least as high as its children), taken greedily while they fit the budget,
one method per unit, a child only with its parent. The same ranking serves every budget, which is
how one supernet run yields a plan for each point of the front.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

BISECTION_STEPS = 60  # |b| <= 2^7 * tau-scale: 60 halvings reach float64 resolution


@dataclass(frozen=True)
class SliceSpec:
    """What the gates need of a slice: its cost, its parent (``None`` for a method's first slice), its unit."""

    cost: int
    parent: int | None
    unit: str


class BudgetGates(nn.Module):
    def __init__(self, slices: Sequence[SliceSpec], budget: float, scale: float = 1.0) -> None:
        """``scale``: the scores are ``scale * raw`` with ``raw`` the trained parameter (see the supernet)."""
        super().__init__()
        for i, s in enumerate(slices):
            if s.parent is not None and not 0 <= s.parent < i:
                raise ValueError(f"slice {i}: its parent {s.parent} must come before it")
        self.slices = tuple(slices)
        self.budget = float(budget)
        self.scale = float(scale)
        self.raw = nn.Parameter(torch.zeros(len(slices)))
        self.register_buffer("costs", torch.tensor([float(s.cost) for s in slices], dtype=torch.float64),
                             persistent=False)
        self._parents = [s.parent for s in slices]

    # --- gates ----------------------------------------------------------------------------------
    @property
    def scores(self) -> torch.Tensor:
        return self.raw * self.scale

    def _chain(self, gates: torch.Tensor) -> torch.Tensor:
        """p_i = g_i * p_parent(i): products along each method's nested slices (parents come first)."""
        opened: list[torch.Tensor] = []
        for i, parent in enumerate(self._parents):
            opened.append(gates[i] if parent is None else gates[i] * opened[parent])
        return torch.stack(opened) if opened else gates

    def expected_cost(self, shift: float, tau: float, scores: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.scores if scores is None else scores
        p = self._chain(torch.sigmoid((scores.double() + shift) / tau))
        return (p * self.costs).sum()

    def shift(self, tau: float) -> float:
        """The ``b`` with ``E(b) = budget`` (``+inf`` when everything fits: all gates open)."""
        scores = self.scores.detach()
        total = float(self.costs.sum())
        if self.budget >= total:
            return float("inf")
        if self.budget <= 0:
            return float("-inf")
        span = float(scores.abs().max()) + 50.0 * tau
        low, high = -span, span
        while float(self.expected_cost(low, tau, scores)) > self.budget:
            low *= 2
        while float(self.expected_cost(high, tau, scores)) < self.budget:
            high *= 2
        for _ in range(BISECTION_STEPS):
            middle = (low + high) / 2
            if float(self.expected_cost(middle, tau, scores)) < self.budget:
                low = middle
            else:
                high = middle
        return (low + high) / 2

    def forward(self, tau: float) -> torch.Tensor:
        """Each slice's opening ``p_i`` in [0, 1] at temperature ``tau``, expected cost = budget."""
        shift = self.shift(tau)
        if shift == float("inf"):
            return torch.ones_like(self.raw)
        if shift == float("-inf"):
            return torch.zeros_like(self.raw)
        # float64 as in the bisection, so the budget holds to ~1e-12; returned in the scores' dtype
        return self._chain(torch.sigmoid((self.scores.double() + shift) / tau)).to(self.raw.dtype)

    # --- readout --------------------------------------------------------------------------------
    def effective_scores(self) -> list[float]:
        scores = self.scores.detach().tolist()
        effective: list[float] = []
        for i, parent in enumerate(self._parents):
            effective.append(scores[i] if parent is None else min(scores[i], effective[parent]))
        return effective

    def readout(self, budget: float) -> list[int]:
        return readout(self.slices, self.effective_scores(), budget)


def readout(slices: Sequence[SliceSpec], effective: Sequence[float], budget: float) -> list[int]:
    """The slices kept at ``budget``: greedy by effective score (ties: parents first, then cheaper)."""
    depth: list[int] = []
    for s in slices:
        depth.append(0 if s.parent is None else depth[s.parent] + 1)
    order = sorted(range(len(slices)), key=lambda i: (-effective[i], depth[i], slices[i].cost, i))
    kept: set[int] = set()
    method_of_unit: dict[str, int] = {}  # unit -> the root slice of the method it keeps
    root: list[int] = []
    for i, s in enumerate(slices):
        root.append(i if s.parent is None else root[s.parent])
    spent = 0
    for i in order:
        s = slices[i]
        if s.parent is not None and s.parent not in kept:
            continue
        if method_of_unit.get(s.unit, root[i]) != root[i]:
            continue  # the unit already keeps another method
        if spent + s.cost > budget:
            continue
        kept.add(i)
        method_of_unit[s.unit] = root[i]
        spent += s.cost
    return sorted(kept)
