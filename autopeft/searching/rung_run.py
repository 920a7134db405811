"""Train one plan rung by rung, checkpointing as it goes, asking at each rung whether to continue.

    start (or resume from trials/<n>/checkpoint.safetensors)
    for each rung r:   advance to r (checkpoint every CHECKPOINT_EVERY_S seconds of training)
                       evaluate on validation; checkpoint at r
                       on_rung(r, metrics) -> continue?   (the promotion rule, or Ray's scheduler;
                                                           at the top rung only a record)
    the top rung's run is the trial's outcome

Because a resumed run is bitwise the run it would have been (:mod:`autopeft.training.trial_run`), a trial
interrupted anywhere -- mid-rung or at a rung -- continues from its last checkpoint to the same
result. A rung reached again after a resume is evaluated again (same weights, same metric) and its
decision is taken again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autopeft.core.errors import UserError
from autopeft.peft.plan import Plan
from autopeft.searching.interrupt import Interrupted, check, checked
from autopeft.training.config import TrainConfig
from autopeft.training.session import Metrics, Session, TrialOutcome
from autopeft.training.trial_run import Checkpoint, TrialRun, resume_run, start_run

log = logging.getLogger("autopeft")
CHECKPOINT_EVERY_S = 30.0
CHUNK_STEPS = 25  # how often (in steps) the time since the last checkpoint is looked at


@dataclass
class RungResult:
    steps: int  # fidelity reached
    rung_metrics: dict[int, float] = field(default_factory=dict)
    validation: Metrics | None = None  # at the last rung reached
    outcome: TrialOutcome | None = None  # set when the top rung was reached
    resumed_from: int | None = None  # checkpoint step the run continued from
    train_seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.outcome is not None


def _start(session: Session, plan: Plan, config: TrainConfig, checkpoint: Path) -> tuple[TrialRun, int | None]:
    if checkpoint.is_file():
        try:
            saved = Checkpoint.load(checkpoint)
            if saved.step <= config.steps:
                return resume_run(session, plan, config, saved), saved.step
        except (UserError, KeyError, ValueError, RuntimeError) as exc:  # unusable: train from the start
            log.warning("ignoring checkpoint %s (%s); training from step 0", checkpoint, exc)
    return start_run(session, plan, config), None


def train_through_rungs(session: Session, plan: Plan, config: TrainConfig, rungs: tuple[int, ...], checkpoint: Path,
                        on_rung: Callable[[int, Metrics], bool],
                        progress: Callable[[int, float], None] | None = None) -> RungResult:
    run, resumed = _start(session, plan, config, checkpoint)
    result = RungResult(steps=run.step, resumed_from=resumed)
    progress = checked(progress)  # Ctrl-C stops the run after a whole step (autopeft.searching.interrupt)
    try:
        for rung in rungs:
            if rung < run.step:
                continue
            try:
                check()
                _advance(run, rung, checkpoint, progress)
            except Interrupted:  # at a step boundary: save where the run is, so a resume loses nothing
                run.checkpoint().save(checkpoint)
                raise
            metrics = run.evaluate("validation")
            result.steps, result.validation = run.step, metrics
            result.rung_metrics[rung] = metrics.value
            top = rung == rungs[-1]
            if not top:
                run.checkpoint().save(checkpoint)
            go_on = on_rung(rung, metrics)  # at the top rung only a record; there is no next rung
            if top:
                result.outcome = run.outcome(metrics)
            if top or not go_on:
                break
        result.train_seconds = run.train_seconds
        return result
    finally:
        run.close()


def _advance(run: TrialRun, to_step: int, checkpoint: Path, progress: Callable[[int, float], None] | None) -> None:
    last_save = time.monotonic()
    while run.step < to_step:
        run.advance(min(to_step, run.step + CHUNK_STEPS), progress)
        if run.step < to_step and time.monotonic() - last_save > CHECKPOINT_EVERY_S:
            run.checkpoint().save(checkpoint)
            last_save = time.monotonic()
