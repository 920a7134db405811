"""Running the soak: the search process (start, signal, wait, kill), the moment of a kill, and the loop of kills
and resumes with its state, checked after every run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import checks
from .checks import Checks
from .observe import Watcher
from .scenarios import SEARCH_TARGETS, SIGINT_WAIT_S, Durations, fire_at, retarget
from .snapshot import TRAINED, State, interrupted_trials, read_state

POLL_S = 0.015


class Run:
    """One ``autopeft search`` process, its log (stderr) and what the watcher saw in the study."""

    def __init__(self, command: list[str], out: Path, log: Path, cpu: int | None, trials: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        self._err = open(log, "w")  # noqa: SIM115 - closed in close()
        self._stdout = open(log.with_suffix(".out"), "w")  # noqa: SIM115
        started = time.monotonic()
        launched = datetime.now()  # Optuna stamps datetime_start in naive local time
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=self._stdout,
                                        stderr=self._err, preexec_fn=pin)
        self.watch = Watcher(log, out / "study.db", trials, started, launched)
        self.log = self.watch.log

    def now(self) -> float:
        return self.watch.now()

    def alive(self) -> bool:
        return self.process.poll() is None

    def poll(self) -> None:
        self.watch.poll()

    def phase(self) -> tuple[str, str]:
        return self.watch.phase()

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.process.poll() is not None:
                self.close()
        return code

    def follow(self, timeout: float) -> int | None:
        """Watch the run until it exits by itself (None: still running after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.05)
        return self.wait(0.1)

    def close(self) -> None:
        self.watch.close()
        for handle in (self._err, self._stdout):
            handle.close()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()
        self.close()


def wait_for_moment(run: Run, kill: dict[str, Any], durations: Durations, deadline: float) -> str:
    """Poll until the kill's moment: 'moment', 'retargeted' (the search reached its final stage first),
    'deadline' (out of time: fire now) or 'ended' (the process exited by itself)."""
    outcome = "moment"
    while True:
        run.poll()
        if not run.alive():
            return "ended"
        if kill["target"] in SEARCH_TARGETS and run.log.has("final-start"):
            retarget(kill)
            outcome = "retargeted"
        delay = durations.delay(kill, run.log)
        due = fire_at(kill, run.log, delay)
        if due is not None and run.now() >= due:
            kill["delay_s"] = round(delay, 3)
            return outcome
        if time.monotonic() > deadline:
            return "deadline"
        time.sleep(POLL_S)


def send(run: Run, kind: str, rng: random.Random) -> tuple[int | None, float]:
    """Signal the run; returns (exit code, seconds from the signal to the exit)."""
    sent = time.monotonic()
    if kind == "SIGKILL":
        run.process.send_signal(signal.SIGKILL)
    else:
        run.process.send_signal(signal.SIGINT)
        if kind == "SIGINT x2":
            time.sleep(rng.uniform(0.05, 0.5))
            if run.alive():
                run.process.send_signal(signal.SIGINT)
    code = run.wait(SIGINT_WAIT_S)
    if code is None:  # did not stop: a violation; clean up
        run.kill()
    return code, time.monotonic() - sent


# --- the soak ---------------------------------------------------------------------------------------
@dataclass
class Setup:
    """What the soak runs, fixed before its first run."""

    command: list[str]
    shown: list[str]  # the command as recorded: python, and <work> for the work directory
    out: Path
    work: Path
    cpu: int | None
    trials: int
    seeds: int
    plan: list[dict[str, Any]]
    seed: int
    rng: random.Random  # random.Random(seed): the kill plan was drawn from it, the double Ctrl-C gaps are
    time_limit: float
    start: float  # time.monotonic() at the start of the soak
    date: datetime  # the start, in UTC
    load_at_start: tuple[float, float, float]

    @property
    def kill_deadline(self) -> float:
        """The last stretch of the time limit is kept for letting the search finish (and the rerun)."""
        return self.start + self.time_limit - max(180.0, 0.3 * self.time_limit)


@dataclass
class Progress:
    """What the soak has done and found so far."""

    state: State  # the study after the last run
    runs: int = 0
    active: Run | None = None
    records: list[dict[str, Any]] = field(default_factory=list)  # one per planned kill
    final: dict[str, Any] = field(default_factory=dict)  # "finish" and "rerun"
    fresh_starts: dict[int, int] = field(default_factory=dict)  # trial -> fresh starts over all runs
    pending_resume: dict[str, Any] | None = None  # the previous kill's record, checked by the next run
    unstarted: dict[int, int] = field(default_factory=dict)  # killed before training, not found stale -> kill
    unstarted_done: list[dict[str, Any]] = field(default_factory=list)


class Soak:
    """The kills, one run each, then a run to the end and a rerun of the finished study."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.durations = Durations()
        self.progress = Progress(state=read_state(setup.out))

    def run(self) -> None:
        try:
            for index, kill in enumerate(self.setup.plan, 1):
                if time.monotonic() > self.setup.kill_deadline:
                    kill["skipped"] = "time limit: the rest of the time is kept for finishing the search"
                    self.progress.records.append({"kill": index, **kill})
                elif not self._kill(index, kill):
                    break
            for name in ("finish", "rerun"):
                if self._final_run(name) != 0:
                    break
        finally:
            active = self.progress.active
            if active is not None and active.alive():
                active.kill()

    def _new_run(self) -> Run:
        p, s = self.progress, self.setup
        p.runs += 1
        p.active = Run(s.command, s.out, s.work / "logs" / f"run-{p.runs:02d}.log", s.cpu, s.trials)
        return p.active

    def _checked(self, run: Run, signalled: str | None = None) -> tuple[State, Checks]:
        """The study after the run, and what must hold after any run; follows up the previous kill."""
        after = read_state(self.setup.out)
        checks.count_fresh_starts(run.log, self.progress.fresh_starts)
        check = checks.after_run(self.progress.state, after, run.log, self.progress.fresh_starts,
                                 self.setup.trials, signalled)
        return after, check

    def _follow_up(self, after: State, run: Run) -> None:
        """Attach to the previous kill what the run after it found; follow trials killed before training."""
        p = self.progress
        for n, index in list(p.unstarted.items()):
            t = after.trials[n]
            if t["finished"]:
                p.unstarted.pop(n)
                p.unstarted_done.append({
                    "trial": n, "kill": index, "state": t["state"], "reason": t["reason"], "found_in_run": p.runs,
                    "running_for_s": round((t["complete"] - t["start"]).total_seconds(), 1)
                    if t["complete"] and t["start"] else None})
        if p.pending_resume is None:
            return
        check, outcomes = checks.after_resume(p.pending_resume["_interrupted"], after, run.log)
        p.pending_resume["resume"] = {"run": p.runs, "trials": outcomes, "checks": check.record()}

    def _kill(self, index: int, kill: dict[str, Any]) -> bool:
        """Start a run, signal it at the kill's moment and check it; False if it ended by itself first."""
        p = self.progress
        run = self._new_run()
        moment = wait_for_moment(run, kill, self.durations, self.setup.kill_deadline)
        record: dict[str, Any] = {"kill": index, "run": p.runs, **kill}
        if moment == "ended":  # finished by itself before the moment: no kill
            self._ended(run, index, record)
            return False
        category, detail = run.phase()
        elapsed = run.now()
        code, took = send(run, kill["signal"], self.setup.rng)
        self.durations.learn(run.log)
        after, check = self._checked(run, kill["signal"])
        check.extend(checks.after_signal(kill["signal"], code, run.log, p.state, after))
        self._follow_up(after, run)
        interrupted = interrupted_trials(after)
        p.unstarted.update({n: index for n, t in interrupted.items() if t["state"] == "RUNNING"
                            and t["status"] is None and n not in p.unstarted})
        record.update(moment=moment, phase=category, phase_detail=detail, run_elapsed_s=round(elapsed, 2),
                      soak_elapsed_s=round(time.monotonic() - self.setup.start, 1), exit_code=code,
                      exit_s=round(took, 2), last_log_line=next((x for x in reversed(run.log.lines)), None),
                      final_stage_wait_s=run.log.final_wait(),
                      interrupted=interrupted, checks=check.record(),
                      study_after={"trained": after.count(TRAINED), "trials": len(after.trials),
                                   "retrainings_done": len(after.seed_metrics)})
        record["_interrupted"] = interrupted
        p.records.append(record)
        p.pending_resume = record
        p.state = after
        print(f"kill {index:2d}: {kill['signal']:9s} at {elapsed:6.2f} s of run {p.runs:2d} [{category}] {detail}"
              f" -> exit {code}; {len(check.failed)} failed checks", flush=True)
        return True

    def _ended(self, run: Run, index: int, record: dict[str, Any]) -> None:
        """The search ended by itself before the kill's moment: check the run, record the kill as skipped."""
        code = run.follow(60)
        self.durations.learn(run.log)
        after, check = self._checked(run)
        self._follow_up(after, run)
        record.update(skipped=f"the search ended (exit {code}) before the moment", exit_code=code,
                      checks=check.record())
        self.progress.records.append(record)
        self.progress.state = after
        self.progress.pending_resume = None
        print(f"kill {index:2d}: the search ended by itself (exit {code})", flush=True)

    def _final_run(self, name: str) -> int | None:
        """The run named "finish" lets the search run to its end; "rerun" runs it again on the finished study."""
        p, s = self.progress, self.setup
        run = self._new_run()
        remaining = max(60.0, s.start + s.time_limit - time.monotonic())
        code = run.follow(remaining)
        if code is None:
            run.kill()
        after, check = self._checked(run)
        check("exit-code-0", code == 0, code if code is not None else f"not finished within {remaining:.0f} s")
        if name == "finish":
            self._follow_up(after, run)
        else:
            started = [e.detail for e in run.log.events if e.kind in ("trial-start", "final-job")]
            check("rerun-trains-nothing", not started, started)
        report, summary = checks.report(s.out, after, s.trials, s.seeds)
        check.extend(report)
        p.final[name] = {"run": p.runs, "exit_code": code, "run_s": round(run.now(), 1),
                         "final_stage_wait_s": run.log.final_wait(), "checks": check.record()}
        if name == "finish":
            p.final[name]["summary"] = summary_record(summary)
        p.state = after
        p.pending_resume = None
        print(f"{name}: exit {code} in {run.now():.1f} s; {len(check.failed)} failed checks", flush=True)
        return code


def summary_record(summary: dict[str, Any]) -> dict[str, Any]:
    """What results.json keeps of the finished search's summary.json."""
    return {"trials": summary.get("trials"), "front": [e["trial"] for e in summary.get("front", [])],
            "best": {k: (summary.get("best") or {}).get(k) for k in ("trial", "validation", "test", "plan")},
            "compute": summary.get("compute")}
