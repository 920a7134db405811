"""Soak test of a resumable search (issue #10): kill a real ``autopeft search`` at random moments, resume it
with the same command each time, and check that nothing finished is ever lost, changed or trained twice.

One study directory, one command. The search is started as a subprocess and, N times, signalled at a
random moment (seeded; the seed is recorded): SIGKILL mostly, some Ctrl-C (SIGINT, which stops at the
next step boundary and saves), a few double Ctrl-C (the second one stops at once). After each kill the
same command is run again; after the last kill it is left to finish, and once more on the finished study.

Kill moments are spread over the phases of a search. Each kill has a target and a random delay; the
script watches the run's log and the study (read-only SQLite queries, every ~15 ms) and fires at the
target's k-th occurrence in that run (k random 1..3 for the search phases) plus the delay. Delays that
depend on the model are fractions of the phase's typical duration, learnt from the runs so far:

    startup         10-70% of the usual start-up (loading model and data, opening the study, recovering)
    sampling        0-30 ms after a trial was asked (plan being sampled and checked) or none runs (tell/ask)
    mid-rung        30-95% of a rung's training after a trial started, resumed, or was promoted
    between-rungs   0-80 ms after a rung metric was recorded (decision pending) or a promotion (the rung
                    checkpoint is written; the next rung starts)
    final-retrain   5-150% of a retraining into the final stage's first retraining of the run
    final-report    0-300 ms after the pick (test evaluation; front/, best/, summary.json being written)

Search-phase targets come first (shuffled), the final-stage ones last; when the search reaches its final
stage before a search-phase target was hit, the target becomes final-retrain. The phase *observed* at
the instant of the signal (from the study and the log, which can differ from the target) is recorded.

After every run (killed or not), from a copy of study.db (with its hot journal, so a kill mid-write
is rolled back exactly as the next run would):

- the database passes ``PRAGMA integrity_check``;
- every trial that had finished training before the run (state finished, user attr status complete or
  stopped) still has the same state, values, rung_metrics, seed and plan, and the same worker claim
  stamp (a retrained trial would be re-claimed); no such trial has a start line in the run's log;
- every final-stage retraining finished before the run (``trials/<n>/seed-<s>/metrics.json``) is
  neither started again nor rewritten;
- trials.csv has no duplicated trial number, and only numbers the study has; a trial number has at most
  one fresh (not "(resumed)") start line over all runs; trials trained or training <= --trials;
- exit codes: SIGKILL -9; Ctrl-C 130, or -2 (ended by the signal: during start-up, or the second Ctrl-C of
  a double one arriving after the first one's clean stop had restored Python's handler); after a single Ctrl-C no
  trial is left RUNNING and each "saved to continue: trial n at step s" matches the checkpoint on disk;
- the trials a kill interrupted are, after the resume, continued under their own number from the step of
  the checkpoint left on disk (``resumed_from_step``), their rung metrics recorded before the kill are
  unchanged (a resumed run is bitwise the uninterrupted one), or, if interrupted before training started,
  failed with that reason once found stale (how long that took is recorded: such a trial has no worker
  stamp yet, so autopeft.liveness waits for its 120 s grace period).

At the end: exit 0, summary.json, trials.csv (= the study's trial numbers), pareto.csv (= the summary's
front), front/<n>/adapter.safetensors and K retraining values per front plan, best/ with plan.json,
adapter.safetensors, autopeft_config.json, metrics.json, an adapter for every complete trial, exactly
--trials trials trained, no trial left running, no trials/*/checkpoint.safetensors. A rerun of the
finished study trains nothing and leaves the report complete.

Every search process runs pinned to one CPU (so ``--workers 1`` resolves to one torch thread) with
OMP_NUM_THREADS=1. Everything found goes to results.json; ``violations`` must be 0.

    .venv/bin/python studies/reliability/soak.py                         # tiny offline assets, ~3-5 min
    .venv/bin/python studies/reliability/soak.py --kills 30 --time-limit 1800 --seed 7
    .venv/bin/python studies/reliability/soak.py --real                  # minilm + rotten_tomatoes (~1 h)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TRAINED = ("complete", "stopped")
COUNTED = ("running", "complete", "stopped")
RESUMABLE = ("running", "complete", "stopped")
SEARCH_TARGETS = ("sampling", "mid-rung", "between-rungs")
SIGINT_WAIT_S = 180.0
POLL_S = 0.015
JUST_PROMOTED_S = 0.1  # a signal this soon after a promotion line counts as between rungs

# the tiny setup: a 42k-param BERT, 240 rows, LoRA on q/v per layer and site; rungs 60/90/135/180 with
# eta 1.5 so that most plans are promoted (promoted trials to kill) and some stopped; a trial takes ~1-3 s
# on one thread, so a run killed a few seconds after its start still makes progress
TINY_FLAGS = ("--budget", "1.2k", "--batch-size", "8", "--trials", "16", "--max-steps", "180", "--min-steps", "60",
              "--eta", "1.5", "--seeds", "2")


# --- assets -----------------------------------------------------------------------------------------
def tiny_assets(root: Path) -> tuple[str, str, str]:
    """A tiny random BERT with a word-level tokenizer, a learnable CSV (240 rows, label 1 iff the text
    has w7) and a LoRA q/v space: :mod:`autopeft.testing`'s assets, as the test suite uses them."""
    import torch

    from autopeft.testing import TINY_SPACE, tiny_csv, tiny_model_dir

    torch.set_num_threads(1)
    root.mkdir(parents=True, exist_ok=True)
    (root / "space.yaml").write_text(TINY_SPACE)
    return (str(tiny_model_dir(root / "model")), str(tiny_csv(root / "data.csv", n=240)),
            str(root / "space.yaml"))


def search_command(args: argparse.Namespace, work: Path) -> list[str]:
    out = str(work / "study")
    if args.real:  # the real defaults (hybrid space, 150 steps, eta 3, 3 seeds, 12 trials) on one worker
        base = ["--model", "minilm", "--dataset", "rotten_tomatoes"]
        flags: tuple[str, ...] = ()
    else:
        model, data, space = tiny_assets(work / "assets")
        base = ["--model", model, "--dataset", data, "--space", space]
        flags = TINY_FLAGS
    return [sys.executable, "-m", "autopeft", "search", *base, "--out", out, *flags, "--workers", "1",
            *args.search_args.split()]


def flag(command: list[str], name: str, default: str) -> str:
    """The last value of ``name`` in the command (later flags win, as in argparse)."""
    value = default
    for i, item in enumerate(command[:-1]):
        if item == name:
            value = command[i + 1]
    return value


# --- the machine ------------------------------------------------------------------------------------
def cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            name, *values = line.split()
            numbers = [int(v) for v in values]
            idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
            times[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return times


def least_busy_cpu() -> int:
    allowed = sorted(os.sched_getaffinity(0))
    first = cpu_times()
    time.sleep(1.0)
    second = cpu_times()

    def busy(cpu: int) -> float:
        (b0, t0), (b1, t1) = first.get(cpu, (0, 0)), second.get(cpu, (0, 1))
        return (b1 - b0) / max(1, t1 - t0)

    return min(allowed, key=busy)


def machine(cpu: int | None) -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor())

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def git(*argv: str) -> str | None:  # read-only: no index refresh (--no-optional-locks)
        done = subprocess.run(["git", "--no-optional-locks", *argv], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"cpu_model": model, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "search_pinned_to_cpu": cpu, "host": socket.gethostname(), "os": platform.platform(),
            "python": platform.python_version(), "torch": version("torch"), "transformers": version("transformers"),
            "optuna": version("optuna"), "autopeft": version("autopeft"), "git_commit": git("rev-parse", "HEAD"),
            "git_tracked_changes": None if status is None else bool(status)}


# --- the study, read from outside -------------------------------------------------------------------
@dataclass
class State:
    """What the study holds after a run (read from a copy; None fields: no study yet)."""

    integrity: str | None = None
    trials: dict[int, dict[str, Any]] = field(default_factory=dict)
    retrain: dict[str, Any] = field(default_factory=dict)  # study user attrs retrain:<n>
    seed_metrics: dict[str, str] = field(default_factory=dict)  # "n/seed" -> sha256 of metrics.json
    checkpoints: dict[int, int | None] = field(default_factory=dict)  # trial -> checkpoint step
    csv_numbers: list[int] | None = None
    layout: dict[str, Any] = field(default_factory=dict)  # workers and torch threads the search recorded

    def finished(self) -> dict[int, dict[str, Any]]:
        """Trials that finished training, with what must never change once they have."""
        return {n: {k: t[k] for k in ("state", "values", "rung_metrics", "seed", "plan")}
                for n, t in self.trials.items() if t["status"] in TRAINED and t["finished"]}

    def count(self, statuses: tuple[str, ...]) -> int:
        return sum(t["status"] in statuses and t["state"] != "FAIL" for t in self.trials.values())


def checkpoint_step(path: Path) -> int | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return int((f.metadata() or {}).get("step", -1))
    except Exception:  # noqa: BLE001 - unreadable: the search would ignore it and train from step 0
        return None


def read_state(out: Path) -> State:
    try:
        return _read_state(out)
    except Exception as exc:  # noqa: BLE001 - an unreadable study is a finding, not a crash of the soak
        return State(integrity=f"unreadable: {type(exc).__name__}: {exc}")


def _read_state(out: Path) -> State:
    import optuna

    state = State()
    if (out / "trials.csv").is_file():
        with open(out / "trials.csv", newline="") as f:
            state.csv_numbers = [int(row["number"]) for row in csv.DictReader(f)]
    for path in sorted(out.glob("trials/*/seed-*/metrics.json")):
        state.seed_metrics[f"{int(path.parent.parent.name)}/{path.parent.name[5:]}"] = \
            hashlib.sha256(path.read_bytes()).hexdigest()
    for path in sorted(out.glob("trials/*/checkpoint.safetensors")):
        state.checkpoints[int(path.parent.name)] = checkpoint_step(path)
    if not (out / "study.db").is_file():
        return state
    copy = Path(tempfile.mkdtemp(prefix="soak-db-"))
    try:
        # the database and its hot journal (a kill mid-transaction): opening the copy read-write rolls the
        # half-written transaction back, exactly as the next run will
        shutil.copy2(out / "study.db", copy / "study.db")
        if (out / "study.db-journal").is_file():
            shutil.copy2(out / "study.db-journal", copy / "study.db-journal")
        db = sqlite3.connect(copy / "study.db")
        try:
            state.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            db.close()
        try:
            study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{copy / 'study.db'}")
        except Exception:  # noqa: BLE001 - killed while the study was being created
            return state
        for t in study.get_trials(deepcopy=False):
            a = t.user_attrs
            state.trials[t.number] = {
                "state": t.state.name, "finished": t.state.is_finished(), "status": a.get("status"),
                "values": t.values, "rung_metrics": a.get("rung_metrics"), "seed": a.get("seed"),
                "plan": json.dumps(a.get("plan"), sort_keys=True), "steps": a.get("steps"),
                "claimed": (a.get("worker") or {}).get("claimed"), "reason": a.get("reason"),
                "interruptions": a.get("interruptions", 0), "resumed_from_step": a.get("resumed_from_step"),
                "start": t.datetime_start, "complete": t.datetime_complete}
        state.retrain = {k: v for k, v in study.user_attrs.items() if k.startswith("retrain:")}
        record = (study.user_attrs.get("settings") or {}).get("record") or {}
        state.layout = {k: record.get(k) for k in ("workers", "threads")}
        with contextlib.suppress(Exception):
            study._storage.engine.dispose()  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return state


# --- a running search, watched ----------------------------------------------------------------------
START = re.compile(r"\[autopeft\] trial (\d+) \((\d+)/(\d+)\): ")
RUNG = re.compile(r"\[autopeft\] trial (\d+): rung (\d+): .*?, (promoted|stopped):")
FINAL_JOB = re.compile(r"\[autopeft\] final stage: trial (\d+), seed (\d+)")
SAVED = re.compile(r"trial (\d+) at step (\d+)")
RUNGS = re.compile(r"rungs ([\d/]+) steps")


@dataclass
class Event:
    t: float  # seconds since the run started (when the watcher saw it)
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


class Run:
    """One ``autopeft search`` process, its log (stderr) and what the watcher saw in the study."""

    def __init__(self, command: list[str], log: Path, cpu: int | None, trials: int) -> None:
        self.log, self.trials = log, trials
        self.out = Path(flag(command, "--out", ""))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        self._err = open(log, "w")  # noqa: SIM115 - closed in wait()
        self._stdout = open(log.with_suffix(".out"), "w")  # noqa: SIM115
        self.started = time.monotonic()
        self.launched = datetime.now()  # Optuna stamps datetime_start in naive local time
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=self._stdout,
                                        stderr=self._err, preexec_fn=pin)
        self.events: list[Event] = []
        self.lines: list[str] = []
        self._pos, self._partial = 0, ""
        self._db: sqlite3.Connection | None = None
        self._study_id: int | None = None
        self.db: dict[str, Any] | None = None  # running/waiting trials and counts, from the last poll
        self._windows = {"sampling": False, "pending": False}
        self.rungs: list[int] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def alive(self) -> bool:
        return self.process.poll() is None

    def has(self, kind: str) -> bool:
        return any(e.kind == kind for e in self.events)

    def final_wait(self) -> float | None:
        """Seconds from the last trial's end to the final stage's start, when both happened in this run."""
        final = next((e.t for e in self.events if e.kind == "final-start"), None)
        ends = [e.t for e in self.events if e.kind == "trial-end" and final is not None and e.t <= final]
        return round(final - ends[-1], 2) if ends and final is not None else None

    # the log ---------------------------------------------------------------------------------------
    def _read_log(self) -> None:
        with open(self.log, "rb") as f:
            f.seek(self._pos)
            chunk = f.read()
        self._pos += len(chunk)
        text = self._partial + chunk.decode("utf-8", "replace")
        *complete, self._partial = text.split("\n")
        t = self.now()
        for raw in complete:
            line = raw.split("\r")[-1]
            at = line.find("[autopeft]")
            if at < 0:
                if line.startswith("interrupted") or line.startswith("error:") or "Traceback" in line:
                    self.lines.append(line)
                    self.events.append(Event(t, "exit-message", {"line": line}))
                continue
            line = line[at:]
            self.lines.append(line)
            self._event(t, line)

    def _event(self, t: float, line: str) -> None:
        if "] base model" in line:
            match = RUNGS.search(line)
            self.rungs = [int(x) for x in match.group(1).split("/")] if match else []
            self.events.append(Event(t, "ready"))
        elif match := START.search(line):
            self.events.append(Event(t, "trial-start", {"trial": int(match.group(1)),
                                                        "resumed": line.rstrip().endswith("(resumed)")}))
        elif match := RUNG.search(line):
            self.events.append(Event(t, "rung", {"trial": int(match.group(1)), "rung": int(match.group(2)),
                                                 "promoted": match.group(3) == "promoted"}))
        elif re.search(r"\] trial \d+: validation ", line) or re.search(r"\] trial \d+ pruned", line):
            self.events.append(Event(t, "trial-end"))
        elif "] final stage: retraining" in line:
            self.events.append(Event(t, "final-start"))
        elif match := FINAL_JOB.search(line):
            self.events.append(Event(t, "final-job", {"trial": int(match.group(1)), "seed": int(match.group(2))}))
        elif "] pick (" in line:
            self.events.append(Event(t, "pick"))
        elif "] best: trial" in line:
            self.events.append(Event(t, "best"))
        elif "] resuming interrupted trials" in line:
            self.events.append(Event(t, "recovered", {"line": line}))
        elif "] interrupted:" in line:
            self.events.append(Event(t, "interrupted", {"saved": {int(n): int(s) for n, s in SAVED.findall(
                line.split("saved to continue:", 1)[1].split(";")[0])} if "saved to continue:" in line else {}}))

    # the study -------------------------------------------------------------------------------------
    def _read_db(self) -> None:
        path = self.out / "study.db"
        try:
            if self._db is None:
                if not path.is_file():
                    return
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.05)
            if self._study_id is None:
                row = self._db.execute("SELECT study_id FROM studies WHERE study_name = 'autopeft'").fetchone()
                if row is None:
                    return
                self._study_id = row[0]
            rows = self._db.execute(
                "SELECT t.number, t.state, t.datetime_start, a.key, a.value_json FROM trials t "
                "LEFT JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id AND a.key IN ('status', 'steps', 'rung_metrics', 'rung_decisions') "
                "WHERE t.study_id = ? AND t.state IN ('RUNNING', 'WAITING')", (self._study_id,)).fetchall()
            counted = self._db.execute(
                "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.study_id = ? AND a.key = 'status' AND a.value_json IN ('\"running\"', '\"complete\"', "
                "'\"stopped\"') AND t.state != 'FAIL'", (self._study_id,)).fetchone()[0]
        except sqlite3.Error:
            return  # busy or mid-write: keep the last view
        trials: dict[int, dict[str, Any]] = {}
        for number, state, start, key, value in rows:
            entry = trials.setdefault(number, {"number": number, "state": state, "start": start})
            if key is not None:
                entry[key] = json.loads(value)
        # a RUNNING trial started (claimed) before this run was launched is an earlier run's, left by a kill
        # and not yet found stale: it is not what this run is doing
        since = self.launched.isoformat(sep=" ", timespec="microseconds")  # same clock as the child's
        running = [t for t in trials.values() if t["state"] == "RUNNING"]
        self.db = {"running": [t for t in running if (t["start"] or "") >= since],
                   "stale": [t["number"] for t in running if (t["start"] or "") < since],
                   "waiting": [t for t in trials.values() if t["state"] == "WAITING"], "counted": counted}

    def _pending(self, trial: dict[str, Any]) -> int | None:
        """A rung whose metric is recorded but whose promotion decision is not (yet)."""
        top = self.rungs[-1] if self.rungs else None
        pending = set(trial.get("rung_metrics") or {}) - set(trial.get("rung_decisions") or {}) - {str(top)}
        return int(max(pending, key=int)) if pending else None

    def poll(self) -> None:
        self._read_log()
        self._read_db()
        category, _ = self.phase(query=False)
        t = self.now()
        sampling = category == "sampling"
        pending = self.db is not None and any(self._pending(x) is not None for x in self.db["running"]
                                              if x.get("status") == "running")
        for name, on in (("sampling", sampling), ("pending", pending)):
            if on and not self._windows[name]:
                self.events.append(Event(t, f"{name}-window"))
            self._windows[name] = on

    def phase(self, query: bool = True) -> tuple[str, str]:
        """(category, detail) of what the search is doing now, from the log and the study."""
        if query:
            self._read_log()
            self._read_db()
        last = {e.kind: e for e in self.events}
        if "best" in last:
            return "final-stage", "report: best/ written, tables and summary.json being written"
        if "pick" in last:
            return "final-stage", "report: pick made; test evaluation, front/ and best/ being written"
        if "final-job" in last:
            d = last["final-job"].detail
            return "final-stage", f"retraining trial {d['trial']} seed {d['seed']} " \
                                  f"({self.now() - last['final-job'].t:.2f} s in)"
        if "final-start" in last:
            return "final-stage", "final stage started (front computed, adapters checked)"
        if "ready" not in last:
            return "startup", "loading the model and data, opening the study, recovering interrupted trials"
        if self.db is None:
            return "unknown", "study not readable"
        running = self.db["running"]
        stale = f" (trials {self.db['stale']} of an earlier run still RUNNING)" if self.db["stale"] else ""
        if not running:
            if self.db["counted"] >= self.trials:
                return "between-trials", "trial budget reached: waiting for running trials, then the final stage" \
                    + stale
            return "sampling", "no trial running: between trials (tell, recover, claim or ask the next)" + stale
        trial = running[0]
        n, status = trial["number"], trial.get("status")
        if status is None:
            return "sampling", f"trial {n} asked, its plan being sampled and checked"
        if status == "infeasible":
            return "sampling", f"trial {n} infeasible, its repaired copy being enqueued"
        if status in TRAINED:
            return "finishing", f"trial {n} outcome recorded ({status}), Optuna not told yet"
        pending = self._pending(trial)
        if pending is not None:
            return "between-rungs", f"trial {n} evaluated at rung {pending}, promotion decision pending"
        rung = next((e for e in reversed(self.events) if e.kind == "rung" and e.detail["trial"] == n), None)
        start = next((e for e in reversed(self.events) if e.kind == "trial-start" and e.detail["trial"] == n), None)
        if rung is not None and rung.detail["promoted"] and (start is None or rung.t > start.t) \
                and self.now() - rung.t < JUST_PROMOTED_S:
            return "between-rungs", f"trial {n} promoted at rung {rung.detail['rung']} " \
                                    f"{self.now() - rung.t:.2f} s ago (rung checkpoint written), next rung starting"
        steps = int(trial.get("steps") or 0)
        target = next((r for r in self.rungs if r > steps), None)
        resumed = " (resumed)" if start is not None and start.detail["resumed"] else ""
        return "mid-rung", f"trial {n}{resumed} training past step {steps} toward rung {target}"

    # the end ---------------------------------------------------------------------------------------
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
        with contextlib.suppress(Exception):
            self._read_log()
        for handle in (self._err, self._stdout):
            handle.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()
        self.close()


# --- kill plan and moments --------------------------------------------------------------------------
# delay after the trigger: seconds, or (with a duration) a fraction of that phase's typical duration, learnt from
# the runs so far: startup = launch to the first "base model" line, segment = a trial's training from its
# start or a rung to the next rung, retrain = one final-stage retraining
DELAYS = {"startup": (0.1, 0.7, "startup"), "sampling": (0.0, 0.03, None), "mid-rung": (0.3, 0.95, "segment"),
          "between-rungs": (0.0, 0.08, None), "final-retrain": (0.05, 1.5, "retrain"),
          "final-report": (0.0, 0.3, None)}
DEFAULT_DURATION_S = {"startup": 5.0, "segment": 1.0, "retrain": 1.0}
EDGES = {"sampling": ("sampling-window",), "mid-rung": ("trial-start", "rung-promoted"),
         "between-rungs": ("pending-window", "rung-promoted"), "final-retrain": ("final-job",), "final-report": ("pick",)}


def plan_kills(rng: random.Random, kills: int, sigint_share: float) -> list[dict[str, Any]]:
    finals = 0 if kills < 3 else max(1, round(kills / 4))
    startup = 1 if kills >= 6 else 0
    search = [SEARCH_TARGETS[i % len(SEARCH_TARGETS)] for i in range(kills - finals - startup)]
    rng.shuffle(search)
    if startup:
        search.insert(rng.randint(1, len(search)), "startup")
    final = ["final-retrain"] * (finals - 1) + ["final-report"] if finals >= 2 else ["final-retrain"] * finals
    targets = search + final
    # round(kills x share) Ctrl-C, a third of them double; a Ctrl-C after the pick would let the search
    # finish (nothing left to stop at), so the final-report kill is always a SIGKILL
    eligible = [i for i, target in enumerate(targets) if target != "final-report"]
    ctrl_c = rng.sample(eligible, min(len(eligible), round(kills * sigint_share)))
    double = set(ctrl_c[:len(ctrl_c) // 3])
    plan = []
    for i, target in enumerate(targets):
        kind = ("SIGINT x2" if i in double else "SIGINT") if i in ctrl_c else "SIGKILL"
        low, high, _ = DELAYS[target]
        plan.append({"target": target, "signal": kind,
                     "occurrence": 1 if target in ("startup", "final-retrain", "final-report") else rng.randint(1, 3),
                     "delay": round(rng.uniform(low, high), 3)})
    return plan


class Durations:
    """Typical durations of the phases, from every run's log so far (median; defaults before any)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = {k: [] for k in DEFAULT_DURATION_S}

    @staticmethod
    def of(run: Run) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {k: [] for k in DEFAULT_DURATION_S}
        last: dict[int, float] = {}
        job: float | None = None
        for e in run.events:
            if e.kind == "ready":
                found["startup"].append(e.t)
            elif e.kind in ("trial-start", "rung"):
                n = e.detail["trial"]
                if e.kind == "rung" and n in last:
                    found["segment"].append(e.t - last[n])
                last[n] = e.t
            elif e.kind in ("final-job", "pick"):
                if job is not None:
                    found["retrain"].append(e.t - job)
                job = e.t if e.kind == "final-job" else None
        return found

    def learn(self, run: Run) -> None:
        for k, values in self.of(run).items():
            self.seen[k] += values

    def typical(self, kind: str, run: Run | None = None) -> float:
        values = self.seen[kind] + (self.of(run)[kind] if run is not None else [])
        if not values and kind == "retrain":  # none seen yet: a retraining is a whole trial, all rungs
            return self.typical("segment", run) * max(1, len(run.rungs) if run is not None else 4)
        return statistics.median(values) if values else DEFAULT_DURATION_S[kind]

    def delay(self, kill: dict[str, Any], run: Run | None = None) -> float:
        duration = DELAYS[kill["target"]][2]
        return kill["delay"] * self.typical(duration, run) if duration else kill["delay"]


def edges(run: Run, target: str) -> list[float]:
    """When each occurrence of the target's trigger was seen in this run."""
    found = []
    for e in run.events:
        kind = "rung-promoted" if e.kind == "rung" and e.detail["promoted"] else e.kind
        if kind in EDGES.get(target, ()):
            found.append(e.t)
    return found


def wait_for_moment(run: Run, kill: dict[str, Any], durations: Durations, deadline: float) -> str:
    """Poll until the kill's moment: 'moment', 'retargeted' (the search reached its final stage first),
    'deadline' (out of time: fire now) or 'ended' (the process exited by itself)."""
    outcome = "moment"
    while True:
        run.poll()
        if not run.alive():
            return "ended"
        if kill["target"] in SEARCH_TARGETS and run.has("final-start"):
            low, high, _ = DELAYS["final-retrain"]
            kill.update(target="final-retrain", occurrence=1, retargeted_from=kill["target"],
                        delay=round(random.Random(kill["delay"]).uniform(low, high), 3))
            outcome = "retargeted"
        delay = durations.delay(kill, run)
        if kill["target"] == "startup":
            fire_at: float | None = delay
        else:
            seen = edges(run, kill["target"])
            fire_at = seen[kill["occurrence"] - 1] + delay if len(seen) >= kill["occurrence"] else None
        if fire_at is not None and run.now() >= fire_at:
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


# --- checks -----------------------------------------------------------------------------------------
class Checks:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def __call__(self, name: str, ok: bool, detail: Any = None) -> bool:
        if ok:
            self.passed.append(name)
        else:
            self.failed.append({"check": name, "detail": detail})
        return ok

    def record(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, **({"notes": self.notes} if self.notes else {})}


def check_run(check: Checks, before: State, after: State, run: Run, fresh_starts: dict[int, int],
              trials: int, signalled: str | None = None) -> None:
    """What must hold after any run, killed or not, against the state before it."""
    check("db-integrity", after.integrity in (None, "ok"), after.integrity)
    kept_before, kept_after = before.finished(), after.finished()
    changed = {n: {"before": r, "after": kept_after.get(n)} for n, r in kept_before.items() if kept_after.get(n) != r}
    check("finished-trials-kept", not changed, changed)
    reclaimed = [n for n in kept_before if after.trials.get(n, {}).get("claimed") != before.trials[n]["claimed"]]
    started = [e.detail["trial"] for e in run.events if e.kind == "trial-start"]
    check("finished-trials-not-trained-again", not reclaimed and not set(started) & set(kept_before),
          {"reclaimed": reclaimed, "started": sorted(set(started) & set(kept_before))})
    jobs = [f"{e.detail['trial']}/{e.detail['seed']}" for e in run.events if e.kind == "final-job"]
    rewritten = [k for k, h in before.seed_metrics.items() if after.seed_metrics.get(k) != h]
    check("finished-retrainings-not-redone", not set(jobs) & set(before.seed_metrics) and not rewritten,
          {"started": sorted(set(jobs) & set(before.seed_metrics)), "rewritten": rewritten})
    if after.csv_numbers is not None:
        dupes = sorted({n for n in after.csv_numbers if after.csv_numbers.count(n) > 1})
        check("trials-csv-no-duplicate", not dupes, dupes)
        check("trials-csv-numbers-in-study", set(after.csv_numbers) <= set(after.trials),
              sorted(set(after.csv_numbers) - set(after.trials)))
    for e in run.events:
        if e.kind == "trial-start" and not e.detail["resumed"]:
            fresh_starts[e.detail["trial"]] = fresh_starts.get(e.detail["trial"], 0) + 1
    twice = {n: c for n, c in fresh_starts.items() if c > 1}
    check("no-trial-started-fresh-twice", not twice, twice)
    check("trial-budget-kept", after.count(COUNTED) <= trials, {"trained or training": after.count(COUNTED)})
    tracebacks = [line for line in run.lines if "Traceback" in line]
    text = run.log.read_text(errors="replace").strip()
    if tracebacks and signalled in ("SIGINT", "SIGINT x2") and "[autopeft]" not in text \
            and text.endswith("KeyboardInterrupt"):
        # Ctrl-C while Python was still importing (before autopeft's CLI ran): Python's default traceback
        check.notes.append("Ctrl-C during Python's imports, before the CLI started: Python's own "
                           "KeyboardInterrupt traceback (nothing of the study was touched yet)")
    else:
        check("no-traceback", not tracebacks, tracebacks[:3])


def interrupted_trials(state: State) -> dict[int, dict[str, Any]]:
    """Trials a kill left unfinished: RUNNING (SIGKILL) or WAITING with training started (Ctrl-C)."""
    return {n: {"state": t["state"], "status": t["status"], "steps": t["steps"], "rung_metrics": t["rung_metrics"],
                "checkpoint_step": state.checkpoints.get(n), "interruptions": t["interruptions"]}
            for n, t in state.trials.items()
            if t["state"] == "RUNNING" or (t["state"] == "WAITING" and t["status"] in RESUMABLE)}


def check_resume(check: Checks, interrupted: dict[int, dict[str, Any]], after: State, run: Run) -> list[dict]:
    """How the trials a kill interrupted fared in the next run."""
    outcomes = []
    for n, was in interrupted.items():
        now = after.trials.get(n)
        if now is None:
            check(f"trial-{n}-still-in-study", False, "missing")
            continue
        starts = [e.detail["resumed"] for e in run.events if e.kind == "trial-start" and e.detail["trial"] == n]
        outcome = {"trial": n, "before": f"{was['state']} status={was['status']} steps={was['steps']} "
                                         f"checkpoint={was['checkpoint_step']}",
                   "after": f"{now['state']} status={now['status']} steps={now['steps']}"}
        if was["status"] in RESUMABLE:
            if starts:
                check(f"trial-{n}-continued-not-restarted", all(starts), starts)
                outcome["after"] += " (resumed under its own number)"
            check(f"trial-{n}-not-failed-as-unstarted",
                  not (now["state"] == "FAIL" and "before training started" in (now["reason"] or "")), now["reason"])
            old = was["rung_metrics"] or {}
            new = now["rung_metrics"] or {}
            check(f"trial-{n}-rung-metrics-unchanged", all(new.get(r) == v for r, v in old.items()),
                  {"before": old, "after": new})
            if now["finished"] and starts == [True]:
                expected = was["checkpoint_step"]
                if expected is not None and now["status"] in TRAINED and now["resumed_from_step"] is not None:
                    check(f"trial-{n}-resumed-from-its-checkpoint", now["resumed_from_step"] == expected,
                          {"checkpoint": expected, "resumed_from_step": now["resumed_from_step"]})
                    outcome["after"] += f", resumed from step {now['resumed_from_step']}"
        elif was["state"] == "RUNNING":  # killed before training started: no status, no worker stamp
            if now["state"] == "RUNNING" and now["claimed"] is None:
                # autopeft.liveness finds an unstamped RUNNING trial stale only GRACE_S after its start
                outcome["after"] += " (not found stale yet: no worker stamp, so only after the grace period)"
            else:
                check(f"trial-{n}-failed-as-interrupted",
                      now["state"] == "FAIL" and "interrupted" in (now["reason"] or ""), now)
                outcome["after"] += f" ({now['reason']})" if now["reason"] else ""
        outcomes.append(outcome)
    return outcomes


def check_signal(check: Checks, kind: str, code: int | None, run: Run, before: State, after: State) -> None:
    if code is None:
        check("stopped-within-wait", False, f"still running {SIGINT_WAIT_S:.0f} s after {kind}; killed")
        return
    if kind == "SIGKILL":
        check("exit-code", code == -signal.SIGKILL, code)
        return
    check("exit-code", code in (130, -signal.SIGINT), code)
    stopped = next((e for e in run.events if e.kind == "interrupted"), None)
    if kind == "SIGINT" and stopped is not None:  # the graceful path ran: everything put back and saved
        # (a trial an earlier SIGKILL left RUNNING before training started is not this run's)
        running = [n for n, t in after.trials.items() if t["state"] == "RUNNING"
                   and not (n in before.trials and before.trials[n]["start"] == t["start"])]
        check("ctrl-c-leaves-nothing-running", not running, running)
        saved = stopped.detail["saved"]
        wrong = {n: {"reported": s, "on_disk": after.checkpoints.get(n)} for n, s in saved.items()
                 if s and after.checkpoints.get(n) != s}
        check("ctrl-c-checkpoints-as-reported", not wrong, wrong)


def check_report(check: Checks, out: Path, after: State, trials: int, seeds: int) -> dict[str, Any]:
    """The final report of a finished search."""
    for name in ("summary.json", "trials.csv", "pareto.csv"):
        check(f"report-{name}", (out / name).is_file())
    for name in ("plan.json", "adapter.safetensors", "autopeft_config.json", "metrics.json"):
        check(f"report-best/{name}", (out / "best" / name).is_file())
    leftovers = sorted(str(p.relative_to(out)) for p in out.glob("trials/*/checkpoint.safetensors"))
    check("no-leftover-checkpoints", not leftovers, leftovers)
    unfinished = {n: t["state"] for n, t in after.trials.items() if not t["finished"]}
    check("all-trials-finished", not unfinished, unfinished)
    check("trained-trials-equal-budget", after.count(TRAINED) == trials, after.count(TRAINED))
    check("trials-csv-equals-study", after.csv_numbers is not None and sorted(after.csv_numbers) == sorted(after.trials),
          {"csv": after.csv_numbers, "study": sorted(after.trials)})
    complete = [n for n, t in after.trials.items() if t["state"] == "COMPLETE"]
    missing = [n for n in complete if not (out / "trials" / f"{n:04d}" / "adapter.safetensors").is_file()]
    check("complete-trials-have-adapters", not missing, missing)
    summary: dict[str, Any] = {}
    if (out / "summary.json").is_file() and (out / "pareto.csv").is_file():
        summary = json.loads((out / "summary.json").read_text())
        with open(out / "pareto.csv", newline="") as f:
            pareto = sorted(int(row["number"]) for row in csv.DictReader(f))
        front = sorted(e["trial"] for e in summary["front"])
        check("pareto-equals-summary-front", pareto == front, {"pareto.csv": pareto, "summary": front})
        bad = []
        for entry in summary["front"]:
            n, record = entry["trial"], entry["retrain"]
            if len(record["values"]) != seeds or not (out / "front" / f"{n:04d}" / "adapter.safetensors").is_file():
                bad.append(n)
            for seed, value in zip(record["seeds"][1:], record["values"][1:], strict=True):
                path = out / "trials" / f"{n:04d}" / f"seed-{seed}" / "metrics.json"
                if not path.is_file() or json.loads(path.read_text())["validation"][summary["metric"]] != value:
                    bad.append(f"{n}/seed-{seed}")
        check("front-retrainings-complete", not bad, bad)
    return summary


# --- the soak ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=12, help="interruptions (default 12)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds for the whole soak (default 900; 3600 with --real)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments (default: random, recorded)")
    parser.add_argument("--sigint-share", type=float, default=0.25,
                        help="share of kills that are Ctrl-C (SIGINT; a third of them double), default 0.25")
    parser.add_argument("--real", action="store_true", help="minilm + rotten_tomatoes with the search's defaults")
    parser.add_argument("--search-args", default="", help="extra flags for autopeft search, e.g. '--trials 6'")
    parser.add_argument("--cpu", default="auto", help="CPU to pin the search to: auto (least busy), none, or N")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (kept anyway on violations)")
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    time_limit = args.time_limit or (3600.0 if args.real else 900.0)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    soak_start, wall_start, load_at_start = time.monotonic(), datetime.now(timezone.utc), os.getloadavg()
    work = args.work or Path(tempfile.mkdtemp(prefix="autopeft-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    cpu = None if args.cpu == "none" else (least_busy_cpu() if args.cpu == "auto" else int(args.cpu))
    command = search_command(args, work)
    out = Path(flag(command, "--out", ""))
    if out.exists():
        raise SystemExit(f"{out} exists: the soak needs a fresh study directory (use another --work)")
    trials, seeds = int(flag(command, "--trials", "12")), int(flag(command, "--seeds", "3"))
    plan = plan_kills(rng, args.kills, args.sigint_share)
    # the last stretch of the time limit is kept for letting the search finish (and the rerun)
    kill_deadline = soak_start + time_limit - max(180.0, 0.3 * time_limit)
    shown = [c.replace(str(work), "<work>") for c in command]
    shown[0] = "python"
    print(f"soak: seed {seed}, {args.kills} kills, time limit {time_limit:.0f} s, work dir {work}, "
          f"search pinned to CPU {cpu}\n  {' '.join(shown)}", flush=True)

    records: list[dict[str, Any]] = []
    fresh_starts: dict[int, int] = {}
    state = read_state(out)
    pending_resume: dict[str, Any] | None = None  # the previous kill's record, checked by the next run
    runs = 0
    active: Run | None = None
    durations = Durations()

    def new_run() -> Run:
        nonlocal runs, active
        runs += 1
        active = Run(command, work / "logs" / f"run-{runs:02d}.log", cpu, trials)
        return active

    unstarted: dict[int, int] = {}  # trials killed before training started, not yet found stale -> kill
    unstarted_done: list[dict[str, Any]] = []

    def resume_checks(after: State, run: Run) -> None:
        """Attach to the previous kill what the run after it found; follow trials killed before training."""
        for n, index in list(unstarted.items()):
            t = after.trials[n]
            if t["finished"]:
                unstarted.pop(n)
                unstarted_done.append({
                    "trial": n, "kill": index, "state": t["state"], "reason": t["reason"], "found_in_run": runs,
                    "running_for_s": round((t["complete"] - t["start"]).total_seconds(), 1)
                    if t["complete"] and t["start"] else None})
        if pending_resume is None:
            return
        check = Checks()
        pending_resume["resume"] = {"run": runs, "trials": check_resume(check, pending_resume["_interrupted"],
                                                                        after, run), "checks": check.record()}

    try:
        for index, kill in enumerate(plan, 1):
            if time.monotonic() > kill_deadline:
                kill["skipped"] = "time limit: the rest of the time is kept for finishing the search"
                records.append({"kill": index, **kill})
                continue
            run = new_run()
            moment = wait_for_moment(run, kill, durations, kill_deadline)
            record: dict[str, Any] = {"kill": index, "run": runs, **kill}
            if moment == "ended":  # finished by itself before the moment: no kill
                code = run.follow(60)
                durations.learn(run)
                after = read_state(out)
                check = Checks()
                check_run(check, state, after, run, fresh_starts, trials)
                resume_checks(after, run)
                record.update(skipped=f"the search ended (exit {code}) before the moment", exit_code=code,
                              checks=check.record())
                records.append(record)
                state = after
                pending_resume = None
                print(f"kill {index:2d}: the search ended by itself (exit {code})", flush=True)
                break
            category, detail = run.phase()
            elapsed = run.now()
            code, took = send(run, kill["signal"], rng)
            durations.learn(run)
            after = read_state(out)
            check = Checks()
            check_run(check, state, after, run, fresh_starts, trials, kill["signal"])
            check_signal(check, kill["signal"], code, run, state, after)
            resume_checks(after, run)
            interrupted = interrupted_trials(after)
            unstarted.update({n: index for n, t in interrupted.items() if t["state"] == "RUNNING"
                              and t["status"] is None and n not in unstarted})
            record.update(moment=moment, phase=category, phase_detail=detail, run_elapsed_s=round(elapsed, 2),
                          soak_elapsed_s=round(time.monotonic() - soak_start, 1), exit_code=code,
                          exit_s=round(took, 2), last_log_line=next((x for x in reversed(run.lines)), None),
                          final_stage_wait_s=run.final_wait(),
                          interrupted=interrupted, checks=check.record(),
                          study_after={"trained": after.count(TRAINED), "trials": len(after.trials),
                                       "retrainings_done": len(after.seed_metrics)})
            record["_interrupted"] = interrupted
            records.append(record)
            pending_resume = record
            state = after
            print(f"kill {index:2d}: {kill['signal']:9s} at {elapsed:6.2f} s of run {runs:2d} [{category}] {detail}"
                  f" -> exit {code}; {len(check.failed)} failed checks", flush=True)

        # let it finish, then run it once more on the finished study
        final: dict[str, Any] = {}
        for name in ("finish", "rerun"):
            run = new_run()
            remaining = max(60.0, soak_start + time_limit - time.monotonic())
            code = run.follow(remaining)
            if code is None:
                run.kill()
            after = read_state(out)
            check = Checks()
            check_run(check, state, after, run, fresh_starts, trials)
            check("exit-code-0", code == 0, code if code is not None else f"not finished within {remaining:.0f} s")
            if name == "finish":
                resume_checks(after, run)
            else:
                started = [e.detail for e in run.events if e.kind in ("trial-start", "final-job")]
                check("rerun-trains-nothing", not started, started)
            summary = check_report(check, out, after, trials, seeds)
            final[name] = {"run": runs, "exit_code": code, "run_s": round(run.now(), 1),
                           "final_stage_wait_s": run.final_wait(), "checks": check.record()}
            if name == "finish":
                final[name]["summary"] = {
                    "trials": summary.get("trials"), "front": [e["trial"] for e in summary.get("front", [])],
                    "best": {k: (summary.get("best") or {}).get(k) for k in ("trial", "validation", "test", "plan")},
                    "compute": summary.get("compute")}
            state = after
            pending_resume = None
            print(f"{name}: exit {code} in {run.now():.1f} s; {len(check.failed)} failed checks", flush=True)
            if code != 0:
                break
    finally:
        if active is not None and active.alive():
            active.kill()

    # --- results ---
    for record in records:
        record.pop("_interrupted", None)
    violations = [{"where": f"kill {r['kill']}", **f} for r in records for f in r.get("checks", {}).get("failed", [])]
    violations += [{"where": f"kill {r['kill']} resume", **f} for r in records
                   for f in r.get("resume", {}).get("checks", {}).get("failed", [])]
    violations += [{"where": name, **f} for name, r in final.items() for f in r["checks"]["failed"]]
    done = [r for r in records if "phase" in r]
    by_status: dict[str, int] = {}
    for t in state.trials.values():
        key = t["status"] or t["state"].lower()
        by_status[key] = by_status.get(key, 0) + 1
    totals = {
        "kills": len(done), "kills_planned": len(plan),
        "signals": {s: sum(r["signal"] == s for r in done) for s in ("SIGKILL", "SIGINT", "SIGINT x2")},
        "phases": {p: sum(r["phase"] == p for r in done) for p in sorted({r["phase"] for r in done})},
        "resumes": sum(1 for r in done if "resume" in r), "runs": runs,
        "trials": {"complete": sum(t["state"] == "COMPLETE" for t in state.trials.values()),
                   "stopped": by_status.get("stopped", 0), "failed": sum(t["state"] == "FAIL" for t in
                                                                        state.trials.values()),
                   "infeasible": by_status.get("infeasible", 0), "total": len(state.trials), "by_status": by_status},
        "killed_before_training": {
            "trials": unstarted_done + [{"trial": n, "kill": i, "state": "still RUNNING"} for n, i in unstarted.items()],
            "note": "a trial killed while its plan was sampled has no worker stamp yet, so autopeft.liveness finds "
                    "it stale only GRACE_S (120 s) after its start; running_for_s = how long it stayed RUNNING"},
        "final_stage_wait_s": max([w for w in [r.get("final_stage_wait_s") for r in records]
                                   + [r.get("final_stage_wait_s") for r in final.values()] if w is not None],
                                  default=None),
        "interrupted_trials_resumed": sum(1 for r in done for t in r.get("resume", {}).get("trials", [])
                                          if "resumed under its own number" in t["after"]),
        "checks_passed": sum(len(r.get("checks", {}).get("passed", [])) + len(r.get("resume", {}).get(
            "checks", {}).get("passed", [])) for r in records) + sum(len(r["checks"]["passed"]) for r in final.values()),
        "violations": len(violations),
        "search_finished": final.get("finish", {}).get("exit_code") == 0,
        "wall_s": round(time.monotonic() - soak_start, 1),
        "typical_durations_s": {k: round(durations.typical(k), 2) for k in DEFAULT_DURATION_S},
    }
    host = machine(cpu)
    host["load_average_at_start"] = [round(x, 2) for x in load_at_start]
    host["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results = {
        "what": "studies/reliability/soak.py: a real autopeft search killed at random moments and resumed with "
                "the same command; checks after every run (see the script's docstring)",
        "date": wall_start.isoformat(timespec="seconds"),
        "settings": {"kills": args.kills, "time_limit_s": time_limit, "sigint_share": args.sigint_share,
                     "assets": "real (minilm + rotten_tomatoes)" if args.real else "tiny (built by the script)",
                     "command": shown, "trials": trials, "seeds": seeds, "env": {"OMP_NUM_THREADS": "1"},
                     "search_layout": state.layout,
                     "soak_command": " ".join(["python studies/reliability/soak.py", *(argv or sys.argv[1:])])},
        "seed": seed,
        "machine": host,
        "kills": records,
        "final": final,
        "totals": totals,
        "violations": violations,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, default=str).replace(str(work), "<work>") + "\n")
    print(f"kills {totals['kills']}, resumes {totals['resumes']}, trials {totals['trials']['complete']} complete / "
          f"{totals['trials']['stopped']} stopped / {totals['trials']['failed']} failed, "
          f"{totals['checks_passed']} checks passed, violations {len(violations)}, {totals['wall_s']:.0f} s; "
          f"results in {args.results}", flush=True)
    if violations or args.keep or args.work:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if violations or not totals["search_finished"] else 0


if __name__ == "__main__":
    sys.exit(main())
