"""How much the pick beats the best baseline, and whether that is more than noise.

The pick and the best baseline are retrained with the same seeds (same data order, head initialisation
and dropout draws), so their metrics pair up seed by seed. With the K differences d_i = pick_i -
baseline_i (signed so that positive is better):

    mean d = (1/K) sum d_i,   s = sample std of d_i (ddof 1),   se = s / sqrt(K)
    95% interval: mean d -+ t(0.975, K-1) se        beyond noise: mean d - t(0.95, K-1) se > 0

i.e. the pick counts as better only when a one-sided paired t-test at the 5% level says so; with K = 1
nothing is ever beyond noise. The binomial standard error of one accuracy measured on n examples,
sqrt(p (1 - p) / n), is reported next to the metrics so that a reader can judge a single number.

That test counts only the noise of the seeds: both plans are scored on the same n examples, so the
luck of those examples (which a new split would not repeat) is not in it. For accuracy, with c_sj the
pick's correctness on example j at seed s (1 or 0) and b_sj the baseline's,

    D_s = (1/n) sum_j (c_sj - b_sj)   (the per-seed uplift),   se_seed = std_s(D_s) / sqrt(K)
    e_j = (1/K) sum_s (c_sj - b_sj)   (the per-example uplift), se_examples = std_j(e_j) / sqrt(n)
    lower bound = mean D - sqrt((t(0.95, K-1) se_seed)^2 + (z(0.95) se_examples)^2)

(:func:`paired_difference_over_examples`): the uplift must clear both noises together. Each estimate
also holds a share of the seed-by-example interaction, so the sum counts it twice: conservative, on
purpose, since the pick was chosen on these examples (the winner's curse, measured in
``studies/search-quality/selection.py``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    mean: float
    std: float
    n: int  # paired seeds
    low: float  # two-sided 95% interval
    high: float
    lower_bound: float  # one-sided 95% lower bound
    examples: int = 0  # paired examples whose noise the interval includes (0: seed noise only)

    @property
    def beyond_noise(self) -> bool:
        return self.n >= 2 and self.lower_bound > 0

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "beyond_noise": self.beyond_noise}

    def describe(self, scale: float = 100.0, unit: str = " pt") -> str:
        if self.n < 2:
            return f"{scale * self.mean:+.2f}{unit} (one seed: no interval)"
        pairs = f"{self.n} paired seeds" + (f" x {self.examples} examples" if self.examples else "")
        return f"{scale * self.mean:+.2f}{unit} (95% CI {scale * self.low:+.2f} to {scale * self.high:+.2f}, {pairs})"


def paired_difference(ours: list[float], theirs: list[float], greater_is_better: bool = True) -> PairedDifference:
    """Paired differences ``ours - theirs`` (or ``theirs - ours`` when lower is better)."""
    if len(ours) != len(theirs) or not ours:
        raise ValueError(f"paired differences need equal, non-empty lists; got {len(ours)} and {len(theirs)}")
    sign = 1.0 if greater_is_better else -1.0
    diffs = [sign * (a - b) for a, b in zip(ours, theirs, strict=True)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(mean, 0.0, 1, math.nan, math.nan, math.nan)
    std = statistics.stdev(diffs)
    se = std / math.sqrt(len(diffs))
    df = len(diffs) - 1
    half = float(stats.t.ppf(0.975, df)) * se
    return PairedDifference(mean, std, len(diffs), mean - half, mean + half, mean - float(stats.t.ppf(0.95, df)) * se)


def paired_difference_over_examples(ours: Sequence[Sequence[bool]], theirs: Sequence[Sequence[bool]]) -> PairedDifference:
    """The accuracy uplift ``ours - theirs`` with an interval holding the noise of the seeds and of the
    examples (module docstring). ``ours[s]``/``theirs[s]``: per-example correctness at seed s, the same
    examples in the same order. (Plain Python: ``autopeft pareto`` imports this module without torch.)"""
    if len(ours) != len(theirs) or not ours or len({len(v) for v in [*ours, *theirs]}) != 1:
        raise ValueError("paired differences over examples need, per seed, two correctness vectors of one length")
    seeds, examples = len(ours), len(ours[0])
    diffs = [[int(c) - int(b) for c, b in zip(o, t, strict=True)] for o, t in zip(ours, theirs, strict=True)]
    per_seed = [sum(row) / examples for row in diffs]
    mean = statistics.fmean(per_seed)
    if seeds < 2 or examples < 2:
        return PairedDifference(mean, 0.0, seeds, math.nan, math.nan, math.nan, examples)
    std = statistics.stdev(per_seed)
    se_seed = std / math.sqrt(seeds)
    se_examples = statistics.stdev([sum(column) / seeds for column in zip(*diffs, strict=True)]) / math.sqrt(examples)
    df = seeds - 1

    def margin(level: float) -> float:
        return math.hypot(float(stats.t.ppf(level, df)) * se_seed, float(stats.norm.ppf(level)) * se_examples)

    half = margin(0.975)
    return PairedDifference(mean, std, seeds, mean - half, mean + half, mean - margin(0.95), examples)


def accuracy_standard_error(accuracy: float, examples: int) -> float:
    """Binomial standard error of an accuracy measured on ``examples`` examples."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(examples, 1))


def describe_comparison(comparison: dict[str, Any] | None) -> str | None:
    """The pick against the best baseline in one line, from the record :mod:`autopeft.searching.comparison`
    writes (``summary.json``'s ``baseline_comparison``)."""
    if not comparison:
        return None
    name = comparison["baseline"]
    if comparison.get("pick_is_baseline"):
        return f"the pick is the baseline {name} (trial {comparison['trial']}{_settled(comparison)})"

    def describe(record: dict[str, Any]) -> str:
        fields = ("mean", "std", "n", "low", "high", "lower_bound", "examples")
        return PairedDifference(**{k: record[k] for k in fields if k in record}).describe()

    verdict = ("beyond noise" if comparison["validation"]["uplift"]["beyond_noise"] else
               f"not beyond noise: the search did not show that it beats {name}, so the pick is {name}")
    return (f"uplift over the best baseline ({name}, trial {comparison['trial']}{_settled(comparison)}): validation "
            f"{describe(comparison['validation']['uplift'])}, test {describe(comparison['test']['uplift'])}; {verdict}")


def _settled(comparison: dict[str, Any]) -> str:
    """How the baseline's lr was chosen, when the final stage settled it among its lr twins."""
    choice = comparison.get("lr_choice")
    if not choice:
        return ""
    seeds = f"seeds {', '.join(map(str, choice['seeds']))}"
    if choice["chosen"] == choice["rungs_chose"]:
        return f"; its lr confirmed on {seeds}"
    return f"; its lr settled on {seeds}, where the rungs had chosen trial {choice['rungs_chose']}"
