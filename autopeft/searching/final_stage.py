"""Final stage: retrain the best plans of the top-rung Pareto front with several seeds, pick one, write
front/ and best/.

1. The front: non-dominated plans (on the chosen objectives) among the trials trained to full
   fidelity (the top rung). The **finalists** are its ``--finalists M`` best plans by metric (the
   whole front for ``--pick knee``, which needs every point's mean). After the retrainings of step 2
   the front is recomputed with every retrained plan scored by its seed mean (and every other trial
   by its own run): a finalist whose seeds average lower may drop out, and a plan it had pushed out
   may become a finalist (and is retrained in turn), until the M best plans of the front are all
   retrained, or until ``--time-budget`` leaves no time for the next joiners' retrainings (then they
   stay unretrained and the pick is made among the retrained plans; a joiner whose seeds are all
   trained already, a baseline contender's, joins whatever the time). That front is the one
   ``pareto.csv``, ``summary.json``, ``autopeft pareto``, the plots and the report show: each point
   where it is drawn (seed mean if retrained, own run otherwise) and the front line agree.
2. Each finalist is trained ``--seeds K`` times at full fidelity. Seed 1 is the trial's own run
   (a resumed or promoted run is bitwise the uninterrupted one, so it is not trained again); seeds
   2..K are ``--seed + 1000003 * k``, **the same for every plan** (common random numbers: the
   finalists and the best baseline pair up on them). Its score is the mean ± sample standard deviation
   (ddof = 1; 0 when K = 1) of the K validation metrics, stored in the study user attribute
   ``retrain:<n>``. Each retraining's adapter goes to ``trials/<n>/seed-<s>/`` (metrics.json last),
   so an interrupted final stage resumes where it stopped; local ``--workers`` processes split the
   retrainings of the finalists and of the best baseline (seeds 2..K) round-robin (:func:`run_share`)
   before the coordinator collects them.
3. The pick, among the retrained plans that no other retrained plan dominates on seed means
   (:func:`retrained_front`): ``max-metric`` = the best mean validation metric (ties: fewer parameters);
   ``knee`` = the front point farthest above the line joining the front's two extremes (fewest
   parameters, best mean metric), with parameters and metric scaled to [0, 1] over the front.
4. ``front/<n>/`` holds each front plan's adapter (a finalist's: the seed with the median metric, upper
   median for even K); ``best/`` the pick's, with its validation and test metrics, plus the test metric
   of every seed (mean ± std). Test metrics are computed for the pick only, after it is chosen.
5. Against the baselines (:mod:`autopeft.searching.comparison`): the best baseline (its recipe's lr
   settled on the shared seeds among its lr twins, :func:`~autopeft.searching.comparison.settle_baseline`)
   is retrained with the pick's seeds (only the pick's own seed is left by then) and the paired uplift is reported; if it
   is not beyond noise on validation, the baseline becomes the pick (``best/``), and ``summary.json``
   says so (``baseline_comparison``).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft.core.errors import UserError
from autopeft.peft.artifacts import load_adapter, save_adapter, write_json
from autopeft.peft.plan import Plan
from autopeft.searching.baselines import BASELINE_ATTR
from autopeft.searching.bookkeeping import baseline_contenders, finalist_numbers, joiners_fit, top_rung_front
from autopeft.searching.comparison import compare, evaluate_adapters, settle_baseline, standard_errors
from autopeft.searching.context import SearchContext, adapter_config
from autopeft.searching.interrupt import check, checked
from autopeft.searching.objectives import Objectives
from autopeft.searching.progress import Reporter
from autopeft.searching.promotion import pareto_front
from autopeft.study.layout import retrain_key
from autopeft.training.config import TrainConfig
from autopeft.training.session import predicts_one_class
from autopeft.training.trial_run import train_plan

SEED_STRIDE = 1_000_003


def retrain_seeds(own_seed: int, base_seed: int, k: int) -> list[int]:
    """A plan's K seeds: its own run's, then seeds shared by every plan of the study."""
    return [own_seed] + [base_seed + SEED_STRIDE * i for i in range(1, k)]


def finalists(ctx: SearchContext, study: optuna.Study, means: dict[int, float]) -> list[int]:
    """The front plans retrained with K seeds (:func:`autopeft.searching.bookkeeping.finalist_numbers`)."""
    return finalist_numbers(study, ctx.objectives, ctx.settings, means)


def retrained_front(objectives: Objectives, scores: Mapping[int, tuple[float, int, int | None]]) -> list[int]:
    """The retrained plans that no other retrained plan dominates, each scored by its seed mean
    (``scores``: trial -> (mean, params, memory bytes)): the pick is made among them. Not the retrained
    plans on the study's front: when ``--time-budget`` left a joiner unretrained, its own single run can
    dominate a retrained plan (a baseline's twin at another lr, the same size and a lucky run) and push it
    off that front, and the pick fell to whatever retrained plan was left (head only, once: amazon_reviews,
    studies/search-quality/results-2lr). When every finalist is retrained the pick is the same either way."""
    return pareto_front({n: objectives.minimised(*score) for n, score in scores.items()})


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _adapter_dir(ctx: SearchContext, trial: FrozenTrial, seed: int) -> Path:
    own = seed == trial.user_attrs["seed"]
    return ctx.files.trial_dir(trial.number) if own else ctx.files.seed_dir(trial.number, seed)


def _job_value(ctx: SearchContext, trial: FrozenTrial, seed: int) -> float | None:
    """The validation metric of a finished retraining (its metrics.json is written last), else None."""
    path = ctx.files.seed_dir(trial.number, seed) / "metrics.json"
    if not path.is_file():
        return None
    return float(json.loads(path.read_text())["validation"][ctx.prepared.session.primary_metric])


def retrained_already(ctx: SearchContext, trial: FrozenTrial) -> bool:
    """Whether every seed of the trial's retraining is trained (its own run's adapter here, seeds 2..K)."""
    seeds = retrain_seeds(trial.user_attrs["seed"], ctx.settings.seed, ctx.settings.seeds)
    return (ctx.files.trial_dir(trial.number) / "metrics.json").is_file() and all(
        _job_value(ctx, trial, seed) is not None for seed in seeds[1:])


def run_job(ctx: SearchContext, trial: FrozenTrial, seed: int, reporter: Reporter) -> float:
    """Train the trial's plan at full fidelity with ``seed`` (unless done already); its validation metric."""
    done = _job_value(ctx, trial, seed)
    if done is not None:
        return done
    reporter.info(f"final stage: trial {trial.number}, seed {seed}")
    _train_into(ctx, trial, seed, ctx.files.seed_dir(trial.number, seed), reporter)
    value = _job_value(ctx, trial, seed)
    assert value is not None
    return value


def _train_into(ctx: SearchContext, trial: FrozenTrial, seed: int, directory: Path, reporter: Reporter) -> None:
    plan = Plan.from_dict(trial.user_attrs["plan"])
    seeded = replace(TrainConfig(**trial.user_attrs["train_config"]), seed=seed)
    check()  # Ctrl-C: stop before (or, through the step callback, during) a retraining; it restarts on resume
    outcome = train_plan(ctx.prepared.session, plan, seeded, progress=checked(reporter.step_callback(seeded.steps)))
    save_adapter(directory, plan, outcome.state, adapter_config(ctx.prepared, seeded),
                 metrics={"validation": outcome.validation.values})


def ensure_trial_adapter(ctx: SearchContext, trial: FrozenTrial, reporter: Reporter) -> None:
    """A full-fidelity trial trained by a worker on another machine left its adapter there: retrain it
    here with the trial's own seed, which reproduces the same run."""
    if not (ctx.files.trial_dir(trial.number) / "metrics.json").is_file():
        reporter.info(f"final stage: trial {trial.number}'s adapter is not in {ctx.files.root}; retraining it")
        _train_into(ctx, trial, trial.user_attrs["seed"], ctx.files.trial_dir(trial.number), reporter)


def jobs(ctx: SearchContext, study: optuna.Study) -> list[tuple[FrozenTrial, int]]:
    """Every (finalist or baseline contender, seed 2..K) retraining, in a fixed order (every process computes
    the same list). The baselines' are known before the pick: their seeds 2..K are the pick's too; the
    contenders are the best baseline and its lr twins (:func:`baseline_contenders`)."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    numbers = finalists(ctx, study, {})
    for baseline in baseline_contenders(study, ctx.settings, ctx.objectives.greater_is_better):
        if baseline.number not in numbers:
            numbers.append(baseline.number)
    return [(trials[n], seed) for n in numbers
            for seed in retrain_seeds(trials[n].user_attrs["seed"], ctx.settings.seed, ctx.settings.seeds)[1:]]


def run_share(ctx: SearchContext, study: optuna.Study, index: int, count: int, reporter: Reporter) -> None:
    """Run jobs ``index, index + count, ...``: local worker processes split the final stage round-robin."""
    for j, (trial, seed) in enumerate(jobs(ctx, study)):
        if j % count == index:
            run_job(ctx, trial, seed, reporter)


def retrain(ctx: SearchContext, study: optuna.Study, trial: FrozenTrial, reporter: Reporter) -> dict[str, Any]:
    """All seeds of one front plan (training the missing ones); returns ``{"seeds", "values", "mean", "std", "steps", "collapsed_seeds"}``."""
    ensure_trial_adapter(ctx, trial, reporter)
    seeds = retrain_seeds(trial.user_attrs["seed"], ctx.settings.seed, ctx.settings.seeds)
    values = [float(trial.values[0])] + [run_job(ctx, trial, seed, reporter) for seed in seeds[1:]]
    mean, std = mean_std(values)
    record = {"seeds": seeds, "values": values, "mean": mean, "std": std, "steps": ctx.settings.max_steps,
              "collapsed_seeds": collapsed_seeds(ctx, trial, seeds, reporter)}
    study.set_user_attr(retrain_key(trial.number), record)
    return record


def collapsed_seeds(ctx: SearchContext, trial: FrozenTrial, seeds: list[int], reporter: Reporter) -> list[int]:
    """The seeds whose adapter predicted one class for every validation example
    (:func:`~autopeft.training.session.predicts_one_class`), each reported: the plan's mean then mixes a
    collapsed run into its level (an lr or LoRA scale too large for it), which a reader must know."""
    collapsed = [s for s in seeds if predicts_one_class(_validation_of(ctx, trial, s))]
    if collapsed:
        # every seed: the plan never got past the majority class (head only at a small lr, say), not unstable
        why = ("it learned nothing beyond one class" if len(collapsed) == len(seeds)
               else "an unstable plan: its mean includes them")
        reporter.info(f"final stage: trial {trial.number} collapsed to one class on validation with seed(s) "
                      f"{', '.join(map(str, collapsed))} of {len(seeds)} ({why})")
    return collapsed


def _own_run(trial: FrozenTrial) -> dict[str, Any]:
    """A front plan that is not a finalist: its own run only (not stored as a retraining)."""
    value = float(trial.values[0])
    return {"seeds": [trial.user_attrs["seed"]], "values": [value], "mean": value, "std": None,
            "steps": trial.user_attrs.get("steps")}


def median_seed(record: dict[str, Any]) -> int:
    pairs = sorted(zip(record["values"], record["seeds"], strict=True))
    return pairs[len(pairs) // 2][1]


def pick(front: list[dict[str, Any]], rule: str, greater: bool) -> dict[str, Any]:
    """``front`` entries carry ``trial``, ``params``, ``mean``."""
    sign = 1.0 if greater else -1.0
    best = max(front, key=lambda e: (sign * e["mean"], -e["params"], -e["trial"]))
    if rule != "knee" or len(front) < 3:
        return best
    lo_p, hi_p = min(e["params"] for e in front), max(e["params"] for e in front)
    goods = [sign * e["mean"] for e in front]
    lo_g, hi_g = min(goods), max(goods)
    if hi_p == lo_p or hi_g == lo_g:
        return best

    def scaled(e: dict[str, Any]) -> tuple[float, float]:
        return (e["params"] - lo_p) / (hi_p - lo_p), (sign * e["mean"] - lo_g) / (hi_g - lo_g)

    cheapest = min(front, key=lambda e: (e["params"], -sign * e["mean"]))
    (x1, y1), (x2, y2) = scaled(cheapest), scaled(best)
    norm = ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5 or 1.0

    def height(e: dict[str, Any]) -> float:  # signed distance above the chord (up-left = better)
        x, y = scaled(e)
        return ((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)) / norm

    return max(front, key=lambda e: (height(e), sign * e["mean"], -e["params"]))


def _copy_adapter(source: Path, target: Path, metrics: dict[str, Any]) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("plan.json", "adapter.safetensors", "autopeft_config.json"):
        shutil.copy2(source / name, target / name)
    write_json(target / "metrics.json", metrics)


def run_final_stage(ctx: SearchContext, study: optuna.Study, reporter: Reporter,
                    deadline: float | None = None) -> dict[str, Any]:
    """``deadline``: the time (``time.time()``) ``--time-budget`` ends at; plans that would join the
    finalists on seed means after it are not retrained, and the pick is then among the retrained plans
    (a plan's own single run must not win against seed means: that is the winner's curse again)."""
    objectives = ctx.objectives
    numbers = top_rung_front(study, objectives)
    if not numbers:
        raise UserError("no trial was trained to full fidelity; see trials.csv for the reasons")
    trials = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    chosen_numbers = finalists(ctx, study, {})
    reporter.info(f"final stage: retraining {len(chosen_numbers)} of the {len(numbers)} front plans "
                  f"(the finalists) with {ctx.settings.seeds} seeds each")
    records: dict[int, dict[str, Any]] = {}
    left_out: set[int] = set()  # joiners --time-budget had no time for
    while True:  # until the finalists on seed means are all retrained (see the module docstring)
        for n in chosen_numbers:
            if n not in records and n not in left_out:
                records[n] = retrain(ctx, study, trials[n], reporter)
        means = {n: r["mean"] for n, r in records.items()}
        chosen_numbers = finalists(ctx, study, means)
        joining = sorted(set(chosen_numbers) - set(records) - left_out)
        if not joining:
            break
        # a baseline contender's seeds 2..K are trained already: it joins at no cost (rotten_tomatoes,
        # results-lrtwins: the LoRA twin was left out "for lack of time" with all its seeds done)
        costly = [n for n in joining if not retrained_already(ctx, trials[n])]
        if costly and not joiners_fit(study, ctx.settings, len(costly), time.time(), deadline):
            left_out.update(costly)
            reporter.info(f"final stage: on seed means, trials {costly} would join the finalists, but "
                          "--time-budget leaves no time to retrain them: the pick is among the retrained plans")
        if set(joining) - left_out:
            reporter.info(f"final stage: on seed means, trials {sorted(set(joining) - left_out)} join the finalists")
    numbers = top_rung_front(study, objectives, means)

    def entry(n: int) -> dict[str, Any]:
        return {"trial": n, "params": trials[n].user_attrs["params"], "record": records.get(n) or _own_run(trials[n]),
                "mean": means.get(n, trials[n].values[0]), "std": records[n]["std"] if n in records else None}

    front = [entry(n) for n in numbers]
    retrained = [entry(n) for n in retrained_front(objectives, {
        n: (means[n], trials[n].user_attrs["params"], trials[n].user_attrs.get("memory_bytes")) for n in records})]
    chosen = pick(retrained, ctx.settings.pick, objectives.greater_is_better)
    best_trial, best_record = trials[chosen["trial"]], chosen["record"]
    best_dirs = [_adapter_dir(ctx, best_trial, seed) for seed in best_record["seeds"]]
    best_test_metrics = evaluate_adapters(ctx, best_dirs, "test")
    def retrain_one(trial: FrozenTrial, seed: int) -> float:
        return run_job(ctx, trial, seed, reporter)

    shared_seeds = retrain_seeds(0, ctx.settings.seed, ctx.settings.seeds)[1:]
    baseline, lr_choice = settle_baseline(ctx, study, shared_seeds, retrain_one, reporter)
    comparison, baseline_tests = compare(ctx, baseline, best_trial, best_record, best_dirs, best_test_metrics,
                                         retrain_one, reporter, lr_choice)
    best_tests = [m.values for m in best_test_metrics]
    if comparison is not None and comparison["picked"] == "baseline" and not comparison["pick_is_baseline"]:
        best_trial = study.get_trials(deepcopy=False)[comparison["trial"]]
        best_tests = [m.values for m in baseline_tests]
        values = comparison["validation"]["baseline"]
        mean, std = mean_std(values)
        best_record = {"seeds": comparison["seeds"], "values": values, "mean": mean, "std": std,
                       "steps": ctx.settings.max_steps,
                       "collapsed_seeds": collapsed_seeds(ctx, best_trial, comparison["seeds"], reporter)}
    metric = ctx.prepared.session.primary_metric
    shutil.rmtree(ctx.files.front_root, ignore_errors=True)
    for entry in front:
        t, record = trials[entry["trial"]], entry["record"]
        seed = median_seed(record)
        validation = _validation_of(ctx, t, seed)
        _copy_adapter(_adapter_dir(ctx, t, seed), ctx.files.front_dir(t.number),
                      {**_common_metrics(ctx, t, seed), "validation": validation, "retrain": records.get(t.number)})
    best = _write_best(ctx, best_trial, best_record, dict(zip(best_record["seeds"], best_tests, strict=True)),
                       reporter)
    rows = ctx.files.write_tables(study, ctx.base_params, numbers)
    reporter.front(rows, metric)
    return {"best": best, "baseline_comparison": comparison, "front": [{"trial": e["trial"], "metric": trials[e["trial"]].values[0],
                                     "params": e["params"], "memory_bytes": trials[e["trial"]].user_attrs.get(
                                         "memory_bytes"), "retrain": records.get(e["trial"]),
                                     "plan": trials[e["trial"]].user_attrs["plan"]} for e in front]}


def _validation_of(ctx: SearchContext, trial: FrozenTrial, seed: int) -> dict[str, float]:
    if seed == trial.user_attrs["seed"]:
        return dict(trial.user_attrs["validation"])
    return json.loads((ctx.files.seed_dir(trial.number, seed) / "metrics.json").read_text())["validation"]


def _common_metrics(ctx: SearchContext, trial: FrozenTrial, seed: int) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {"trial": trial.number, "seed": seed, "adapter_params": attrs["params"],
            "head_params": attrs.get("head_params", 0), "params_pct": attrs["params_pct"],
            "memory_bytes": attrs.get("memory_bytes"), "steps": ctx.settings.max_steps}


def _write_best(ctx: SearchContext, trial: FrozenTrial, record: dict[str, Any],
                tests: dict[int, dict[str, float]], reporter: Reporter) -> dict[str, Any]:
    """``tests``: the test metrics of each seed's adapter (evaluated once, in the comparison step)."""
    session = ctx.prepared.session
    seed = median_seed(record)
    spread = f" ± {record['std']:.4f} over {len(record['seeds'])} seeds" if len(record["seeds"]) > 1 else " (one seed)"
    reporter.info(f"pick ({ctx.settings.pick}): trial {trial.number}, validation {record['mean']:.4f}{spread}")
    primary = session.primary_metric
    test_values = [tests[s][primary] for s in record["seeds"]]
    mean, std = mean_std(test_values)
    metrics = {**_common_metrics(ctx, trial, seed), "validation": _validation_of(ctx, trial, seed),
               "test": tests[seed], "retrain": record, "pick": ctx.settings.pick,
               "test_retrain": {"seeds": record["seeds"], "values": test_values, "mean": mean, "std": std},
               "standard_error": standard_errors(ctx, record["mean"], mean),
               "collapsed_seeds": record["collapsed_seeds"]}
    if trial.user_attrs.get(BASELINE_ATTR):
        metrics["baseline"] = trial.user_attrs[BASELINE_ATTR]
    _copy_adapter(_adapter_dir(ctx, trial, seed), ctx.files.best_dir, metrics)
    plan, _, _ = load_adapter(ctx.files.best_dir)
    reporter.info(f"best: trial {trial.number} (seed {seed}): validation {metrics['validation']}, "
                  f"test {tests[seed]}; adapter in {ctx.files.best_dir}")
    return {**metrics, "plan": plan.describe(ctx.arch)}

