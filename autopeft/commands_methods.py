"""``autopeft methods``, ``autopeft plan`` and ``autopeft train``: the method catalogue and single plans."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import typing
from pathlib import Path
from typing import Any

from autopeft.errors import UserError
from autopeft.methods import REGISTRY, Placement, get_method, make_config
from autopeft.plan import Plan, PlanEntry


def method_catalogue() -> list[dict[str, Any]]:
    rows = []
    for name in sorted(REGISTRY):
        method = REGISTRY[name]
        hints = typing.get_type_hints(method.config_cls)
        options = []
        for f in dataclasses.fields(method.config_cls):
            hint = hints[f.name]
            allowed = list(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else None
            options.append({"name": f.name, "type": "choice" if allowed else getattr(hint, "__name__", str(hint)),
                            "default": f.default, **({"choices": allowed} if allowed else {})})
        rows.append({
            "name": name, "summary": method.summary, "placement": method.placement.value,
            "sites": list(method.sites) if method.sites else "any linear site (q k v o up gate down)",
            "families": ["bert", "distilbert", "gpt2", "llama"],
            "identity_at_init": method.identity_at_init, "options": options,
        })
    return rows


def cmd_methods(args: argparse.Namespace) -> int:
    rows = method_catalogue()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="autopeft methods")
    for column in ("method", "sites", "options (default)", "identity at init", "what it does"):
        table.add_column(column, overflow="fold")
    for r in rows:
        options = ", ".join(f"{o['name']}={o['default']}" for o in r["options"]) or "-"
        sites = r["sites"] if isinstance(r["sites"], str) else ",".join(r["sites"])
        table.add_row(r["name"], sites, options, "yes" if r["identity_at_init"] else "no", r["summary"])
    Console().print(table)
    return 0


def parse_layers(text: str | None, num_layers: int) -> tuple[int, ...]:
    if text is None or text == "all":
        return tuple(range(num_layers))
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part.lstrip("-"):
                lo, hi = part.split("-", 1)
                layers.extend(range(int(lo), int(hi) + 1))
            else:
                layers.append(int(part))
        except ValueError:
            raise UserError(f"--layers {text!r}: write indices and ranges like 0-2,5 or 'all'") from None
    return tuple(layers)


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set {pair!r}: write key=value, e.g. --set r=8")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw  # a bare string such as activation=gelu
    return values


def cmd_plan(args: argparse.Namespace) -> int:
    from autopeft.arch import arch_from_config
    from autopeft.models import load_config

    method = get_method(args.method)
    options = parse_settings(args.set or [])
    make_config(method, options)  # validate now, with the method's own message
    arch = arch_from_config(load_config(args.model))
    if args.sites:
        sites = tuple(s.strip() for s in args.sites.split(",") if s.strip())
    elif method.placement is Placement.ATTENTION:
        sites = tuple(method.sites or ())
    else:
        raise UserError(f"--sites is required for '{args.method}'; sites of this model: {', '.join(arch.sites)}")
    plan = Plan((PlanEntry(args.method, parse_layers(args.layers, arch.num_layers), sites, options),))
    params = plan.num_params(arch)  # also validates sites and layers against the model
    if args.out:
        plan.save(args.out)
        print(f"wrote {args.out}: {plan.describe(arch)}, {params} params")
    else:
        print(json.dumps(plan.to_dict(), indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from autopeft.artifacts import save_adapter
    from autopeft.cli import data_options
    from autopeft.pipeline import prepare
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
