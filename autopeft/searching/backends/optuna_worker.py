"""One worker of the Optuna backend: claim a trial, check its plan, train it rung by rung, tell. Repeat.

Every worker of a search -- the ``autopeft search`` process itself, its ``--workers`` processes, and
``autopeft worker`` processes on other machines -- runs this loop against the shared study:

1. put stale trials back in the queue (:mod:`autopeft.searching.liveness`) and claim one if there is any;
2. otherwise, while fewer than ``--trials`` plans are trained or training, ask Optuna for a new trial
   (which pops enqueued trials first: the warm start and repaired plans);
3. train it through the rungs; at each rung record ``rung_metrics`` and ``steps`` on the trial and
   apply the promotion rule (:mod:`autopeft.searching.promotion`) against every plan that reached that rung;
4. tell Optuna: COMPLETE with the objective values at the top rung, or PRUNED (``status=stopped``).

The trial budget counts plans that train (complete, stopped, or training); infeasible and failed
trials do not count. When two workers start the last trial at the same moment, the one with the
higher trial number puts its trial back in the queue (WAITING) instead of overshooting.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autopeft.core.choices import TRAINED_OR_TRAINING, TrialStatus
from autopeft.core.errors import UserError
from autopeft.core.faults import environment_error
from autopeft.peft.artifacts import save_adapter
from autopeft.searching.bookkeeping import (
    counted,
    out_of_time,
    record_complete,
    record_failed,
    record_rung,
    record_stopped,
    rung_entries,
    steps_spent,
    time_stop_messages,
    top_rung_front,
)
from autopeft.searching.context import SearchContext, adapter_config
from autopeft.searching.interrupt import check
from autopeft.searching.liveness import (
    Heartbeat,
    claim_interrupted,
    recover_stale,
    requeue,
    stamp_claim,
)
from autopeft.searching.progress import Reporter
from autopeft.searching.promotion import Decision, decide
from autopeft.searching.proposal import Proposal, propose
from autopeft.searching.rung_run import RungResult, train_through_rungs
from autopeft.training.session import Metrics

MAX_CONSECUTIVE_INFEASIBLE = 50  # repairs always fit, so this only guards against bugs
POLL_S = 2.0


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` column of a failed trial: what went wrong, in one line."""
    import torch

    from autopeft.training.session import DivergedError

    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return (f"out of memory ({detail}); lower --batch-size or --max-length, or set --memory to keep "
                "such plans out")
    if isinstance(exc, DivergedError):
        return f"diverged ({detail})"
    return detail


def _remove_checkpoint(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the trial directory of a stopped trial holds nothing else
        path.parent.rmdir()


@dataclass
class Worker:
    ctx: SearchContext
    study: optuna.Study
    reporter: Reporter
    started: float  # --time-budget counts from here
    wait_for_others: bool = False  # the coordinator waits for other workers' trials before the final stage

    def __post_init__(self) -> None:
        self.failures = 0
        self.infeasible_run = 0
        self.stop_announced = False

    def run(self) -> None:
        settings = self.ctx.settings
        while True:
            check()  # Ctrl-C between trials: stop here (autopeft.searching.interrupt)
            recover_stale(self.study)
            trial = claim_interrupted(self.study)
            if trial is None:
                no_time = out_of_time(self.study, self.ctx.objectives, settings, self.started, time.time())
                out_of_steps = settings.step_budget is not None and steps_spent(self.study) >= settings.step_budget
                # --strategy oneshot: the enqueued plans (warm start, baselines, readouts, repairs) only
                queue_done = settings.strategy == "oneshot" and not self.study.get_trials(
                    deepcopy=False, states=(TrialState.WAITING,))
                if no_time or out_of_steps or queue_done or counted(self.study) >= settings.trials:
                    if no_time and not self.stop_announced:  # once, not at every poll while others finish
                        self.stop_announced = True
                        for line in time_stop_messages(self.study, self.ctx.objectives, settings, self.started,
                                                       time.time()):
                            self.reporter.info(line)
                    if self.wait_for_others and self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                        time.sleep(POLL_S)
                        continue
                    return
                trial = self.study.ask()
            stamp_claim(self.study, trial._trial_id)
            self.run_trial(trial)

    # --- one trial -------------------------------------------------------------------------------
    def run_trial(self, trial: optuna.Trial) -> None:
        ctx, study = self.ctx, self.study
        resumed = trial.user_attrs.get("status") in TRAINED_OR_TRAINING
        proposal = propose(ctx, study, trial)
        if proposal is None:
            self.reporter.trial_pruned(trial.number, trial.user_attrs.get("reason", ""))
            self._sync()
            self.infeasible_run += 1
            if self.infeasible_run >= MAX_CONSECUTIVE_INFEASIBLE:
                raise UserError(f"{self.infeasible_run} sampled plans in a row are infeasible; raise --budget/"
                                "--memory or use a smaller space")
            return
        self.infeasible_run = 0
        trial.set_user_attr("status", TrialStatus.RUNNING)
        if not resumed and counted(study, below=trial.number) >= ctx.settings.trials:
            # another worker filled the budget first: leave this plan queued for a later run
            trial.set_user_attr("status", TrialStatus.QUEUED)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
            return
        plan, arch = proposal.plan, ctx.arch
        self.reporter.trial_start(trial.number, counted(study, below=trial.number) + 1, ctx.settings.trials,
                                  plan.describe(arch) + (" (resumed)" if resumed else ""), proposal.params,
                                  100 * proposal.params / ctx.base_params)
        try:
            with Heartbeat(study, trial._trial_id):
                result = train_through_rungs(
                    ctx.prepared.session, plan, proposal.config, ctx.rungs, ctx.files.checkpoint_path(trial.number),
                    on_rung=lambda rung, metrics: self._at_rung(trial, proposal, rung, metrics),
                    progress=self.reporter.step_callback(proposal.config.steps))
        except KeyboardInterrupt:  # Ctrl-C: the run saved a checkpoint; the trial goes back to the queue
            self._put_back(trial)
            raise
        except Exception as exc:  # noqa: BLE001 - a failing plan (NaN loss, a bug, OOM) must not end the search
            message = environment_error(exc)
            if message is not None:  # a full disk is not the plan's fault: stop, the trial stays resumable
                raise UserError(message) from None
            self._failed(trial, exc)
            return
        if result.resumed_from is not None:
            trial.set_user_attr("resumed_from_step", result.resumed_from)
        self._finish(trial, proposal, result)

    def _at_rung(self, trial: optuna.Trial, proposal: Proposal, rung: int, metrics: Metrics) -> bool:
        record_rung(trial, rung, metrics.value)
        if rung == self.ctx.rungs[-1]:
            return True
        entries = rung_entries(self.study, self.ctx.objectives, rung)
        entries[trial.number] = self.ctx.objectives.minimised(metrics.value, proposal.params, proposal.memory)
        decision = decide(trial.number, entries, self.ctx.settings.eta)
        self._record_decision(trial, rung, metrics, decision)
        return decision.promoted

    def _record_decision(self, trial: optuna.Trial, rung: int, metrics: Metrics, decision: Decision) -> None:
        text = f"rung {rung}: {metrics.name} {metrics.value:.4f}, {decision.describe()}"
        decisions = dict(trial.user_attrs.get("rung_decisions") or {})
        decisions[str(rung)] = text
        trial.set_user_attr("rung_decisions", decisions)
        self.reporter.info(f"trial {trial.number}: {text}")

    def _put_back(self, trial: optuna.Trial) -> None:
        """An interrupted trial returns to WAITING (resumed from its checkpoint by the next worker)."""
        with contextlib.suppress(Exception):  # a second Ctrl-C or a dead storage: liveness recovers it later
            requeue(self.study, trial)
            self.write_tables()

    def _failed(self, trial: optuna.Trial, exc: Exception) -> None:
        self.failures += 1
        reason = failure_reason(exc)
        record_failed(self.study, trial, reason)
        self.reporter.trial_failed(trial.number, reason)
        self._sync()
        self.write_tables()
        if self.failures >= self.ctx.settings.max_failures:
            raise UserError(f"{self.failures} trials failed (last: {reason}); see trials.csv. "
                            "Stopping; raise --max-failures to continue anyway") from None

    def _finish(self, trial: optuna.Trial, proposal: Proposal, result: RungResult) -> None:
        ctx = self.ctx
        checkpoint = ctx.files.checkpoint_path(trial.number)
        if result.complete:
            outcome = result.outcome
            assert outcome is not None
            save_adapter(ctx.files.trial_dir(trial.number), proposal.plan, outcome.state,
                         adapter_config(ctx.prepared, proposal.config), metrics={"validation": outcome.validation.values})
            record_complete(self.study, trial, outcome.record(),
                            ctx.objectives.values(outcome.validation.value, proposal.params, proposal.memory))
            self.reporter.trial_done(trial.number, outcome.validation.name, outcome.validation.value,
                                     outcome.duration_s, len(top_rung_front(self.study, ctx.objectives)))
        else:
            record_stopped(self.study, trial, result.steps,
                           {"validation": result.validation.values if result.validation else {},
                            "duration_s": round(result.train_seconds, 3)})
            self.reporter.trial_pruned(trial.number, f"stopped at rung {result.steps}", started=True)
        # only once the storage has the outcome: a kill before the tell resumes from the checkpoint
        _remove_checkpoint(checkpoint)
        self._sync()
        self.write_tables()

    def _sync(self) -> None:
        """Recount the live status from the study, so it includes the other workers' trials."""
        with contextlib.suppress(Exception):  # a status line must never end a search
            self.reporter.sync(self.study, total=self.ctx.settings.trials, refresh=False)

    def write_tables(self) -> None:
        self.ctx.files.write_tables(self.study, self.ctx.base_params, top_rung_front(self.study, self.ctx.objectives))

