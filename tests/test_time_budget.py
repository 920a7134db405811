"""``--time-budget`` bounds the whole command, final stage included: new trials stop early enough for
the final stage's retrainings (estimated from the trials' own durations) to fit."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from types import SimpleNamespace

import optuna
import pytest

from autopeft.cli.main import main
from autopeft.searching.baselines import BASELINE_ATTR
from autopeft.searching.bookkeeping import (
    final_stage_overrun,
    final_stage_seconds,
    full_fidelity_seconds,
    joiners_fit,
    out_of_time,
)
from autopeft.searching.final_stage import retrained_already
from autopeft.searching.objectives import Objectives
from autopeft.searching.settings import SearchSettings
from autopeft.study.layout import StudyLayout
from autopeft.testing import TINY_SPACE, tiny_csv, tiny_model_dir
from autopeft.training.config import TrainConfig


def _study_with_complete_trials(durations: list[float]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, seconds in enumerate(durations):
        trial = study.ask()
        trial.set_user_attr("params", 100 * (i + 1))
        trial.set_user_attr("duration_s", seconds)
        study.tell(trial, [0.5 + 0.1 * i, 100 * (i + 1)])  # each better and larger: all on the front
    return study


def test_the_final_stage_share_is_estimated_from_the_trials_durations():
    objectives = Objectives(("metric", "params"), greater_is_better=True)
    study = _study_with_complete_trials([10.0, 30.0, 20.0])
    assert full_fidelity_seconds(study) == 20.0
    # seeds 2..3 of the 3 finalists, of the best baseline and of its lr twin (no baseline has trained yet;
    # --baseline-lrs 2): 10 retrainings of 20 s over 2 workers = 5 rounds, then the baseline on the pick's
    # own seed in this process: 6 x 20 s
    settings = SearchSettings(time_budget_s=200.0, seeds=3, workers=2)
    assert final_stage_seconds(study, objectives, settings) == pytest.approx(120.0)
    assert final_stage_seconds(study, objectives, replace(settings, baseline_lrs=1)) == pytest.approx(100.0)
    # one finalist of a 3-plan front: 6 shared retrainings = 3 rounds, the baseline's own seed, and one
    # front plan that may join on seed means (its 2 seeds over 2 workers' threads: 1 round)
    assert final_stage_seconds(study, objectives, replace(settings, finalists=1)) == pytest.approx(100.0)
    assert final_stage_seconds(study, objectives, replace(settings, finalists=1, pick="knee")) == pytest.approx(120.0)
    assert final_stage_seconds(study, objectives, replace(settings, baselines=())) == pytest.approx(60.0)
    assert not out_of_time(study, objectives, settings, started=0.0, now=59.0)  # 59 + 20 + 120 <= 200
    assert out_of_time(study, objectives, settings, started=0.0, now=61.0)
    assert not out_of_time(study, objectives, SearchSettings(), started=0.0, now=10**9)  # no budget


def test_the_final_stage_estimate_counts_each_plan_at_its_own_duration_and_a_finalist_baseline_once():
    """rotten_tomatoes (studies/search-quality/results-2lr): after head only (53 s) and the LoRA baseline
    (200 s for 800 steps) the front held both; the estimate had counted 3 x 2 retrainings and the pick's
    seed at 200 s each (800 s) and stopped a 20-minute search after 5.8 minutes; the final stage took 5."""
    objectives = Objectives(("metric", "params"), greater_is_better=True)
    study = optuna.create_study(directions=["maximize", "minimize"])

    def add(params: int, seconds: float, steps: int, value: float | None, baseline: str | None = None) -> None:
        trial = study.ask()
        for key, attr in (("params", params), ("duration_s", seconds), ("steps", steps),
                          ("rung_metrics", {"267": 0.7, **({"800": value} if value else {})})):
            trial.set_user_attr(key, attr)
        if baseline:
            trial.set_user_attr(BASELINE_ATTR, baseline)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [value, params])

    add(0, 53.0, 800, 0.59)  # head only
    add(73_728, 200.0, 800, 0.83, "lora-r8-qv")
    add(78_432, 70.0, 267, None, "parallel-adapter")  # stopped at the first rung: 210 s at full fidelity
    settings = SearchSettings(time_budget_s=1200.0, seeds=3, workers=2, train=TrainConfig(steps=800))
    # jobs (LoRA, LoRA, head, head) round-robin over 2 workers: 253 s each; then the baseline on the
    # pick's own seed: 200 s. The baseline is the LoRA finalist: its seeds are not counted twice.
    assert final_stage_seconds(study, objectives, settings) == pytest.approx(453.0)
    assert not out_of_time(study, objectives, settings, started=0.0, now=348.0)  # 348 + 200 + 453 < 1200


def test_a_final_stage_that_cannot_fit_is_announced_with_what_would_fit():
    objectives = Objectives(("metric", "params"), greater_is_better=True)
    study = _study_with_complete_trials([10.0, 30.0, 20.0])  # 20 s per training; final stage 120 s (above)
    settings = SearchSettings(time_budget_s=200.0, seeds=3, workers=2)
    assert final_stage_overrun(study, objectives, settings, started=0.0, now=130.0) is None  # 50 s late: noise
    message = final_stage_overrun(study, objectives, settings, started=0.0, now=210.0)  # 130 s late
    assert message is not None and "the command will end about 2 min after --time-budget" in message
    assert "--seeds 2" in message
    assert final_stage_overrun(study, objectives, replace(settings, time_budget_s=None), 0.0, 10.0**9) is None


def test_the_full_fidelity_estimate_scales_stopped_trials_and_leaves_out_head_only_ones():
    study = optuna.create_study(directions=["maximize", "minimize"])

    def add(params: int, seconds: float, steps: int, stopped: bool) -> None:
        trial = study.ask()
        trial.set_user_attr("params", params)
        trial.set_user_attr("duration_s", seconds)
        trial.set_user_attr("steps", steps)
        if stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [0.5, params])

    add(0, 5.0, 90, stopped=False)  # head only: fast, and not what the final stage retrains
    assert full_fidelity_seconds(study, 90) == 5.0  # the only estimate there is
    add(100, 10.0, 30, stopped=True)  # stopped at rung 30 of 90 after 10 s: 30 s at full fidelity
    assert full_fidelity_seconds(study, 90) == 30.0
    assert full_fidelity_seconds(study) == 5.0  # without the top rung, a stopped trial cannot be scaled
    add(200, 40.0, 90, stopped=False)
    add(300, 50.0, 90, stopped=False)
    assert full_fidelity_seconds(study, 90) == 40.0  # median of 30, 40, 50


def test_plans_join_the_finalists_only_while_their_retraining_fits_the_budget():
    study = _study_with_complete_trials([10.0, 30.0, 20.0])  # a full-fidelity training: 20 s
    settings = SearchSettings(time_budget_s=200.0, seeds=3, workers=2)
    # one joiner: its seeds 2..3 over 2 workers' threads (1 round), then the baseline's own seed (1): 40 s
    assert joiners_fit(study, settings, 1, now=60.0, deadline=100.0)
    assert not joiners_fit(study, settings, 1, now=61.0, deadline=100.0)
    assert not joiners_fit(study, settings, 2, now=60.0, deadline=100.0)  # 3 rounds: 60 s
    assert joiners_fit(study, replace(settings, baselines=()), 2, now=60.0, deadline=100.0)
    assert joiners_fit(study, settings, 5, now=10.0**9, deadline=None)  # no --time-budget


def _search_out_of_time(tmp_path, monkeypatch, capsys, seeds_trained: bool) -> tuple[str, dict, list[int]]:
    """A search whose finalist's seeds average far below its own run (patched retrain), so the next front
    plan would join on seed means, and a clock that says no (patched); ``seeds_trained``: whether every
    plan's seeds 2..K count as trained already (as a baseline contender's are). The log, the summary and
    the trials retrained."""
    from autopeft.searching import final_stage

    retrained: list[int] = []

    monkeypatch.setattr(final_stage, "joiners_fit", lambda *args: False)
    monkeypatch.setattr(final_stage, "retrained_already", lambda ctx, trial: seeds_trained)
    monkeypatch.setattr(final_stage, "retrain", lambda ctx, study, trial, reporter: retrained.append(trial.number) or {
        "seeds": [trial.user_attrs["seed"]], "values": [0.0], "mean": 0.0, "std": 0.0, "steps": 30,
        "collapsed_seeds": []})
    model, data = tiny_model_dir(tmp_path / "model"), tiny_csv(tmp_path / "data.csv", n=240)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    out = tmp_path / "study"
    assert main(["search", "--model", str(model), "--dataset", str(data), "--space", str(tmp_path / "space.yaml"),
                 "--budget", "1.2k", "--batch-size", "8", "--trials", "6", "--max-steps", "30", "--min-steps", "30",
                 "--seeds", "2", "--finalists", "1", "--workers", "1", "--baselines", "none", "--sampler", "random",
                 "--out", str(out)]) == 0
    return " ".join(capsys.readouterr().err.split()), json.loads((out / "summary.json").read_text()), retrained


@pytest.mark.slow
def test_out_of_time_no_plan_joins_and_the_pick_is_a_retrained_one(tmp_path, monkeypatch, capsys):
    err, summary, retrained = _search_out_of_time(tmp_path, monkeypatch, capsys, seeds_trained=False)
    assert "would join the finalists, but --time-budget leaves no time" in err
    assert summary["best"]["retrain"]["values"] == [0.0]  # the retrained finalist (the patched seeds), not a single run
    assert len(retrained) == 1


@pytest.mark.slow
def test_out_of_time_a_plan_whose_seeds_are_trained_joins_all_the_same(tmp_path, monkeypatch, capsys):
    # each joiner's retraining (patched) averages 0.0 again, so the next plan joins in turn
    err, summary, retrained = _search_out_of_time(tmp_path, monkeypatch, capsys, seeds_trained=True)
    assert "leaves no time" not in err and "join the finalists" in err
    assert len(retrained) > 1 and summary["best"]["retrain"]["values"] == [0.0]


@pytest.mark.slow
def test_a_tiny_search_with_a_tiny_budget_ends_on_time(tmp_path):
    model, data = tiny_model_dir(tmp_path / "model"), tiny_csv(tmp_path / "data.csv", n=240)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    out, budget = tmp_path / "study", 30.0
    start = time.monotonic()
    code = main(["search", "--model", str(model), "--dataset", str(data), "--space", str(tmp_path / "space.yaml"),
                 "--budget", "1.2k", "--batch-size", "8", "--trials", "500", "--max-steps", "90",
                 "--min-steps", "30", "--seeds", "2", "--workers", "1", "--time-budget", f"{budget:.0f}s",
                 "--out", str(out), "--quiet"])
    elapsed = time.monotonic() - start
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] < 500  # stopped by the clock
    # loading the tiny model and data takes a few seconds before the clock of the search starts; one
    # trial's estimate may be off by a trial: the whole command still ends near its budget
    assert elapsed < budget + 25, (elapsed, summary["elapsed_s"])


def test_steps_for_epochs_rounds_up():
    from autopeft.training.config import steps_for_epochs

    assert steps_for_epochs(1, 192, 8) == 24 and steps_for_epochs(0.5, 193, 8) == 13 and steps_for_epochs(0.01, 5, 8) == 1


@pytest.mark.slow
def test_search_epochs_sets_the_top_rung_to_that_training(tmp_path):
    model, data = tiny_model_dir(tmp_path / "model"), tiny_csv(tmp_path / "data.csv", n=240)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    out = tmp_path / "study"
    argv = ["search", "--model", str(model), "--dataset", str(data), "--space", str(tmp_path / "space.yaml"),
            "--budget", "1.2k", "--batch-size", "8", "--trials", "4", "--epochs", "2", "--min-steps", "16",
            "--seeds", "1", "--workers", "1", "--baselines", "lora-r8-qv", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    train = summary["data"]["split_sizes"]["train"]
    assert summary["rungs"][-1] == -(-2 * train // 8) and summary["rungs"][0] == 16
    assert summary["best"]["steps"] == summary["rungs"][-1]
    assert main(argv) == 0  # the same command resumes the finished study (same resolved identity)


def test_full_fidelity_default_is_epochs_with_a_step_cap_and_explicit_choices_win():
    from autopeft.core.errors import UserError
    from autopeft.searching.options import SEARCH_OPTIONS, full_fidelity, settings_from_options
    from autopeft.searching.settings import DEFAULT_EPOCH_STEPS_CAP, DEFAULT_EPOCHS

    assert full_fidelity(None, None) == (DEFAULT_EPOCHS, DEFAULT_EPOCH_STEPS_CAP)
    assert full_fidelity(90, None) == (None, None)
    assert full_fidelity(None, 2.5) == (2.5, None)  # an explicit --epochs is not capped
    with pytest.raises(UserError, match="not both"):
        full_fidelity(90, 2.0)
    with pytest.raises(UserError, match="--epochs must be > 0"):
        full_fidelity(None, 0.0)
    default = settings_from_options(SEARCH_OPTIONS.resolve({}, "search"))
    assert (default.epochs, default.epoch_steps_cap) == (DEFAULT_EPOCHS, DEFAULT_EPOCH_STEPS_CAP)
    steps = settings_from_options(SEARCH_OPTIONS.resolve({"max_steps": 90}, "search"))
    assert (steps.epochs, steps.epoch_steps_cap, steps.max_steps) == (None, None, 90)


@pytest.mark.slow
def test_default_fidelity_caps_the_epochs_at_the_step_cap(tmp_path, monkeypatch):
    """Without --max-steps/--epochs the top rung is DEFAULT_EPOCHS epochs, at most the cap (patched small)."""
    import autopeft.searching.options as search_options

    model, data = tiny_model_dir(tmp_path / "model"), tiny_csv(tmp_path / "data.csv", n=240)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    monkeypatch.setattr(search_options, "DEFAULT_EPOCH_STEPS_CAP", 30)
    out = tmp_path / "study"
    assert main(["search", "--model", str(model), "--dataset", str(data), "--space", str(tmp_path / "space.yaml"),
                 "--budget", "1.2k", "--batch-size", "8", "--trials", "2", "--seeds", "1", "--workers", "1",
                 "--baselines", "none", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rungs"][-1] == 30  # 3 epochs of 192 examples at batch 8 = 72 steps, capped at 30


def test_a_plan_counts_as_retrained_when_its_own_run_and_seeds_2_to_k_are_on_disk(tmp_path):
    files = StudyLayout(tmp_path)
    ctx = SimpleNamespace(files=files, settings=SearchSettings(seeds=3, seed=0),
                          prepared=SimpleNamespace(session=SimpleNamespace(primary_metric="accuracy")))
    trial = SimpleNamespace(number=4, user_attrs={"seed": 4})
    metrics = json.dumps({"validation": {"accuracy": 0.5}})
    files.trial_dir(4).mkdir(parents=True)
    (files.trial_dir(4) / "metrics.json").write_text(metrics)
    assert not retrained_already(ctx, trial)
    for seed in (1_000_003, 2_000_006):
        assert not retrained_already(ctx, trial)
        files.seed_dir(4, seed).mkdir()
        (files.seed_dir(4, seed) / "metrics.json").write_text(metrics)
    assert retrained_already(ctx, trial)
    (files.trial_dir(4) / "metrics.json").unlink()  # its own run's adapter is elsewhere (a remote worker's)
    assert not retrained_already(ctx, trial)
