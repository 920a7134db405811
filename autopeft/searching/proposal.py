"""From an Optuna trial to a plan that may be trained: sample, count, check the hard constraints.

A plan over ``--budget`` (parameters, exact from shapes), over ``--memory`` (estimated peak training
memory), or breaking one of the space's ``forbid`` rules is never trained: the trial is recorded as
PRUNED with ``status=infeasible`` and the reason, and a *repaired* copy (units switched off until it
fits and breaks no rule; see ``SearchSpace.repair``) is enqueued, so that the trial that trains has
exactly the parameters Optuna records for it. Two prefix-type methods meeting in a layer (offered by
two decisions) break the space's implicit forbid rule and are repaired the same way; a sampled plan
that is invalid in any other way is recorded as infeasible with the plan's own error, not repaired.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

import optuna
from optuna.trial import TrialState

from autopeft.core.choices import TrialStatus
from autopeft.core.errors import UserError
from autopeft.core.units import format_count
from autopeft.peft.plan import Plan
from autopeft.searching.baselines import baseline_plan
from autopeft.searching.context import SearchContext
from autopeft.searching.objectives import estimate_memory
from autopeft.space import Sample
from autopeft.training.config import TrainConfig

MAX_REPAIR_ROUNDS = 20


@dataclass(frozen=True)
class Proposal:
    number: int
    plan: Plan
    params: int
    memory: int | None
    config: TrainConfig  # steps = full fidelity, seed = --seed + trial number


def _memory_of(ctx: SearchContext, plan: Plan, config: TrainConfig) -> int | None:
    return estimate_memory(ctx.prepared, plan, config) if ctx.needs_memory else None


def propose(ctx: SearchContext, study: optuna.Study, trial: optuna.Trial) -> Proposal | None:
    """The trial's plan if it is feasible; otherwise record it as infeasible, enqueue a repair, return None."""
    arch = ctx.arch
    fixed = baseline_plan(trial)
    if fixed is not None:
        return _propose_baseline(ctx, study, trial, fixed)
    sample = ctx.space.sample_choices(trial, arch)  # a claimed trial replays its recorded parameters
    plan = sample.plan()
    # the forbid rules first: they include the implicit one (one prefix-type method per layer), whose
    # violations Plan.placements would refuse; such a sample is counted by units and repaired
    forbidden = ctx.space.infeasible_reason(sample, arch, None)  # budget None: only the forbid rules
    try:
        params = sample.num_params(arch) if forbidden else plan.num_params(arch)
    except UserError as exc:  # a plan the forbid rules do not catch and Plan.placements refuses
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("status", TrialStatus.INFEASIBLE)
        trial.set_user_attr("reason", f"invalid plan: {exc}")
        study.tell(trial, state=TrialState.PRUNED)
        return None
    config = replace(ctx.settings.train, seed=ctx.settings.seed + trial.number, **sample.training)
    attrs = trial.user_attrs
    if "memory_bytes" in attrs:
        memory = attrs["memory_bytes"]
    else:  # plans over the parameter budget are not estimated: they are never trained anyway
        memory = _memory_of(ctx, plan, config) if params <= ctx.budget and not forbidden else None
    if "plan" not in attrs:
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("params", params)
        trial.set_user_attr("params_pct", 100 * params / ctx.base_params)
        if memory is not None:
            trial.set_user_attr("memory_bytes", memory)
    reasons = []
    if params > ctx.budget:
        reasons.append(f"{format_count(params)} params > budget {format_count(ctx.budget)}")
    if ctx.memory_limit is not None and memory is not None and memory > ctx.memory_limit:
        reasons.append(f"memory {memory / 2**20:.0f} MiB > --memory {ctx.settings.memory}")
    if forbidden:
        reasons.append(forbidden)
    if not reasons:
        trial.set_user_attr("seed", config.seed)
        return Proposal(trial.number, plan, params, memory, config)
    repaired = repair(ctx, sample, config, trial.number)
    trial.set_user_attr("status", TrialStatus.INFEASIBLE)
    trial.set_user_attr("reason", "; ".join(reasons) + "; repaired copy enqueued")
    study.tell(trial, state=TrialState.PRUNED)
    study.enqueue_trial(repaired.trial_params(), user_attrs={"repaired_from": trial.number, "status": TrialStatus.QUEUED})
    return None


def _propose_baseline(ctx: SearchContext, study: optuna.Study, trial: optuna.Trial, plan: Plan) -> Proposal | None:
    """A baseline's fixed plan (scaled to the budget when enqueued), with the training options the space
    searches sampled like any trial's; refused without repair if it breaks the memory limit."""
    config = replace(ctx.settings.train, seed=ctx.settings.seed + trial.number, **ctx.space.sample_training(trial))
    params = plan.num_params(ctx.arch)
    attrs = trial.user_attrs
    memory = attrs["memory_bytes"] if "memory_bytes" in attrs else _memory_of(ctx, plan, config)
    if "plan" not in attrs:
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("params", params)
        trial.set_user_attr("params_pct", 100 * params / ctx.base_params)
        trial.set_user_attr("train_config", asdict(config))  # the final stage retrains a stopped baseline
        if memory is not None:
            trial.set_user_attr("memory_bytes", memory)
    if ctx.memory_limit is not None and memory is not None and memory > ctx.memory_limit:
        trial.set_user_attr("status", TrialStatus.INFEASIBLE)
        trial.set_user_attr("reason", f"baseline: memory {memory / 2**20:.0f} MiB > --memory {ctx.settings.memory}")
        study.tell(trial, state=TrialState.PRUNED)
        return None
    trial.set_user_attr("seed", config.seed)
    return Proposal(trial.number, plan, params, memory, config)


def repair(ctx: SearchContext, sample: Sample, config: TrainConfig, number: int) -> Sample:
    """Switch units off until the plan fits the parameter budget, then (if needed) the memory limit."""
    arch, rng = ctx.arch, random.Random(f"{ctx.settings.seed}-{number}")
    budget = ctx.budget
    for _ in range(MAX_REPAIR_ROUNDS):
        repaired = ctx.space.repair(sample, arch, budget, rng)
        if repaired is None:
            break
        plan = repaired.plan()
        if ctx.memory_limit is None or (_memory_of(ctx, plan, config) or 0) <= ctx.memory_limit:
            return repaired
        budget = plan.num_params(arch) - 1  # memory still too high: drop more units
        if budget < 0:
            break
    smallest = ctx.space.smallest(arch)
    if smallest.plan().num_params(arch) > ctx.budget:  # pragma: no cover - refused upfront
        raise UserError(f"no plan of the space fits the budget of {ctx.budget} params")
    return smallest
