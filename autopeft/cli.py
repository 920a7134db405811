"""The ``autopeft`` command line. Each subcommand is a plain function of typed arguments.

A :class:`~autopeft.errors.UserError` (a mistake in the input) is printed as one ``error:`` line and
exits with code 2, like argparse's own usage errors; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from autopeft.errors import UserError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise UserError(f"--time-budget {text!r} is not a duration; write e.g. 90s, 20m, 1.5h")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets
    import optuna
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm", help="built-in alias (minilm, smollm2-135m), local folder or hub id")
    p.add_argument("--dataset", default="rotten_tomatoes",
                   help="built-in alias (rotten_tomatoes, bbc_news, hamlet), csv/json/jsonl/parquet file, "
                        "save_to_disk folder, or hub id (name or name:config)")
    p.add_argument("--task", choices=["classification", "causal-lm"], default=None, help="default: detected")
    p.add_argument("--text-column")
    p.add_argument("--text-pair-column")
    p.add_argument("--label-column")
    p.add_argument("--max-length", type=int, default=64, help="tokens per example (default 64)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation/test split")
    p.add_argument("--trust-remote-code", action="store_true", help="allow code from the model repository")


def _add_train_options(p: argparse.ArgumentParser, steps: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help=f"training steps per trial (default {steps})")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate when the space does not search it")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="bf16 = bf16 autocast with fp32 master weights (default); fp32 = full precision")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopeft", description="Search hybrid PEFT architectures under budgets.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="search the Pareto front of PEFT plans")
    _add_data_options(s)
    _add_train_options(s, steps=150)
    s.add_argument("--budget", default="0.5%", help="max trainable params: 0.5%% of the base model, 120k, 1.5M")
    s.add_argument("--space", default="hybrid", help="preset name or YAML file (default: hybrid)")
    s.add_argument("--trials", type=int, default=12, help="trained trials to run (default 12)")
    s.add_argument("--time-budget", help="stop starting new trials after this long, e.g. 20m")
    s.add_argument("--out", help="study directory (default runs/<timestamp>); same --out resumes")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    s.add_argument("--max-failures", type=int, default=5, help="stop after this many failed trials")
    s.add_argument("--quiet", action="store_true")

    p = sub.add_parser("pareto", help="print the Pareto front of a study")
    p.add_argument("study_dir")
    p.add_argument("--json", action="store_true")

    m = sub.add_parser("methods", help="list the PEFT methods, their options, sites and behaviour")
    m.add_argument("--json", action="store_true")

    pl = sub.add_parser("plan", help="write a single-method plan (e.g. LoRA r=8 on q,v)")
    pl.add_argument("--method", required=True)
    pl.add_argument("--model", default="minilm", help="model whose layers and sites the plan targets")
    pl.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option, repeatable: --set r=8")
    pl.add_argument("--layers", help="e.g. 0-5, 0,2,4 or all (default: all)")
    pl.add_argument("--sites", help="comma-separated sites, e.g. q,v")
    pl.add_argument("--out", help="plan file to write (default: print)")

    t = sub.add_parser("train", help="train a plan and save a reusable adapter directory")
    t.add_argument("--plan", required=True, help="plan.json, or an adapter/trial directory holding one")
    _add_data_options(t)
    _add_train_options(t, steps=300)
    t.add_argument("--epochs", type=float, help="train for this many epochs instead of --steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="adapter directory (default runs/train-<timestamp>)")
    t.add_argument("--json", action="store_true")

    e = sub.add_parser("eval", help="evaluate an adapter directory on a split")
    e.add_argument("adapter_dir")
    e.add_argument("--split", choices=["validation", "test", "train"], default="validation")
    e.add_argument("--json", action="store_true")
    return parser


def cmd_search(args: argparse.Namespace) -> int:
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


def data_options(args: argparse.Namespace):
    from autopeft.pipeline import DataOptions

    return DataOptions(model=args.model, dataset=args.dataset, task=args.task, text_column=args.text_column,
               text_pair_column=args.text_pair_column, label_column=args.label_column,
               split_seed=args.split_seed, max_length=args.max_length, trust_remote_code=args.trust_remote_code)


def cmd_pareto(args: argparse.Namespace) -> int:
    from rich.console import Console

    from autopeft.progress import print_front
    from autopeft.study import load_study_rows

    rows, settings = load_study_rows(Path(args.study_dir))
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    metric = "loss" if settings.get("data", {}).get("task") == "causal-lm" else "accuracy"
    if not rows:
        print("no completed trials yet")
        return 0
    print_front(Console(highlight=False), rows, metric)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from autopeft.artifacts import load_adapter
    from autopeft.pipeline import DataOptions, prepare
    from autopeft.train import TrainConfig

    plan, state, config = load_adapter(args.adapter_dir)
    options = DataOptions(**config["data"])
    prepared = prepare(options, splits=(args.split,) if args.split != "train" else ("train",))
    if prepared.data.label_names != config.get("label_names", prepared.data.label_names):
        raise UserError(f"dataset labels {prepared.data.label_names} differ from the adapter's "
                        f"{config['label_names']}")
    metrics = prepared.session.evaluate_adapter(plan, state, args.split, TrainConfig(**config["train"]))
    if args.json:
        print(json.dumps({"split": args.split, "metric": metrics.name, **metrics.values}, indent=2))
    else:
        values = ", ".join(f"{k} {v:.4f}" for k, v in metrics.values.items())
        print(f"{args.adapter_dir} on {args.split}: {values}")
    return 0


def _lazy(name: str):
    def run(args: argparse.Namespace) -> int:
        from autopeft import commands_methods

        return getattr(commands_methods, name)(args)

    return run


COMMANDS = {"search": cmd_search, "pareto": cmd_pareto, "eval": cmd_eval, "methods": _lazy("cmd_methods"),
            "plan": _lazy("cmd_plan"), "train": _lazy("cmd_train")}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="[autopeft] %(message)s")
    _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
