"""After the final stage, the front is decided on seed means, and every place that shows it agrees: the
plotted value of each trial (seed mean if retrained, its own run otherwise) and the front are consistent,
so no trial drawn as dominated lies on or above the front line."""

from __future__ import annotations

import json

import optuna
import pytest

from autopeft.cli.main import main
from autopeft.searching.bookkeeping import top_rung_front
from autopeft.searching.objectives import Objectives
from autopeft.searching.promotion import pareto_front
from autopeft.study.view import load_study_view
from autopeft.testing import TINY_SPACE, tiny_csv, tiny_model_dir

OBJECTIVES = Objectives(("metric", "params"), greater_is_better=True)


def test_seed_means_can_change_the_front():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for params, value in ((100, 0.90), (200, 0.95), (150, 0.93)):
        trial = study.ask()
        trial.set_user_attr("params", params)
        study.tell(trial, [value, params])
    assert top_rung_front(study, OBJECTIVES) == [0, 1, 2]
    # trial 1's seeds average 0.90: trial 2 (fewer params, 0.93) now dominates it
    assert top_rung_front(study, OBJECTIVES, {1: 0.90}) == [0, 2]


@pytest.mark.slow
def test_front_pareto_csv_and_plotted_values_agree_after_the_final_stage(tmp_path, capsys):
    model, data = tiny_model_dir(tmp_path / "model"), tiny_csv(tmp_path / "data.csv", n=240)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    out = tmp_path / "study"
    assert main(["search", "--model", str(model), "--dataset", str(data), "--space", str(tmp_path / "space.yaml"),
                 "--budget", "1.2k", "--batch-size", "8", "--trials", "8", "--max-steps", "30", "--min-steps", "30",
                 "--seeds", "3", "--workers", "1", "--baselines", "none", "--sampler", "random",
                 "--out", str(out), "--quiet"]) == 0
    view = load_study_view(out)
    plotted = {t.number: (-t.metric_mean, t.params) for t in view.completed}  # what the plots draw
    front = {t.number for t in view.front}
    assert front == set(pareto_front(plotted))
    ranked = sorted(view.front, key=lambda t: (-t.metric_mean, t.params, t.number))
    assert all(t.metric_std is not None for t in ranked[:3])  # the 3 best (the finalists) were retrained
    summary = json.loads((out / "summary.json").read_text())
    assert {e["trial"] for e in summary["front"]} == front
    assert set(int(n) for n in (out / "pareto.csv").read_text().splitlines()[1:] and
               [line.split(",")[0] for line in (out / "pareto.csv").read_text().splitlines()[1:]]) == front
