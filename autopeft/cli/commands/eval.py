"""``autopeft eval``: evaluate an adapter directory on a split."""

from __future__ import annotations

import argparse
import json

from autopeft.core.errors import UserError


def register(sub) -> None:
    e = sub.add_parser("eval", help="evaluate an adapter directory on a split")
    e.add_argument("adapter_dir")
    e.add_argument("--split", choices=["validation", "test", "train"], default="validation")
    e.add_argument("--json", action="store_true")
    e.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autopeft.core.records import from_record
    from autopeft.peft.adapters import check_base
    from autopeft.peft.artifacts import load_adapter
    from autopeft.training.config import TrainConfig
    from autopeft.training.options import DataOptions
    from autopeft.training.pipeline import prepare

    plan, state, config = load_adapter(args.adapter_dir)
    source = f"{args.adapter_dir}/autopeft_config.json"
    options = from_record(DataOptions, config.get("data"), f"{source} 'data'")
    train = from_record(TrainConfig, config.get("train"), f"{source} 'train'")
    prepared = prepare(options, splits=(args.split,))
    check_base(prepared.loaded.model, config, args.adapter_dir, current=prepared.fingerprint)
    if prepared.data.label_names != config.get("label_names", prepared.data.label_names):
        raise UserError(f"dataset labels {prepared.data.label_names} differ from the adapter's "
                        f"{config['label_names']}")
    if "fusion" in config:  # an `autopeft fuse` directory: the sources' weights are stored alongside
        from autopeft.training.fusion_run import evaluate_fused

        metrics = evaluate_fused(prepared.session, config, state, args.split, train)
    else:
        metrics = prepared.session.evaluate_adapter(plan, state, args.split, train)
    if args.json:
        print(json.dumps({"split": args.split, "metric": metrics.name, **metrics.values}, indent=2))
    else:
        values = ", ".join(f"{k} {v:.0f}" if k == "predicted_classes" else f"{k} {v:.4f}"  # a count
                           for k, v in metrics.values.items())
        print(f"{args.adapter_dir} on {args.split}: {values}")
    return 0
