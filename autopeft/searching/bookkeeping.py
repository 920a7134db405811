"""A trial's record in the Optuna study, written and read the same way by every backend.

Optuna's state (RUNNING / COMPLETE / PRUNED / FAIL) is kept in step with autopeft's finer ``status`` user
attribute (:class:`~autopeft.core.choices.TrialStatus`); ``rung_metrics`` maps each rung a trial reached to
its validation metric and ``steps`` is the fidelity it reached. The writers (``record_*``) are the only
place the backends (:mod:`~autopeft.searching.backends.optuna_worker`,
:mod:`~autopeft.searching.backends.ray_tune`) change a trial's outcome; the queries below read those records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft.core.choices import TRAINED_OR_TRAINING, TrialStatus
from autopeft.searching.baselines import BASELINE_ATTR, PLAN_ATTR
from autopeft.searching.objectives import Objectives
from autopeft.searching.promotion import pareto_front

Trial = optuna.Trial | FrozenTrial


# --- writers ---------------------------------------------------------------------------------------

def record_rung(trial: Trial, rung: int, value: float) -> None:
    """``trial`` reached ``rung`` with validation metric ``value``.

    Besides the ``rung_metrics`` dict, the value is stored as a plain number ``rung_<steps>``, a sortable
    column in optuna-dashboard's trial table. (Not as an intermediate value: Optuna's multi-objective TPE
    then scores pruned trials through ``study.direction``, which a multi-objective study refuses.)
    """
    rung_metrics = dict(trial.user_attrs.get("rung_metrics") or {})
    rung_metrics[str(rung)] = value
    trial.set_user_attr("rung_metrics", rung_metrics)
    trial.set_user_attr(f"rung_{int(rung)}", float(value))
    trial.set_user_attr("steps", int(rung))


def record_failed(study: optuna.Study, trial: Trial, reason: str) -> None:
    trial.set_user_attr("status", TrialStatus.FAILED)
    trial.set_user_attr("reason", reason)
    study.tell(trial, state=TrialState.FAIL)


def record_complete(study: optuna.Study, trial: Trial, record: dict[str, Any], values: Sequence[float]) -> None:
    """Trained to the top rung: its outcome ``record`` (validation, params, timings...) and objective values."""
    for key, value in record.items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("status", TrialStatus.COMPLETE)
    study.tell(trial, values)


def record_stopped(study: optuna.Study, trial: Trial, rung: int, record: dict[str, Any] | None = None) -> None:
    """Stopped at ``rung`` by the promotion rule (Optuna: PRUNED)."""
    for key, value in (record or {}).items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("status", TrialStatus.STOPPED)
    trial.set_user_attr("reason", f"stopped at rung {rung} (dominated by plans at that rung)")
    study.tell(trial, state=TrialState.PRUNED)


# --- queries ---------------------------------------------------------------------------------------

def counted(study: optuna.Study, below: int | None = None) -> int:
    """Plans that train or trained (optionally only those numbered below ``below``)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.user_attrs.get("status") in TRAINED_OR_TRAINING and t.state != TrialState.FAIL
               and (below is None or t.number < below))


def steps_spent(study: optuna.Study) -> int:
    """Training steps of the search so far (the fidelity each trial reached; final stage excluded)."""
    return sum(int(t.user_attrs.get("steps", 0)) for t in study.get_trials(deepcopy=False))


def rung_entries(study: optuna.Study, objectives: Objectives, rung: int) -> dict[int, tuple[float, ...]]:
    """Every trial's minimised objective vector at ``rung`` (trials that reached it, in any state)."""
    entries = {}
    for t in study.get_trials(deepcopy=False):
        value = (t.user_attrs.get("rung_metrics") or {}).get(str(rung))
        if value is not None and "params" in t.user_attrs:
            entries[t.number] = objectives.minimised(value, t.user_attrs["params"], t.user_attrs.get("memory_bytes"))
    return entries


def top_rung_front(study: optuna.Study, objectives: Objectives,
                   means: Mapping[int, float] | None = None) -> list[int]:
    """Trial numbers of the non-dominated plans among those trained to full fidelity (COMPLETE), each scored
    by its own run, or by its seed mean where ``means`` has one (after the final stage's retrainings)."""
    means = means or {}
    complete = {t.number: objectives.minimised(means.get(t.number, t.values[0]), t.user_attrs["params"],
                                               t.user_attrs.get("memory_bytes"))
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "params" in t.user_attrs}
    return pareto_front(complete)


def finalist_numbers(study: optuna.Study, objectives: Objectives, settings: Any,
                     means: Mapping[int, float]) -> list[int]:
    """The front plans the final stage retrains with K seeds: the ``--finalists`` best by score (seed mean
    where ``means`` has one, else the own run), or the whole front for the knee pick."""
    front = top_rung_front(study, objectives, means)
    if settings.pick == "knee":
        return front
    trials = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    sign = 1.0 if objectives.greater_is_better else -1.0
    ranked = sorted(front, key=lambda n: (-sign * means.get(n, trials[n].values[0]),
                                          trials[n].user_attrs["params"], n))
    return ranked[:settings.finalists]


def best_baseline(study: optuna.Study, greater_is_better: bool) -> FrozenTrial | None:
    """Among the baseline trials, those that reached the highest rung any baseline reached, the best metric
    there (a baseline stopped early by the promotion rule still competes); None before any reached a rung."""
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.user_attrs.get(BASELINE_ATTR) and t.user_attrs.get("rung_metrics")]
    if not trials:
        return None
    top = max(max(int(rung) for rung in t.user_attrs["rung_metrics"]) for t in trials)
    sign = 1.0 if greater_is_better else -1.0
    at_top = [t for t in trials if str(top) in t.user_attrs["rung_metrics"]]
    return max(at_top, key=lambda t: (sign * t.user_attrs["rung_metrics"][str(top)], -t.number))


def baseline_contenders(study: optuna.Study, settings: Any, greater_is_better: bool) -> list[FrozenTrial]:
    """The baselines the final stage retrains on the shared seeds 2..K: the best one
    (:func:`best_baseline`, decided on one seed at a rung) and, with ``--seeds`` >= 2, its recipe at its
    other learning rates (``--baseline-lrs``: the baseline trials with the same plan that trained), so that
    the recipe's lr is settled on seed means at full fidelity
    (:func:`autopeft.searching.comparison.settle_baseline`). Empty without baselines."""
    best = best_baseline(study, greater_is_better) if settings.baselines else None
    if best is None:
        return []
    plan = best.user_attrs.get(PLAN_ATTR)
    if settings.seeds < 2 or plan is None:
        return [best]
    twins = [t for t in study.get_trials(deepcopy=False) if t.number != best.number
             and t.user_attrs.get(PLAN_ATTR) == plan and t.user_attrs.get("rung_metrics")]
    return [best, *twins]


# --- the time budget -------------------------------------------------------------------------------

def trial_full_fidelity_seconds(trial: FrozenTrial, max_steps: int | None) -> float | None:
    """The trial's own training time scaled from the steps it reached to ``max_steps`` (None when it has no
    duration, or stopped at a rung and ``max_steps`` is unknown)."""
    seconds, steps = trial.user_attrs.get("duration_s"), trial.user_attrs.get("steps")
    if seconds is None:
        return None
    if trial.state == TrialState.PRUNED:  # stopped at a rung (an infeasible plan has no duration)
        if not steps or max_steps is None:
            return None
        return float(seconds) * max_steps / int(steps)
    return float(seconds)


def full_fidelity_seconds(study: optuna.Study, max_steps: int | None = None) -> float:
    """Estimated wall time of one full-fidelity training: the median over trained trials of their
    training time, scaled from the steps they reached to ``max_steps`` (so a trial stopped at a rung
    counts too, and an estimate exists as soon as any trial has reached the first rung); 0 before any.
    Trials with adapter modules only, when there are any: a head-only trial skips the backward pass
    through the model (measured on newsgroups: 115 s against 450 s for an adapter trial, an estimate
    that let a 20-minute search start a 7.5-minute trial it had no time for)."""
    estimates: list[tuple[bool, float]] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        seconds = trial_full_fidelity_seconds(t, max_steps)
        if seconds is not None:
            estimates.append((bool(t.user_attrs.get("params")), seconds))
    durations = sorted([s for adapter, s in estimates if adapter] or [s for _, s in estimates])
    return durations[len(durations) // 2] if durations else 0.0


def final_stage_seconds(study: optuna.Study, objectives: Objectives, settings: Any,
                        training: float | None = None) -> float:
    """Estimated wall time of the final stage if the search stopped now: the retrainings the final stage
    would run (:func:`autopeft.searching.final_stage.jobs`: seeds 2..K of each finalist, and of the best
    baseline and its lr twins unless they are finalists), each at its own plan's measured duration, split
    round-robin over the local workers as ``run_share`` splits them; then the best baseline on the pick's own seed (one
    training, this process alone). A baseline not trained yet counts at the median full-fidelity duration.
    When the front has more plans than finalists, one plan joining on seed means is foreseen too (the
    winner's curse makes that common: measured on trec, a 20-minute search overran by 1.3 minutes without
    it); its seeds 2..K train in this process with all the workers' threads, about ``ceil((K-1)/workers)``
    rounds at the median duration. Each plan at its own duration, not all at the median: a head-only
    finalist trains ~4x faster, and the best baseline is often a finalist itself; counted at the median
    and twice, a 20-minute rotten_tomatoes search stopped sampling after 5.8 minutes and ended at 10.9.
    ``training``: :func:`full_fidelity_seconds` when the caller has it already."""
    workers = max(1, settings.workers)
    training = full_fidelity_seconds(study, settings.max_steps) if training is None else training
    front = top_rung_front(study, objectives)
    numbers = finalist_numbers(study, objectives, settings, {})
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}

    def seconds(trial: FrozenTrial | None) -> float:
        own = trial_full_fidelity_seconds(trial, settings.max_steps) if trial is not None else None
        return training if own is None else own

    # no plan at full fidelity yet: one finalist at the median duration, as there will be at least one
    plans: list[FrozenTrial | None] = [trials[n] for n in numbers] or [None]
    contenders = baseline_contenders(study, settings, objectives.greater_is_better)
    baseline = contenders[0] if contenders else None
    plans += [t for t in contenders if t.number not in numbers]
    if settings.baselines and baseline is None:  # none has trained yet: the best and its lr twins, at the median
        plans += [None] * (1 + (max(0, settings.baseline_lrs - 1) if settings.seeds > 1 else 0))
    job_seconds = [seconds(plan) for plan in plans for _ in range(settings.seeds - 1)]
    shared = max((sum(job_seconds[i::workers]) for i in range(workers)), default=0.0)
    after = seconds(baseline) if settings.baselines and settings.seeds > 1 else 0.0
    joiners = training * joiner_rounds(settings, 1) if len(numbers) < len(front) else 0.0
    return shared + after + joiners


def joiner_rounds(settings: Any, joiners: int) -> int:
    """Trainings one after another to retrain ``joiners`` plans that join the finalists on seed means:
    each one's seeds 2..K train in the coordinator with all the workers' threads."""
    return joiners * math.ceil((settings.seeds - 1) / max(1, settings.workers))


def joiners_fit(study: optuna.Study, settings: Any, joiners: int, now: float, deadline: float | None) -> bool:
    """Whether retraining ``joiners`` more finalists, then the best baseline on the pick's own seed (one
    training), still ends by ``deadline`` (``--time-budget`` bounds the whole command)."""
    if deadline is None:
        return True
    baseline = 1 if settings.baselines and settings.seeds > 1 else 0
    return now + full_fidelity_seconds(study, settings.max_steps) * (joiner_rounds(settings, joiners) + baseline) <= deadline


def out_of_time(study: optuna.Study, objectives: Objectives, settings: Any, started: float, now: float) -> bool:
    """Whether a new trial may no longer start: ``--time-budget`` bounds the whole command, so a trial
    starts only if it (at the median full-fidelity duration) and the final stage still fit in the budget."""
    if settings.time_budget_s is None:
        return False
    training = full_fidelity_seconds(study, settings.max_steps)
    return now - started + training + final_stage_seconds(study, objectives, settings, training) > settings.time_budget_s


def time_stop_messages(study: optuna.Study, objectives: Objectives, settings: Any, started: float,
                       now: float) -> list[str]:
    """What the search says when it stops starting trials for time (both backends): that it stopped, and
    :func:`final_stage_overrun`'s warning when there is one."""
    late = final_stage_overrun(study, objectives, settings, started, now)
    return ["time budget reached (the final stage's share kept): no new trials are started", *([late] if late else [])]


def final_stage_overrun(study: optuna.Study, objectives: Objectives, settings: Any, started: float,
                        now: float) -> str | None:
    """When the search stops for time: a warning if the final stage cannot end within ``--time-budget``
    (a full-fidelity training too long for it: measured on newsgroups, 7.5 minutes per training made a
    20-minute search take 25), with what would shorten it; None when it fits (within a minute)."""
    if settings.time_budget_s is None:
        return None
    training = full_fidelity_seconds(study, settings.max_steps)
    final = final_stage_seconds(study, objectives, settings, training)
    late = now - started + final - settings.time_budget_s
    if late <= 60:
        return None
    return (f"the final stage needs about {final / 60:.0f} min (one full-fidelity training takes "
            f"{training / 60:.1f} min): the command will end about {late / 60:.0f} min after --time-budget; "
            "--seeds 2, --finalists 1, a shorter --max-steps/--epochs or a longer --time-budget would fit")
