"""results.json: the settings, the seed, the machine, one record per kill, the final runs, totals and violations."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .machine import machine
from .runner import Setup, Soak
from .scenarios import DEFAULT_DURATION_S

WHAT = ("studies/reliability/soak.py: a real autopeft search killed at random moments and resumed with the same "
        "command; checks after every run (see the docstring of studies/reliability/soaklib)")
UNSTARTED_NOTE = ("a trial killed while its plan was sampled has no worker stamp yet, so autopeft.searching.liveness "
                  "finds it stale only GRACE_S (120 s) after its start; running_for_s = how long it stayed RUNNING")


def violations(records: list[dict[str, Any]], final: dict[str, Any]) -> list[dict[str, Any]]:
    """Every failed check, with where: after a kill, in the run that resumed it, or in a final run."""
    found = [{"where": f"kill {r['kill']}", **f} for r in records for f in r.get("checks", {}).get("failed", [])]
    found += [{"where": f"kill {r['kill']} resume", **f} for r in records
              for f in r.get("resume", {}).get("checks", {}).get("failed", [])]
    found += [{"where": name, **f} for name, r in final.items() for f in r["checks"]["failed"]]
    return found


def trial_counts(state_trials: dict[int, dict[str, Any]]) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for t in state_trials.values():
        key = t["status"] or t["state"].lower()
        by_status[key] = by_status.get(key, 0) + 1
    return {"complete": sum(t["state"] == "COMPLETE" for t in state_trials.values()),
            "stopped": by_status.get("stopped", 0), "failed": sum(t["state"] == "FAIL" for t in state_trials.values()),
            "infeasible": by_status.get("infeasible", 0), "total": len(state_trials), "by_status": by_status}


def totals(setup: Setup, soak: Soak, violations_found: int) -> dict[str, Any]:
    p = soak.progress
    records, final = p.records, p.final
    done = [r for r in records if "phase" in r]
    return {
        "kills": len(done), "kills_planned": len(setup.plan),
        "signals": {s: sum(r["signal"] == s for r in done) for s in ("SIGKILL", "SIGINT", "SIGINT x2")},
        "phases": {ph: sum(r["phase"] == ph for r in done) for ph in sorted({r["phase"] for r in done})},
        "resumes": sum(1 for r in done if "resume" in r), "runs": p.runs,
        "trials": trial_counts(p.state.trials),
        "killed_before_training": {
            "trials": p.unstarted_done + [{"trial": n, "kill": i, "state": "still RUNNING"}
                                          for n, i in p.unstarted.items()],
            "note": UNSTARTED_NOTE},
        "final_stage_wait_s": max([w for w in [r.get("final_stage_wait_s") for r in records]
                                   + [r.get("final_stage_wait_s") for r in final.values()] if w is not None],
                                  default=None),
        "interrupted_trials_resumed": sum(1 for r in done for t in r.get("resume", {}).get("trials", [])
                                          if "resumed under its own number" in t["after"]),
        "checks_passed": sum(len(r.get("checks", {}).get("passed", [])) + len(r.get("resume", {}).get(
            "checks", {}).get("passed", [])) for r in records) + sum(len(r["checks"]["passed"]) for r in final.values()),
        "violations": violations_found,
        "search_finished": final.get("finish", {}).get("exit_code") == 0,
        "wall_s": round(time.monotonic() - setup.start, 1),
        "typical_durations_s": {k: round(soak.durations.typical(k), 2) for k in DEFAULT_DURATION_S},
    }


def build(args: argparse.Namespace, setup: Setup, soak: Soak, argv: list[str] | None) -> dict[str, Any]:
    """Everything results.json holds (the kill records lose their working copy of the interrupted trials)."""
    p = soak.progress
    for record in p.records:
        record.pop("_interrupted", None)
    found = violations(p.records, p.final)
    total = totals(setup, soak, len(found))
    host = machine(setup.cpu)
    host["load_average_at_start"] = [round(x, 2) for x in setup.load_at_start]
    host["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "what": WHAT,
        "date": setup.date.isoformat(timespec="seconds"),
        "settings": {"kills": args.kills, "time_limit_s": setup.time_limit, "sigint_share": args.sigint_share,
                     "assets": "real (minilm + rotten_tomatoes)" if args.real else "tiny (built by the script)",
                     "command": setup.shown, "trials": setup.trials, "seeds": setup.seeds,
                     "env": {"OMP_NUM_THREADS": "1"}, "search_layout": p.state.layout,
                     "soak_command": " ".join(["python studies/reliability/soak.py", *(argv or sys.argv[1:])])},
        "seed": setup.seed,
        "machine": host,
        "kills": p.records,
        "final": p.final,
        "totals": total,
        "violations": found,
    }


def write(path: Path, results: dict[str, Any], work: Path) -> None:
    """results.json, with <work> for the work directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str).replace(str(work), "<work>") + "\n")
