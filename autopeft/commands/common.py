"""Options shared by several subcommands (model/data options, training options, durations)."""

from __future__ import annotations

import argparse
import re

from autopeft.errors import UserError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def parse_duration(text: str, flag: str = "--time-budget") -> float:
    match = _DURATION.match(text)
    if not match:
        raise UserError(f"{flag} {text!r} is not a duration; write e.g. 90s, 20m, 1.5h")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]


def add_data_options(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--quantize", choices=["none", "nf4", "fp4", "int8"], default="none",
                   help="base projections in 4-bit NF4/FP4 or int8 (QLoRA; bitsandbytes), default none")


def add_train_options(p: argparse.ArgumentParser, steps: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help=f"training steps per trial (default {steps})")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate when the space does not search it")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="bf16 = bf16 autocast with fp32 master weights (default); fp32 = full precision")


def data_options(args: argparse.Namespace):
    from autopeft.pipeline import DataOptions

    return DataOptions(model=args.model, dataset=args.dataset, task=args.task, text_column=args.text_column,
                       text_pair_column=args.text_pair_column, label_column=args.label_column,
                       split_seed=args.split_seed, max_length=args.max_length,
                       trust_remote_code=args.trust_remote_code, quantize=args.quantize)
