"""The search: Pareto-aware multi-fidelity search of PEFT plans under parameter and memory budgets.

    sample a plan (Optuna: TPE / NSGA-II / GP / random)      autopeft/searching/proposal.py
      -> over --budget or --memory? recorded infeasible, a repaired copy is enqueued, never trained
    train it rung by rung (--min-steps .. --max-steps, x eta)  autopeft/searching/rung_run.py, rungs.py
      -> at each rung: continue only if in the top 1/eta of the plans at that rung, ranked by
         non-dominated sorting on (metric, params[, memory]) + crowding distance
                                                              autopeft/searching/promotion.py
    tell Optuna: COMPLETE (top rung) or PRUNED (stopped)       autopeft/searching/backends/optuna_worker.py
    final stage: retrain the top-rung front with --seeds K, pick, write front/ and best/
                                                              autopeft/searching/final_stage.py

Backends: ``optuna`` (this process plus ``--workers N - 1`` local processes and any number of
``autopeft worker`` processes on other machines, sharing one Optuna storage; autopeft/searching/backends/local.py)
and ``ray`` (Ray Tune with Optuna's searcher and a Pareto-aware scheduler; autopeft/searching/backends/ray_tune.py).
Both write the same study directory (see :mod:`autopeft.study.files`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autopeft.core.choices import TrialStatus
from autopeft.peft.artifacts import write_json
from autopeft.searching.bookkeeping import steps_spent, top_rung_front
from autopeft.searching.context import SearchContext, adapter_config, build_context
from autopeft.searching.interrupt import graceful_interrupts
from autopeft.searching.oneshot_stage import ONESHOT_ATTR
from autopeft.searching.progress import Reporter
from autopeft.searching.settings import STUDY_NAME, SearchSettings
from autopeft.study.files import StudyFiles, mask_url, open_storage
from autopeft.study.lock import StudyLock

__all__ = ["STUDY_NAME", "SearchResult", "SearchSettings", "adapter_config", "run_search"]


@dataclass
class SearchResult:
    out: Path
    summary: dict[str, Any]


def run_search(settings: SearchSettings, reporter: Reporter | None = None) -> SearchResult:
    reporter = reporter or Reporter()
    # one search per study directory; other processes join deliberately with `autopeft worker`
    url = mask_url(settings.storage or StudyFiles(Path(settings.out)).storage_url)
    with StudyLock(Path(settings.out), f"autopeft worker --storage {url} --study {settings.study_name}"):
        return _run_locked(settings, reporter)


def _run_locked(settings: SearchSettings, reporter: Reporter) -> SearchResult:
    ctx = build_context(settings, reporter)
    start = time.time()
    reporter.search_started(total=settings.trials, time_budget_s=settings.time_budget_s,
                            metric=ctx.prepared.session.primary_metric,
                            greater_is_better=ctx.objectives.greater_is_better)
    try:
        with graceful_interrupts() if settings.backend == "optuna" else contextlib.nullcontext():
            if settings.backend == "ray":
                from autopeft.searching.backends.ray_tune import run_ray

                study = run_ray(ctx, reporter)
            else:
                from autopeft.searching.backends.local import run_local

                study = run_local(ctx, reporter)
            from autopeft.searching.final_stage import run_final_stage

            deadline = None if settings.time_budget_s is None else start + settings.time_budget_s
            stage = run_final_stage(ctx, study, reporter, deadline)
    except KeyboardInterrupt:
        reporter.close()
        reporter.info(f"interrupted: {_interrupted_report(ctx)}; re-run the same command to resume")
        raise
    summary = _summary(ctx, study, stage, time.time() - start)
    write_json(ctx.files.summary_json, summary)
    return SearchResult(ctx.files.root, summary)


def _interrupted_report(ctx: SearchContext) -> str:
    """What an interrupted search has done so far (and rewrite the CSV files from the storage)."""
    try:
        study = optuna.load_study(study_name=ctx.settings.study_name, storage=open_storage(ctx.storage_url))
    except Exception:  # noqa: BLE001 - interrupted before the study existed
        return "no trial was started"
    with contextlib.suppress(Exception):  # best effort: the storage holds everything anyway
        ctx.files.write_tables(study, ctx.base_params, top_rung_front(study, ctx.objectives))
    trials = study.get_trials(deepcopy=False)
    statuses = [t.user_attrs.get("status") for t in trials]
    parts = [f"{statuses.count(s)} {s}" for s in (TrialStatus.COMPLETE, TrialStatus.STOPPED, TrialStatus.FAILED, TrialStatus.INFEASIBLE)
             if s in statuses]
    waiting = [t for t in trials if t.state == TrialState.WAITING and t.user_attrs.get("status") == TrialStatus.RUNNING]
    saved = ", ".join(f"trial {t.number} at step {_checkpoint_step(ctx, t.number)}" for t in waiting)
    return (", ".join(parts) or "no trial finished") + (f"; saved to continue: {saved}" if saved else "") + \
        f"; the study is in {ctx.files.root}"


def _checkpoint_step(ctx: SearchContext, number: int) -> int:
    from autopeft.training.trial_run import Checkpoint

    try:
        return Checkpoint.load(ctx.files.checkpoint_path(number)).step
    except Exception:  # noqa: BLE001 - no checkpoint yet: the trial restarts from step 0
        return 0


def _summary(ctx: SearchContext, study, stage: dict[str, Any], elapsed: float) -> dict[str, Any]:
    settings = ctx.settings
    trials = study.get_trials(deepcopy=False)
    statuses: dict[str, int] = {}
    for t in trials:
        status = t.user_attrs.get("status") or t.state.name.lower()
        statuses[status] = statuses.get(status, 0) + 1
    retrained = len(ctx.files.retrainings())  # the finalists' and the baselines' (an earlier run's too)
    return {
        **stage,
        "trials": {"complete": sum(t.state == TrialState.COMPLETE for t in trials),
                   "pruned": sum(t.state == TrialState.PRUNED for t in trials),
                   "fail": sum(t.state == TrialState.FAIL for t in trials), "by_status": statuses},
        "compute": {"search_steps": steps_spent(study),
                    "final_stage_steps": retrained * settings.max_steps,
                    "supernet_steps": (study.user_attrs.get(ONESHOT_ATTR) or {}).get("steps", 0)},
        "strategy": settings.strategy,
        "oneshot": study.user_attrs.get(ONESHOT_ATTR),
        "metric": ctx.prepared.session.primary_metric,
        "objectives": list(ctx.objectives.names),
        "rungs": list(ctx.rungs), "eta": settings.eta, "seeds": settings.seeds, "pick": settings.pick,
        "sampler": settings.sampler, "backend": settings.backend, "workers": settings.workers,
        "storage": mask_url(ctx.storage_url), "study_name": settings.study_name,
        "budget_params": ctx.budget, "memory_limit_bytes": ctx.memory_limit, "base_params": ctx.base_params,
        "elapsed_s": round(elapsed, 1),
        "settings": ctx.identity,
        "precision_ran": ctx.prepared.session.recipe(settings.train).precision,  # the settings may say "auto"
        "data": ctx.prepared.data.to_record(),
        "machine": ctx.files.machine(),
    }
