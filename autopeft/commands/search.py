"""``autopeft search``: search the Pareto front of PEFT plans."""

from __future__ import annotations

import argparse

from autopeft.commands.common import add_data_options, add_train_options, data_options, parse_duration
from autopeft.errors import UserError

DEFAULT_MAX_STEPS = 150


def register(sub) -> None:
    s = sub.add_parser("search", help="search the Pareto front of PEFT plans")
    add_data_options(s)
    add_train_options(s, steps=DEFAULT_MAX_STEPS)
    g = s.add_argument_group("objectives and budgets")
    g.add_argument("--budget", help="max trainable params: 0.5%% of the base model, 120k, 1.5M "
                                    "(default: the space's budget, else 0.5%%)")
    g.add_argument("--memory", help="max estimated peak training memory, e.g. 8GiB, 512MiB")
    g.add_argument("--objectives", default="metric,params",
                   help="what to optimise: metric plus any of params, memory (default metric,params)")
    g = s.add_argument_group("search")
    g.add_argument("--space", default="hybrid", help="preset name or YAML file (default: hybrid)")
    g.add_argument("--trials", type=int, default=12, help="plans to train, at any rung (default 12)")
    g.add_argument("--time-budget", help="stop starting new trials after this long, e.g. 20m")
    g.add_argument("--sampler", choices=["tpe", "nsga2", "gp", "random"], default="tpe")
    g.add_argument("--seed", type=int, default=0, help="sampler seed; trial n trains with seed + n")
    g.add_argument("--max-failures", type=int, default=5, help="stop after this many failed trials")
    g = s.add_argument_group("multi-fidelity (rungs by training steps)")
    g.add_argument("--max-steps", dest="steps", type=int, default=argparse.SUPPRESS,
                   help=f"full-fidelity training steps, the top rung (default {DEFAULT_MAX_STEPS}; --steps is the "
                        "same option)")
    g.add_argument("--min-steps", type=int, help="steps of the first rung (default max-steps / eta; "
                                                 "= max-steps: no early stopping)")
    g.add_argument("--eta", type=float, default=3.0, help="rung growth factor; the top 1/eta of a rung "
                                                          "continue (default 3)")
    g = s.add_argument_group("final stage")
    g.add_argument("--seeds", type=int, default=3, help="retrain each front plan with this many seeds (default 3)")
    g.add_argument("--pick", choices=["max-metric", "knee"], default="max-metric",
                   help="best/ = best mean metric (default) or the front's knee")
    g = s.add_argument_group("where it runs")
    g.add_argument("--out", help="study directory (default runs/<timestamp>); same --out resumes")
    g.add_argument("--workers", default="auto",
                   help="local worker processes sharing the study: a number, or auto = one per core with one "
                        "torch thread each (default auto)")
    g.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://host/db (default: SQLite "
                                     "study.db in the study directory)")
    g.add_argument("--study-name", default="autopeft", help="study name in the storage (default autopeft)")
    g.add_argument("--backend", choices=["optuna", "ray"], default="optuna")
    g.add_argument("--ray-address", help="existing Ray cluster to connect to (default: start a local one)")
    g.add_argument("--ray-cpus-per-trial", type=float, default=1.0, help="CPUs per Ray trial (default 1)")
    g.add_argument("--ray-gpus-per-trial", type=float, default=0.0, help="GPUs per Ray trial (default 0)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from datetime import datetime

    from autopeft.objectives import parse_objectives
    from autopeft.progress import Reporter
    from autopeft.search import SearchSettings, run_search
    from autopeft.threads import resolve_workers
    from autopeft.train import TrainConfig

    if args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if not args.study_name.strip():
        raise UserError("--study-name must not be empty")
    if args.ray_cpus_per_trial <= 0 or args.ray_gpus_per_trial < 0:
        raise UserError("--ray-cpus-per-trial must be > 0 and --ray-gpus-per-trial >= 0")
    workers, threads = resolve_workers(args.workers)
    out = args.out or f"runs/{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    settings = SearchSettings(
        data=data_options(args),
        budget=args.budget, memory=args.memory, objectives=parse_objectives(args.objectives),
        space=args.space, trials=args.trials,
        time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
        out=out, seed=args.seed, sampler=args.sampler, max_failures=args.max_failures,
        train=TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, precision=args.precision),
        min_steps=args.min_steps, eta=args.eta, seeds=args.seeds, pick=args.pick,
        workers=workers, threads=threads, storage=args.storage, study_name=args.study_name,
        backend=args.backend, ray_address=args.ray_address, ray_cpus_per_trial=args.ray_cpus_per_trial,
        ray_gpus_per_trial=args.ray_gpus_per_trial,
    )
    settings.rungs  # noqa: B018 - rung arguments are checked before anything is loaded
    if args.memory:
        from autopeft.objectives import parse_memory_limit

        parse_memory_limit(args.memory)
    reporter = Reporter(quiet=args.quiet)
    reporter.info(f"study directory: {out}")
    run_search(settings, reporter)
    return 0
