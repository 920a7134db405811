"""``autopeft train``: train a plan and save a reusable adapter directory."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from autopeft.cli.commands.common import add_data_options, add_train_options, data_options_of


def register(sub) -> None:
    t = sub.add_parser("train", help="train a plan and save a reusable adapter directory")
    t.add_argument("--plan", required=True,
                   help="plan.json, an adapter directory, or a study directory (its best plan; STUDY_DIR:N for "
                        "trial N); model, data and lr default to what that adapter/study used")
    add_data_options(t)
    add_train_options(t, steps=300)
    # None = "not given": filled from the plan's adapter/study record, else the usual defaults (see inherit)
    t.set_defaults(**dict.fromkeys(INHERITED_DATA + INHERITED_TRAIN))
    t.add_argument("--epochs", type=float, help="train for this many epochs instead of --steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="adapter directory (default runs/train-<timestamp>)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(handler=run)


INHERITED_DATA = ("model", "dataset", "task", "text_column", "text_pair_column", "label_column", "max_length",
                  "split_seed", "quantize")
INHERITED_TRAIN = ("lr", "head_lr_scale", "batch_size", "precision", "steps")  # a study's steps: its full fidelity


def _cli_defaults() -> dict:
    """The shared options' own defaults (read from their definitions, so they cannot drift)."""
    p = argparse.ArgumentParser(add_help=False)
    add_data_options(p)
    add_train_options(p, steps=300)
    return vars(p.parse_args([]))


def inherit(args: argparse.Namespace, data: dict | None, train: dict | None) -> list[str]:
    """Fill options the user did not give from the source's record; return what was inherited.

    Column, task, split and length options follow the dataset: they are inherited only when the dataset is.
    """
    data, train, defaults = data or {}, train or {}, _cli_defaults()
    same_data = args.dataset is None or args.dataset == data.get("dataset")
    inherited = []
    for name in INHERITED_DATA + INHERITED_TRAIN:
        record = train if name in INHERITED_TRAIN else data
        usable = name in ("model", "dataset", "quantize") or name in INHERITED_TRAIN or same_data
        if getattr(args, name) is None and usable and record.get(name) is not None:
            setattr(args, name, record[name])
            if record[name] != defaults.get(name):
                inherited.append(f"{name} {record[name]}")
        elif getattr(args, name) is None:
            setattr(args, name, defaults.get(name))
    return inherited


def run(args: argparse.Namespace) -> int:
    from autopeft.peft.artifacts import save_adapter
    from autopeft.searching.run import adapter_config
    from autopeft.study.plan_source import resolve_plan_source
    from autopeft.training.config import TrainConfig, steps_for_epochs
    from autopeft.training.pipeline import prepare
    from autopeft.training.trial_run import train_plan

    source = resolve_plan_source(args.plan)
    plan = source.plan
    inherited = inherit(args, source.data, source.train)
    if inherited and not args.json:
        print(f"plan from {source.where}; using its {', '.join(inherited)} (override with the options)")
    prepared = prepare(data_options_of(args))
    arch = prepared.loaded.arch
    params = plan.num_params(arch)
    steps = args.steps
    if args.epochs is not None:
        steps = steps_for_epochs(args.epochs, len(prepared.session.splits["train"].input_ids), args.batch_size)
    config = TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, head_lr_scale=args.head_lr_scale,
                         precision=args.precision, seed=args.seed)
    start = time.perf_counter()
    outcome = train_plan(prepared.session, plan, config)
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
