"""The pick against the best baseline, at the end of every search (:mod:`autopeft.searching.baselines`).

1. The best baseline: among the baseline trials, those that reached the highest rung any baseline
   reached, the best metric there (a baseline stopped early by the promotion rule still competes).
   That is one seed at a rung, and it chose the worse learning rate of LoRA r8 q,v twice
   (``studies/search-quality/results-alpha2r``: on bbc_news the lr-1.9e-3 twin was stopped at the first
   rung, behind by 2.8 pt, where a grid at full training prefers 2e-3 by 0.9 pt on test). So with
   ``--seeds`` K >= 2 its recipe's lr is settled at full fidelity (:func:`settle_baseline`): the best
   baseline and its lr twins (``--baseline-lrs``) are each retrained on the shared seeds 2..K (which every
   finalist is retrained on too), and the best mean is the baseline. Its values on those seeds are then
   a maximum over its twins, a small winner's curse in the baseline's favour: the search must beat it by
   a little more, never less.
2. It is retrained at full fidelity with the pick's own seeds (``trials/<b>/seed-<s>/``), so the two
   pair up seed by seed; both are evaluated on validation and on test for every seed.
3. The uplift is the paired difference pick - baseline (:mod:`autopeft.searching.uplift`). If it is not
   beyond noise on validation, the search has not shown that it beats the baseline: the pick becomes the
   baseline, and the report says so. For accuracy the noise is that of the seeds and of the validation
   examples together (both adapters are evaluated example by example; the pick was chosen on these
   examples, so seed noise alone let lucky picks through: ``studies/search-quality/selection.py``);
   for other metrics, a one-sided paired t-test over the seeds at 5%. Test numbers are reported, never
   used to decide.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autopeft.peft.artifacts import load_adapter
from autopeft.searching.baselines import BASELINE_ATTR
from autopeft.searching.bookkeeping import baseline_contenders
from autopeft.searching.context import SearchContext
from autopeft.searching.progress import Reporter
from autopeft.searching.uplift import (
    PairedDifference,
    accuracy_standard_error,
    describe_comparison,
    paired_difference,
    paired_difference_over_examples,
)
from autopeft.training.config import TrainConfig
from autopeft.training.session import Metrics

# (trial, seed) -> the retraining's validation metric, training it if needed (final_stage.run_job)
Retrain = Callable[[FrozenTrial, int], float]


def evaluate_adapters(ctx: SearchContext, directories: list[Path], split: str) -> list[Metrics]:
    """The metrics of each adapter directory on ``split`` (test: evaluated once, the final stage reuses
    them for best/)."""
    session = ctx.prepared.session
    metrics = []
    for directory in directories:
        plan, state, config = load_adapter(directory)
        metrics.append(session.evaluate_adapter(plan, state, split, TrainConfig(**config["train"])))
    return metrics


def uplift(ours: list[Metrics], theirs: list[Metrics], greater_is_better: bool) -> PairedDifference:
    """Paired seed by seed, and example by example where the metric has per-example outcomes."""
    if all(m.correct is not None for m in [*ours, *theirs]):
        return paired_difference_over_examples([m.correct.tolist() for m in ours],  # type: ignore[union-attr]
                                               [m.correct.tolist() for m in theirs])  # type: ignore[union-attr]
    return paired_difference([m.value for m in ours], [m.value for m in theirs], greater_is_better)


def standard_errors(ctx: SearchContext, validation: float, test: float | None) -> dict[str, float] | None:
    """Binomial standard errors of an accuracy on the validation and test splits (classification only)."""
    if ctx.prepared.session.primary_metric != "accuracy":
        return None
    sizes = ctx.prepared.data.split_sizes
    errors = {"validation": accuracy_standard_error(validation, sizes.get("validation", 0))}
    if test is not None:
        errors["test"] = accuracy_standard_error(test, sizes.get("test", 0))
    return errors


def settle_baseline(ctx: SearchContext, study: optuna.Study, shared_seeds: list[int], retrain: Retrain,
                    reporter: Reporter) -> tuple[FrozenTrial | None, dict[str, Any] | None]:
    """The baseline the pick meets (None when no baseline trained), and the record of its lr choice (None when
    there was none to make): among :func:`~autopeft.searching.bookkeeping.baseline_contenders`, the best
    mean validation metric over ``shared_seeds`` (ties: the one the rungs chose)."""
    greater = ctx.objectives.greater_is_better
    contenders = baseline_contenders(study, ctx.settings, greater)
    if len(contenders) < 2 or not shared_seeds:
        return (contenders[0] if contenders else None), None
    means = {t.number: statistics.fmean(retrain(t, seed) for seed in shared_seeds) for t in contenders}
    sign = 1.0 if greater else -1.0
    chosen = max(contenders, key=lambda t: sign * means[t.number])  # max keeps the first of equals: the rungs'
    listed = ", ".join(f"{t.user_attrs[BASELINE_ATTR]} (trial {t.number}) {means[t.number]:.4f}" for t in contenders)
    reporter.info(f"final stage: the best baseline's recipe at each of its learning rates, mean validation over "
                  f"seeds {', '.join(map(str, shared_seeds))}: {listed} -> {chosen.user_attrs[BASELINE_ATTR]}")
    record = {"seeds": shared_seeds, "rungs_chose": contenders[0].number, "chosen": chosen.number,
              "means": {str(t.number): means[t.number] for t in contenders}}
    return chosen, record


def compare(ctx: SearchContext, baseline: FrozenTrial | None, pick: FrozenTrial, pick_record: dict[str, Any],
            pick_dirs: list[Path], pick_tests: list[Metrics], retrain: Retrain, reporter: Reporter,
            lr_choice: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, list[Metrics]]:
    """The comparison record of the pick against ``baseline`` (:func:`settle_baseline`; None when the study
    has no baseline that trained) and the baseline's test metrics on the pick's seeds (empty when it was not
    retrained). ``pick_dirs``/``pick_tests``: the pick's adapters and test metrics, seed by seed;
    ``lr_choice``: :func:`settle_baseline`'s record, kept in the comparison record."""
    greater = ctx.objectives.greater_is_better
    if baseline is None:
        return None, []
    name = baseline.user_attrs[BASELINE_ATTR]
    seeds = pick_record["seeds"]
    primary = ctx.prepared.session.primary_metric
    ours_test = [m.values[primary] for m in pick_tests]
    if baseline.number == pick.number:
        record = {"baseline": name, "trial": baseline.number, "pick_is_baseline": True, "picked": "baseline",
                  "seeds": seeds, "validation": {"pick": pick_record["values"]}, "test": {"pick": ours_test},
                  **({"lr_choice": lr_choice} if lr_choice else {})}
        reporter.info(describe_comparison(record) or "")
        return record, []
    reporter.info(f"comparing the pick with the best baseline, {name} (trial {baseline.number}), "
                  f"on the pick's {len(seeds)} seeds")
    theirs_validation = [retrain(baseline, seed) for seed in seeds]
    theirs_dirs = [ctx.files.seed_dir(baseline.number, seed) for seed in seeds]
    theirs_tests = evaluate_adapters(ctx, theirs_dirs, "test")
    theirs_test = [m.values[primary] for m in theirs_tests]
    if primary == "accuracy":  # per-example outcomes: evaluate both again, example by example
        validation = uplift(evaluate_adapters(ctx, pick_dirs, "validation"),
                            evaluate_adapters(ctx, theirs_dirs, "validation"), greater)
    else:  # the retrainings' own values say all there is: no second evaluation of a language model
        validation = paired_difference(pick_record["values"], theirs_validation, greater)
    test = uplift(pick_tests, theirs_tests, greater)
    picked = "search" if validation.beyond_noise else "baseline"
    record = {"baseline": name, "trial": baseline.number, "pick_is_baseline": False, "picked": picked,
              "seeds": seeds,
              "validation": {"pick": pick_record["values"], "baseline": theirs_validation,
                             "uplift": validation.to_record()},
              "test": {"pick": ours_test, "baseline": theirs_test, "uplift": test.to_record()},
              **({"lr_choice": lr_choice} if lr_choice else {})}
    reporter.info(describe_comparison(record) or "")
    return record, theirs_tests
