"""Progress while searching: a live status line (and step bar) on a terminal, plain log lines otherwise.

The status says how far the search is: trials done (of the target), running, pruned, failed, the size
of the Pareto front, the best validation metric so far, and the time elapsed against ``--time-budget``::

    3/12 done · 1 running · 2 pruned · 0 failed · front 3 · best accuracy 0.7812 · 4m12s of 20m

On a TTY it is one live line at the bottom of the screen (rich ``Live``), above the current trial's
step bar; log messages scroll above it. When stderr is not a terminal (CI, pipes, files) the same text
is written as a plain ``[autopeft] status: ...`` line after every finished or failed trial.

The search feeds the counts through the event methods (``trial_start``, ``trial_done``,
``trial_failed``, ``trial_pruned``) or, when several workers share a study, through
:meth:`Reporter.sync`, which recounts from the Optuna study itself.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from autopeft.core.units import format_count

LOWER_IS_BETTER = ("loss", "perplexity")


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class SearchStatus:
    """What the status line shows; every field is optional except the counters."""

    done: int = 0
    running: int = 0
    pruned: int = 0
    failed: int = 0
    total: int | None = None
    front_size: int = 0
    metric: str | None = None
    best: float | None = None
    elapsed_s: float = 0.0
    time_budget_s: float | None = None

    def line(self) -> str:
        parts = [f"{self.done}/{self.total} done" if self.total else f"{self.done} done",
                 f"{self.running} running", f"{self.pruned} pruned", f"{self.failed} failed",
                 f"front {self.front_size}"]
        if self.best is not None:
            parts.append(f"best {self.metric or 'metric'} {self.best:.4f}")
        elapsed = format_duration(self.elapsed_s)
        parts.append(f"{elapsed} of {format_duration(self.time_budget_s)}" if self.time_budget_s else elapsed)
        return " · ".join(parts)


class _StatusText:
    """A renderable that re-reads the status on every refresh, so the elapsed time ticks."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def __rich__(self) -> Text:
        return Text(self.reporter.status().line(), style="bold")


class Reporter:
    def __init__(self, quiet: bool = False, time_budget_s: float | None = None, live: bool | None = None,
                 console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.out = Console(highlight=False)
        self.quiet = quiet
        #: live display only on a terminal, unless forced (tests)
        self.live = (not quiet and self.console.is_terminal) if live is None else live
        self._status = SearchStatus(time_budget_s=time_budget_s)
        self._start = time.time()
        self._greater: bool | None = None
        self._steps = Progress(TextColumn("  training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), console=self.console)
        self._live: Live | None = None

    # --- status ------------------------------------------------------------------------------
    def status(self) -> SearchStatus:
        self._status.elapsed_s = time.time() - self._start
        return self._status

    def search_started(self, total: int | None = None, time_budget_s: float | None = None, *,
                       metric: str | None = None, greater_is_better: bool | None = None) -> None:
        """Start the clock (``--time-budget`` counts from here) and the live line on a terminal."""
        self._start = time.time()
        self._status.total = total if total is not None else self._status.total
        self._status.time_budget_s = time_budget_s if time_budget_s is not None else self._status.time_budget_s
        self._status.metric = metric or self._status.metric
        if greater_is_better is not None:
            self._greater = greater_is_better
        self._start_live()

    def sync(self, study: Any, total: int | None = None, refresh: bool = True) -> None:
        """Recount every field from an Optuna study (for resumed studies and several workers); ``refresh``:
        also print the plain status line (off when an event method just printed it)."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        count = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
        s = self._status
        s.done, s.running = count[TrialState.COMPLETE], count[TrialState.RUNNING]
        s.pruned, s.failed = count[TrialState.PRUNED], count[TrialState.FAIL]
        s.total = total if total is not None else s.total
        if s.done:
            front = study.best_trials
            s.front_size = len(front)
            greater = study.directions[0].name == "MAXIMIZE"
            self._greater = greater
            values = [t.values[0] for t in front]
            s.best = max(values) if greater else min(values)
        if refresh:
            self._refresh_plain()

    def _record_best(self, metric: str, value: float) -> None:
        s = self._status
        s.metric = metric
        greater = self._greater if self._greater is not None else metric not in LOWER_IS_BETTER
        if s.best is None or (value > s.best if greater else value < s.best):
            s.best = value

    def _start_live(self) -> None:
        if self.live and self._live is None:
            self._live = Live(Group(_StatusText(self), self._steps), console=self.console, refresh_per_second=4,
                              transient=True)
            self._live.start()
            atexit.register(self.close)  # an error or Ctrl-C must not leave the terminal's cursor hidden

    def close(self) -> None:
        """Stop the live line (called by :meth:`front`; safe to call twice)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _refresh_plain(self) -> None:
        if not self.quiet and not self.live:
            self.console.print(f"[autopeft] status: {self.status().line()}", markup=False, soft_wrap=True)

    # --- events ------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            # soft_wrap: one message per line in log files (a terminal wraps long lines itself)
            self.console.print(f"[autopeft] {message}", markup=False, soft_wrap=True)

    def trial_start(self, number: int, index: int, total: int, summary: str, params: int, pct: float) -> None:
        self._status.total = total
        self._status.running += 1
        self._start_live()
        self.info(f"trial {number} ({index}/{total}): {format_count(params)} params ({pct:.3f}%) {summary}")

    def step_callback(self, steps: int) -> Callable[[int, float], None] | None:
        if self.quiet or not self.live:
            return None
        self._start_live()
        self._clear_steps()
        task = self._steps.add_task("train", total=steps, loss=float("nan"))

        def update(step: int, loss: float) -> None:
            self._steps.update(task, completed=step, loss=loss)

        return update

    def _clear_steps(self) -> None:
        for task in list(self._steps.task_ids):
            self._steps.remove_task(task)

    def trial_done(self, number: int, metric: str, value: float, seconds: float, front_size: int) -> None:
        self._clear_steps()
        s = self._status
        s.done += 1
        s.running = max(0, s.running - 1)
        s.front_size = front_size
        self._record_best(metric, value)
        self.info(f"trial {number}: validation {metric} {value:.4f} in {seconds:.1f}s; front has {front_size} plans")
        self._refresh_plain()

    def trial_failed(self, number: int, reason: str) -> None:
        self._clear_steps()
        self._status.failed += 1
        self._status.running = max(0, self._status.running - 1)
        self.info(f"trial {number} failed: {reason}")
        self._refresh_plain()

    def trial_pruned(self, number: int, reason: str = "", started: bool = False) -> None:
        """A trial stopped early (a lower rung) or never trained (over budget, ``started=False``)."""
        self._status.pruned += 1
        if started:
            self._clear_steps()
            self._status.running = max(0, self._status.running - 1)
            self.info(f"trial {number} pruned" + (f": {reason}" if reason else ""))
            self._refresh_plain()

    def front(self, rows: list[dict[str, Any]], metric: str) -> None:
        self.close()
        print_front(self.out, rows, metric)


def print_front(console: Console, rows: list[dict[str, Any]], metric: str) -> None:
    table = Table(title=f"Pareto front ({len(rows)} plans)", title_justify="left")
    for name in ("trial", metric, "params", "% of base", "plan"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(str(r["number"]), f"{r['metric']:.4f}", format_count(int(r["params"])),
                      f"{r['params_pct']:.3f}%", r["summary"])
    console.print(table, width=max(console.width, 100) if console.is_terminal else 160)
    sys.stdout.flush()
