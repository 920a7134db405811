"""The search loop: Optuna multi-objective ask/tell over plans sampled from a search space.

Objectives: the validation metric (maximised for accuracy, minimised for LM loss) and the number of
trainable parameters (minimised). ``--budget`` is a hard cap: a sampled plan whose exact parameter
count (from shapes) exceeds it is recorded as an *infeasible* trial (Optuna state PRUNED, user attribute
``status=infeasible`` with the reason) and never trained; only trained trials count towards ``--trials``.

The study lives in ``<out>/study.db`` (Optuna SQLite storage). Re-running the same command resumes:
completed trials are kept; trials left RUNNING by a killed process are marked FAIL ("interrupted") and
their work is redone by new trials. Each completed trial's adapter is written under ``trials/<n>/``
before its result is told to Optuna, so a recorded result always has its weights.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import TrialState

from autopeft.artifacts import load_adapter, save_adapter, write_json
from autopeft.budget import format_count, parse_budget
from autopeft.errors import UserError
from autopeft.pipeline import DataOptions, Prepared, prepare
from autopeft.progress import Reporter
from autopeft.space import SearchSpace, load_space
from autopeft.study import StudyFiles
from autopeft.train import DivergedError, TrainConfig

log = logging.getLogger("autopeft")
STUDY_NAME = "autopeft"
SamplerName = Literal["tpe", "random"]
MAX_CONSECUTIVE_INFEASIBLE = 50  # repairs always fit, so this only guards against bugs


@dataclass(frozen=True)
class SearchSettings:
    data: DataOptions
    budget: str = "0.5%"
    space: str = "hybrid"
    trials: int = 12
    time_budget_s: float | None = None
    out: str = "runs/latest"
    seed: int = 0
    sampler: SamplerName = "tpe"
    max_failures: int = 5
    train: TrainConfig = TrainConfig()

    def identity(self) -> dict[str, Any]:
        """Settings that must match to resume a study (others, like --trials, may change)."""
        return {"data": self.data.to_record(), "budget": self.budget, "space": self.space, "seed": self.seed,
                "train": asdict(self.train)}


@dataclass
class SearchResult:
    out: Path
    summary: dict[str, Any]


def run_search(settings: SearchSettings, reporter: Reporter | None = None) -> SearchResult:
    reporter = reporter or Reporter()
    parse_budget(settings.budget, base_params=10**12)  # syntax errors surface before any loading
    space = load_space(settings.space)
    files = StudyFiles(Path(settings.out))
    files.check_resume(settings.identity())
    reporter.info(f"loading model '{settings.data.model}' and dataset '{settings.data.dataset}'")
    prepared = prepare(settings.data)
    arch = prepared.loaded.arch
    base = prepared.loaded.base_params
    budget = parse_budget(settings.budget, base)
    reporter.info(f"base model {format_count(base)} params ({arch.family.name}, {arch.num_layers} layers); "
                  f"budget {format_count(budget)} trainable params; space '{space.name}'; "
                  f"splits {prepared.data.split_sizes}")
    smallest = space.min_params(arch)
    if smallest > budget:
        raise UserError(f"no plan of space '{space.name}' fits --budget {settings.budget} ({budget} params) on "
                        f"this model; the smallest feasible budget is {smallest} params "
                        f"({100 * smallest / base:.4f}%)")
    files.write_settings(settings.identity(), extra={"budget_params": budget, "base_params": base,
                                                      "data": prepared.data.to_record()})
    study = _open_study(files, settings, prepared)
    _fail_interrupted(study)
    if not study.trials:
        # warm start: the space's cheapest plan (head only in `hybrid`) is trained first, so the front
        # always reaches down to the cheapest configuration and shows what the adapters add over it
        study.enqueue_trial(space.smallest(arch).trial_params(), user_attrs={"warm_start": "smallest plan"})
    start = time.time()
    try:
        _loop(study, settings, space, prepared, budget, files, reporter, start)
    except KeyboardInterrupt:
        reporter.info("interrupted: writing the study files; re-run the same command to resume")
        files.write_tables(study, base)
        raise
    summary = _finish(study, settings, prepared, budget, files, reporter, time.time() - start)
    return SearchResult(files.root, summary)


def _open_study(files: StudyFiles, settings: SearchSettings, prepared: Prepared) -> optuna.Study:
    greater = prepared.data.task == "classification"
    directions = ["maximize" if greater else "minimize", "minimize"]
    with warnings.catch_warnings():  # group=True and metric names are "experimental" in Optuna, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "random":
            sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=settings.seed)
        else:
            # group=True: TPE models the conditional parameters of each method choice jointly
            sampler = optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, group=True,
                                                 n_startup_trials=8)
        study = optuna.create_study(storage=files.storage_url, study_name=STUDY_NAME, directions=directions,
                                    sampler=sampler, load_if_exists=True)
        study.set_metric_names(["validation_metric", "trainable_params"])
    return study


def _fail_interrupted(study: optuna.Study) -> None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "status", "interrupted")
        study.tell(trial.number, state=TrialState.FAIL)


def _count(study: optuna.Study, state: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=(state,)))


def _loop(study: optuna.Study, settings: SearchSettings, space: SearchSpace, prepared: Prepared, budget: int,
          files: StudyFiles, reporter: Reporter, start: float) -> None:
    arch = prepared.loaded.arch
    base = prepared.loaded.base_params
    infeasible_run = 0
    failures = 0
    while (done := _count(study, TrialState.COMPLETE)) < settings.trials:
        if settings.time_budget_s is not None and time.time() - start > settings.time_budget_s:
            reporter.info(f"time budget reached after {done} trials")
            break
        trial = study.ask()
        sample = space.sample_choices(trial, arch)
        plan, overrides = sample.plan(), sample.training
        params = plan.num_params(arch)
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("params", params)
        trial.set_user_attr("params_pct", 100 * params / base)
        if params > budget:
            # never trained: record it, then enqueue a repaired copy (units switched off until it fits),
            # so that the trial that trains has exactly the parameters Optuna records for it
            repaired = space.repair(sample, arch, budget, random.Random(f"{settings.seed}-{trial.number}"))
            trial.set_user_attr("status", "infeasible")
            trial.set_user_attr("reason", f"{params} params > budget {budget}; repaired copy enqueued")
            study.tell(trial, state=TrialState.PRUNED)
            if repaired is None:  # pragma: no cover - excluded upfront by min_params
                raise UserError(f"no plan of the space fits the budget of {budget} params")
            study.enqueue_trial(repaired.trial_params(), user_attrs={"repaired_from": trial.number})
            infeasible_run += 1
            if infeasible_run >= MAX_CONSECUTIVE_INFEASIBLE:
                raise UserError(f"{infeasible_run} sampled plans in a row exceed the budget of {budget} params; "
                                f"raise --budget or use a smaller space")
            continue
        infeasible_run = 0
        config = replace(settings.train, seed=settings.seed + trial.number, **overrides)
        trial.set_user_attr("seed", config.seed)
        reporter.trial_start(trial.number, done + 1, settings.trials, plan.describe(arch), params, 100 * params / base)
        try:
            outcome = prepared.session.run(plan, config, progress=reporter.step_callback(config.steps))
        except (DivergedError, RuntimeError, ValueError) as exc:
            failures += 1
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("reason", reason)
            study.tell(trial, state=TrialState.FAIL)
            reporter.trial_failed(trial.number, reason)
            if failures >= settings.max_failures:
                raise UserError(f"{failures} trials failed (last: {reason}); see trials.csv. "
                                "Stopping; raise --max-failures to continue anyway") from None
            continue
        save_adapter(files.trial_dir(trial.number), plan, outcome.state, adapter_config(prepared, config),
                     metrics={"validation": outcome.validation.values})
        for key, value in outcome.record().items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("status", "complete")
        study.tell(trial, [outcome.validation.value, float(params)])
        reporter.trial_done(trial.number, outcome.validation.name, outcome.validation.value, outcome.duration_s,
                            len(_front(study)))
        files.write_tables(study, base)


def adapter_config(prepared: Prepared, config: TrainConfig) -> dict[str, Any]:
    return {
        "base_model": prepared.options.model,
        "base_model_source": prepared.loaded.source,
        "base_params": prepared.loaded.base_params,
        "family": prepared.loaded.arch.family.name,
        "task": prepared.data.task,
        "data": prepared.options.to_record(),
        "label_names": prepared.data.label_names,
        "split_seed": prepared.data.split_seed,
        "train": asdict(config),
    }


def _front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.best_trials if _count(study, TrialState.COMPLETE) else []


def _finish(study: optuna.Study, settings: SearchSettings, prepared: Prepared, budget: int, files: StudyFiles,
            reporter: Reporter, elapsed: float) -> dict[str, Any]:
    base = prepared.loaded.base_params
    files.write_tables(study, base)
    front = _front(study)
    if not front:
        raise UserError("no trial completed; see trials.csv for the reasons")
    greater = prepared.data.task == "classification"
    best = sorted(front, key=lambda t: ((-t.values[0] if greater else t.values[0]), t.values[1]))[0]
    reporter.info(f"evaluating the pick (trial {best.number}) on the test split")
    plan, state, config = load_adapter(files.trial_dir(best.number))
    train_config = TrainConfig(**config["train"])
    validation = prepared.session.evaluate_adapter(plan, state, "validation", train_config)
    test = prepared.session.evaluate_adapter(plan, state, "test", train_config)
    recorded = best.user_attrs["validation"]
    if validation.values != recorded:
        log.warning("re-evaluated validation metrics %s differ from recorded %s", validation.values, recorded)
    metrics = {"validation": recorded, "test": test.values, "trial": best.number,
               "adapter_params": best.user_attrs["params"], "head_params": best.user_attrs.get("head_params", 0),
               "params_pct": best.user_attrs["params_pct"]}
    save_adapter(files.root / "best", plan, state, config, metrics)
    summary = {
        "best": {"trial": best.number, "plan": plan.describe(prepared.loaded.arch), **metrics},
        "front": [{"trial": t.number, "metric": t.values[0], "params": int(t.values[1])} for t in front],
        "trials": {s.name.lower(): _count(study, s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)},
        "metric": prepared.session.primary_metric,
        "budget_params": budget,
        "base_params": base,
        "elapsed_s": round(elapsed, 1),
        "settings": settings.identity(),
        "data": prepared.data.to_record(),
        "machine": files.machine(),
    }
    write_json(files.root / "summary.json", summary)
    reporter.front(files.pareto_rows(study, base), prepared.session.primary_metric)
    reporter.info(f"best: trial {best.number}, validation {recorded}, test {test.values}; adapter in "
                  f"{files.root / 'best'}")
    return summary
