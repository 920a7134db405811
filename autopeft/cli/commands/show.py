"""``autopeft show``: a plan as a layers x sites picture (PNG) and a text summary."""

from __future__ import annotations

import argparse

from autopeft.core.errors import UserError


def register(sub) -> None:
    s = sub.add_parser("show", help="draw a plan (plan.json, adapter dir, or a study's best) as a layers x sites grid")
    s.add_argument("source", help="plan.json, an adapter directory, or a study directory (its best plan)")
    s.add_argument("--png", help="write the picture to this PNG file")
    s.add_argument("--trial", type=int, help="with a study directory: show this trial's plan instead of the best")
    s.add_argument("--model", help="model whose layers and sites the plan targets (default: recorded with the plan)")
    s.add_argument("--readouts", action="store_true",
                   help="with a study searched with --strategy oneshot: which units the supernet kept at each "
                        "readout budget")
    s.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.readouts:
        return show_readouts(args.source)
    from autopeft.core.units import format_count
    from autopeft.peft.plan import params_by_method
    from autopeft.study.plan_source import resolve_plan_source

    source = resolve_plan_source(args.source, args.trial)
    plan, where = source.plan, source.where
    model = args.model or source.model
    try:
        from autopeft.training.models import arch_for

        arch = arch_for(model)
    except UserError as exc:
        if args.model:
            raise
        print(f"note: shapes of '{model}' unavailable ({exc}); drawing the plan without parameter counts")
        arch = None
    if arch is not None:
        counts = params_by_method(plan, arch)
        detail = ", ".join(f"{m} {format_count(n)}" for m, n in sorted(counts.items())) or "no adapter modules"
        print(f"{where}: {plan.describe(arch)}\n{format_count(sum(counts.values()))} params ({detail}) on {model}")
    else:
        print(f"{where}: {plan.describe()}")
    if args.png:
        from autopeft.report.plan_picture import draw_plan

        print(f"wrote {draw_plan(plan, args.png, arch)}")
    return 0


def show_readouts(source: str) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from autopeft.report.readout_grid import load_readouts, readout_grid
    from autopeft.study.layout import StudyLayout

    root = Path(source)
    if not root.is_dir():
        raise UserError(f"show --readouts: '{source}' is not a study directory; give the --out of a search")
    record = load_readouts(StudyLayout(root).oneshot_dir)
    if record is None:
        raise UserError(f"show --readouts: '{source}' has no one-shot readouts (oneshot/readouts.json); they exist "
                        "for searches run with --strategy oneshot or oneshot+bayes, once the supernet has trained")
    header, rows = readout_grid(record)
    console = Console(highlight=False)
    if not console.is_terminal:  # pipes and files: one line per readout
        console = Console(highlight=False, width=max(120, 12 * len(header)))
    table = Table(title=f"Units the supernet kept at each readout budget ({root}; blank = left out)",
                  title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if i in (1, 2) else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0
