"""Pareto-aware promotion at a rung: the MO-ASHA rule, stopping variant.

Every plan trains to the first rung (``--min-steps``), is evaluated on validation, and is compared
with *every* plan that has reached that rung so far (in this study, by any worker). Objective vectors
are minimised: the metric is negated when higher is better; trainable parameters and estimated peak
memory are exact at any fidelity, so only the metric changes from rung to rung.

1. Non-dominated sorting (NSGA-II, Deb et al. 2002). ``a`` dominates ``b`` iff ``a_i <= b_i`` for
   every objective and ``a_i < b_i`` for one. Front 0 holds the points nobody dominates; front ``k``
   the points left non-dominated once fronts ``< k`` are removed.
2. Crowding distance inside a front (diversity tie-break). Per objective ``m``, sort the front by
   ``f_m``; the two boundary points get ``inf``; an interior point gets
   ``(f_m[next] - f_m[prev]) / (max f_m - min f_m)``; the distances are summed over objectives.
3. Order: by front, then by crowding distance (largest first).
4. With ``n`` plans at the rung (the candidate included), the candidate is promoted to the next rung
   iff fewer than ``ceil(n / eta)`` plans are strictly ahead of it in that order: the top ``1/eta``,
   rounded up, ties in the candidate's favour; so the first plan at a rung always continues, and so
   does any plan at an extreme of front 0.

Why a small plan survives: a plan with fewer parameters than every other plan at the rung cannot be
dominated (nobody beats it on parameters), so it sits on front 0, and as the extreme point of the
parameter axis it gets an infinite crowding distance: it is ranked first whatever its metric. A
single-metric rule (ASHA) would stop it as soon as bigger plans score higher.

Like ASHA's stopping variant (Li et al. 2020, and Ray Tune's ``AsyncHyperBandScheduler``) the decision
is taken when the plan reaches the rung and is final: a stopped plan is never resumed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

Vector = Sequence[float]


class Verdict(Enum):
    PROMOTE = "promote"
    STOP = "stop"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    position: int  # 0-based place of the candidate in the Pareto order
    cutoff: int  # how many plans of the rung continue: ceil(n / eta)
    competitors: int  # n, the candidate included
    front: int  # the candidate's non-dominated front (0 = Pareto-optimal at this rung)

    @property
    def promoted(self) -> bool:
        return self.verdict == Verdict.PROMOTE

    def describe(self) -> str:
        return (f"{'promoted' if self.promoted else 'stopped'}: place {self.position + 1} of {self.competitors} "
                f"(front {self.front}), top {self.cutoff} continue")


def dominates(a: Vector, b: Vector) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def non_dominated_fronts(points: Sequence[Vector]) -> list[list[int]]:
    """Indices of ``points`` grouped into fronts 0, 1, ... (O(n^2) per front; n is a few hundred at most)."""
    remaining = list(range(len(points)))
    fronts: list[list[int]] = []
    while remaining:
        front = [i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)]
        fronts.append(front)
        taken = set(front)
        remaining = [i for i in remaining if i not in taken]
    return fronts


def crowding_distances(points: Sequence[Vector], front: Sequence[int]) -> dict[int, float]:
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for m in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda i: (points[i][m], i))
        low, high = points[ordered[0]][m], points[ordered[-1]][m]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low:
            continue
        for k in range(1, len(ordered) - 1):
            distance[ordered[k]] += (points[ordered[k + 1]][m] - points[ordered[k - 1]][m]) / (high - low)
    return distance


def _ranked(entries: Mapping[int, Vector]) -> dict[int, tuple[int, float]]:
    """``key -> (front, crowding distance)``."""
    keys = sorted(entries)
    points = [tuple(entries[k]) for k in keys]
    ranked: dict[int, tuple[int, float]] = {}
    for rank, front in enumerate(non_dominated_fronts(points)):
        for i, distance in crowding_distances(points, front).items():
            ranked[keys[i]] = (rank, distance)
    return ranked


def pareto_order(entries: Mapping[int, Vector]) -> list[tuple[int, int]]:
    """``(key, front)`` for every entry, best first: by front, crowding distance (desc), then key."""
    ranked = _ranked(entries)
    return [(k, ranked[k][0]) for k in sorted(ranked, key=lambda k: (ranked[k][0], -ranked[k][1], k))]


def pareto_front(entries: Mapping[int, Vector]) -> list[int]:
    """Keys of the non-dominated entries (front 0), in key order."""
    return sorted(k for k, (rank, _) in _ranked(entries).items() if rank == 0)


def decide(candidate: int, at_rung: Mapping[int, Vector], eta: float) -> Decision:
    """Promote or stop ``candidate`` given every plan's objective vector at this rung (candidate included).

    The candidate's place is the number of plans strictly ahead of it (lower front, or the same front
    and a larger crowding distance): ties go to the candidate, as in ASHA, where a result equal to
    the cutoff continues.
    """
    if candidate not in at_rung:
        raise ValueError(f"candidate {candidate} has no result at this rung")
    if eta <= 1:
        raise ValueError(f"eta must be > 1, got {eta}")
    ranked = _ranked(at_rung)
    front, distance = ranked[candidate]
    position = sum(1 for k, (f, d) in ranked.items() if k != candidate and (f < front or f == front and d > distance))
    cutoff = max(1, math.ceil(len(ranked) / eta))
    verdict = Verdict.PROMOTE if position < cutoff else Verdict.STOP
    return Decision(verdict, position, cutoff, len(ranked), front)
