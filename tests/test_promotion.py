"""The Pareto-aware promotion rule, rungs and the final pick, on hand-made fronts."""

import json
import math
from types import SimpleNamespace

import optuna
import pytest
from rich.console import Console

from autopeft.core.errors import UserError
from autopeft.searching.final_stage import collapsed_seeds, median_seed, pick, retrained_front
from autopeft.searching.objectives import Objectives, parse_objectives
from autopeft.searching.progress import Reporter
from autopeft.searching.promotion import (
    crowding_distances,
    decide,
    dominates,
    non_dominated_fronts,
    pareto_front,
    pareto_order,
)
from autopeft.searching.rungs import default_min_steps, rung_steps
from autopeft.study.layout import StudyLayout

ACC = Objectives(("metric", "params"), greater_is_better=True)


def _rung(rows):
    """{trial: (accuracy, params)} -> minimised vectors."""
    return {n: ACC.minimised(acc, params, None) for n, (acc, params) in rows.items()}


def test_small_plan_survives_although_bigger_plans_score_higher():
    # six plans at the first rung; the head-only plan (0 params) has the lowest accuracy of all
    rows = {0: (0.61, 0), 1: (0.74, 90_000), 2: (0.72, 60_000), 3: (0.70, 110_000), 4: (0.73, 100_000),
            5: (0.69, 80_000)}
    decision = decide(0, _rung(rows), eta=3)
    assert decision.promoted and decision.front == 0 and decision.cutoff == 2
    # a single-metric rule (ASHA on accuracy) would have stopped it: it ranks last of six
    by_metric = sorted(rows, key=lambda n: -rows[n][0])
    assert by_metric.index(0) == 5
    # the plan with the best accuracy is the other extreme of front 0 and continues too
    assert decide(1, _rung(rows), eta=3).promoted
    # a dominated plan (worse than plan 2 on both objectives) is stopped
    stopped = decide(5, _rung(rows), eta=3)
    assert not stopped.promoted and stopped.front == 1


def test_crowding_distance_breaks_ties_inside_the_front():
    # all four are non-dominated; the two extremes get inf, the interior ones their neighbours' spread
    rows = {0: (0.60, 0), 1: (0.70, 10), 2: (0.71, 20), 3: (0.80, 100)}
    points = _rung(rows)
    fronts = non_dominated_fronts([points[n] for n in range(4)])
    assert fronts == [[0, 1, 2, 3]]
    distance = crowding_distances([points[n] for n in range(4)], fronts[0])
    assert math.isinf(distance[0]) and math.isinf(distance[3])
    # plan 1: accuracy neighbours 0.60 and 0.71 over a range of 0.20, params neighbours 0 and 20 over 100
    assert distance[1] == pytest.approx(0.11 / 0.20 + 20 / 100)
    assert distance[2] == pytest.approx(0.10 / 0.20 + 90 / 100)
    assert [n for n, _ in pareto_order(points)] == [0, 3, 2, 1]
    # with eta 2, two of four continue: the extremes; the crowded plan 1 is stopped
    assert decide(3, points, eta=2).promoted and not decide(1, points, eta=2).promoted
    assert not decide(2, points, eta=2).promoted and decide(2, points, eta=1.4).promoted
    # two extremes tie (both inf): neither is strictly ahead of the other, so both continue
    assert decide(0, points, eta=2).promoted and decide(3, points, eta=4).promoted


def test_cutoff_is_the_top_fraction_rounded_up_and_the_first_plan_continues():
    assert decide(7, {7: (-0.5, 100.0)}, eta=3).promoted
    rows = {n: (-0.5 - n / 100, 100.0) for n in range(7)}  # equal params: a pure metric ranking
    decisions = {n: decide(n, rows, eta=3) for n in rows}
    assert {d.cutoff for d in decisions.values()} == {3}  # ceil(7 / 3)
    assert {n for n, d in decisions.items() if d.promoted} == {6, 5, 4}
    assert "place 1 of 7" in decisions[6].describe()


def test_memory_as_third_objective_keeps_a_lean_plan():
    objectives = Objectives(parse_objectives("memory,metric,params"), greater_is_better=True)
    assert objectives.names == ("metric", "params", "memory")
    assert objectives.directions() == ["maximize", "minimize", "minimize"]
    rows = {0: (0.80, 1000, 900), 1: (0.79, 1000, 300), 2: (0.81, 1200, 950), 3: (0.78, 1100, 800)}
    points = {n: objectives.minimised(*v) for n, v in rows.items()}
    assert decide(1, points, eta=2).promoted  # the lowest memory: an extreme of front 0
    assert not decide(3, points, eta=2).promoted  # dominated by plan 1 on all three
    assert objectives.values(0.8, 10, 20) == [0.8, 10.0, 20.0]


def test_lower_is_better_metric_for_language_models():
    loss = Objectives(("metric", "params"), greater_is_better=False)
    points = {0: loss.minimised(3.2, 100, None), 1: loss.minimised(2.9, 100, None)}
    assert dominates(points[1], points[0]) and pareto_front(points) == [1]


def test_bad_inputs():
    with pytest.raises(ValueError, match="no result"):
        decide(3, {1: (0.0, 1.0)}, eta=3)
    with pytest.raises(ValueError, match="eta"):
        decide(1, {1: (0.0, 1.0)}, eta=1)
    for text, message in [("params", "must include metric"), ("metric,speed", "unknown objective 'speed'"),
                          ("metric,metric", "twice"), ("", "unknown objective")]:
        with pytest.raises(UserError, match=message):
            parse_objectives(text)


@pytest.mark.parametrize(("low", "high", "eta", "expected"), [
    (50, 150, 3, (50, 150)), (17, 150, 3, (17, 51, 150)), (150, 150, 3, (150,)), (10, 100, 2, (10, 20, 40, 100)),
    (1, 4, 1.5, (1, 2, 3, 4)), (8, 25, 3, (8, 25)), (20, 25, 3, (20, 25)),
])
def test_rungs_grow_geometrically_and_end_at_full_fidelity(low, high, eta, expected):
    assert rung_steps(low, high, eta) == expected


def test_rung_errors_and_default():
    assert default_min_steps(150, 3) == 50 and default_min_steps(2, 3) == 1
    with pytest.raises(UserError, match="--min-steps"):
        rung_steps(200, 150, 3)
    with pytest.raises(UserError, match="--eta"):
        rung_steps(10, 150, 1)


def test_pick_max_metric_and_knee():
    front = [{"trial": 0, "params": 0, "mean": 0.60}, {"trial": 1, "params": 10_000, "mean": 0.76},
             {"trial": 2, "params": 50_000, "mean": 0.78}, {"trial": 3, "params": 100_000, "mean": 0.785}]
    assert pick(front, "max-metric", greater=True)["trial"] == 3
    assert pick(front, "knee", greater=True)["trial"] == 1  # most of the gain for a tenth of the parameters
    assert pick(front[:2], "knee", greater=True)["trial"] == 1  # fewer than 3 points: max-metric
    losses = [{"trial": 0, "params": 0, "mean": 3.0}, {"trial": 1, "params": 10, "mean": 2.2},
              {"trial": 2, "params": 100, "mean": 2.1}]
    assert pick(losses, "max-metric", greater=False)["trial"] == 2
    assert pick(losses, "knee", greater=False)["trial"] == 1
    # ties on the mean: fewer parameters win
    assert pick([{"trial": 4, "params": 9, "mean": 0.5}, {"trial": 5, "params": 3, "mean": 0.5}], "max-metric",
                greater=True)["trial"] == 5


def test_the_pick_is_among_the_retrained_plans_on_seed_means_whatever_an_unretrained_run_dominates():
    # amazon_reviews (studies/search-quality/results-2lr): retrained on 3 seeds, head only (0.636), the LoRA
    # baseline at lr 1.9e-3 (73.7k params, 0.907) and a 41k plan (0.871); unretrained for lack of time, the
    # same LoRA at lr 7.8e-4 (73.7k, own run 0.908) and a 41k plan (own run 0.881) dominate the two last on
    # the study's front. The pick must still be the best retrained plan, not head only.
    retrained = {0: (0.636, 0, None), 2: (0.907, 73_728, None), 22: (0.871, 41_472, None)}
    candidates = retrained_front(ACC, retrained)
    assert candidates == [0, 2, 22]
    entries = [{"trial": n, "params": retrained[n][1], "mean": retrained[n][0]} for n in candidates]
    assert pick(entries, "max-metric", greater=True)["trial"] == 2
    # among themselves retrained plans still dominate each other: a bigger, worse one is no candidate
    assert retrained_front(ACC, {**retrained, 7: (0.90, 90_000, None)}) == [0, 2, 22]


def test_median_seed():
    assert median_seed({"seeds": [10, 11, 12], "values": [0.7, 0.9, 0.8]}) == 12
    assert median_seed({"seeds": [10], "values": [0.7]}) == 10


def test_retrained_seeds_that_collapsed_to_one_class_are_found_and_reported(tmp_path):
    # rotten_tomatoes (studies/search-quality/results-2lr, trial 11: LoRA r2 at scale 8, lr 2.7e-3): its own
    # run learned, two retrainings predicted the majority class for every validation example
    files = StudyLayout(tmp_path)
    learned = {"accuracy": 0.787, "macro_f1": 0.78, "predicted_classes": 2.0}
    collapsed = {"accuracy": 0.578, "macro_f1": 0.366, "predicted_classes": 1.0}
    for seed in (1000003, 2000006):
        files.seed_dir(11, seed).mkdir(parents=True)
        (files.seed_dir(11, seed) / "metrics.json").write_text(json.dumps({"validation": collapsed}))
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=0.787,
                                      user_attrs={"seed": 11, "validation": learned})
    trial.number = 11
    console = Console(record=True, width=200)
    reporter = Reporter(live=False, console=console)
    assert collapsed_seeds(SimpleNamespace(files=files), trial, [11, 1000003, 2000006], reporter) == [1000003, 2000006]
    text = " ".join(console.export_text().split())
    assert "trial 11 collapsed to one class on validation with seed(s) 1000003, 2000006 of 3 (an unstable plan" in text
    assert collapsed_seeds(SimpleNamespace(files=files), trial, [11], reporter) == []
    # every seed one class (head only at a small lr): said so, not called unstable
    assert collapsed_seeds(SimpleNamespace(files=files), trial, [1000003, 2000006], reporter) == [1000003, 2000006]
    assert "seed(s) 1000003, 2000006 of 2 (it learned nothing beyond one class)" in " ".join(console.export_text().split())
