"""``autopeft plan``: write a single-method plan (the way baselines such as "LoRA r=8 on q,v" are built),
or a preset (houlsby, pfeiffer, mam, unipelt; see ``autopeft.peft.presets``) scaled to the model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from autopeft.core.errors import UserError


def register(sub) -> None:
    pl = sub.add_parser("plan", help="write a single-method plan (e.g. LoRA r=8 on q,v) or a preset")
    what = pl.add_mutually_exclusive_group(required=True)
    what.add_argument("--method")
    what.add_argument("--preset", help="houlsby, pfeiffer, mam or unipelt, scaled to --model")
    pl.add_argument("--model", default="minilm", help="model whose layers and sites the plan targets")
    pl.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option, repeatable: --set r=8")
    pl.add_argument("--layers", help="e.g. 0-5, 0,2,4 or all (default: all)")
    pl.add_argument("--sites", help="comma-separated sites, e.g. q,v")
    pl.add_argument("--out", help="plan file to write (default: print)")
    pl.set_defaults(handler=run)


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


def run(args: argparse.Namespace) -> int:
    from autopeft.core.arch import arch_from_config
    from autopeft.methods import Placement, get_method, make_config
    from autopeft.peft.plan import Plan, PlanEntry
    from autopeft.training.models import load_config

    if args.preset:
        return _write_preset(args)
    method = get_method(args.method)
    options = parse_settings(args.set or [])
    make_config(method, options)  # validate now, with the method's own message
    arch = arch_from_config(load_config(args.model))
    if args.sites:
        sites = tuple(s.strip() for s in args.sites.split(",") if s.strip())
    elif method.placement is not Placement.LINEAR or method.sites:
        sites = tuple(method.sites or ())
    else:
        raise UserError(f"--sites is required for '{args.method}'; sites of this model: {', '.join(arch.sites)}")
    # a model-level method (site input) is placed once, whatever the layers: write none
    layers = () if method.placement is Placement.INPUT else parse_layers(args.layers, arch.num_layers)
    plan = Plan((PlanEntry(args.method, layers, sites, options),))
    return _emit(plan, arch, args.out)


def _write_preset(args: argparse.Namespace) -> int:
    from autopeft.core.arch import arch_from_config
    from autopeft.peft.presets import preset_plan
    from autopeft.training.models import load_config

    if args.set or args.sites:
        raise UserError("--set and --sites do not apply to --preset; edit the written plan to change it")
    arch = arch_from_config(load_config(args.model))
    layers = parse_layers(args.layers, arch.num_layers) if args.layers else None
    return _emit(preset_plan(args.preset, arch, layers), arch, args.out)


def _emit(plan, arch, out: str | None) -> int:
    params = plan.num_params(arch)  # also validates sites and layers against the model
    if out:
        plan.save(out)
        print(f"wrote {out}: {plan.describe(arch)}, {params} params")
    else:
        print(json.dumps(plan.to_dict(), indent=2))
    return 0


