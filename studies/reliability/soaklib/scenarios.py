"""What to kill and when: kill targets and their delays, the seeded kill plan, when a kill is due, and the
typical durations of a search's phases (learnt from the runs so far) that scale the delays."""

from __future__ import annotations

import random
import statistics
from typing import Any

from .observe import Log

SEARCH_TARGETS = ("sampling", "mid-rung", "between-rungs")
SIGINT_WAIT_S = 180.0  # how long a signalled search may take to stop before it counts as a violation

# delay after the trigger: seconds, or (with a duration) a fraction of that phase's typical duration, learnt from
# the runs so far: startup = launch to the first "base model" line, segment = a trial's training from its
# start or a rung to the next rung, retrain = one final-stage retraining
DELAYS = {"startup": (0.1, 0.7, "startup"), "sampling": (0.0, 0.03, None), "mid-rung": (0.3, 0.95, "segment"),
          "between-rungs": (0.0, 0.08, None), "final-retrain": (0.05, 1.5, "retrain"),
          "final-report": (0.0, 0.3, None)}
DEFAULT_DURATION_S = {"startup": 5.0, "segment": 1.0, "retrain": 1.0}
# the events that trigger each target (the k-th of them, then the delay)
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


def retarget(kill: dict[str, Any]) -> None:
    """The search reached its final stage before a search-phase target was hit: aim at the first retraining
    instead (with a delay drawn from the kill's own, so that the plan stays a function of the seed)."""
    low, high, _ = DELAYS["final-retrain"]
    kill.update(target="final-retrain", occurrence=1, retargeted_from=kill["target"],
                delay=round(random.Random(kill["delay"]).uniform(low, high), 3))


def edges(log: Log, target: str) -> list[float]:
    """When each occurrence of the target's trigger was seen in this run."""
    found = []
    for e in log.events:
        kind = "rung-promoted" if e.kind == "rung" and e.detail["promoted"] else e.kind
        if kind in EDGES.get(target, ()):
            found.append(e.t)
    return found


def fire_at(kill: dict[str, Any], log: Log, delay: float) -> float | None:
    """The run time at which the kill is due (None: its trigger has not occurred often enough yet)."""
    if kill["target"] == "startup":
        return delay
    seen = edges(log, kill["target"])
    return seen[kill["occurrence"] - 1] + delay if len(seen) >= kill["occurrence"] else None


class Durations:
    """Typical durations of the phases, from every run's log so far (median; defaults before any)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = {k: [] for k in DEFAULT_DURATION_S}

    @staticmethod
    def of(log: Log) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {k: [] for k in DEFAULT_DURATION_S}
        last: dict[int, float] = {}
        job: float | None = None
        for e in log.events:
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

    def learn(self, log: Log) -> None:
        for k, values in self.of(log).items():
            self.seen[k] += values

    def typical(self, kind: str, log: Log | None = None) -> float:
        values = self.seen[kind] + (self.of(log)[kind] if log is not None else [])
        if not values and kind == "retrain":  # none seen yet: a retraining is a whole trial, all rungs
            return self.typical("segment", log) * max(1, len(log.rungs) if log is not None else 4)
        return statistics.median(values) if values else DEFAULT_DURATION_S[kind]

    def delay(self, kill: dict[str, Any], log: Log | None = None) -> float:
        duration = DELAYS[kill["target"]][2]
        return kill["delay"] * self.typical(duration, log) if duration else kill["delay"]
