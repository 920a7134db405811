"""The Optuna backend: this process and ``--workers N - 1`` local worker processes share one study.

The coordinator (``autopeft search``) records the settings in the study, puts trials left running by
a killed run back in the queue, enqueues the warm start (the space's smallest plan) and the baselines
(:mod:`autopeft.searching.baselines`) into a new study,
starts the worker processes (``autopeft worker``, one log file each under ``logs/``), works as a
worker itself, waits until every counted trial has finished, and runs the final stage. Each process
uses the torch threads of ``--workers`` (:func:`autopeft.searching.threads.resolve_workers`: ``auto`` = one
process per core, one thread each). Workers on other machines join with
``autopeft worker --storage URL --study NAME``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autopeft.core.choices import TRAINED_OR_TRAINING, TrialStatus
from autopeft.core.errors import UserError
from autopeft.searching.backends.optuna_worker import Worker
from autopeft.searching.baselines import enqueue_baselines, fitting_baselines, spread_learning_rates
from autopeft.searching.bookkeeping import counted
from autopeft.searching.context import SearchContext, open_study, record_settings
from autopeft.searching.final_stage import jobs, run_share
from autopeft.searching.interrupt import graceful_interrupts
from autopeft.searching.liveness import recover_stale
from autopeft.searching.oneshot_stage import run_oneshot_stage
from autopeft.searching.progress import Reporter
from autopeft.searching.threads import apply_threads

STARTED_ATTR = "started_at"
INTERRUPT_GRACE_S = 60.0  # how long worker processes get to save their trials after a Ctrl-C


def prepare_study(ctx: SearchContext, reporter: Reporter) -> optuna.Study:
    study = open_study(ctx, worker=0)
    record_settings(study, ctx)
    resumed = recover_stale(study)
    if resumed:
        reporter.info(f"resuming interrupted trials {resumed} from their checkpoints")
    if not study.trials:
        # warm start: the space's cheapest plan (head only in `compact` and `hybrid`) is trained first, so the front
        # always reaches down to the cheapest configuration and shows what the adapters add over it
        study.enqueue_trial(ctx.space.smallest(ctx.arch).trial_params(),
                            user_attrs={"warm_start": "smallest plan", "status": TrialStatus.QUEUED})
        enqueue_baselines(study, fitting_baselines(ctx.settings.baselines, ctx.arch, ctx.budget),
                          spread_learning_rates(ctx.space.training.get("lr"), ctx.settings.baseline_lrs))
    study.set_user_attr(STARTED_ATTR, time.time())
    return study


def run_local(ctx: SearchContext, reporter: Reporter) -> optuna.Study:
    """Run the search phase with ``settings.workers`` processes; returns the study once it is done."""
    settings = ctx.settings
    study = prepare_study(ctx, reporter)
    run_oneshot_stage(ctx, study, reporter)  # --strategy oneshot*: the supernet's readouts, before any worker
    if settings.threads:
        apply_threads(settings.threads)
    processes = [_spawn(ctx, i) for i in range(1, settings.workers)] if _work_left(ctx, study) else []
    if processes:
        reporter.info(f"{len(processes)} worker processes started; their logs are in {ctx.files.logs_dir}")
    try:
        Worker(ctx, study, reporter, started=study.user_attrs[STARTED_ATTR], wait_for_others=True).run()
        if processes:  # the final stage's retrainings, split with the worker processes
            run_share(ctx, study, 0, settings.workers, reporter)
        for p in processes:
            p.wait()
        if processes and settings.threads:
            # what is left of the final stage (finalists joining on seed means, the best baseline on the
            # pick's own seed) runs in this process alone: give it the cores the workers used
            apply_threads(settings.threads * settings.workers)
    except KeyboardInterrupt:
        # the workers run in their own sessions (a terminal's Ctrl-C reaches only this process): pass it
        # on once, so they too stop after their current step and put their trials back in the queue
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.time() + INTERRUPT_GRACE_S
        for p in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.time()))
        raise
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
                p.wait()
    failed = [i + 1 for i, p in enumerate(processes) if p.returncode not in (0, None)]
    if failed:
        reporter.info(f"worker processes {failed} exited with errors; see {ctx.files.logs_dir}")
    return study


def _work_left(ctx: SearchContext, study: optuna.Study) -> bool:
    """Whether worker processes would have anything to do (a resumed, finished study has not)."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if counted(study) < ctx.settings.trials or any(t.user_attrs.get("status") in TRAINED_OR_TRAINING for t in waiting):
        return True
    return any(not (ctx.files.seed_dir(t.number, seed) / "metrics.json").is_file() for t, seed in jobs(ctx, study))


def _spawn(ctx: SearchContext, index: int) -> subprocess.Popen[Any]:
    ctx.files.logs_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "autopeft", "worker", "--storage", ctx.storage_url,
               "--study", ctx.settings.study_name, "--out", str(Path(ctx.settings.out).resolve()),
               "--worker-index", str(index), "--share-of", str(ctx.settings.workers),
               "--threads", str(ctx.settings.threads),
               "--parent-pid", str(os.getpid())]
    with open(ctx.files.worker_log(index), "ab") as log:
        # a session of its own: Ctrl-C in the terminal reaches the coordinator only, which passes it on
        # once (a second SIGINT would stop a worker mid-step); a killed coordinator is noticed by the
        # worker's orphan watch (autopeft.searching.liveness.exit_when_orphaned)
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def run_worker(storage_url: str, study_name: str, out: str | None, index: int, reporter: Reporter,
               share_of: int | None = None) -> int:
    """``autopeft worker``: join a running search until its trial budget is reached. A local worker
    process (``share_of`` = the number of local processes) then also runs its share of the final stage."""
    from autopeft.searching.context import load_worker_context

    ctx = load_worker_context(storage_url, study_name, out, reporter)
    study = open_study(ctx, worker=index, create=False)
    started = study.user_attrs.get(STARTED_ATTR)
    if started is None:
        raise UserError(f"study '{study_name}' has not been started by `autopeft search`")
    with graceful_interrupts():
        Worker(ctx, study, reporter, started=started, wait_for_others=share_of is not None).run()
        if share_of is not None:
            run_share(ctx, study, index, share_of, reporter)
    reporter.info("worker done: the study's trial budget is reached")
    return 0
