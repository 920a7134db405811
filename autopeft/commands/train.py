"""``autopeft train``: train a plan and save a reusable adapter directory."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from autopeft.commands.common import add_data_options, add_train_options, data_options


def register(sub) -> None:
    t = sub.add_parser("train", help="train a plan and save a reusable adapter directory")
    t.add_argument("--plan", required=True, help="plan.json, or an adapter/trial directory holding one")
    add_data_options(t)
    add_train_options(t, steps=300)
    t.add_argument("--epochs", type=float, help="train for this many epochs instead of --steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="adapter directory (default runs/train-<timestamp>)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autopeft.artifacts import save_adapter
    from autopeft.pipeline import prepare
    from autopeft.plan import Plan
    from autopeft.search import adapter_config
    from autopeft.train import TrainConfig

    plan = Plan.load(args.plan)
    prepared = prepare(data_options(args))
    arch = prepared.loaded.arch
    params = plan.num_params(arch)
    steps = args.steps
    if args.epochs is not None:
        per_epoch = max(1, len(prepared.session.splits["train"].input_ids) // args.batch_size)
        steps = max(1, int(round(args.epochs * per_epoch)))
    config = TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, precision=args.precision,
                         seed=args.seed)
    start = time.perf_counter()
    outcome = prepared.session.run(plan, config)
    test = prepared.session.evaluate_adapter(plan, outcome.state, "test", config)
    base = prepared.loaded.base_params
    metrics = {"validation": outcome.validation.values, "test": test.values, "adapter_params": params,
               "head_params": outcome.head_params, "params_pct": 100 * params / base, "steps": steps,
               "train_seconds": round(time.perf_counter() - start, 2), "step_time_s": outcome.step_time_s}
    out = Path(args.out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}")
    save_adapter(out, plan, outcome.state, adapter_config(prepared, config), metrics)
    if args.json:
        print(json.dumps({"out": str(out), **metrics}, indent=2))
    else:
        metric = prepared.session.primary_metric
        print(f"{plan.describe(arch)}: {params} params ({100 * params / base:.3f}%), validation {metric} "
              f"{outcome.validation.value:.4f}, test {metric} {test.value:.4f}, {steps} steps in "
              f"{metrics['train_seconds']}s; adapter in {out}")
    return 0
