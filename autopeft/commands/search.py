"""``autopeft search``: search the Pareto front of PEFT plans."""

from __future__ import annotations

import argparse

from autopeft.commands.common import add_data_options, add_train_options, data_options, parse_duration
from autopeft.errors import UserError


def register(sub) -> None:
    s = sub.add_parser("search", help="search the Pareto front of PEFT plans")
    add_data_options(s)
    add_train_options(s, steps=150)
    s.add_argument("--budget", default="0.5%", help="max trainable params: 0.5%% of the base model, 120k, 1.5M")
    s.add_argument("--space", default="hybrid", help="preset name or YAML file (default: hybrid)")
    s.add_argument("--trials", type=int, default=12, help="trained trials to run (default 12)")
    s.add_argument("--time-budget", help="stop starting new trials after this long, e.g. 20m")
    s.add_argument("--out", help="study directory (default runs/<timestamp>); same --out resumes")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    s.add_argument("--max-failures", type=int, default=5, help="stop after this many failed trials")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from datetime import datetime

    from autopeft.progress import Reporter
    from autopeft.search import SearchSettings, run_search
    from autopeft.train import TrainConfig

    if args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    out = args.out or f"runs/{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    settings = SearchSettings(
        data=data_options(args),
        budget=args.budget, space=args.space, trials=args.trials,
        time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
        out=out, seed=args.seed, sampler=args.sampler, max_failures=args.max_failures,
        train=TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, precision=args.precision),
    )
    reporter = Reporter(quiet=args.quiet)
    reporter.info(f"study directory: {out}")
    run_search(settings, reporter)
    return 0
