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
    s.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
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
