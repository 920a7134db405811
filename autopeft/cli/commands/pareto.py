"""``autopeft pareto``: the Pareto front of a study as a table, JSON, or plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("pareto", help="print the Pareto front of a study (table, --json, --plot)")
    p.add_argument("study_dir")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--all", action="store_true", help="every trial, not only the front")
    p.add_argument("--plot", action="store_true",
                   help="also write pareto.png (matplotlib) and pareto.html (plotly) into the study directory")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autopeft.study.view import load_study_view

    view = load_study_view(Path(args.study_dir))
    trials = sorted(view.trials if args.all else view.front, key=lambda t: (t.params or 0, t.number))
    if args.json:
        print(json.dumps([t.row() for t in trials], indent=2, default=str))
    elif not trials:
        print("no completed trials yet")
    else:
        print_table(view, trials, args.all)
    if args.plot:
        from autopeft.report.plots import write_pareto_plots

        if not view.completed:
            print("no completed trials yet: nothing to plot")
            return 0
        written = write_pareto_plots(view, view.root)
        print(f"wrote {written['png']} and {written['html']}")
    return 0


def print_table(view, trials, show_state: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from autopeft.core.units import format_bytes, format_count

    console = Console(highlight=False)
    if not console.is_terminal:  # pipes and files: wide enough that plan summaries stay on one line
        console = Console(highlight=False, width=200)
    title = (f"{'Trials' if show_state else 'Pareto front'} of {view.root} ({len(trials)} plans; "
             f"validation {view.metric}, {'higher' if view.greater_is_better else 'lower'} is better)")
    table = Table(title=title, title_justify="left")
    columns = ["trial", *(["state"] if show_state else []), view.metric, "params", "% of base", "memory", "plan"]
    for name in columns:
        table.add_column(name, overflow="fold", justify="right" if name in ("params", "% of base") else "left")
    for t in trials:
        metric = "-" if t.metric_mean is None else f"{t.metric_mean:.4f}"
        if t.metric_std is not None:
            metric += f" ± {t.metric_std:.4f}"
        if t.collapsed_seeds:  # the mean mixes in runs that predict one class: say so where it is shown
            metric += f" ({len(t.collapsed_seeds)} of {len(t.retrain['seeds'])} seeds collapsed to one class)"
        state = [t.status + ("*" if t.on_front else "")] if show_state else []
        table.add_row(str(t.number), *state, metric, format_count(t.params) if t.params is not None else "-",
                      f"{t.params_pct:.3f}%" if t.params_pct is not None else "-", format_bytes(t.memory_bytes),
                      (f"(baseline {t.baseline}) " if t.baseline else "") + (t.summary or "-"))
    console.print(table)
    from autopeft.searching.uplift import describe_comparison

    line = describe_comparison(view.summary.get("baseline_comparison"))
    if line:
        console.print(line)
    if show_state:
        console.print("* = on the Pareto front")
