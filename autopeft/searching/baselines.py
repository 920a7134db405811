"""Baselines inside every search: the recipes a user would pick by hand, trained as the study's first trials.

A search exists to beat what a user would otherwise run, so every study trains those recipes under the
same conditions as the plans it samples, and reports the pick against the best of them:

- ``lora-r8-qv``: LoRA r = 8, alpha = 16 on the query and value projections of every layer (Hu et al.,
  2022; HF peft's default targets);
- ``pfeiffer``: a serial bottleneck adapter after the MLP of every layer, bottleneck d/16, relu
  (Pfeiffer et al., 2021; :mod:`autopeft.peft.presets`);
- ``parallel-adapter``: a parallel adapter beside the attention output and the MLP of every layer,
  bottleneck 16: the best single method at one shared learning rate in ``studies/method-baselines``.

Each is scaled down to the budget (rank or bottleneck halved until it fits) and left out when even its
smallest form does not fit. A baseline is an ordinary trial of the study (user attribute ``baseline``
names it, ``baseline_plan`` holds its plan): the same rungs and promotion rule, the same seeds, and the
training options the space searches (e.g. the learning rate) are sampled for it by the same sampler.
Baselines count towards ``--trials``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna

from autopeft.core.arch import ModelArch
from autopeft.core.choices import TrialStatus
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.peft.presets import preset_plan
from autopeft.searching.settings import BaselineName

BASELINE_ATTR = "baseline"
PLAN_ATTR = "baseline_plan"


@dataclass(frozen=True)
class Baseline:
    name: str
    plan: Plan


def _lora_qv(arch: ModelArch, r: int) -> Plan:
    return Plan((PlanEntry("lora", tuple(range(arch.num_layers)), ("q", "v"), {"r": r, "alpha": 2 * r}),))


def _pfeiffer(arch: ModelArch, size: int) -> Plan:
    entry = preset_plan("pfeiffer", arch).entries[0]
    return Plan((PlanEntry(entry.method, entry.layers, entry.sites, {**entry.options, "size": size}),))


def _parallel_adapter(arch: ModelArch, size: int) -> Plan:
    return Plan((PlanEntry("parallel_adapter", tuple(range(arch.num_layers)), ("o", "down"), {"size": size}),))


# name -> (plan for a size, the recipe's own size given the model's hidden size)
RECIPES: dict[BaselineName, tuple[Callable[[ModelArch, int], Plan], Callable[[ModelArch], int]]] = {
    "lora-r8-qv": (_lora_qv, lambda arch: 8),
    "pfeiffer": (_pfeiffer, lambda arch: max(1, arch.hidden // 16)),
    "parallel-adapter": (_parallel_adapter, lambda arch: 16),
}


def fitting_baselines(names: tuple[BaselineName, ...], arch: ModelArch, budget: int) -> list[Baseline]:
    """Each named recipe at its own size, halved until it fits ``budget`` parameters; those that never fit
    are left out."""
    found = []
    for name in names:
        build, own_size = RECIPES[name]
        size = own_size(arch)
        while size >= 1:
            plan = build(arch, size)
            if plan.num_params(arch) <= budget:
                found.append(Baseline(name if size == own_size(arch) else f"{name} (size {size})", plan))
                break
            size //= 2
    return found


def enqueue_baselines(study: optuna.Study, baselines: list[Baseline]) -> None:
    """The baselines as the study's next trials (parameters left to the sampler: the space's training options)."""
    for baseline in baselines:
        study.enqueue_trial({}, user_attrs={BASELINE_ATTR: baseline.name, PLAN_ATTR: baseline.plan.to_dict(),
                                            "status": TrialStatus.QUEUED})


def baseline_plan(trial: optuna.Trial | optuna.trial.FrozenTrial) -> Plan | None:
    """The fixed plan of a baseline trial, or None for a trial whose plan is sampled from the space."""
    record = trial.user_attrs.get(PLAN_ATTR)
    return Plan.from_dict(record, f"baseline {trial.user_attrs.get(BASELINE_ATTR)}") if record else None
