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
names it, ``baseline_plan`` holds its plan): the same rungs and promotion rule, the same seeds.

The learning rate. A user tunes a recipe's lr, and the lr moves accuracy more than the structure does at
this budget (``studies/search-quality``: LoRA r8 q,v on trec, 91.2 -> 94.2% test from lr 5e-4 to 3e-3),
so a baseline at one sampled lr is a weak opponent, and the search's verdict against it says little. When
the space searches ``lr``, each recipe is enqueued at ``--baseline-lrs`` N learning rates spread over the
space's range, the log-midpoints of N equal slices::

    lr_i = exp(log lo + (i + 1/2) / N * (log hi - log lo)),   i = 0 .. N-1

(N = 2 on [5e-4, 3e-3]: 7.8e-4 and 1.9e-3; on the tuning sets LoRA r8 q,v does best at 2e-3-3e-3 on trec
and better at 2e-3 than at 1e-3 on rotten_tomatoes, the lower point hedges for sets that want less, and
N = 2 is a cost choice, not a measured optimum); the rungs drop the worse ones cheaply, and
the final stage meets the best of them. N = 0 leaves the lr to the sampler (one trial per recipe). Any
other training option the space searches is sampled. Baselines count towards ``--trials``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import optuna

from autopeft.core.arch import ModelArch
from autopeft.core.choices import TrialStatus
from autopeft.peft.plan import Plan, PlanEntry
from autopeft.peft.presets import preset_plan
from autopeft.searching.settings import BaselineName
from autopeft.space.model import training_param
from autopeft.space.nodes import Choice, Float, Node

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


LR_PARAM = training_param("lr")  # the trial parameter of a space's searched lr


def spread_learning_rates(lr: Node | None, count: int) -> tuple[float, ...]:
    """``count`` learning rates spread over a space's searched ``lr`` (see the module docstring); () when the
    space does not search the lr or ``count`` is 0 (the sampler draws it)."""
    if count < 1 or lr is None:
        return ()
    if isinstance(lr, Float):
        low, high = (math.log(lr.low), math.log(lr.high)) if lr.log else (lr.low, lr.high)
        values = []
        for i in range(count):
            point = low + (i + 0.5) / count * (high - low)
            value = math.exp(point) if lr.log else point
            if lr.step is not None:  # onto the range's grid
                value = lr.low + round((value - lr.low) / lr.step) * lr.step
            readable = float(f"{value:.2g}")  # 7.8e-04, not 7.745...e-04, when still inside the range
            values.append(readable if lr.step is None and lr.contains(readable) else value)
        return tuple(dict.fromkeys(values))
    if isinstance(lr, Choice):
        options = sorted(lr.options)
        picks = [options[min(len(options) - 1, int((i + 0.5) / count * len(options)))] for i in range(count)]
        return tuple(dict.fromkeys(picks))
    return ()  # a fixed lr: nothing to spread


def enqueue_baselines(study: optuna.Study, baselines: list[Baseline], lrs: tuple[float, ...] = ()) -> None:
    """The baselines as the study's next trials, each at every lr of ``lrs`` (named ``<recipe>, lr <lr>``),
    or once with the lr left to the sampler when ``lrs`` is empty; other training options are sampled."""
    for baseline in baselines:
        for lr in lrs or (None,):
            name = baseline.name if lr is None else f"{baseline.name}, lr {lr:g}"
            study.enqueue_trial({} if lr is None else {LR_PARAM: lr},
                                user_attrs={BASELINE_ATTR: name, PLAN_ATTR: baseline.plan.to_dict(),
                                            "status": TrialStatus.QUEUED})


def baseline_plan(trial: optuna.Trial | optuna.trial.FrozenTrial) -> Plan | None:
    """The fixed plan of a baseline trial, or None for a trial whose plan is sampled from the space."""
    record = trial.user_attrs.get(PLAN_ATTR)
    return Plan.from_dict(record, f"baseline {trial.user_attrs.get(BASELINE_ATTR)}") if record else None
