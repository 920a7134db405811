"""``autopeft pareto``: print the Pareto front of a study."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("pareto", help="print the Pareto front of a study")
    p.add_argument("study_dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
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
