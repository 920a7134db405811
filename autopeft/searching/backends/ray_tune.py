"""The Ray backend: Ray Tune runs the trials, on one machine or a cluster (``--ray-address``).

- Sampling: Ray's ``OptunaSearch`` on the autopeft study itself (same storage, same sampler), so the
  study directory and every trial record are exactly those of the Optuna backend. Its ``suggest``
  is the autopeft proposal (:mod:`autopeft.searching.proposal`): infeasible plans are recorded and repaired in
  the driver and never reach Ray; interrupted trials of an earlier run are claimed first.
- Rungs: :class:`ParetoRungScheduler`, a Ray ``TrialScheduler`` applying the Pareto-aware promotion
  rule (:mod:`autopeft.searching.promotion`) to every result reported at a rung; Ray's own schedulers (ASHA,
  HyperBand, PBT) take a single metric.
- Trials: each Ray trial trains one plan through the rungs (:mod:`autopeft.searching.rung_run`) with
  ``--ray-cpus-per-trial`` CPUs (torch threads) and ``--ray-gpus-per-trial`` GPUs, reporting once
  per rung; the model and data are loaded once per Ray worker process and reused across trials.
- Files: trials write their checkpoints and adapters into the study directory, so on a cluster of
  several machines ``--out`` must be on a filesystem every node sees (as Ray requires for its own
  storage path).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from autopeft.core.choices import TrialStatus
from autopeft.core.errors import UserError
from autopeft.searching.backends.local import STARTED_ATTR, prepare_study
from autopeft.searching.bookkeeping import (
    counted,
    out_of_time,
    record_complete,
    record_failed,
    record_rung,
    record_stopped,
    rung_entries,
    time_stop_messages,
    top_rung_front,
)
from autopeft.searching.context import SearchContext
from autopeft.searching.liveness import claim_interrupted
from autopeft.searching.objectives import METRIC_NAMES, Objectives
from autopeft.searching.progress import Reporter
from autopeft.searching.promotion import decide
from autopeft.searching.proposal import propose

METRIC_KEYS = tuple(METRIC_NAMES[n] for n in ("metric", "params", "memory"))
_SESSION_LOCK = threading.Lock()  # one plan at a time in a worker's model
_CACHE: dict[str, Any] = {}


# --- driver side: searcher and scheduler ------------------------------------------------------------
class AutopeftOptunaSearch(OptunaSearch):
    """OptunaSearch whose suggestions are autopeft proposals and whose results become autopeft trials."""

    def __init__(self, ctx: SearchContext, study: optuna.Study, reporter: Reporter) -> None:
        objectives = ctx.objectives
        super().__init__(space=lambda trial: None, metric=objectives.metric_names(),
                         mode=["max" if d == "maximize" else "min" for d in objectives.directions()],
                         sampler=study.sampler, study_name=ctx.settings.study_name, storage=study._storage)
        self.ctx = ctx
        self.reporter = reporter
        self.started = float(study.user_attrs[STARTED_ATTR])
        self.failures = 0
        self.failed_reason = ""

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        settings = self.ctx.settings
        if self.failures >= settings.max_failures:
            return Searcher.FINISHED
        interrupted = claim_interrupted(self._ot_study)
        if interrupted is None and out_of_time(self._ot_study, self.ctx.objectives, settings, self.started,
                                               time.time()):
            for line in time_stop_messages(self._ot_study, self.ctx.objectives, settings, self.started, time.time()):
                self.reporter.info(line)
            return Searcher.FINISHED
        trial = interrupted
        while True:
            trial = trial or self._ot_study.ask()
            proposal = propose(self.ctx, self._ot_study, trial)
            if proposal is not None:
                break
            self.reporter.trial_pruned(trial.number, trial.user_attrs.get("reason", ""))
            trial = None
        trial.set_user_attr("status", TrialStatus.RUNNING)
        self._ot_trials[trial_id] = trial
        arch = self.ctx.arch
        self.reporter.trial_start(trial.number, counted(self._ot_study, below=trial.number) + 1, settings.trials,
                                  proposal.plan.describe(arch), proposal.params,
                                  100 * proposal.params / self.ctx.base_params)
        return {"number": trial.number, "plan": proposal.plan.to_dict(), "train": asdict(proposal.config),
                "params": proposal.params, "memory": proposal.memory}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is None or "rung" not in result:
            return
        record_rung(trial, int(result["rung"]), result["rung_metric"])
        trial.set_user_attr("worker", {"host": result.get("hostname"), "pid": result.get("pid"),
                                       "node": result.get("node"), "beat": time.time(), "claimed": time.time()})
        trial.set_user_attr("node", result.get("node"))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is None:
            return
        ctx = self.ctx
        if result:
            self.on_trial_result(trial_id, result)
        del self._ot_trials[trial_id]
        number = trial.number
        if error or not result or "rung" not in result:
            self.failures += 1
            reason = "the Ray trial raised an error; see its log under ray/ in the study directory"
            record_failed(self._ot_study, trial, reason)
            self.reporter.trial_failed(number, reason)
        elif result.get("complete"):
            record = json.loads(result["record"])
            record_complete(self._ot_study, trial, record,
                            ctx.objectives.values(result["rung_metric"], trial.user_attrs["params"],
                                                  trial.user_attrs.get("memory_bytes")))
            self.reporter.trial_done(number, ctx.prepared.session.primary_metric, result["rung_metric"],
                                     record.get("duration_s", 0.0), len(top_rung_front(self._ot_study, ctx.objectives)))
        else:
            record_stopped(self._ot_study, trial, result["rung"])
            self.reporter.trial_pruned(number, f"stopped at rung {result['rung']}", started=True)
        ctx.files.write_tables(self._ot_study, ctx.base_params, top_rung_front(self._ot_study, ctx.objectives))

    # the study lives in the Optuna storage: nothing to pickle into Ray's experiment checkpoints
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        return None

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        return None


class ParetoRungScheduler(FIFOScheduler):
    """Continue a trial past a rung only if the Pareto-aware promotion rule says so (MO-ASHA).

    Every result that carries ``rung`` (steps) and ``rung_metric`` is ranked against all results
    at that rung -- from this run and, for a resumed study, from the study's trials -- by
    non-dominated sorting on the objectives plus crowding distance; see :mod:`autopeft.searching.promotion`.
    """

    def __init__(self, objectives: Objectives, rungs: tuple[int, ...], eta: float,
                 known: dict[int, dict[int, tuple[float, ...]]] | None = None) -> None:
        super().__init__()
        self.objectives = objectives
        self.rungs = rungs
        self.eta = eta
        self.at_rung: dict[int, dict[int, tuple[float, ...]]] = {r: dict((known or {}).get(r, {})) for r in rungs}
        self.decisions: dict[int, dict[int, str]] = {}

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        rung = result.get("rung")
        if rung is None or rung == self.rungs[-1] or rung not in self.at_rung:
            return TrialScheduler.CONTINUE
        config = trial.config
        number = int(config["number"])
        self.at_rung[rung][number] = self.objectives.minimised(result["rung_metric"], config["params"],
                                                              config.get("memory"))
        decision = decide(number, self.at_rung[rung], self.eta)
        self.decisions.setdefault(number, {})[rung] = decision.describe()
        return TrialScheduler.CONTINUE if decision.promoted else TrialScheduler.STOP


# --- worker side: the trainable -------------------------------------------------------------------
def _trial_context(record: dict[str, Any]):
    """Model, data, rungs and study files for a settings record, loaded once per Ray worker process."""
    from autopeft.searching.settings import SearchSettings
    from autopeft.study.files import StudyFiles
    from autopeft.training.pipeline import prepare

    key = json.dumps(record, sort_keys=True)
    if key not in _CACHE:
        _CACHE.clear()
        settings = SearchSettings.from_record(record)
        _CACHE[key] = (settings, prepare(settings.data), StudyFiles(Path(settings.out)))
    return _CACHE[key]


def train_trial(config: dict[str, Any], record: dict[str, Any], threads: int) -> None:
    """A Ray Tune function trainable: one plan through the rungs, one report per rung."""
    import socket

    import ray
    import torch

    from autopeft.peft.artifacts import save_adapter
    from autopeft.peft.plan import Plan
    from autopeft.searching.context import adapter_config
    from autopeft.searching.rung_run import train_through_rungs
    from autopeft.training.config import TrainConfig

    torch.set_num_threads(max(1, threads))
    settings, prepared, files = _trial_context(record)
    number, plan, train = int(config["number"]), Plan.from_dict(config["plan"]), TrainConfig(**config["train"])
    where = {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "hostname": socket.gethostname()}

    # every report carries the objectives at its rung (Ray checks that each result names the searcher's metrics)
    names = dict(zip(("metric", "params", "memory"), METRIC_KEYS, strict=True))

    def objectives(value: float) -> dict[str, Any]:
        return {names["metric"]: value, names["params"]: config["params"], names["memory"]: config["memory"]}

    def at_rung(rung: int, metrics) -> bool:
        if rung != settings.rungs[-1]:
            tune.report({"rung": rung, "rung_metric": metrics.value, **objectives(metrics.value), **where})
        return True

    with _SESSION_LOCK:
        result = train_through_rungs(prepared.session, plan, train, settings.rungs, files.checkpoint_path(number),
                                     at_rung)
    outcome = result.outcome
    assert outcome is not None  # a stopped trial never gets here: Ray ends it at its rung's report
    save_adapter(files.trial_dir(number), plan, outcome.state, adapter_config(prepared, train),
                 metrics={"validation": outcome.validation.values})
    files.checkpoint_path(number).unlink(missing_ok=True)
    record_attrs = {**outcome.record(), "rung_metrics": {str(k): v for k, v in result.rung_metrics.items()}}
    if result.resumed_from is not None:
        record_attrs["resumed_from_step"] = result.resumed_from
    tune.report({"rung": settings.rungs[-1], "rung_metric": outcome.validation.value, "complete": True,
                 "record": json.dumps(record_attrs), **objectives(outcome.validation.value), **where})


# --- the run ----------------------------------------------------------------------------------------
def run_ray(ctx: SearchContext, reporter: Reporter) -> optuna.Study:
    import ray

    settings = ctx.settings
    study = prepare_study(ctx, reporter)
    finished = sum(1 for t in study.get_trials(deepcopy=False)
                   if t.user_attrs.get("status") in (TrialStatus.COMPLETE, TrialStatus.STOPPED))
    remaining = settings.trials - finished
    if remaining <= 0:
        return study
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables on the terminal
    started_ray = not ray.is_initialized()
    if started_ray:
        try:
            ray.init(address=settings.ray_address, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING", configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"--ray-address {settings.ray_address}: cannot connect to Ray ({exc})") from None
    try:
        # a searcher gets one pending trial at a time by default, so trials would start one by one while
        # each actor loads the model; allow as many pending trials as the cluster runs at once
        slots = ray.cluster_resources().get("CPU", 1) / max(settings.ray_cpus_per_trial, 1e-3)
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(1, int(slots)))
        known = {r: rung_entries(study, ctx.objectives, r) for r in ctx.rungs}
        searcher = AutopeftOptunaSearch(ctx, study, reporter)
        scheduler = ParetoRungScheduler(ctx.objectives, ctx.rungs, settings.eta, known)
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, record=settings.to_record(),
                                 threads=max(1, int(settings.ray_cpus_per_trial))),
            {"cpu": settings.ray_cpus_per_trial, "gpu": settings.ray_gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                        reuse_actors=True),
            run_config=tune.RunConfig(name="tune", storage_path=str(ctx.files.ray_dir.resolve()), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0),
                                      log_to_file=True),
        )
        tuner.fit()
        if searcher.failures >= settings.max_failures:
            raise UserError(f"{searcher.failures} trials failed; see trials.csv and the Ray logs under "
                            f"{ctx.files.ray_dir}")
    finally:
        if started_ray:
            ray.shutdown()
    return optuna.load_study(study_name=settings.study_name, storage=study._storage)
