"""Baselines inside every search (autopeft/searching/baselines.py, comparison.py, uplift.py): the
standard recipes are enqueued and marked, scaled to the budget, compared with the pick on paired seeds,
and the uplift and its interval are computed correctly."""

from __future__ import annotations

import json
import math
from typing import get_args

import pytest
from scipy import stats

from autopeft.cli.main import main
from autopeft.core.arch import arch_from_config
from autopeft.core.errors import UserError
from autopeft.searching.baselines import RECIPES, fitting_baselines
from autopeft.searching.options import parse_baselines
from autopeft.searching.settings import BaselineName
from autopeft.searching.uplift import accuracy_standard_error, describe_comparison, paired_difference
from autopeft.testing import TINY_SPACE, tiny_config, tiny_csv, tiny_model_dir


def test_paired_difference_on_a_fixture():
    ours, theirs = [0.80, 0.82, 0.81], [0.78, 0.79, 0.80]  # differences 0.02, 0.03, 0.01
    d = paired_difference(ours, theirs)
    assert d.mean == pytest.approx(0.02) and d.std == pytest.approx(0.01) and d.n == 3
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(K)
    assert (d.low, d.high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert d.lower_bound == pytest.approx(0.02 - 2.919985580355516 * 0.01 / math.sqrt(3))
    # the decision is a one-sided paired t-test at 5%: the same as scipy's
    assert d.beyond_noise and stats.ttest_rel(ours, theirs, alternative="greater").pvalue < 0.05
    tied = paired_difference([0.80, 0.79, 0.81], [0.79, 0.80, 0.80])
    assert not tied.beyond_noise and stats.ttest_rel([0.80, 0.79, 0.81], [0.79, 0.80, 0.80],
                                                     alternative="greater").pvalue >= 0.05
    lower_is_better = paired_difference([1.0, 1.1], [1.2, 1.3], greater_is_better=False)
    assert lower_is_better.mean == pytest.approx(0.2)
    one = paired_difference([0.9], [0.8])
    assert one.n == 1 and not one.beyond_noise and "one seed" in one.describe()
    with pytest.raises(ValueError):
        paired_difference([0.1, 0.2], [0.1])


def test_accuracy_standard_error():
    assert accuracy_standard_error(0.8, 500) == pytest.approx(math.sqrt(0.8 * 0.2 / 500))  # ~1.8 points


def test_recipes_are_the_declared_baseline_names():
    assert tuple(RECIPES) == get_args(BaselineName)
    assert parse_baselines("lora-r8-qv, pfeiffer") == ("lora-r8-qv", "pfeiffer")
    assert parse_baselines("none") == ()
    with pytest.raises(UserError, match="unknown recipe.*lora-r9"):
        parse_baselines("lora-r9")


def test_baselines_are_scaled_down_to_the_budget_or_left_out():
    arch = arch_from_config(tiny_config("bert"))  # hidden 40, 3 layers
    full = {b.name: b.plan.num_params(arch) for b in fitting_baselines(get_args(BaselineName), arch, 10**9)}
    assert set(full) == {"lora-r8-qv", "pfeiffer", "parallel-adapter"}
    scaled = fitting_baselines(get_args(BaselineName), arch, 1200)
    assert [b.name for b in scaled] == ["lora-r8-qv (size 2)", "pfeiffer", "parallel-adapter (size 1)"]
    assert all(b.plan.num_params(arch) <= 1200 for b in scaled)
    assert fitting_baselines(get_args(BaselineName), arch, 10) == []


@pytest.mark.slow
def test_a_search_trains_the_baselines_marks_them_and_reports_the_uplift(tmp_path, capsys):
    model, data = tiny_model_dir(tmp_path / "model"), tiny_csv(tmp_path / "data.csv", n=240)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    out = tmp_path / "study"
    code = main(["search", "--model", str(model), "--dataset", str(data), "--space", str(tmp_path / "space.yaml"),
                 "--budget", "1.2k", "--batch-size", "8", "--trials", "6", "--max-steps", "60", "--min-steps", "20",
                 "--seeds", "2", "--workers", "1", "--out", str(out)])
    assert code == 0
    err = capsys.readouterr().err
    rows = [line.split(",") for line in (out / "trials.csv").read_text().splitlines()]
    header = rows[0]
    marked = {r[0]: r[header.index("baseline")] for r in rows[1:] if r[header.index("baseline")]}
    # the warm start is trial 0; the three baselines are the next trials
    assert marked == {"1": "lora-r8-qv (size 2)", "2": "pfeiffer", "3": "parallel-adapter (size 1)"}
    summary = json.loads((out / "summary.json").read_text())
    comparison = summary["baseline_comparison"]
    assert comparison["baseline"] in marked.values()
    if not comparison["pick_is_baseline"]:
        seeds = comparison["seeds"]
        assert len(comparison["validation"]["pick"]) == len(comparison["validation"]["baseline"]) == len(seeds) == 2
        expected = paired_difference(comparison["validation"]["pick"], comparison["validation"]["baseline"])
        assert comparison["validation"]["uplift"]["mean"] == pytest.approx(expected.mean)
        for seed in seeds:  # the baseline was retrained on the pick's own seeds
            assert (out / "trials" / f"{comparison['trial']:04d}" / f"seed-{seed}" / "metrics.json").is_file()
        picked_baseline = not comparison["validation"]["uplift"]["beyond_noise"]
        assert (summary["best"]["trial"] == comparison["trial"]) == picked_baseline
    assert describe_comparison(comparison) in err
    assert summary["best"]["standard_error"]["validation"] > 0
    assert main(["pareto", str(out)]) == 0
    assert f"uplift over the best baseline ({comparison['baseline']}" in capsys.readouterr().out \
        or comparison["pick_is_baseline"]
