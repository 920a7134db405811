"""The study after a run, read from outside: its files, and a copy of study.db taken with its hot journal."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAINED = ("complete", "stopped")
COUNTED = ("running", "complete", "stopped")
RESUMABLE = ("running", "complete", "stopped")


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


def interrupted_trials(state: State) -> dict[int, dict[str, Any]]:
    """Trials a kill left unfinished: RUNNING (SIGKILL) or WAITING with training started (Ctrl-C)."""
    return {n: {"state": t["state"], "status": t["status"], "steps": t["steps"], "rung_metrics": t["rung_metrics"],
                "checkpoint_step": state.checkpoints.get(n), "interruptions": t["interruptions"]}
            for n, t in state.trials.items()
            if t["state"] == "RUNNING" or (t["state"] == "WAITING" and t["status"] in RESUMABLE)}


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
    state = State()
    _read_files(out, state)
    if not (out / "study.db").is_file():
        return state
    with database_copy(out) as path:
        db = sqlite3.connect(path)
        try:
            state.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            db.close()
        _read_study(path, state)
    return state


def _read_files(out: Path, state: State) -> None:
    """trials.csv's numbers, the final stage's retraining metrics (hashed) and the trials' checkpoint steps."""
    if (out / "trials.csv").is_file():
        with open(out / "trials.csv", newline="") as f:
            state.csv_numbers = [int(row["number"]) for row in csv.DictReader(f)]
    for path in sorted(out.glob("trials/*/seed-*/metrics.json")):
        state.seed_metrics[f"{int(path.parent.parent.name)}/{path.parent.name[5:]}"] = \
            hashlib.sha256(path.read_bytes()).hexdigest()
    for path in sorted(out.glob("trials/*/checkpoint.safetensors")):
        state.checkpoints[int(path.parent.name)] = checkpoint_step(path)


@contextlib.contextmanager
def database_copy(out: Path) -> Iterator[Path]:
    """A temporary copy of study.db, with its hot journal if a kill left one mid-transaction: opening the copy
    read-write rolls the half-written transaction back, exactly as the next run will."""
    copy = Path(tempfile.mkdtemp(prefix="soak-db-"))
    try:
        shutil.copy2(out / "study.db", copy / "study.db")
        if (out / "study.db-journal").is_file():
            shutil.copy2(out / "study.db-journal", copy / "study.db-journal")
        yield copy / "study.db"
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _read_study(path: Path, state: State) -> None:
    """The trials and the study's attributes, through Optuna's public API: on the copy, so that whatever
    Optuna sets up or locks when it opens a storage, the search never sees it."""
    import optuna

    try:
        study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{path}")
    except Exception:  # noqa: BLE001 - killed while the study was being created
        return
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
