"""``autopeft fuse``: AdapterFusion of several trained adapters of one base, on a new dataset."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from autopeft.cli.commands.common import add_data_options, add_train_options, data_options_of
from autopeft.core.errors import UserError


def register(sub) -> None:
    f = sub.add_parser("fuse", help="fuse several trained adapters of one base with a learned attention (AdapterFusion)")
    f.add_argument("adapter_dirs", nargs="+", metavar="ADAPTER_DIR", help="adapter directories (two or more)")
    add_data_options(f)
    f.set_defaults(model=None, quantize=None)  # taken from the adapters; given explicitly, they must agree
    add_train_options(f, steps=300)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", help="fused adapter directory (default runs/fuse-<timestamp>)")
    f.add_argument("--json", action="store_true")
    f.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autopeft.peft.artifacts import save_adapter
    from autopeft.peft.fusion import load_sources, source_state
    from autopeft.peft.plan import Plan
    from autopeft.searching.run import adapter_config
    from autopeft.training.config import TrainConfig
    from autopeft.training.fusion_run import evaluate_fused, train_fused
    from autopeft.training.pipeline import prepare

    sources, first = load_sources(args.adapter_dirs)
    base, quantize = first["data"]["model"], first["data"].get("quantize", "none")
    for flag, given, needed in (("--model", args.model, base), ("--quantize", args.quantize, quantize)):
        if given is not None and given != needed:
            raise UserError(f"{flag} {given}: the adapters were trained with {flag} {needed}; leave it out")
    args.model, args.quantize = base, quantize
    prepared = prepare(data_options_of(args))
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, precision=args.precision,
                         seed=args.seed, prefix_cache="off")
    start = time.perf_counter()
    outcome = train_fused(prepared.session, sources, config)
    record = {**adapter_config(prepared, config),
              "fusion": {"sources": [s.to_record() for s in sources]}}
    state = {**outcome.state, **source_state(sources)}
    test = evaluate_fused(prepared.session, record, state, "test", config)
    base_params = prepared.loaded.base_params
    metrics = {"validation": outcome.validation.values, "test": test.values,
               "fusion_params": outcome.adapter_params, "head_params": outcome.head_params,
               "params_pct": 100 * outcome.adapter_params / base_params, "steps": config.steps,
               "train_seconds": round(time.perf_counter() - start, 2), "step_time_s": outcome.step_time_s}
    out = Path(args.out or f"runs/fuse-{time.strftime('%Y%m%d-%H%M%S')}")
    save_adapter(out, Plan(()), state, record, metrics)  # the plan is empty: see autopeft.peft.fusion
    if args.json:
        print(json.dumps({"out": str(out), **metrics}, indent=2))
    else:
        metric = prepared.session.primary_metric
        print(f"fused {len(sources)} adapters: {outcome.adapter_params} fusion params "
              f"({metrics['params_pct']:.3f}%), validation {metric} {outcome.validation.value:.4f}, "
              f"test {metric} {test.value:.4f}; fused adapter in {out}")
    return 0
