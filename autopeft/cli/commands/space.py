"""``autopeft space check|sample``: validate a search space and look at it on a model, before searching.

Only the model's config is read (shapes and the parameter count come from it; no weights are loaded).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from autopeft.core.errors import UserError

DEFAULT_MODEL = "minilm"


def register(sub) -> None:
    p = sub.add_parser("space", help="check a search space (file or preset) or sample plans from it")
    actions = p.add_subparsers(dest="space_command", required=True)
    check = actions.add_parser("check", help="validate; print the size, min/max params and the share that fits")
    check.add_argument("space", help="a preset name (see `autopeft spaces`) or a YAML file")
    check.add_argument("--model", default=DEFAULT_MODEL, help=f"model whose config to use (default {DEFAULT_MODEL})")
    check.add_argument("--budget", help="e.g. 0.5%% or 120k (default: the file's budget, if any)")
    check.add_argument("--samples", type=int, default=4000,
                       help="uniform samples when the share that fits is estimated (default 4000)")
    check.add_argument("--trust-remote-code", action="store_true")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=run_check)
    sample = actions.add_parser("sample", help="print plans sampled from the space, with their parameter counts")
    sample.add_argument("space", help="a preset name or a YAML file")
    sample.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    sample.add_argument("--n", type=int, default=5, help="number of plans (default 5)")
    sample.add_argument("--budget", help="repair plans over this budget as the search does (default: the file's)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--trust-remote-code", action="store_true")
    sample.add_argument("--json", action="store_true")
    sample.set_defaults(handler=run_sample)


def model_shapes(spec: str, trust_remote_code: bool = False) -> tuple[Any, int]:
    """(ModelArch, base parameter count) from the model's config alone: read from its config.json where that
    is exact (:mod:`autopeft.space.shapes`: no torch), else from a build on the meta device."""
    from autopeft.space.shapes import config_file_shapes

    shapes = None if trust_remote_code else config_file_shapes(spec)
    if shapes is not None:
        return shapes
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from autopeft.core.arch import arch_from_config
    from autopeft.peft.adapters import count_base_params
    from autopeft.training.models import load_config

    config = load_config(spec, trust_remote_code)
    arch = arch_from_config(config)
    cls = AutoModelForCausalLM if arch.family.is_causal else AutoModelForSequenceClassification
    with torch.device("meta"):
        model = cls.from_config(config, trust_remote_code=trust_remote_code)
    return arch, count_base_params(model)


def _budget(text: str | None, space, base: int) -> tuple[int | None, str | None]:
    from autopeft.core.units import parse_budget

    if text is not None:
        return parse_budget(text, base), f"{text} (--budget)"
    if space.budget is not None:
        return space.budget_params(base), f"{space.budget} (the file's budget)"
    return None, None


def _pct(n: int, base: int) -> str:
    return f"{100 * n / base:.4f}%"


def check_report(space, arch, base: int, budget: int | None, samples: int) -> dict[str, Any]:
    from autopeft.space import stats

    resolved = space.resolve(arch)
    size = stats.size(space, arch)
    low, high = space.min_params(arch), space.max_params(arch)
    report: dict[str, Any] = {
        "space": space.name, "source": space.source, "description": space.description,
        "decisions": len(space.decisions), "units": len(resolved.units),
        "mask_flags": sum(len(v) for v in resolved.mask_layers.values()), "training": sorted(space.training),
        "max_trial_parameters": size.parameters, "points": size.points, "continuous": list(size.continuous),
        "min_params": low, "max_params": high, "base_params": base, "notes": list(resolved.notes),
        "forbid": [rule.describe() for rule in space.forbid],
    }
    if budget is not None:
        fit = stats.fraction_that_fits(space, arch, budget, samples=samples)
        draws = stats.fraction_of_draws_that_fit(space, arch, budget, samples=samples)
        report.update(budget_params=budget, fits_fraction=fit.fraction, fits_exact=fit.exact, fits_detail=fit.detail,
                      draws_fit_fraction=draws.fraction, draws_fit_detail=draws.detail)
    return report


def run_check(args: argparse.Namespace) -> int:
    from autopeft.space import load_space

    space = load_space(args.space)
    arch, base = model_shapes(args.model, args.trust_remote_code)
    budget, budget_text = _budget(args.budget, space, base)
    report = check_report(space, arch, base, budget, args.samples)
    report["model"] = args.model
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"space '{space.name}' ({space.source}): valid")
        if space.description:
            print(f"  {space.description}")
        print(f"model {args.model}: {arch.family.name}, {arch.num_layers} layers, {base:,} parameters "
              "(from its config; no weights loaded)")
        flags = f" + {report['mask_flags']} mask flags" if report["mask_flags"] else ""
        settings = f" + {len(space.training)} training setting{'s' if len(space.training) != 1 else ''}"
        print(f"decisions: {report['decisions']} in the file -> {report['units']} units{flags}"
              f"{settings if space.training else ''} on this model; at most {report['max_trial_parameters']} "
              "sampled parameters per trial")
        from autopeft.space.stats import SpaceSize

        print(f"size: {SpaceSize(report['points'], tuple(report['continuous']), 0).describe()}")
        print(f"params: min {report['min_params']:,} ({_pct(report['min_params'], base)}), "
              f"max {report['max_params']:,} ({_pct(report['max_params'], base)})")
        for rule in report["forbid"]:
            print(f"forbid: {rule}")
        if budget is not None:
            print(f"budget {budget_text} = {budget:,} params: {100 * report['fits_fraction']:.4g}% of the space's "
                  f"points fit ({report['fits_detail']}); {100 * report['draws_fit_fraction']:.4g}% of random draws "
                  f"fit without repair ({report['draws_fit_detail']})")
        for note in report["notes"]:
            print(f"note: {note}")
    if budget is not None:
        space.ensure_fits(arch, budget, base)
    return 0


def run_sample(args: argparse.Namespace) -> int:
    import random

    import optuna

    from autopeft.space import load_space

    if args.n < 1:
        raise UserError(f"--n {args.n}: ask for at least one plan")
    space = load_space(args.space)
    arch, base = model_shapes(args.model, args.trust_remote_code)
    budget, budget_text = _budget(args.budget, space, base)
    if budget is not None:
        space.ensure_fits(arch, budget, base)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    rows = []
    for n in range(args.n):
        sample = space.sample_choices(study.ask(), arch)
        drawn = sample.num_params(arch)
        reason = space.infeasible_reason(sample, arch, budget)
        if reason is not None:
            repaired = space.repair(sample, arch, budget if budget is not None else 10**18,
                                    random.Random(f"{args.seed}-{n}"))
            assert repaired is not None  # ensure_fits ruled that out
            sample = repaired
        plan = sample.plan()
        params = sample.num_params(arch)
        rows.append({"plan": plan.to_dict(), "summary": plan.describe(arch), "params": params,
                     "params_pct": 100 * params / base, "training": sample.training,
                     "repaired_from": None if reason is None else {"params": drawn, "reason": reason}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    where = f", budget {budget_text} = {budget:,} params" if budget is not None else ""
    print(f"space '{space.name}' on {args.model} ({base:,} params){where}, seed {args.seed}")
    for i, row in enumerate(rows, 1):
        training = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["training"].items())
        repaired = f"  [repaired: {row['repaired_from']['reason']}]" if row["repaired_from"] else ""
        print(f"{i:>3}  {row['params']:>10,} params ({row['params_pct']:.4f}%)  {row['summary']}"
              f"{'  ' + training if training else ''}{repaired}")
    return 0
