"""The invariants: what must hold after every run (killed or not), after a signal, after a resume, and at the
end. Each check function returns the :class:`Checks` it made: the names passed and the violations found."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path
from typing import Any

from .observe import Log
from .scenarios import SIGINT_WAIT_S
from .snapshot import COUNTED, RESUMABLE, TRAINED, State


class Checks:
    """Checks made: the names of those that passed, the violations (name and detail), and notes."""

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

    def extend(self, other: Checks) -> Checks:
        self.passed += other.passed
        self.failed += other.failed
        self.notes += other.notes
        return self

    def record(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, **({"notes": self.notes} if self.notes else {})}


# --- after every run --------------------------------------------------------------------------------
def after_run(before: State, after: State, log: Log, fresh_starts: dict[int, int], trials: int,
              signalled: str | None = None) -> Checks:
    """What must hold after any run, killed or not, against the state before it (``fresh_starts``: fresh
    starts per trial number over all runs so far, this one included)."""
    check = Checks()
    check("db-integrity", after.integrity in (None, "ok"), after.integrity)
    kept_before, kept_after = before.finished(), after.finished()
    changed = {n: {"before": r, "after": kept_after.get(n)} for n, r in kept_before.items() if kept_after.get(n) != r}
    check("finished-trials-kept", not changed, changed)
    reclaimed = [n for n in kept_before if after.trials.get(n, {}).get("claimed") != before.trials[n]["claimed"]]
    started = [e.detail["trial"] for e in log.events if e.kind == "trial-start"]
    check("finished-trials-not-trained-again", not reclaimed and not set(started) & set(kept_before),
          {"reclaimed": reclaimed, "started": sorted(set(started) & set(kept_before))})
    jobs = [f"{e.detail['trial']}/{e.detail['seed']}" for e in log.events if e.kind == "final-job"]
    rewritten = [k for k, h in before.seed_metrics.items() if after.seed_metrics.get(k) != h]
    check("finished-retrainings-not-redone", not set(jobs) & set(before.seed_metrics) and not rewritten,
          {"started": sorted(set(jobs) & set(before.seed_metrics)), "rewritten": rewritten})
    if after.csv_numbers is not None:
        dupes = sorted({n for n in after.csv_numbers if after.csv_numbers.count(n) > 1})
        check("trials-csv-no-duplicate", not dupes, dupes)
        check("trials-csv-numbers-in-study", set(after.csv_numbers) <= set(after.trials),
              sorted(set(after.csv_numbers) - set(after.trials)))
    twice = {n: c for n, c in fresh_starts.items() if c > 1}
    check("no-trial-started-fresh-twice", not twice, twice)
    check("trial-budget-kept", after.count(COUNTED) <= trials, {"trained or training": after.count(COUNTED)})
    return check.extend(_tracebacks(log, signalled))


def count_fresh_starts(log: Log, fresh_starts: dict[int, int]) -> None:
    """Add the run's fresh (not "(resumed)") trial starts to the counts over all runs."""
    for e in log.events:
        if e.kind == "trial-start" and not e.detail["resumed"]:
            fresh_starts[e.detail["trial"]] = fresh_starts.get(e.detail["trial"], 0) + 1


def _tracebacks(log: Log, signalled: str | None) -> Checks:
    check = Checks()
    tracebacks = [line for line in log.lines if "Traceback" in line]
    text = log.text().strip()
    if tracebacks and signalled in ("SIGINT", "SIGINT x2") and "[autopeft]" not in text \
            and text.endswith("KeyboardInterrupt"):
        # Ctrl-C while Python was still importing (before autopeft's CLI ran): Python's default traceback
        check.notes.append("Ctrl-C during Python's imports, before the CLI started: Python's own "
                           "KeyboardInterrupt traceback (nothing of the study was touched yet)")
    else:
        check("no-traceback", not tracebacks, tracebacks[:3])
    return check


def after_signal(kind: str, code: int | None, log: Log, before: State, after: State) -> Checks:
    """The exit code of a signalled run; after a clean Ctrl-C stop, nothing running and checkpoints as reported."""
    check = Checks()
    if code is None:
        check("stopped-within-wait", False, f"still running {SIGINT_WAIT_S:.0f} s after {kind}; killed")
        return check
    if kind == "SIGKILL":
        check("exit-code", code == -signal.SIGKILL, code)
        return check
    check("exit-code", code in (130, -signal.SIGINT), code)
    stopped = next((e for e in log.events if e.kind == "interrupted"), None)
    if kind == "SIGINT" and stopped is not None:  # the graceful path ran: everything put back and saved
        # (a trial an earlier SIGKILL left RUNNING before training started is not this run's)
        running = [n for n, t in after.trials.items() if t["state"] == "RUNNING"
                   and not (n in before.trials and before.trials[n]["start"] == t["start"])]
        check("ctrl-c-leaves-nothing-running", not running, running)
        saved = stopped.detail["saved"]
        wrong = {n: {"reported": s, "on_disk": after.checkpoints.get(n)} for n, s in saved.items()
                 if s and after.checkpoints.get(n) != s}
        check("ctrl-c-checkpoints-as-reported", not wrong, wrong)
    return check


# --- after a resume ---------------------------------------------------------------------------------
def after_resume(interrupted: dict[int, dict[str, Any]], after: State, log: Log) -> tuple[Checks, list[dict]]:
    """How the trials a kill interrupted fared in the next run: the checks, and one outcome per trial."""
    check = Checks()
    outcomes = []
    for n, was in interrupted.items():
        now = after.trials.get(n)
        if now is None:
            check(f"trial-{n}-still-in-study", False, "missing")
            continue
        starts = [e.detail["resumed"] for e in log.events if e.kind == "trial-start" and e.detail["trial"] == n]
        outcome: dict[str, Any] = {
            "trial": n, "before": f"{was['state']} status={was['status']} steps={was['steps']} "
                                  f"checkpoint={was['checkpoint_step']}",
            "after": f"{now['state']} status={now['status']} steps={now['steps']}"}
        if was["status"] in RESUMABLE:
            outcome["after"] += _resumed(check, n, was, now, starts)
        elif was["state"] == "RUNNING":
            outcome["after"] += _unstarted(check, n, now)
        outcomes.append(outcome)
    return check, outcomes


def _resumed(check: Checks, n: int, was: dict[str, Any], now: dict[str, Any], starts: list[bool]) -> str:
    """A trial interrupted during training: continued under its number, from its checkpoint, its rung metrics
    kept. Returns what to add to the outcome."""
    said = ""
    if starts:
        check(f"trial-{n}-continued-not-restarted", all(starts), starts)
        said += " (resumed under its own number)"
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
            said += f", resumed from step {now['resumed_from_step']}"
    return said


def _unstarted(check: Checks, n: int, now: dict[str, Any]) -> str:
    """A trial killed before training started (no status, no worker stamp): failed as interrupted once found
    stale. Returns what to add to the outcome."""
    if now["state"] == "RUNNING" and now["claimed"] is None:
        # autopeft.searching.liveness finds an unstamped RUNNING trial stale only GRACE_S after its start
        return " (not found stale yet: no worker stamp, so only after the grace period)"
    check(f"trial-{n}-failed-as-interrupted", now["state"] == "FAIL" and "interrupted" in (now["reason"] or ""), now)
    return f" ({now['reason']})" if now["reason"] else ""


# --- at the end -------------------------------------------------------------------------------------
def report(out: Path, after: State, trials: int, seeds: int) -> tuple[Checks, dict[str, Any]]:
    """The final report of a finished search: the checks, and summary.json ({} if it or pareto.csv is missing)."""
    check = Checks()
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
        check.extend(_front(out, summary, seeds))
    return check, summary


def _front(out: Path, summary: dict[str, Any], seeds: int) -> Checks:
    """pareto.csv is the summary's front; every front plan has its adapter and K retraining values, each the
    validation metric of its retraining's metrics.json."""
    check = Checks()
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
    return check
