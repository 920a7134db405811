"""A running search, watched from outside: its log (stderr) and, read-only, its live study; the phase it is in."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .snapshot import TRAINED

START = re.compile(r"\[autopeft\] trial (\d+) \((\d+)/(\d+)\): ")
RUNG = re.compile(r"\[autopeft\] trial (\d+): rung (\d+): .*?, (promoted|stopped):")
FINAL_JOB = re.compile(r"\[autopeft\] final stage: trial (\d+), seed (\d+)")
SAVED = re.compile(r"trial (\d+) at step (\d+)")
RUNGS = re.compile(r"rungs ([\d/]+) steps")
JUST_PROMOTED_S = 0.1  # a signal this soon after a promotion line counts as between rungs


@dataclass
class Event:
    t: float  # seconds since the run started (when the watcher saw it)
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


# --- the log ----------------------------------------------------------------------------------------
class Log:
    """A run's log, read as it grows: the lines that matter and the events they mark."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self.path, self._clock = path, clock
        self.events: list[Event] = []
        self.lines: list[str] = []
        self.rungs: list[int] = []  # the rung steps the search announced
        self._pos, self._partial = 0, ""

    def has(self, kind: str) -> bool:
        return any(e.kind == kind for e in self.events)

    def latest(self, kind: str, trial: int) -> Event | None:
        return next((e for e in reversed(self.events) if e.kind == kind and e.detail["trial"] == trial), None)

    def final_wait(self) -> float | None:
        """Seconds from the last trial's end to the final stage's start, when both happened in this run."""
        final = next((e.t for e in self.events if e.kind == "final-start"), None)
        ends = [e.t for e in self.events if e.kind == "trial-end" and final is not None and e.t <= final]
        return round(final - ends[-1], 2) if ends and final is not None else None

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def read(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._pos)
            chunk = f.read()
        self._pos += len(chunk)
        text = self._partial + chunk.decode("utf-8", "replace")
        *complete, self._partial = text.split("\n")
        t = self._clock()
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


# --- the live study ---------------------------------------------------------------------------------
def query_live_study(db: sqlite3.Connection, study_id: int | None) -> tuple[int, list[tuple], int] | None:
    """(study id, the RUNNING and WAITING trials with some user attrs, trials trained or training), or None
    before the study exists: the only raw SQL over Optuna's schema (tables studies, trials,
    trial_user_attributes) in the soak.

    Raw SQL on purpose: this reads the live study.db of a running search, every ~15 ms, through a read-only
    connection, while the search writes it. ``optuna.load_study`` would open the file read-write, set up and
    check its schema, and hold connections that take SQLite's locks against the search under test, and it
    costs far more than a poll allows; copying the database at every poll would too. After a run, the study
    is read through Optuna's API from a copy (:func:`snapshot.read_state`)."""
    if study_id is None:
        row = db.execute("SELECT study_id FROM studies WHERE study_name = 'autopeft'").fetchone()
        if row is None:
            return None
        study_id = row[0]
    rows = db.execute(
        "SELECT t.number, t.state, t.datetime_start, a.key, a.value_json FROM trials t "
        "LEFT JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id AND a.key IN ('status', 'steps', 'rung_metrics', 'rung_decisions') "
        "WHERE t.study_id = ? AND t.state IN ('RUNNING', 'WAITING')", (study_id,)).fetchall()
    counted = db.execute(
        "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        "WHERE t.study_id = ? AND a.key = 'status' AND a.value_json IN ('\"running\"', '\"complete\"', "
        "'\"stopped\"') AND t.state != 'FAIL'", (study_id,)).fetchone()[0]
    return study_id, rows, counted


class LiveStudy:
    """The study of a running search, polled read-only; ``view`` holds the last readable poll."""

    def __init__(self, path: Path, launched: datetime) -> None:
        self.path, self.launched = path, launched
        self.view: dict[str, Any] | None = None  # running/waiting trials and counts, from the last poll
        self._db: sqlite3.Connection | None = None
        self._study_id: int | None = None

    def poll(self) -> None:
        try:
            if self._db is None:
                if not self.path.is_file():
                    return
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=0.05)
            found = query_live_study(self._db, self._study_id)
        except sqlite3.Error:
            return  # busy or mid-write: keep the last view
        if found is not None:
            self._study_id, rows, counted = found
            self.view = self._view(rows, counted)

    def _view(self, rows: list[tuple], counted: int) -> dict[str, Any]:
        trials: dict[int, dict[str, Any]] = {}
        for number, state, start, key, value in rows:
            entry = trials.setdefault(number, {"number": number, "state": state, "start": start})
            if key is not None:
                entry[key] = json.loads(value)
        # a RUNNING trial started (claimed) before this run was launched is an earlier run's, left by a kill
        # and not yet found stale: it is not what this run is doing
        since = self.launched.isoformat(sep=" ", timespec="microseconds")  # same clock as the child's
        running = [t for t in trials.values() if t["state"] == "RUNNING"]
        return {"running": [t for t in running if (t["start"] or "") >= since],
                "stale": [t["number"] for t in running if (t["start"] or "") < since],
                "waiting": [t for t in trials.values() if t["state"] == "WAITING"], "counted": counted}

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# --- the phase --------------------------------------------------------------------------------------
def pending_rung(trial: dict[str, Any], rungs: list[int]) -> int | None:
    """A rung whose metric is recorded but whose promotion decision is not (yet)."""
    top = rungs[-1] if rungs else None
    pending = set(trial.get("rung_metrics") or {}) - set(trial.get("rung_decisions") or {}) - {str(top)}
    return int(max(pending, key=int)) if pending else None


def phase(log: Log, view: dict[str, Any] | None, trials: int, now: float) -> tuple[str, str]:
    """(category, detail) of what the search is doing, from its log and the last view of its study."""
    last = {e.kind: e for e in log.events}
    if "best" in last:
        return "final-stage", "report: best/ written, tables and summary.json being written"
    if "pick" in last:
        return "final-stage", "report: pick made; test evaluation, front/ and best/ being written"
    if "final-job" in last:
        d = last["final-job"].detail
        return "final-stage", f"retraining trial {d['trial']} seed {d['seed']} " \
                              f"({now - last['final-job'].t:.2f} s in)"
    if "final-start" in last:
        return "final-stage", "final stage started (front computed, adapters checked)"
    if "ready" not in last:
        return "startup", "loading the model and data, opening the study, recovering interrupted trials"
    if view is None:
        return "unknown", "study not readable"
    return _search_phase(log, view, trials, now)


def _search_phase(log: Log, view: dict[str, Any], trials: int, now: float) -> tuple[str, str]:
    running = view["running"]
    stale = f" (trials {view['stale']} of an earlier run still RUNNING)" if view["stale"] else ""
    if not running:
        if view["counted"] >= trials:
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
    pending = pending_rung(trial, log.rungs)
    if pending is not None:
        return "between-rungs", f"trial {n} evaluated at rung {pending}, promotion decision pending"
    rung, start = log.latest("rung", n), log.latest("trial-start", n)
    if rung is not None and rung.detail["promoted"] and (start is None or rung.t > start.t) \
            and now - rung.t < JUST_PROMOTED_S:
        return "between-rungs", f"trial {n} promoted at rung {rung.detail['rung']} " \
                                f"{now - rung.t:.2f} s ago (rung checkpoint written), next rung starting"
    steps = int(trial.get("steps") or 0)
    target = next((r for r in log.rungs if r > steps), None)
    resumed = " (resumed)" if start is not None and start.detail["resumed"] else ""
    return "mid-rung", f"trial {n}{resumed} training past step {steps} toward rung {target}"


# --- both, polled -----------------------------------------------------------------------------------
class Watcher:
    """A run's log and study, polled together; marks when the sampling and pending-decision windows open."""

    def __init__(self, log: Path, study_db: Path, trials: int, started: float, launched: datetime) -> None:
        self.started, self.trials = started, trials
        self.log = Log(log, self.now)
        self.study = LiveStudy(study_db, launched)
        self._windows = {"sampling": False, "pending": False}

    def now(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> None:
        self.log.read()
        self.study.poll()
        category, _ = self.phase(query=False)
        t = self.now()
        view = self.study.view
        sampling = category == "sampling"
        pending = view is not None and any(pending_rung(x, self.log.rungs) is not None for x in view["running"]
                                           if x.get("status") == "running")
        for name, on in (("sampling", sampling), ("pending", pending)):
            if on and not self._windows[name]:
                self.log.events.append(Event(t, f"{name}-window"))
            self._windows[name] = on

    def phase(self, query: bool = True) -> tuple[str, str]:
        """(category, detail) of what the search is doing now (``query``: read the log and study first)."""
        if query:
            self.log.read()
            self.study.poll()
        return phase(self.log, self.study.view, self.trials, self.now())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.log.read()
        self.study.close()
