"""The one-shot stage of a search (``--strategy oneshot`` / ``oneshot+bayes``): train the space's supernet
once, read out ``--readouts`` plans along the budget, enqueue them as ordinary trials.

It runs in the coordinator before any worker process starts, with every worker's threads, and counts
towards ``--time-budget``. The readouts then train exactly like every other trial (same rungs, seeds,
final stage, baselines), which is what verifies them. ``oneshot/`` in the study directory holds the
supernet's checkpoint (a killed run resumes it) and ``readouts.json``: the ranking of every slice and
each readout's budget, plan and parameter count. The study remembers that its readouts are enqueued
(study user attribute ``oneshot``), so a resumed search does not train the supernet again.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import optuna

from autopeft.core.choices import TrialStatus
from autopeft.core.errors import UserError
from autopeft.core.units import format_bytes
from autopeft.oneshot.candidates import candidates, kept_units
from autopeft.oneshot.run import train_supernet
from autopeft.oneshot.supernet import supernet_plan
from autopeft.searching.context import SearchContext
from autopeft.searching.objectives import estimate_memory
from autopeft.searching.progress import Reporter
from autopeft.searching.threads import apply_threads
from autopeft.space.model import training_param
from autopeft.space.nodes import is_parameter
from autopeft.space.search_space import SearchSpace
from autopeft.training.config import TrainConfig

ONESHOT_ATTR = "oneshot"  # study user attribute: the stage's summary once its readouts are enqueued
READOUT_ATTR = "oneshot_readout"  # trial user attribute: the readout's index (0 = smallest budget)


def readout_training(space: SearchSpace, config: TrainConfig) -> dict[str, Any]:
    """The training values the readouts are verified at: the supernet's own, for each one the space
    searches and contains (its learning rate), so that their real training measures the structure the
    supernet chose at the rate it chose it, not a sampled one. Measured (preview, rotten_tomatoes,
    `studies/oneshot/preview/`): with sampled rates from 5e-4 to 3e-3 the readouts' first-rung accuracy
    swung from 0.58 to 0.76 and the largest readout, at 3e-3, scored the lowest."""
    return {key: getattr(config, key) for key, node in space.training.items()
            if is_parameter(node) and hasattr(config, key) and node.contains(getattr(config, key))}


def run_oneshot_stage(ctx: SearchContext, study: optuna.Study, reporter: Reporter) -> dict[str, Any] | None:
    settings = ctx.settings
    if not settings.uses_supernet or ONESHOT_ATTR in study.user_attrs:
        return study.user_attrs.get(ONESHOT_ATTR)
    session = ctx.prepared.session
    config = replace(settings.train, seed=settings.seed)
    directory = ctx.files.oneshot_dir
    if ctx.memory_limit is not None:  # the supernet holds every candidate: its step must fit --memory too
        needed = estimate_memory(ctx.prepared, supernet_plan(candidates(ctx.space, ctx.arch)), config)
        if needed > ctx.memory_limit:
            raise UserError(f"--strategy {settings.strategy}: the supernet's training step needs about "
                            f"{format_bytes(needed)}, over --memory {format_bytes(ctx.memory_limit)}; raise "
                            "--memory, lower --batch-size/--max-length, or use --strategy bayes")
    if settings.threads:
        apply_threads(settings.threads * settings.workers)  # the workers start after this stage
    reporter.info(f"one-shot: training the supernet of space '{settings.space}' for {config.steps} steps "
                  f"(budget {ctx.budget:,} params, {settings.supernet})")
    result, plans = train_supernet(session, ctx.space, ctx.budget, config, directory / "supernet.safetensors",
                                   reporter.step_callback(config.steps), settings.readouts, settings.supernet)
    if settings.threads:
        apply_threads(settings.threads)
    training = {training_param(key): value for key, value in readout_training(ctx.space, config).items()}
    for index, readout in enumerate(plans):
        study.enqueue_trial({**readout.sample.trial_params(), **training},
                            user_attrs={READOUT_ATTR: index, "status": TrialStatus.QUEUED})
        reporter.info(f"one-shot readout {index}: {readout.params:,} params, supernet validation "
                      f"{readout.supernet_metric:.4f} ({readout.source}): {readout.sample.plan().describe(ctx.arch)}")
    record = {"training": settings.supernet, "steps": config.steps, "seconds": round(result.seconds, 1),
              "train_loss": result.train_loss,
              "units": list(dict.fromkeys(s.unit for s in result.slices)),
              "readouts": [{"budget": round(r.budget), "params": r.params, "supernet_metric": r.supernet_metric,
                            "source": r.source, "kept": kept_units(result.slices, r.slices), "plan": r.sample.plan().to_dict()}
                           for r in plans]}
    # every sub-network measured inside the supernet (the readouts were chosen among them), best first
    details: dict[str, Any] = {"measured": [
        {"params": sum(result.slices[i].cost for i in kept), "supernet_metric": metric,
         "kept": kept_units(result.slices, kept)}
        for kept, metric in sorted(result.probes.items(), key=lambda item: -item[1])]}
    if settings.supernet == "gates":  # and the gates' ranking, whose cuts were among the candidates
        ranking = sorted(range(len(result.slices)), key=lambda i: -result.scores[i])
        details["ranking"] = [{"unit": result.slices[i].unit, "method": result.slices[i].method,
                               "dims": [result.slices[i].start, result.slices[i].size],
                               "cost": result.slices[i].cost, "score": result.scores[i]} for i in ranking]
    (directory / "readouts.json").write_text(json.dumps({**record, **details}, indent=2) + "\n")
    study.set_user_attr(ONESHOT_ATTR, record)
    return record
