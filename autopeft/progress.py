"""Progress while searching: a live step bar on a terminal, plain log lines otherwise (CI, pipes)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autopeft.budget import format_count


class Reporter:
    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.out = Console(highlight=False)
        self.quiet = quiet
        self._progress: Progress | None = None

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[autopeft] {message}", markup=False)

    def trial_start(self, number: int, index: int, total: int, summary: str, params: int, pct: float) -> None:
        self.info(f"trial {number} ({index}/{total}): {format_count(params)} params ({pct:.3f}%) {summary}")

    def step_callback(self, steps: int) -> Callable[[int, float], None] | None:
        if self.quiet or not self.console.is_terminal:
            return None
        progress = Progress(TextColumn("  training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                            TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                            console=self.console, transient=True)
        task = progress.add_task("train", total=steps, loss=float("nan"))
        progress.start()

        def update(step: int, loss: float) -> None:
            progress.update(task, completed=step, loss=loss)
            if step >= steps:
                progress.stop()

        return update

    def trial_done(self, number: int, metric: str, value: float, seconds: float, front_size: int) -> None:
        self.info(f"trial {number}: validation {metric} {value:.4f} in {seconds:.1f}s; front has {front_size} plans")

    def trial_failed(self, number: int, reason: str) -> None:
        self.info(f"trial {number} failed: {reason}")

    def front(self, rows: list[dict[str, Any]], metric: str) -> None:
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
